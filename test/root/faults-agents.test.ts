// Fault suite, the data plane: an agent SIGKILLed and restarted on its data
// dir (one of two server agents, where the mesh can mask it, and the client's
// own agent, where it cannot), and an app that accepts connections and never
// answers. Each case reports what was lost, exactly which requests failed and
// the time to recover (a `# fault` line; docs/RELIABILITY.md).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type FederationHandle, agentSeesEndpoints, getJson, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import { type MeshPair, SteadyLoad, reportFault, startMeshPair } from '../support/faults';
import { eventually, runKedge, tempDir } from '../support/procs';

/** A free loopback port right now (for a listener that must come back on the same port). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().once('error', reject).listen(0, host, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

describe('fault: agents and apps', () => {
  let fed: FederationHandle;
  const cleanups: (() => Promise<unknown>)[] = [];
  before(async () => {
    fed = await startFederationProc({ args: ['--grace-period', '3s'] });
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c();
    await fed?.proc.stop('SIGKILL');
  });

  it('SIGKILL of one of two server agents and its restart: no request fails', { timeout: 90_000 }, async () => {
    const pair = await startMeshPair(fed, { name: 'ak', net: '127.0.64', servers: 2 });
    cleanups.push(() => pair.close());
    const load = new SteadyLoad(pair.upstream, { expectBody: 'ak' });
    await load.moreOk(10);
    const victim = pair.servers[0]!;
    await victim.proc.stop('SIGKILL');
    // The dead endpoint's connects fail and are retried on the other one; it leaves the view after the grace period.
    await load.moreOk(40);
    const hitsBefore = pair.apps[0]!.hits;
    const restartedAt = Date.now();
    const again = await startAgentProc(fed, { ...victim.spec, dataDir: victim.dataDir });
    pair.servers[0] = again;
    await eventually(() => pair.apps[0]!.hits > hitsBefore, 30_000, 'the restarted endpoint to serve requests again');
    const recoverMs = Date.now() - restartedAt;
    await load.moreOk(20);
    await load.stop();
    assert.ok(!again.proc.logs.some((l) => l.msg === 'joining with token'), 'restarted from its data dir, no new join');
    reportFault({ fault: 'server agent SIGKILL (1 of 2), restart', lost: [], requests: load.outcomes.length, failed: load.failed.length, recoverMs, recoveredWhen: 'the restarted endpoint served requests again' });
    assert.deepEqual(load.failed, []);
  });

  it("SIGKILL of the client's own agent: only requests made while it was down fail", { timeout: 90_000 }, async () => {
    const listen = `127.0.65.100:${await freePort('127.0.65.100')}`;
    const pair = await startMeshPair(fed, { name: 'ck', net: '127.0.65', clientListen: listen });
    cleanups.push(() => pair.close());
    const load = new SteadyLoad(pair.upstream, { expectBody: 'ck' });
    await load.moreOk(10);
    const victim = pair.client;
    const killedAt = Date.now();
    await victim.proc.stop('SIGKILL');
    // Down for a while: the app's requests to its local upstream listener are refused.
    await eventually(() => load.failedBetween(killedAt).length >= 10, 20_000, 'requests to fail while the agent is down');
    const restartedAt = Date.now();
    pair.client = await startAgentProc(fed, { ...victim.spec, dataDir: victim.dataDir });
    await agentSeesEndpoints(pair.client, pair.service, 1, 20_000);
    await load.moreOk(1);
    const backAt = load.outcomes.find((o) => o.ok && o.at > restartedAt)!.at;
    await load.moreOk(20);
    await load.stop();
    const failed = load.failed;
    // Every failure is a refused connect while nothing listened, none after the first success.
    assert.ok(failed.every((f) => f.at >= killedAt && f.at <= backAt), `failures outside the outage: ${JSON.stringify(failed.filter((f) => f.at < killedAt || f.at > backAt))}`);
    assert.ok(failed.every((f) => f.detail === 'ECONNREFUSED' || f.detail === 'ECONNRESET'), JSON.stringify([...new Set(failed.map((f) => f.detail))]));
    assert.equal(load.failedBetween(backAt).length, 0);
    reportFault({
      fault: 'client agent SIGKILL, restart', lost: [], requests: load.outcomes.length, failed: failed.length, recoverMs: backAt - restartedAt,
      recoveredWhen: 'first successful request after the restart', outageMs: backAt - killedAt, downMs: restartedAt - killedAt,
    });
  });

  // todo (l7, agent/proxy/http1/session.ts): a backendRequest timeout's 504
  // is neither retried by a route retrying 504 nor counted by outlier
  // detection, so every request picked for the hung endpoint fails. A fix
  // was tried and reverted: it broke proxy-resilience's retry cases.
  it('an app that accepts and never answers: a backend timeout and a retry on 504 mask it, outlier detection ejects it', { timeout: 90_000, todo: 'l7: per-attempt timeouts are not retried nor ejected' }, async () => {
    // Endpoint 2's app accepts connections and never writes a byte.
    const held = new Set<net.Socket>();
    const hung = net.createServer((s) => held.add(s));
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', () => r()));
    // close() waits for every connection to end, and a hung app's never do.
    cleanups.push(() => new Promise((r) => {
      hung.close(() => r(undefined));
      for (const s of held) s.destroy();
    }));
    const hungPort = (hung.address() as net.AddressInfo).port;
    const hungApp = { port: hungPort, hits: 0, server: undefined as never, close: async () => { for (const s of held) s.destroy(); hung.close(); } };
    const pair: MeshPair = await startMeshPair(fed, { name: 'hang', net: '127.0.66', servers: 2, app: async (i) => (i === 1 ? hungApp : startHttpApp('hang')) });
    cleanups.push(() => pair.close());

    // Without a timeout the mesh cannot tell a slow app from a hung one (a
    // request sent to it waits as long as its client does). With a
    // per-attempt timeout and a retry on 504, the request goes to the other
    // endpoint, and the 504s count toward outlier detection's 5xx run.
    const dir = tempDir('hang');
    const file = path.join(dir, 'route.yaml');
    fs.writeFileSync(file, [
      'apiVersion: gateway.networking.k8s.io/v1', 'kind: HTTPRoute', 'metadata: { name: hang }', 'spec:', '  parentRefs: [{ group: "", kind: Service, name: hang, port: 9080 }]',
      '  rules:', '  - backendRefs: [{ name: hang, port: 9080 }]', '    timeouts: { backendRequest: 300ms }', '    retry: { codes: [504], attempts: 2 }',
    ].join('\n'));
    const applied = await runKedge(['apply', '-f', file, '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(applied.code, 0, applied.stderr);
    await eventually(async () => {
      const cfg = await getJson<{ services: { key: string; routes?: unknown }[] }>(`${pair.client.adminUrl}/config`);
      return JSON.stringify(cfg.services.find((s) => s.key === pair.service)).includes('300');
    }, 20_000, 'the client to have the route');
    const appliedAt = Date.now();
    const load = new SteadyLoad(pair.upstream, { expectBody: 'hang', timeoutMs: 5_000, intervalMs: 20 });
    await eventually(() => load.outcomes.length >= 100, 60_000, 'a hundred requests');
    await load.stop();
    const ejected = pair.client.proc.logs.find((l) => l.msg === 'endpoint ejected by outlier detection' && l.workload === 'default/hang-2');
    reportFault({
      fault: 'app accepts and never answers (1 of 2 endpoints)', lost: [], requests: load.outcomes.length, failed: load.failed.length,
      recoverMs: ejected ? Number(ejected.time) - appliedAt : -1, recoveredWhen: ejected ? 'the hung endpoint ejected by outlier detection' : 'never: not ejected',
      failures: [...new Set(load.failed.map((f) => f.detail))],
    });
    assert.deepEqual(load.failed, []);
  });
});
