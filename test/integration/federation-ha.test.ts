// Two federation replicas on one real etcd: agents on either replica see
// each other's services; kill -9 of a replica moves its agents to the other
// without their endpoints disappearing; an etcd restart loses nothing; an
// etcd that refuses writes costs new writes only.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import YAML from 'yaml';
import { startEtcd, EtcdServer } from '../support/etcd';
import type { Etcd3 } from 'etcd3';
import { EtcdRpc } from '../../federation/store/etcd-rpc';
import { KedgeError } from '../../proto/model/errors';
import { KedgeProcess, eventually, runKedge } from '../support/procs';
import { fedFetch, AgentHandle, FederationHandle, agentSeesEndpoints, createToken, federationEndpoints, getJson, httpGet, spawnAgentProc, startAgentProc, startFederationProc, startHttpApp, writeFederationConfig } from '../support/mesh';

describe('federation replicas on etcd', () => {
  let etcd: EtcdServer;
  let r1: FederationHandle;
  let r2: FederationHandle;
  const agents: AgentHandle[] = [];
  const apps: { close(): Promise<void> }[] = [];
  before(async () => {
    etcd = await startEtcd();
    const store = `etcd://${etcd.endpoint}`;
    r1 = await startFederationProc({ args: ['--store', store, '--replica', 'r1', '--grace-period', '4s'] });
    r2 = await startFederationProc({ args: ['--store', store, '--replica', 'r2', '--grace-period', '4s'] });
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await Promise.all([r1?.proc.stop('SIGKILL'), r2?.proc.stop('SIGKILL')]);
    await Promise.all(apps.map((a) => a.close()));
    await etcd?.destroy();
  });

  it('replicas share one CA and one admin token', () => {
    assert.equal(fs.readFileSync(r1.rootCertFile, 'utf8'), fs.readFileSync(r2.rootCertFile, 'utf8'));
    assert.equal(fs.readFileSync(r1.adminTokenFile, 'utf8'), fs.readFileSync(r2.adminTokenFile, 'utf8'));
  });

  it('agents on different replicas see each other and send traffic', async () => {
    const appA = await startHttpApp('alpha');
    const appB = await startHttpApp('beta');
    apps.push(appA, appB);
    // A token made on one replica is good on the other.
    const tokenA = await createToken(r2, 'default', 'alpha', ['--workload', 'alpha', '--labels', 'app=alpha', '--service', 'alpha']);
    const a = await startAgentProc(r1, {
      name: 'alpha', namespace: 'default', serviceAccount: 'alpha', address: '127.0.50.1', token: tokenA,
      services: [{ name: 'alpha', ports: [{ name: 'http', port: 9080, targetPort: appA.port }] }],
      upstreams: [{ service: 'beta.default', port: 9080 }],
      federationAddresses: [r1.grpc, r2.grpc],
    });
    agents.push(a);
    const b = await startAgentProc(r2, {
      name: 'beta', namespace: 'default', serviceAccount: 'beta', address: '127.0.50.2',
      services: [{ name: 'beta', ports: [{ name: 'http', port: 9080, targetPort: appB.port }] }],
      upstreams: [{ service: 'alpha.default', port: 9080 }],
      federationAddresses: [r2.grpc, r1.grpc],
    });
    agents.push(b);
    assert.equal(a.proc.logs.find((l) => l.msg === 'registered with the federation')?.replica, 'r1');
    assert.equal(b.proc.logs.find((l) => l.msg === 'registered with the federation')?.replica, 'r2');
    await agentSeesEndpoints(a, 'beta.default', 1);
    await agentSeesEndpoints(b, 'alpha.default', 1);
    assert.equal(await httpGet(a.upstreams[0]!), 'beta');
    assert.equal(await httpGet(b.upstreams[0]!), 'alpha');
    // Either replica lists every agent, with what the holding replica last
    // recorded (written every few seconds) for the agents it does not hold.
    type Row = { agent: string; replica: string; ackedVersion: string; certNotAfter?: string; subscriptions: string[] };
    const status = await eventually(async () => {
      const rows = JSON.parse((await runKedge(['status', '-o', 'json', '--federation', r2.httpsUrl, '--admin-token-file', r2.adminTokenFile])).stdout) as Row[];
      return rows.every((r) => r.ackedVersion !== '' && r.certNotAfter) ? rows : undefined;
    }, 15_000, 'acked versions of both agents in r2\'s status');
    assert.deepEqual(status.map((s) => [s.agent, s.replica, s.subscriptions]), [['default/alpha', 'r1', ['beta.default']], ['default/beta', 'r2', ['alpha.default']]]);
  });

  it('kill -9 of a replica: its agents move to the other, endpoints stay visible', async () => {
    const [a, b] = agents;
    // Watch from B's side, every 100 ms, that alpha stays in its view.
    let missing = 0;
    let stop = false;
    const watcher = (async () => {
      while (!stop) {
        const cfg = await getJson<{ services: { key: string; endpoints: unknown[] }[] }>(`${b!.adminUrl}/config`).catch(() => undefined);
        if (cfg && cfg.services.find((s) => s.key === 'alpha.default')?.endpoints.length !== 1) missing += 1;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await r1.proc.stop('SIGKILL');
    await eventually(() => a!.proc.logs.some((l) => l.msg === 'registered with the federation' && l.replica === 'r2'), 20_000, 'alpha to move to r2');
    await new Promise((r) => setTimeout(r, 5_000)); // past the 4 s grace period of r1's lease
    stop = true;
    await watcher;
    assert.equal(missing, 0, 'alpha never left beta\'s view');
    assert.equal(await httpGet(b!.upstreams[0]!), 'alpha');
  });

  it('an etcd restart loses nothing', async () => {
    const [a, b] = agents;
    await etcd.stop();
    // The data path keeps working on the agents' last snapshots.
    assert.equal(await httpGet(a!.upstreams[0]!), 'beta');
    await etcd.restart();
    const token = await eventually(() => createToken(r2, 'default', 'gamma').catch(() => undefined), 20_000, 'tokens to work again');
    assert.match(token, /^kedge1\./);
    const eps = await eventually(async () => {
      const rows = JSON.parse((await runKedge(['get', 'endpoints', '-o', 'json', '--federation', r2.httpsUrl, '--admin-token-file', r2.adminTokenFile])).stdout) as { service: string }[];
      return rows.length === 2 ? rows : undefined;
    }, 20_000, 'both registrations after the etcd restart');
    assert.deepEqual(eps.map((e) => e.service).sort(), ['alpha.default', 'beta.default']);
    assert.equal(await httpGet(b!.upstreams[0]!), 'alpha');
    assert.ok(YAML.stringify(eps));
  });
});

describe('a federation whose etcd refuses writes (NOSPACE alarm)', () => {
  let etcd: EtcdServer;
  let fed: FederationHandle;
  let client: Etcd3;
  const agents: AgentHandle[] = [];
  const procs: KedgeProcess[] = [];
  const apps: { close(): Promise<void> }[] = [];
  before(async () => {
    etcd = await startEtcd({ args: [`--quota-backend-bytes=${1024 * 1024}`] });
    // etcd3's own client with the store's fault handling (no circuit breaker that a refused write would open).
    client = new EtcdRpc([etcd.endpoint], 5_000, () => new KedgeError('KEDGE_STORE_CLOSED', 'closed')).client;
    const file = writeFederationConfig({
      serviceEntries: [{ name: 'billing-db', namespace: 'shop', ports: [{ name: 'pg', port: 5432, protocol: 'tcp' }], endpoints: [{ address: '10.1.2.3' }] }],
    });
    fed = await startFederationProc({ args: ['--config', file, '--store', `etcd://${etcd.endpoint}`, '--grace-period', '3s'] });
  });
  after(async () => {
    await Promise.all([...agents.map((a) => a.proc), ...procs].map((p) => p.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    await Promise.all(apps.map((a) => a.close()));
    client?.close();
    await etcd?.destroy();
  });

  it('keeps serving what it has, fails new writes with a clear error, and recovers once space is freed', { timeout: 90_000 }, async () => {
    const app = await startHttpApp('alpha');
    apps.push(app);
    agents.push(await startAgentProc(fed, {
      name: 'alpha', namespace: 'default', serviceAccount: 'alpha', address: '127.0.51.1',
      services: [{ name: 'alpha', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }],
    }));
    await eventually(async () => (await federationEndpoints(fed, 'alpha.default')).length === 1, 15_000, 'alpha registered');
    const betaToken = await createToken(fed, 'default', 'beta', ['--workload', 'beta', '--labels', 'app=beta', '--service', 'beta']);

    // Fill etcd until it raises its NOSPACE alarm.
    const chunk = 'x'.repeat(100 * 1024);
    let refused: unknown;
    for (let i = 0; i < 40 && refused === undefined; i++) await client.put(`/fill/${i}`).value(chunk).catch((err: unknown) => (refused = err));
    assert.match(String(refused), /NOSPACE|space exceeded/i, 'etcd refused a write');

    // An admin write fails, naming the store and what to do.
    const tok = await runKedge(['token', 'create', '--namespace', 'default', '--service-account', 'gamma', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.notEqual(tok.code, 0);
    assert.match(tok.stderr, /NOSPACE/);
    assert.match(tok.stderr, /alarm disarm/);

    // What the federation has stays: alpha (its lease is renewed through
    // the alarm) past the grace period, and the static entry.
    await new Promise((r) => setTimeout(r, 3_500));
    assert.equal((await federationEndpoints(fed, 'alpha.default')).length, 1, 'alpha kept past the grace period');
    assert.equal((await federationEndpoints(fed, 'billing-db.shop')).length, 1, 'the static entry kept');
    const health = await fedFetch(fed, `/healthz`);
    assert.equal(health.status, 200, 'the federation is up');

    // A new agent cannot join (its Sign consumes a token use: a write); it keeps retrying.
    const b = await spawnAgentProc(fed, {
      name: 'beta', namespace: 'default', serviceAccount: 'beta', address: '127.0.51.2', token: betaToken,
      services: [{ name: 'beta', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }],
    });
    procs.push(b.proc);
    // Its join is refused, and it says why (space is freed only after that).
    const why = await b.proc.waitForLog((l) => Number(l.level) >= 40 && /NOSPACE/i.test(String(l.err ?? '')), 20_000, 'the agent logging why it cannot join');
    assert.equal(why.msg, 'the federation could not sign now; will retry');

    // Free the space the way etcd's docs say: delete, compact, defragment, disarm.
    await client.delete().prefix('/fill/');
    const { header } = await client.kv.range({ key: Buffer.from('/'), limit: 1 });
    await client.kv.compact({ revision: header.revision, physical: true });
    await client.maintenance.defragment();
    // `etcdctl alarm disarm`: deactivate each raised alarm by its member.
    const { alarms } = await client.maintenance.alarm({ action: 'Get', memberID: 0, alarm: 'None' });
    assert.ok(alarms.length > 0);
    for (const a of alarms) await client.maintenance.alarm({ action: 'Deactivate', memberID: a.memberID, alarm: a.alarm });

    await b.proc.waitForMsg('registered with the federation', 30_000);
    await eventually(async () => (await federationEndpoints(fed, 'beta.default')).length === 1, 30_000, 'beta registered once etcd takes writes again');
    assert.equal((await federationEndpoints(fed, 'alpha.default')).length, 1);
  });
});
