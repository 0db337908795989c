// Disk full on the federation's data dir, for real: a 4 MiB tmpfs filled to
// ENOSPC. Writes fail with KEDGE_STORE_IO (503 in the API), /readyz says
// the store cannot write, nothing acknowledged is lost, and once space is
// freed the store takes writes again by itself, without a restart.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openEmbeddedStore } from '../../federation/store/embedded';
import { hasCode } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';
import { fedFetch, restartFederationProc, startFederationProc, type FederationHandle } from '../support/mesh';
import { eventually, tempDir } from '../support/procs';

const mountPoint = tempDir('enospc');

/** Fills the file system with one file until ENOSPC; returns its path. */
function fill(dir: string): string {
  const file = path.join(dir, 'filler');
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
  } finally {
    fs.closeSync(fd);
  }
  // The last partial block too.
  const small = Buffer.alloc(1, 0x61);
  const fd2 = fs.openSync(file, 'a');
  try {
    for (;;) fs.writeSync(fd2, small);
  } catch {
    // full
  } finally {
    fs.closeSync(fd2);
  }
  return file;
}

describe('store on a full disk', () => {
  before(() => {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0700', 'kedge-enospc', mountPoint], { encoding: 'utf8' });
    assert.equal(r.status, 0, `mount tmpfs: ${r.stderr}`);
  });
  after(() => {
    spawnSync('umount', ['-l', mountPoint]);
    fs.rmSync(mountPoint, { recursive: true, force: true });
  });

  it('the store refuses writes while the disk is full and recovers by itself when space returns', { timeout: 60_000 }, async () => {
    const dir = path.join(mountPoint, 'store-only');
    fs.mkdirSync(dir);
    const store = await openEmbeddedStore(dir, { logger: silentLogger() });
    const acked: string[] = [];
    for (let i = 0; i < 20; i++) acked.push((await store.put(`/k/${i}`, `v${i}`), `/k/${i}`));
    const filler = fill(mountPoint);
    // Some writes may still fit in blocks already allocated; keep writing until one fails.
    let failure: unknown;
    for (let i = 20; i < 10_000 && failure === undefined; i++) {
      try {
        await store.put(`/k/${i}`, 'x'.repeat(4096));
        acked.push(`/k/${i}`);
      } catch (err) {
        failure = err;
      }
    }
    assert.ok(hasCode(failure, 'KEDGE_STORE_IO'), String(failure));
    assert.match((failure as Error).message, /ENOSPC/);
    assert.equal(store.health().writable, false);
    assert.equal((await store.get('/k/0'))?.value, 'v0', 'reads still work');

    fs.rmSync(filler);
    await eventually(() => store.health().writable, 10_000, 'the store to take writes again');
    await store.put('/k/after', 'yes');
    await store.close();
    const reopened = await openEmbeddedStore(dir, { logger: silentLogger() });
    const keys = new Set((await reopened.list('/k/')).kvs.map((kv) => kv.key));
    for (const k of acked) assert.ok(keys.has(k), `acknowledged ${k} kept`);
    assert.ok(keys.has('/k/after'));
    assert.equal(keys.size, acked.length + 1, 'no refused write came back');
    await reopened.close();
  });

  describe('a federation on the full disk', () => {
    let fed: FederationHandle | undefined;
    after(() => fed?.proc.stop('SIGKILL'));

    it('answers 503 on /readyz and on writes while full, and recovers without a restart', { timeout: 90_000 }, async () => {
      const dataDir = path.join(mountPoint, 'federation');
      fed = await startFederationProc({ dataDir });
      const auth = { authorization: `Bearer ${fs.readFileSync(fed.adminTokenFile, 'utf8').trim()}`, 'content-type': 'application/json' };
      const createToken = () => fedFetch(fed!, `/api/v1/tokens`, { method: 'POST', headers: auth, body: JSON.stringify({ namespace: 'default', serviceAccount: 'disk', ttl: '1h' }) });
      assert.equal((await createToken()).status, 200);
      const filler = fill(mountPoint);
      const refused = await eventually(async () => {
        const r = await createToken();
        return r.status !== 200 && r;
      }, 20_000, 'a token write to fail');
      assert.equal(refused.status, 503);
      assert.equal(((await refused.json()) as { code: string }).code, 'KEDGE_STORE_IO');
      const notReady = await fedFetch(fed, `/readyz`);
      assert.equal(notReady.status, 503);
      const body = (await notReady.json()) as { checks: { name: string; ok: boolean; error?: string }[] };
      assert.match(body.checks.find((c) => c.name === 'store')?.error ?? '', /ENOSPC/);
      assert.equal((await fedFetch(fed, `/healthz`)).status, 200, 'alive, only not ready');

      fs.rmSync(filler);
      await eventually(async () => (await fedFetch(fed!, `/readyz`)).status === 200, 15_000, '/readyz 200 after space returned');
      assert.equal((await createToken()).status, 200);
      const tokensBefore = ((await (await fedFetch(fed, `/api/v1/tokens`, { headers: auth })).json()) as unknown[]).length;

      await fed.proc.stop('SIGTERM');
      fed = await restartFederationProc(fed);
      const tokensAfter = ((await (await fedFetch(fed, `/api/v1/tokens`, { headers: auth })).json()) as unknown[]).length;
      assert.equal(tokensAfter, tokensBefore, 'every acknowledged token kept, no refused one came back');
    });
  });
});
