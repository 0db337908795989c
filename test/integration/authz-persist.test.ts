// Security policies across an agent restart while the federation is
// unreachable, with real processes: the server agent saves each pushed set
// in its data dir and, restarted without a federation, enforces that set
// (last known good) before its proxy accepts anything; a damaged file makes
// it fail closed (every request denied) until the federation is back and
// pushes the current set. See agent/registration/policy-store.ts.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { runKedge, tempDir, eventually } from '../support/procs';
import { AgentHandle, FederationHandle, curl, restartFederationProc, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';

const T = { timeout: 120_000 };

/** A port free on `host` now (the restarted server agent must come back on the port clients know). */
async function freePort(host: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const POLICIES = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-attacker, namespace: foo }
spec:
  action: DENY
  rules:
  - from: [{ source: { principals: [cluster.local/ns/default/sa/attacker] } }]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: foo }
spec:
  mtls: { mode: STRICT }
`;

describe('security policies survive an agent restart while the federation is down', () => {
  let fed: FederationHandle;
  let server: AgentHandle;
  let sleep: AgentHandle;
  let attacker: AgentHandle;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  const serverSpec = (port: number, dataDir?: string) => ({
    name: 'httpbin', namespace: 'foo', serviceAccount: 'httpbin', address: '127.0.76.1',
    services: [{ name: 'httpbin', ports: [{ name: 'http', port: 8000, targetPort: app.port, protocol: 'http' }] }],
    extra: { proxy: { inboundListen: `127.0.76.1:${port}` } },
    ...(dataDir ? { dataDir } : {}),
  });
  let inboundPort = 0;
  const admin = () => ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];

  before(async () => {
    fed = await startFederationProc();
    app = await startHttpApp('httpbin');
    inboundPort = await freePort('127.0.76.1');
    server = await startAgentProc(fed, serverSpec(inboundPort));
    sleep = await startAgentProc(fed, { name: 'sleep', namespace: 'default', serviceAccount: 'sleep', address: '127.0.76.2', upstreams: [{ service: 'httpbin.foo', port: 8000, listen: '127.0.76.2:0' }] });
    attacker = await startAgentProc(fed, { name: 'attacker', namespace: 'default', serviceAccount: 'attacker', address: '127.0.76.3', upstreams: [{ service: 'httpbin.foo', port: 8000, listen: '127.0.76.3:0' }] });
    for (const a of [sleep, attacker]) await eventually(async () => (await curl(`http://${a.upstreams[0]}/`)).status === 200, 15_000, `${a.spec.name} reaches httpbin`);
    const file = path.join(tempDir('authz-persist'), 'policies.yaml');
    fs.writeFileSync(file, POLICIES);
    const r = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(r.code, 0, r.stderr);
    await eventually(async () => (await curl(`http://${attacker.upstreams[0]}/`)).status === 403, 15_000, 'the DENY in force');
  });
  after(async () => {
    await Promise.all([server, sleep, attacker].map((a) => a?.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    await app?.close();
  });

  it('saves the pushed set in the data dir (0600)', T, async () => {
    const file = path.join(server.dataDir, 'policies.json');
    await eventually(() => fs.existsSync(file) && (JSON.parse(fs.readFileSync(file, 'utf8')) as { documents: string[] }).documents.length === 2, 10_000, 'policies.json with both documents');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  });

  it('restarted with the federation down, the agent enforces the last known good set', T, async () => {
    await fed.proc.stop('SIGKILL');
    await server.proc.stop('SIGKILL');
    server = await startAgentProc(fed, serverSpec(inboundPort, server.dataDir), { waitRegistered: false });
    const restored = await server.proc.waitForMsg('security policies restored from the data dir (last known good) until the federation pushes', 10_000);
    assert.equal(restored.authorizationPolicies, 1);
    assert.equal(restored.peerAuthentications, 1);
    assert.match(String(restored.peerAuthentication), /^STRICT \(foo\/default\)$/);
    // The clients kept their endpoints; the restarted proxy denies the attacker and serves sleep.
    const denied = await eventually(async () => {
      const r = await curl(`http://${attacker.upstreams[0]}/`);
      return r.status === 403 ? r : undefined;
    }, 15_000, 'the attacker denied by the restored policy');
    assert.equal(denied.body, 'RBAC: access denied');
    assert.equal((await curl(`http://${sleep.upstreams[0]}/`)).status, 200);
    assert.equal(server.proc.logs.some((l) => l.msg === 'registered with the federation'), false, 'decided with no federation');
  });

  it('a damaged file fails closed until the federation is back, then the current set applies', T, async () => {
    await server.proc.stop('SIGKILL');
    fs.writeFileSync(path.join(server.dataDir, 'policies.json'), '{"savedAt": "2026-12-08T00:00:00Z", "documents": [');
    server = await startAgentProc(fed, serverSpec(inboundPort, server.dataDir), { waitRegistered: false });
    const closed = await server.proc.waitForMsg('security policies cannot be restored: failing closed (every inbound request denied, plaintext refused) until the federation pushes', 10_000);
    assert.match(String(closed.reason), /policies\.json is damaged/);
    await eventually(async () => (await curl(`http://${sleep.upstreams[0]}/`)).status === 403, 15_000, 'sleep denied while failing closed');
    const log = await server.proc.waitForLog((l) => l.msg === 'denied by authorization policy' && l.peer === 'spiffe://cluster.local/ns/default/sa/sleep', 5_000, 'the fail-closed denial');
    assert.equal(log.policy, 'foo/kedge-fail-closed');
    // The federation returns: the agent registers, is pushed the current set, and sleep passes again.
    fed = await restartFederationProc(fed);
    await server.proc.waitForMsg('registered with the federation', 30_000);
    await eventually(async () => (await curl(`http://${sleep.upstreams[0]}/`)).status === 200, 30_000, 'sleep served again after the push');
    assert.equal((await curl(`http://${attacker.upstreams[0]}/`)).status, 403);
    const saved = JSON.parse(fs.readFileSync(path.join(server.dataDir, 'policies.json'), 'utf8')) as { documents: string[] };
    assert.equal(saved.documents.length, 2, 'the pushed set replaced the damaged file');
  });

  it('a saved document the agent cannot use is rejected alone at a restart; the others stay in force', T, async () => {
    await fed.proc.stop('SIGKILL');
    await server.proc.stop('SIGKILL');
    const file = path.join(server.dataDir, 'policies.json');
    const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as { savedAt: string; documents: string[] };
    const bad = JSON.stringify({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'from-the-future', namespace: 'foo' }, spec: { action: 'DENY', rules: [{ from: [{ source: { ipBlocks: ['127.0.0.0/8'], futureField: true } }] }] } });
    fs.writeFileSync(file, JSON.stringify({ ...saved, documents: [bad, ...saved.documents] }));
    server = await startAgentProc(fed, serverSpec(inboundPort, server.dataDir), { waitRegistered: false });
    const restored = await server.proc.waitForMsg('security policies restored from the data dir (last known good) until the federation pushes', 10_000);
    assert.equal(restored.authorizationPolicies, 1);
    assert.deepEqual(restored.rejected, ['rejected, not enforced: AuthorizationPolicy foo/from-the-future: spec.rules[0].from[0].source.futureField: unknown field (expected one of: principals, notPrincipals, requestPrincipals, notRequestPrincipals, namespaces, notNamespaces, serviceAccounts, notServiceAccounts, ipBlocks, notIpBlocks, remoteIpBlocks, notRemoteIpBlocks)']);
    // The rejected DENY (it would deny every loopback client) is not in force; the good one is.
    await eventually(async () => (await curl(`http://${attacker.upstreams[0]}/`)).status === 403, 15_000, 'the attacker denied');
    assert.equal((await curl(`http://${sleep.upstreams[0]}/`)).status, 200);
  });
});
