// The data-dir faults, with the real CLI: a federation data dir
// holding 160 used single-use join tokens is copied, each copy damaged one
// way, and `kedge federation` started on it. Used tokens never become usable
// again and the root CA is never replaced without the operator saying so;
// backup and restore bring a lost store back.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openEmbeddedStore } from '../../federation/store/embedded';
import { TokenService } from '../../federation/tokens/tokens';
import { hasCode } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';
import { startFederationProc, type FederationHandle } from '../support/mesh';
import { runKedge, startKedge, tempDir } from '../support/procs';

const TOKENS = 160;
let golden: string;
let rootCert: string;
const tokens: string[] = [];

/** Starts `kedge federation` on a data dir and waits for it to be ready or to exit. */
async function startOn(dataDir: string, extra: string[] = []): Promise<{ ready: boolean; code: number | null; stderr: string; stop: () => Promise<unknown> }> {
  const proc = startKedge('federation', ['federation', '--data-dir', dataDir, '--listen-grpc', '127.0.0.1:0', '--listen-http', '127.0.0.1:0', ...extra]);
  const outcome = await Promise.race([
    proc.waitForMsg('federation ready', 20_000).then(() => 'ready' as const),
    proc.exited.then(() => 'exited' as const),
  ]);
  const stop = () => proc.stop('SIGTERM');
  if (outcome === 'ready') return { ready: true, code: null, stderr: proc.raw.join('\n'), stop };
  const { code } = await proc.exited;
  return { ready: false, code, stderr: proc.raw.join('\n'), stop };
}

function copyDataDir(): string {
  const to = tempDir('fed-copy');
  fs.cpSync(golden, to, { recursive: true });
  return to;
}

/** Opens a stopped data dir's store and tries every token again: all must be used up. */
async function assertTokensStillUsed(dataDir: string): Promise<void> {
  const store = await openEmbeddedStore(dataDir, { logger: silentLogger() });
  try {
    const svc = new TokenService(store);
    for (const t of tokens) await assert.rejects(svc.redeem(t), (err) => hasCode(err, 'KEDGE_TOKEN_USED'));
  } finally {
    await store.close();
  }
}

describe('federation data dir integrity', () => {
  before(async () => {
    golden = tempDir('fed-golden');
    const first = await startOn(golden);
    assert.ok(first.ready, first.stderr);
    await first.stop();
    rootCert = fs.readFileSync(path.join(golden, 'root-cert.pem'), 'utf8');
    // Tokens created and used while the federation is stopped, through the
    // same TokenService and store it runs: 160 changes in the log.
    const store = await openEmbeddedStore(golden, { logger: silentLogger() });
    const svc = new TokenService(store);
    for (let i = 0; i < TOKENS; i++) {
      const { token } = await svc.create({ namespace: 'default', serviceAccount: `sa-${i}` }, { ttlMs: 3_600_000 });
      await svc.redeem(token);
      tokens.push(token);
    }
    await store.close();
  });

  it('restarts on an intact copy with every token still used and the same root', async () => {
    const dir = copyDataDir();
    const r = await startOn(dir);
    assert.ok(r.ready, r.stderr);
    await r.stop();
    assert.equal(fs.readFileSync(path.join(dir, 'root-cert.pem'), 'utf8'), rootCert);
    await assertTokensStillUsed(dir);
  });

  const damages: [string, (dir: string) => void, string][] = [
    ['an emptied log', (d) => fs.writeFileSync(path.join(d, 'store', 'wal.log'), ''), 'wal.log'],
    ['a deleted log', (d) => fs.rmSync(path.join(d, 'store', 'wal.log')), 'wal.log'],
    ['a shortened log', (d) => {
      const f = path.join(d, 'store', 'wal.log');
      fs.truncateSync(f, Math.floor(fs.statSync(f).size * 0.7));
    }, 'wal.log'],
    ['a deleted snapshot', (d) => fs.rmSync(path.join(d, 'store', 'snapshot.json')), 'snapshot.json'],
    ['a bit flip in the snapshot', (d) => {
      const f = path.join(d, 'store', 'snapshot.json');
      const b = fs.readFileSync(f);
      const at = b.indexOf('/kedge/admin/token') + 3;
      b[at] = b[at]! ^ 0x02;
      fs.writeFileSync(f, b);
    }, 'snapshot.json'],
  ];
  for (const [what, damage, file] of damages) {
    it(`refuses to start on ${what}, naming ${file}, and changes nothing`, async () => {
      const dir = copyDataDir();
      // Tokens are used after the last open, so their uses live in the log.
      damage(dir);
      const r = await startOn(dir);
      assert.equal(r.ready, false, 'must not start');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /\[KEDGE_STORE_CORRUPT\]/);
      assert.ok(r.stderr.includes(path.join(dir, 'store', file)), r.stderr);
      assert.match(r.stderr, /kedge federation restore/);
      assert.equal(fs.readFileSync(path.join(dir, 'root-cert.pem'), 'utf8'), rootCert, 'root-cert.pem untouched');
    });
  }

  it('refuses to make a new CA when the store folder is gone, until --init', async () => {
    const dir = copyDataDir();
    fs.rmSync(path.join(dir, 'store'), { recursive: true });
    const r = await startOn(dir);
    assert.equal(r.ready, false);
    assert.match(r.stderr, /\[KEDGE_STORE_MISSING\]/);
    assert.match(r.stderr, /admin-token and root-cert\.pem from an earlier start/);
    assert.equal(fs.readFileSync(path.join(dir, 'root-cert.pem'), 'utf8'), rootCert, 'root-cert.pem untouched');
    const again = await startOn(dir); // still refused: the empty store it left is no licence
    assert.equal(again.ready, false);
    const init = await startOn(dir, ['--init']);
    assert.ok(init.ready, init.stderr);
    await init.stop();
    assert.notEqual(fs.readFileSync(path.join(dir, 'root-cert.pem'), 'utf8'), rootCert, '--init makes a new mesh');
  });

  describe('backup and restore', () => {
    let fed: FederationHandle | undefined;
    after(() => fed?.proc.stop('SIGKILL'));

    it('backs up a running federation through its API, and restores it into a data dir that lost its store', async () => {
      const dir = copyDataDir();
      fed = await startFederationProc({ dataDir: dir });
      const backupFile = path.join(tempDir('backup'), 'kedge.backup');
      const b = await runKedge(['federation', 'backup', '--out', backupFile, '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
      assert.equal(b.code, 0, b.stderr);
      assert.match(b.stdout, /wrote .*: \d+ keys at store revision \d+/);
      assert.equal(fs.statSync(backupFile).mode & 0o777, 0o600);
      await fed.proc.stop('SIGTERM');
      fed = undefined;

      // Refused while the store is there, then with --force the old one is moved aside.
      const refused = await runKedge(['federation', 'restore', '--data-dir', dir, backupFile]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /\[KEDGE_STORE_EXISTS\]/);
      fs.rmSync(path.join(dir, 'store'), { recursive: true });
      const r = await runKedge(['federation', 'restore', '--data-dir', dir, backupFile]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`restored ${TOKENS + 3} keys`)); // tokens, the CA, the admin token and the mesh identity record (/kedge/mesh/identity)

      const started = await startOn(dir);
      assert.ok(started.ready, started.stderr);
      await started.stop();
      assert.equal(fs.readFileSync(path.join(dir, 'root-cert.pem'), 'utf8'), rootCert, 'the same root CA');
      await assertTokensStillUsed(dir);
    });

    it('backs up a stopped data dir, restores over a damaged store with --force, and refuses a changed backup', async () => {
      const dir = copyDataDir();
      const backupFile = path.join(tempDir('backup'), 'kedge.backup');
      const b = await runKedge(['federation', 'backup', '--out', backupFile, '--data-dir', dir]);
      assert.equal(b.code, 0, b.stderr);
      fs.writeFileSync(path.join(dir, 'store', 'wal.log'), '');
      const r = await runKedge(['federation', 'restore', '--data-dir', dir, '--force', backupFile]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /the store that was there is now .*store\.before-restore-/);
      await assertTokensStillUsed(dir);

      const original = fs.readFileSync(backupFile, 'utf8');
      const changed = original.replace('\\"used\\":1', '\\"used\\":0'); // one token made unused again
      assert.notEqual(changed, original);
      const tampered = path.join(path.dirname(backupFile), 'tampered.backup');
      fs.writeFileSync(tampered, changed);
      const t = await runKedge(['federation', 'restore', '--data-dir', tempDir('fed-empty'), tampered]);
      assert.equal(t.code, 1);
      assert.match(t.stderr, /fails its checksum .*\[KEDGE_BACKUP_INVALID\]/);
    });
  });
});
