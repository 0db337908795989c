// AuthorizationPolicies and PeerAuthentications read from Kubernetes
// clusters (API doubles serving security.istio.io/v1 over the real wire
// protocol, read through @kubernetes/client-node): listed and watched,
// pushed to the agents they apply to and enforced there; kedge apply's copy
// of a name wins and the cluster's shows as a warning; an invalid cluster
// policy is listed with its error and pushed nowhere; a cluster without
// Istio's CRDs has none and stays connected.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { KubeApiDouble, writeKubeconfig } from '../support/kube-double';
import { eventually, runKedge, startKedge, tempDir, type KedgeProcess } from '../support/procs';
import { federationHandle, curl, startAgentProc, startHttpApp, type AgentHandle, type FederationHandle } from '../support/mesh';

interface Row { namespace: string; name: string; source: string; warnings: string[]; workloads: string[]; error?: string; mode?: string }

const denyPrincipal = (name: string, sa: string) => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'foo' },
  spec: { action: 'DENY', rules: [{ from: [{ source: { principals: [`cluster.local/ns/default/sa/${sa}`] } }] }] },
});

describe('security policies from Kubernetes clusters', () => {
  let east: KubeApiDouble;
  let west: KubeApiDouble;
  let fedProc: KedgeProcess;
  let fed: FederationHandle;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  const agents: AgentHandle[] = [];
  let sleep: AgentHandle;
  let attacker: AgentHandle;
  const dir = tempDir('kube-security');
  const admin = () => ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];
  const rows = async (kind: 'authorizationpolicies' | 'peerauthentications') => JSON.parse((await runKedge(['get', kind, '-o', 'json', ...admin()])).stdout) as Row[];
  const status = async (a: AgentHandle) => (await curl(`http://${a.upstreams[0]}/`)).status;

  before(async () => {
    east = await KubeApiDouble.start({ name: 'east' });
    west = await KubeApiDouble.start({ name: 'west' });
    west.istioInstalled = false;
    east.apply(denyPrincipal('deny', 'sleep') as never);
    const config = {
      dataDir: path.join(dir, 'data'),
      listenGrpc: '127.0.0.1:0',
      listenHttp: '127.0.0.1:0',
      clusters: [
        { name: 'east', kind: 'kubernetes', kubeconfig: writeKubeconfig(east, path.join(dir, 'east.kubeconfig')) },
        { name: 'west', kind: 'kubernetes', kubeconfig: writeKubeconfig(west, path.join(dir, 'west.kubeconfig')) },
      ],
    };
    fs.writeFileSync(path.join(dir, 'federation.yaml'), YAML.stringify(config));
    fedProc = startKedge('federation', ['federation', '--config', path.join(dir, 'federation.yaml')]);
    const ready = await fedProc.waitForMsg('federation ready', 20_000);
    fed = federationHandle(fedProc, config.dataDir, ready);
    app = await startHttpApp('httpbin');
    agents.push(await startAgentProc(fed, { name: 'httpbin', namespace: 'foo', serviceAccount: 'httpbin', address: '127.0.77.1', services: [{ name: 'httpbin', ports: [{ name: 'http', port: 8000, targetPort: app.port, protocol: 'http' }] }] }));
    sleep = await startAgentProc(fed, { name: 'sleep', namespace: 'default', serviceAccount: 'sleep', address: '127.0.77.2', upstreams: [{ service: 'httpbin.foo', port: 8000, listen: '127.0.77.2:0' }] });
    attacker = await startAgentProc(fed, { name: 'attacker', namespace: 'default', serviceAccount: 'attacker', address: '127.0.77.3', upstreams: [{ service: 'httpbin.foo', port: 8000, listen: '127.0.77.3:0' }] });
    agents.push(sleep, attacker);
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fedProc?.stop('SIGKILL');
    await app?.close();
    await Promise.all([east?.close(), west?.close()]);
  });

  it('a cluster AuthorizationPolicy is listed, pushed to the workload it selects and enforced; the cluster without the CRDs stays connected', async () => {
    await eventually(async () => (await rows('authorizationpolicies')).some((r) => r.name === 'deny' && r.source === 'cluster east'), 10_000, 'the cluster policy listed');
    await eventually(async () => (await status(sleep)) === 403, 15_000, 'sleep denied by the cluster policy');
    assert.equal(await status(attacker), 200);
    const row = (await rows('authorizationpolicies')).find((r) => r.name === 'deny')!;
    assert.deepEqual(row.workloads, ['foo/httpbin']);
    const clusters = JSON.parse((await runKedge(['get', 'clusters', '-o', 'json', ...admin()])).stdout) as { name: string; connected: boolean }[];
    assert.deepEqual(clusters.filter((c) => c.name !== 'vms').map((c) => [c.name, c.connected]), [['east', true], ['west', true]]);
    assert.ok(east.count('list', 'authorizationpolicies') >= 1 && east.count('watch', 'authorizationpolicies') >= 1);
    assert.equal(west.count('list', 'authorizationpolicies'), 0, 'west answered 404: no Istio CRDs');
  });

  it("kedge apply's copy of the same name wins; the cluster's shows as a warning; deleting it brings the cluster's back", async () => {
    const file = path.join(dir, 'deny.yaml');
    fs.writeFileSync(file, YAML.stringify(denyPrincipal('deny', 'attacker')));
    const r = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(r.code, 0, r.stderr);
    await eventually(async () => (await status(attacker)) === 403 && (await status(sleep)) === 200, 15_000, 'the applied copy in force');
    const row = (await rows('authorizationpolicies')).find((x) => x.name === 'deny')!;
    assert.equal(row.source, 'kedge apply');
    assert.deepEqual(row.warnings, ['also defined by cluster east; the copy from kedge apply is used']);
    const table = await runKedge(['get', 'authorizationpolicies', ...admin()]);
    assert.match(table.stdout, /foo\s+deny\s+DENY\s+\(namespace\)\s+1\s+foo\/httpbin; also defined by cluster east; the copy from kedge apply is used/);
    assert.equal((await runKedge(['delete', 'authorizationpolicy', 'foo/deny', ...admin()])).code, 0);
    await eventually(async () => (await status(sleep)) === 403 && (await status(attacker)) === 200, 15_000, 'the cluster copy back in force');
    // What the cluster holds cannot be deleted here: the error says where it lives.
    const again = await runKedge(['delete', 'authorizationpolicy', 'foo/deny', ...admin()]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /no AuthorizationPolicy foo\/deny was applied with kedge apply; it comes from cluster east: delete it there/);
  });

  it('a cluster PeerAuthentication is listed with what it applies to; an invalid cluster policy is listed with its error and not enforced; a deleted one disappears', async () => {
    east.apply({ apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'default', namespace: 'foo' }, spec: { mtls: { mode: 'STRICT' } } } as never);
    east.apply({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'broken', namespace: 'foo' }, spec: { action: 'DENY', rules: [{ from: [{ source: { ipBlocks: ['127.0.0.0/33'] } }] }] } } as never);
    await eventually(async () => (await rows('peerauthentications')).some((r) => r.name === 'default' && r.source === 'cluster east'), 10_000, 'the cluster PeerAuthentication listed');
    const pa = (await rows('peerauthentications')).find((r) => r.name === 'default')!;
    assert.deepEqual([pa.mode, pa.workloads], ['STRICT', ['foo/httpbin']]);
    await agents[0]!.proc.waitForLog((l) => l.msg === 'security policies in force' && l.peerAuthentication === 'STRICT (foo/default)', 15_000, 'the agent enforcing the cluster PeerAuthentication');
    await eventually(async () => (await rows('authorizationpolicies')).some((r) => r.name === 'broken' && r.error !== undefined), 10_000, 'the invalid policy listed');
    const broken = (await rows('authorizationpolicies')).find((r) => r.name === 'broken')!;
    assert.match(broken.error!, /AuthorizationPolicy foo\/broken: spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: "127\.0\.0\.0\/33" is not an IP address or CIDR block/);
    assert.equal(await status(attacker), 200, 'the invalid DENY is pushed nowhere');
    const before = agents[0]!.proc.logs.length;
    east.delete('peerauthentications', 'foo', 'default');
    await eventually(async () => !(await rows('peerauthentications')).some((r) => r.name === 'default'), 10_000, 'the deleted PeerAuthentication gone');
    await agents[0]!.proc.waitForLog((l) => agents[0]!.proc.logs.indexOf(l) >= before && l.msg === 'security policies in force' && l.peerAuthentication === "PERMISSIVE (no PeerAuthentication: the agent's inboundMode)", 15_000, 'the agent back to its inboundMode');
  });
});
