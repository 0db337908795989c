// The etcd store against an etcd secured the way production ones are: TLS
// with client certificates (--client-cert-auth) and RBAC users. The shared
// conformance suite runs over it; then the errors a wrong CA, a missing
// client certificate, a wrong password, no user, and a missing permission
// give; then a watch that outlives its auth token (an etcd restart drops
// every simple token); then a federation process on it.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openEtcdStore } from '../../federation/store/etcd';
import { EtcdRpc, type EtcdSecurity } from '../../federation/store/etcd-rpc';
import type { Store, WatchEvent } from '../../federation/store/types';
import { hasCode, KedgeError } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';
import { startEtcd, type EtcdServer } from '../support/etcd';
import { makeCa, makeLeafWithSan } from '../support/pki';
import { storeConformance, waitFor } from '../support/store-conformance';
import { runKedge, tempDir } from '../support/procs';
import { federationEndpoints, startAgentProc, startFederationProc, startHttpApp, type AgentHandle, type FederationHandle } from '../support/mesh';

const PREFIX = '/kedge-test/';
const ca = makeCa('etcd-test-ca');
const serving = makeLeafWithSan(ca, 'IP:127.0.0.1');
const client = makeLeafWithSan(ca, 'DNS:kedge-federation');
const otherCa = makeCa('etcd-other-ca');
const intruder = makeLeafWithSan(otherCa, 'DNS:intruder');

const tls = { caPem: ca.certPem, certPem: client.certPem, keyPem: client.keyPem };
const secure: EtcdSecurity = { tls, auth: { username: 'kedge', password: 'kedge-pw' } };

let etcd: EtcdServer;
let files: string;

const open = (security: EtcdSecurity = secure, prefix = PREFIX, server: EtcdServer = etcd) =>
  openEtcdStore([server.endpoint], { logger: silentLogger(), prefix, security, dialTimeoutMs: 2_000, requestTimeoutMs: 2_000 });

async function rejects(p: Promise<unknown>, code: string, ...patterns: RegExp[]): Promise<KedgeError> {
  let caught: unknown;
  await p.then((v) => assert.fail(`expected ${code}, resolved with ${String(v)}`), (err: unknown) => (caught = err));
  assert.ok(hasCode(caught, code), `expected ${code}, got ${String(caught)}`);
  for (const re of patterns) assert.match((caught as Error).message, re);
  return caught as KedgeError;
}

/** Starts a TLS etcd with client-cert-auth and enables auth: root, and user kedge with readwrite on PREFIX and /kedge/. */
async function startSecureEtcd(dir: string): Promise<EtcdServer> {
  const server = await startEtcd({ tls: { certFile: path.join(dir, 'server.crt'), keyFile: path.join(dir, 'server.key'), caFile: path.join(dir, 'ca.crt'), clientCertAuth: true } });
  const admin = new EtcdRpc([server.endpoint], 5_000, () => new KedgeError('KEDGE_STORE_CLOSED', 'closed'), { tls }).client;
  try {
    await admin.user('root').create('root-pw');
    await admin.user('root').addRole('root');
    await admin.role('kedge').create();
    await admin.role('kedge').grant({ permission: 'Readwrite', range: admin.range({ prefix: PREFIX }) });
    await admin.role('kedge').grant({ permission: 'Readwrite', range: admin.range({ prefix: '/kedge/' }) });
    await admin.user('kedge').create('kedge-pw');
    await admin.user('kedge').addRole('kedge');
    await admin.role('outsider').create();
    await admin.role('outsider').grant({ permission: 'Readwrite', range: admin.range({ prefix: '/elsewhere/' }) });
    await admin.user('outsider').create('outsider-pw');
    await admin.user('outsider').addRole('outsider');
    await admin.auth.authEnable({});
  } finally {
    admin.close();
  }
  return server;
}

before(async () => {
  files = tempDir('etcd-tls');
  const write = (name: string, text: string) => fs.writeFileSync(path.join(files, name), text, { mode: 0o600 });
  write('ca.crt', ca.certPem);
  write('server.crt', serving.certPem);
  write('server.key', serving.keyPem);
  write('client.crt', client.certPem);
  write('client.key', client.keyPem);
  write('password', 'kedge-pw\n');
  write('wrong-password', 'not-it\n');
  write('outsider-password', 'outsider-pw\n');
  etcd = await startSecureEtcd(files);
});
after(async () => {
  await etcd?.destroy();
});

storeConformance('etcd over TLS with a client certificate and an RBAC user', async () => {
  const store = await open();
  return { store, cleanup: () => store.close() };
});

describe('etcd store on a secured etcd: what goes wrong says so', () => {
  it('refuses an etcd whose certificate another CA signed', async () => {
    await rejects(open({ ...secure, tls: { ...tls, caPem: otherCa.certPem } }), 'KEDGE_STORE_UNAVAILABLE',
      /cannot connect to etcd at 127\.0\.0\.1:\d+: the TLS handshake with 127\.0\.0\.1:\d+ failed: .*certificate/i, /check that --etcd-ca is the CA that signed etcd's serving certificate/);
  });

  it('is refused without a client certificate, or with one from another CA, and says which', async () => {
    await rejects(open({ ...secure, tls: { caPem: ca.certPem } }), 'KEDGE_STORE_UNAVAILABLE', /cannot connect to etcd/, /requires a client certificate/, /--etcd-cert and --etcd-key signed by a CA etcd trusts/);
    await rejects(open({ ...secure, tls: { ...tls, certPem: intruder.certPem, keyPem: intruder.keyPem } }), 'KEDGE_STORE_UNAVAILABLE', /cannot connect to etcd/, /refused the client certificate/);
  });

  it('is refused without TLS, and says TLS may be missing', async () => {
    await rejects(open({ auth: secure.auth! }), 'KEDGE_STORE_UNAVAILABLE', /cannot connect to etcd/, /accepts connections but not plaintext gRPC: if etcd serves TLS .* give --etcd-ca/);
  });

  it('says so when TLS is given for a plaintext etcd', async () => {
    const plain = await startEtcd();
    try {
      await rejects(open({ tls }, PREFIX, plain), 'KEDGE_STORE_UNAVAILABLE', /cannot connect to etcd/, /TLS handshake with 127\.0\.0\.1:\d+ failed .*if etcd serves plaintext/);
    } finally {
      await plain.destroy();
    }
  });

  it('names a wrong password', async () => {
    await rejects(open({ tls, auth: { username: 'kedge', password: 'wrong' } }), 'KEDGE_STORE_AUTH', /refused user "kedge"/, /wrong user name or password/, /etcdPasswordFile/);
  });

  it('names a missing user when auth is on, and a missing permission', async () => {
    const anonymous = await open({ tls }).catch((err: unknown) => err);
    if (anonymous instanceof Error) {
      assert.ok(hasCode(anonymous, 'KEDGE_STORE_AUTH'), String(anonymous));
    } else {
      await rejects((anonymous as Store).put('/k', 'v'), 'KEDGE_STORE_AUTH', /authentication is enabled/, /etcdUser/);
      await (anonymous as Store).close();
    }
    // The user may write under PREFIX and /kedge/ only.
    const outside = await open(secure, '/elsewhere/');
    try {
      await rejects(outside.put('/k', 'v'), 'KEDGE_STORE_AUTH', /denied put "\/k" to user "kedge"/, /grant-permission/);
      await rejects(outside.get('/k'), 'KEDGE_STORE_AUTH', /denied get "\/k"/);
      const errors: Error[] = [];
      const w = outside.watch('/w/', {}, () => undefined, (err) => errors.push(err));
      await waitFor(() => errors.length > 0, 10_000, 'the watch to fail');
      assert.ok(hasCode(errors[0], 'KEDGE_STORE_AUTH'), String(errors[0]));
      assert.match(errors[0]!.message, /denied the watch on "\/w\/" to user "kedge"/);
      w.close();
    } finally {
      await outside.close();
    }
  });
});

describe('etcd store on a secured etcd: tokens', () => {
  it('a watch and a lease outlive an etcd restart, which drops every auth token', { timeout: 60_000 }, async () => {
    const dir = tempDir('etcd-tls-restart');
    for (const f of fs.readdirSync(files)) fs.copyFileSync(path.join(files, f), path.join(dir, f));
    const server = await startSecureEtcd(dir);
    const a = await open(secure, PREFIX, server);
    const b = await open(secure, PREFIX, server);
    try {
      const { revision } = await a.put('/r/before', '0');
      const events: WatchEvent[] = [];
      const errors: Error[] = [];
      const w = a.watch('/r/', { fromRevision: revision }, (batch) => events.push(...batch), (err) => errors.push(err));
      await b.put('/r/one', '1');
      await waitFor(() => events.length === 1, 5_000, 'the first event');
      const lease = await a.grantLease(30_000);
      await a.put('/r/leased', 'x', { lease });

      await server.restart();

      // Written by the other store after the restart: the watch reconnects
      // with a token etcd no longer knows, is cancelled, authenticates again.
      await b.put('/r/two', '2');
      await waitFor(() => events.length === 3, 15_000, 'the events after the restart');
      const keys = events.map((e) => (e.type === 'put' ? e.kv.key : e.key));
      assert.deepEqual(keys, ['/r/one', '/r/leased', '/r/two']);
      assert.deepEqual(errors, [], 'the watch never failed');
      assert.equal(await a.keepAlive(lease), true, 'the lease is renewed after the restart');
      assert.equal((await a.get('/r/leased'))?.value, 'x');
      w.close();
    } finally {
      await a.close();
      await b.close();
      await server.destroy();
    }
  });
});

describe('a federation on a secured etcd', () => {
  let fed: FederationHandle | undefined;
  const agents: AgentHandle[] = [];
  const apps: { close(): Promise<void> }[] = [];
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    await Promise.all(apps.map((a) => a.close()));
  });
  const flags = (passwordFile: string, user = 'kedge') => [
    '--store', `etcd://${etcd.endpoint}`,
    '--etcd-ca', path.join(files, 'ca.crt'), '--etcd-cert', path.join(files, 'client.crt'), '--etcd-key', path.join(files, 'client.key'),
    '--etcd-user', user, '--etcd-password-file', path.join(files, passwordFile),
  ];

  it('exits at start with what is wrong: a wrong password, a user without permission on /kedge/, an unreadable CA file', async () => {
    const wrong = await runKedge(['federation', '--data-dir', tempDir('fed-wrong'), '--listen-grpc', '127.0.0.1:0', '--listen-http', '127.0.0.1:0', ...flags('wrong-password')]);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /KEDGE_STORE_AUTH|refused user "kedge"/);
    assert.match(wrong.stderr, /wrong user name or password/);
    const outsider = await runKedge(['federation', '--data-dir', tempDir('fed-outsider'), '--listen-grpc', '127.0.0.1:0', '--listen-http', '127.0.0.1:0', ...flags('outsider-password', 'outsider')]);
    assert.notEqual(outsider.code, 0);
    assert.match(outsider.stderr, /denied .* to user "outsider"/);
    assert.match(outsider.stderr, /grant-permission ROLE --prefix=true readwrite \/kedge\//);
    const noCa = await runKedge(['federation', '--data-dir', tempDir('fed-noca'), '--listen-grpc', '127.0.0.1:0', '--listen-http', '127.0.0.1:0', ...flags('password').map((f) => (f.endsWith('ca.crt') ? path.join(files, 'missing-ca.crt') : f))]);
    assert.notEqual(noCa.code, 0);
    assert.match(noCa.stderr, /cannot read the etcd CA file \(--etcd-ca\) .*missing-ca\.crt: ENOENT/);
  });

  it('serves the mesh: an agent joins and registers through it', { timeout: 60_000 }, async () => {
    fed = await startFederationProc({ args: flags('password') });
    const app = await startHttpApp('alpha');
    apps.push(app);
    agents.push(await startAgentProc(fed, {
      name: 'alpha', namespace: 'default', serviceAccount: 'alpha', address: '127.0.52.1',
      services: [{ name: 'alpha', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }],
    }));
    await waitFor(async () => (await federationEndpoints(fed!, 'alpha.default')).length === 1, 15_000, 'alpha registered');
  });
});
