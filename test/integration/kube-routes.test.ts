// HTTPRoutes and GRPCRoutes read from Kubernetes clusters (API doubles
// serving gateway.networking.k8s.io/v1 over the real wire protocol, read
// through @kubernetes/client-node): listed and watched like EndpointSlices,
// pushed to agents with their services; kedge apply's copy of a name wins
// and the cluster's shows as a warning; a cluster without the Gateway API
// CRDs has no routes and stays connected; an invalid cluster route is
// listed with its error and not pushed.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { KubeApiDouble, writeKubeconfig } from '../support/kube-double';
import { endpointSlice, gatewayRoute, node, service } from '../support/fixtures/kube';
import { eventually, runKedge, startKedge, tempDir, type KedgeProcess } from '../support/procs';
import { federationHandle, getJson, startAgentProc, type AgentHandle, type FederationHandle } from '../support/mesh';

interface RouteRow { kind: string; namespace: string; name: string; source: string; backends: string[]; warnings: string[]; error?: string }
interface ConfigDump { services: { key: string; routes?: { kind: string; metadata: { name: string }; spec: { rules: { backendRefs: { name: string; weight?: number }[] }[] } }[] }[] }

describe('routes from Kubernetes clusters', () => {
  let east: KubeApiDouble;
  let west: KubeApiDouble;
  let fedProc: KedgeProcess;
  let fed: FederationHandle;
  let client: AgentHandle;
  const dir = tempDir('kube-routes');
  const admin = () => ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];
  const rows = async () => JSON.parse((await runKedge(['get', 'routes', '-o', 'json', ...admin()])).stdout) as RouteRow[];
  const heldRoutes = async () => (await getJson<ConfigDump>(`${client.adminUrl}/config`)).services.find((s) => s.key === 'reviews.default')?.routes ?? [];
  const split = (v1: number, v2: number) => [{ backendRefs: [{ name: 'reviews-v1', port: 9080, weight: v1 }, { name: 'reviews-v2', port: 9080, weight: v2 }] }];

  before(async () => {
    east = await KubeApiDouble.start({ name: 'east' });
    west = await KubeApiDouble.start({ name: 'west' });
    west.gatewayApiInstalled = false;
    const port = [{ name: 'http', port: 9080, appProtocol: 'http' }];
    east.apply(node('east-a', { region: 'us-east1', zone: 'us-east1-b' }));
    for (const [svc, ip] of [['reviews', '127.0.72.1'], ['reviews-v1', '127.0.72.2'], ['reviews-v2', '127.0.72.3']] as const) {
      east.apply(service(svc, 'default', [{ name: 'http', port: 9080, targetPort: 9080 }]), endpointSlice(svc, 'default', port, [{ ip, pod: `${svc}-1`, nodeName: 'east-a', zone: 'us-east1-b' }]));
    }
    east.apply(gatewayRoute('HTTPRoute', 'reviews-split', 'default', 'reviews', 9080, split(90, 10)) as never);
    west.apply(node('west-a', { region: 'us-west1', zone: 'us-west1-a' }), service('reviews', 'default', [{ name: 'http', port: 9080, targetPort: 9080 }]));

    const config = {
      dataDir: path.join(dir, 'data'),
      listenGrpc: '127.0.0.1:0',
      listenHttp: '127.0.0.1:0',
      clusters: [
        { name: 'east', kind: 'kubernetes', kubeconfig: writeKubeconfig(east, path.join(dir, 'east.kubeconfig')), network: 'net-east' },
        { name: 'west', kind: 'kubernetes', kubeconfig: writeKubeconfig(west, path.join(dir, 'west.kubeconfig')), network: 'net-west' },
      ],
    };
    fs.writeFileSync(path.join(dir, 'federation.yaml'), YAML.stringify(config));
    fedProc = startKedge('federation', ['federation', '--config', path.join(dir, 'federation.yaml')]);
    const ready = await fedProc.waitForMsg('federation ready', 20_000);
    fed = federationHandle(fedProc, config.dataDir, ready);
    client = await startAgentProc(fed, { name: 'client', namespace: 'default', serviceAccount: 'client', address: '127.0.72.9', network: 'net-east', upstreams: [{ service: 'reviews.default', port: 9080 }] });
  });
  after(async () => {
    await client?.proc.stop('SIGKILL');
    await fedProc?.stop('SIGKILL');
    await Promise.all([east?.close(), west?.close()]);
  });

  it('a cluster route is listed, pushed with its service, and the cluster without the CRDs stays connected', async () => {
    await eventually(async () => (await rows()).some((r) => r.name === 'reviews-split' && r.source === 'cluster east'), 10_000, 'the cluster route listed');
    await eventually(async () => (await heldRoutes()).some((d) => d.kind === 'HTTPRoute' && d.metadata.name === 'reviews-split'), 10_000, 'the route at the agent');
    const clusters = JSON.parse((await runKedge(['get', 'clusters', '-o', 'json', ...admin()])).stdout) as { name: string; connected: boolean }[];
    assert.deepEqual(clusters.map((c) => [c.name, c.connected]), [['vms', true], ['east', true], ['west', true]]);
    // east served its routes over list/watch; west answered 404 (no CRDs) and served none.
    assert.ok(east.count('list', 'httproutes') >= 1 && east.count('watch', 'httproutes') >= 1);
    assert.equal(west.count('list', 'httproutes'), 0);
  });

  it('a change in the cluster reaches the agent through the watch', async () => {
    east.apply(gatewayRoute('HTTPRoute', 'reviews-split', 'default', 'reviews', 9080, split(50, 50)) as never);
    await eventually(async () => (await heldRoutes()).find((d) => d.metadata.name === 'reviews-split')?.spec.rules[0]?.backendRefs[0]?.weight === 50, 10_000, 'the new weights at the agent');
  });

  it("kedge apply's copy of the same name wins; the cluster's shows as a warning", async () => {
    const file = path.join(dir, 'split.yaml');
    fs.writeFileSync(file, YAML.stringify(gatewayRoute('HTTPRoute', 'reviews-split', 'default', 'reviews', 9080, split(100, 0))));
    const r = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(r.code, 0, r.stderr);
    const row = (await rows()).find((x) => x.name === 'reviews-split')!;
    assert.equal(row.source, 'kedge apply');
    assert.deepEqual(row.warnings, ['also defined by cluster east; the copy from kedge apply is used']);
    await eventually(async () => (await heldRoutes()).find((d) => d.metadata.name === 'reviews-split')?.spec.rules[0]?.backendRefs[1]?.weight === 0, 10_000, "the applied copy at the agent");
    const table = await runKedge(['get', 'routes', ...admin()]);
    assert.match(table.stdout, /reviews-split .*kedge apply\s+also defined by cluster east/);
    assert.equal((await runKedge(['delete', 'httproute', 'reviews-split', ...admin()])).code, 0);
    await eventually(async () => (await rows()).find((x) => x.name === 'reviews-split')?.source === 'cluster east', 10_000, 'the cluster copy back in use');
  });

  it('an invalid cluster route is listed with its error and not pushed; a deleted one disappears', async () => {
    east.apply(gatewayRoute('HTTPRoute', 'cors', 'default', 'reviews', 9080, [{ backendRefs: [{ name: 'reviews-v1', port: 9080 }], filters: [{ type: 'CORS', cors: {} }] }]) as never);
    await eventually(async () => (await rows()).some((r) => r.name === 'cors' && r.error !== undefined), 10_000, 'the invalid route listed');
    const row = (await rows()).find((r) => r.name === 'cors')!;
    assert.match(row.error!, /HTTPRoute default\/cors: spec\.rules\[0\]\.filters\[0\]\.type: Kedge does not implement the CORS filter/);
    assert.ok(!(await heldRoutes()).some((d) => d.metadata.name === 'cors'));
    east.delete('httproutes', 'default', 'reviews-split');
    await eventually(async () => !(await rows()).some((r) => r.name === 'reviews-split'), 10_000, 'the deleted route gone');
    await eventually(async () => !(await heldRoutes()).some((d) => d.metadata.name === 'reviews-split'), 10_000, 'the route gone at the agent');
  });
});
