// The CA private key encrypted in the store under the operator's
// key-encryption key, with real federation and agent processes: created
// encrypted, a restart without the key (serves, cannot sign, says so; a join
// waits without spending its token), a wrong key (refuses to start), the
// key from the environment; and an unencrypted store migrated by the first
// start with a key from a command.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startKedge, tempDir, eventually, runKedge, type KedgeProcess } from '../support/procs';
import { fedFetch, AgentHandle, FederationHandle, getJson, grantFlags, spawnAgentProc, startAgentProc, startFederationProc } from '../support/mesh';

/** Every file of the embedded store, concatenated: what an attacker with the data dir reads. */
function storeText(fed: FederationHandle): string {
  const read = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? read(path.join(dir, e.name)) : [fs.readFileSync(path.join(dir, e.name), 'utf8')]));
  return read(path.join(fed.dataDir, 'store')).join('\n');
}

/** Starts the federation again on the same data dir and ports with other CA key flags (and environment). */
async function restartWith(fed: FederationHandle, keyArgs: string[], env: NodeJS.ProcessEnv = {}): Promise<FederationHandle> {
  const args = withoutKeyFlags(fed.args);
  args[args.indexOf('--listen-grpc') + 1] = fed.grpc;
  args[args.indexOf('--listen-http') + 1] = fed.httpAddress;
  args.push(...keyArgs);
  const proc = startKedge('federation', args, { env });
  await proc.waitForMsg('federation ready', 20_000);
  return { ...fed, proc, args };
}

function withoutKeyFlags(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--ca-key-encryption-key-file' || args[i] === '--ca-key-command') i++;
    else out.push(args[i]!);
  }
  return out;
}

async function startFails(fed: FederationHandle, keyArgs: string[]): Promise<{ code: number | null; stderr: string }> {
  const args = [...withoutKeyFlags(fed.args), ...keyArgs];
  const proc: KedgeProcess = startKedge('federation', args);
  const { code } = await proc.exited;
  return { code, stderr: proc.raw.join('\n') };
}

const cannotSign = (l: { msg?: string }) => String(l.msg).startsWith('this federation cannot sign certificates');
const registrations = (a: AgentHandle) => a.proc.logs.filter((l) => l.msg === 'registered with the federation').length;

describe('CA key encrypted under the operator key', () => {
  let fed: FederationHandle;
  const agents: KedgeProcess[] = [];
  const keys = tempDir('kek');
  const kekFile = path.join(keys, 'kek');
  const wrongFile = path.join(keys, 'wrong');
  before(async () => {
    fs.writeFileSync(kekFile, 'K3dge-test-key-encryption-key-0123456789\n', { mode: 0o600 });
    fs.writeFileSync(wrongFile, 'not-the-key-that-encrypted-the-ca-key\n', { mode: 0o600 });
    // --insecure-http: while its CA key is unavailable the federation cannot
    // issue the HTTPS certificate of its HTTP port; this test then talks to
    // it over plain HTTP on loopback.
    fed = await startFederationProc({ args: ['--insecure-http', '--ca-key-encryption-key-file', kekFile] });
  });
  after(async () => {
    await Promise.all(agents.map((p) => p.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
  });

  it('creates the root with its key encrypted: no private key in the store files', async () => {
    assert.ok(fed.proc.logs.some((l) => l.msg === 'created a new self-signed root CA' && l.keyEncrypted === true));
    const text = storeText(fed);
    assert.ok(text.includes('/kedge/ca/root'), 'the CA record is in the store');
    assert.ok(!text.includes('PRIVATE KEY'), 'no PEM private key anywhere in the store');
    assert.ok(!fed.proc.logs.some((l) => /UNENCRYPTED/.test(String(l.msg))));
    const a = await startAgentProc(fed, { name: 'web', namespace: 'default', serviceAccount: 'web', address: '127.0.33.1' });
    agents.push(a.proc);
    const status = await runKedge(['ca', 'status', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.match(status.stdout, /key encrypted, can sign/);
  });

  it('without the key: serves agents and discovery, cannot sign, says so in logs, /readyz, kedge ca status and to a joining agent', async () => {
    const web = { proc: agents[0]!, spec: { name: 'web' } } as unknown as AgentHandle;
    const before = registrations(web);
    await fed.proc.stop('SIGTERM');
    fed = await restartWith(fed, []);
    const line = await fed.proc.waitForLog(cannotSign, 10_000, 'the cannot-sign error');
    assert.equal(line.level, 50);
    assert.match(String(line.msg), /agents keep connecting and receiving updates, but joins and renewals are refused until the CA key is available/);
    assert.match(String(line.reason), /encrypted and no key-encryption key is configured; give it with --ca-key-encryption-key-file FILE, the environment variable KEDGE_CA_KEY_ENCRYPTION_KEY or --ca-key-command CMD/);

    // HTTPS needs a certificate from the CA, which cannot sign now: plain HTTP from loopback (--insecure-http) still answers.
    const plain = `http://${fed.httpAddress}`;
    const handshake = await fedFetch(fed, '/healthz').then(() => 'served', (err: Error) => err.message);
    assert.notEqual(handshake, 'served', 'no HTTPS without the CA key');
    const refusedTls = await fed.proc.waitForMsg('HTTPS connection refused: no serving certificate', 5_000);
    assert.match(String(refusedTls.err), /no HTTPS certificate: .*make the CA key available \(or, on loopback, start with --insecure-http\)/);
    // Not ready (the CA check fails, naming why), though it serves.
    const ready = await fetch(`${plain}/readyz`);
    assert.equal(ready.status, 503);
    const body = (await ready.json()) as { checks: { name: string; ok: boolean; error?: string }[] };
    const caCheck = body.checks.find((c) => c.name === 'ca')!;
    assert.equal(caCheck.ok, false);
    assert.match(caCheck.error ?? '', /the CA cannot sign: this federation cannot sign certificates now: the CA private key in the store is encrypted and no key-encryption key/);
    const status = await runKedge(['ca', 'status', '--federation', plain, '--insecure-http', '--admin-token-file', fed.adminTokenFile]);
    assert.match(status.stdout, /CANNOT SIGN: the CA private key in the store is encrypted/);
    const rotate = await runKedge(['ca', 'rotate', '--federation', plain, '--insecure-http', '--admin-token-file', fed.adminTokenFile]);
    assert.equal(rotate.code, 1);
    assert.match(rotate.stderr, /cannot rotate the CA on a replica that cannot sign[\s\S]*KEDGE_CA_KEY_UNAVAILABLE/);

    // The agent that already has a certificate reconnects (the federation
    // serves with its saved serving certificate).
    await eventually(() => registrations(web) > before, 20_000, 'web to reconnect');

    // A joining agent gets a clear refusal and retries; its token is not spent.
    const spec = { name: 'late', namespace: 'default', serviceAccount: 'late', address: '127.0.33.2' };
    // Over plain HTTP: HTTPS on the HTTP port needs a certificate from the CA, which cannot sign now.
    const made = await runKedge(['token', 'create', '--namespace', 'default', '--service-account', 'late', ...grantFlags(spec), '--federation', plain, '--insecure-http', '--admin-token-file', fed.adminTokenFile]);
    assert.equal(made.code, 0, made.stderr);
    const token = made.stdout.trim();
    const late = await spawnAgentProc(fed, { ...spec, token });
    agents.push(late.proc);
    const refused = await late.proc.waitForLog((l) => l.code === 'KEDGE_CA_KEY_UNAVAILABLE', 20_000, 'a refused join');
    assert.equal(refused.msg, 'the federation could not sign now; will retry');
    assert.match(String(refused.err), /this federation cannot sign certificates now: the CA private key in the store is encrypted/);
    await fed.proc.waitForLog((l) => l.msg === 'Sign refused' && l.code === 'KEDGE_CA_KEY_UNAVAILABLE', 5_000, 'the refusal in the federation log');
    assert.ok(!fed.proc.logs.some((l) => l.msg === 'signed workload certificate'));
  });

  it('a wrong key is a clear error at start, never a plaintext fallback', async () => {
    await fed.proc.stop('SIGTERM');
    const r = await startFails(fed, ['--ca-key-encryption-key-file', wrongFile]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the CA private key in the store cannot be decrypted with the key-encryption key from --ca-key-encryption-key-file .*wrong: it is not the key the CA key was encrypted with[\s\S]*KEDGE_CA_KEY_WRONG/);
    const short = path.join(keys, 'short');
    fs.writeFileSync(short, 'tooshort\n');
    const s = await startFails(fed, ['--ca-key-encryption-key-file', short]);
    assert.equal(s.code, 1);
    assert.match(s.stderr, /is 8 bytes; give at least 16[\s\S]*KEDGE_CA_KEK_INVALID/);
    assert.ok(!storeText(fed).includes('PRIVATE KEY'), 'nothing was written back unencrypted');
  });

  it('with the key from the environment it signs again, and the waiting agent joins with its unspent token', async () => {
    fed = await restartWith(fed, [], { KEDGE_CA_KEY_ENCRYPTION_KEY: fs.readFileSync(kekFile, 'utf8') });
    assert.ok(!fed.proc.logs.some((l) => cannotSign(l)));
    const late = agents[1]!;
    await late.waitForMsg('joined the mesh', 40_000);
    await late.waitForMsg('registered with the federation', 20_000);
    const ready = await fedFetch(fed, `/readyz`);
    const body = (await ready.json()) as { checks: { name: string; ok: boolean }[] };
    assert.equal(body.checks.find((c) => c.name === 'ca')?.ok, true);
  });
});

describe('an unencrypted CA key migrated when a key is first supplied', () => {
  let fed: FederationHandle;
  const keys = tempDir('kek');
  const kekFile = path.join(keys, 'kek');
  const agents: KedgeProcess[] = [];
  before(async () => {
    fs.writeFileSync(kekFile, 'migration-key-encryption-key-0123456789\n', { mode: 0o600 });
    fed = await startFederationProc();
  });
  after(async () => {
    await Promise.all(agents.map((p) => p.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
  });

  it('warns loudly while unencrypted, encrypts at the first start with a key (from a command), and keeps the same root', async () => {
    const warning = await fed.proc.waitForLog((l) => /THE CA PRIVATE KEY IS STORED UNENCRYPTED/.test(String(l.msg)), 5_000, 'the plaintext warning');
    assert.equal(warning.level, 40);
    assert.ok(storeText(fed).includes('PRIVATE KEY'), 'before: the key is in the store in the clear');
    const rootBefore = fs.readFileSync(fed.rootCertFile, 'utf8');
    await fed.proc.stop('SIGTERM');

    // A failing command first: the replica serves, cannot sign, and says why.
    fed = await restartWith(fed, ['--ca-key-command', 'echo "vault is sealed" >&2; exit 7']);
    const failed = await fed.proc.waitForMsg('cannot obtain the CA key-encryption key; this replica serves but cannot sign until it can');
    assert.match(String(failed.err), /--ca-key-command "echo \\"vault is sealed\\" >&2; exit 7" failed \(7\): vault is sealed/);
    assert.ok(storeText(fed).includes('PRIVATE KEY'), 'nothing migrated without the key');
    await fed.proc.stop('SIGTERM');

    fed = await restartWith(fed, ['--ca-key-command', `cat ${kekFile}`]);
    await fed.proc.waitForMsg('encrypted the CA private key in the store with the key-encryption key (it was stored unencrypted); every replica now needs that key to sign');
    assert.ok(!storeText(fed).includes('PRIVATE KEY'), 'after: no private key in any store file, the log included');
    assert.equal(fs.readFileSync(fed.rootCertFile, 'utf8'), rootBefore, 'the same root: agents notice nothing');
    const a = await startAgentProc(fed, { name: 'api', namespace: 'default', serviceAccount: 'api', address: '127.0.33.3' });
    agents.push(a.proc);
    const certs = await getJson<{ trustBundlePem: string }>(`${a.adminUrl}/certs`);
    assert.equal(certs.trustBundlePem, rootBefore);

    // The next start reads the encrypted key (and does not migrate again).
    await fed.proc.stop('SIGTERM');
    fed = await restartWith(fed, ['--ca-key-encryption-key-file', kekFile]);
    assert.ok(!fed.proc.logs.some((l) => /encrypted the CA private key/.test(String(l.msg)) || cannotSign(l)));
  });
});
