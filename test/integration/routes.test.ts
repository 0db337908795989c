// Routes end to end, with real federation and agent processes: kedge apply
// -f takes HTTPRoute, GRPCRoute and FaultInjection documents mixed with a
// TrafficPolicy (a bad route rejects only itself), the federation stores
// them and pushes them with the services they attach to (their backends
// too), agents hold them (/config), kedge get routes lists them, and kedge
// delete removes them.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runKedge, tempDir, eventually } from '../support/procs';
import { AgentHandle, FederationHandle, getJson, startAgentProc, startFederationProc } from '../support/mesh';

interface ConfigDump {
  services: { key: string; routes?: { kind: string; metadata: { name: string; namespace: string } }[]; trafficPolicy?: unknown }[];
}

const ROUTES = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews-canary }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
  - matches: [{ headers: [{ name: x-canary, value: "1" }] }]
    backendRefs: [{ name: reviews-v2, port: 9080 }]
  - backendRefs:
    - { name: reviews-v1, port: 9080, weight: 90 }
    - { name: reviews-v2, port: 9080, weight: 10 }
    filters:
    - type: ExtensionRef
      extensionRef: { group: kedge.io, kind: FaultInjection, name: flaky }
    timeouts: { request: 2s }
    retry: { codes: [503], attempts: 3 }
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: reviews-rpc }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, sectionName: grpc }]
  rules:
  - matches: [{ method: { service: reviews.Reviews, method: Get } }]
    backendRefs: [{ name: reviews-v1, port: 9090 }]
    retry: { codes: [UNAVAILABLE], attempts: 2 }
---
apiVersion: kedge.io/v1alpha1
kind: FaultInjection
metadata: { name: flaky }
spec:
  abort: { httpStatus: 503, percentage: { value: 10 } }
---
kind: TrafficPolicy
spec:
  service: reviews.default
  circuitBreaker: { maxPendingRequests: 10 }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: broken }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
  - backendRefs: [{ name: reviews-v9, port: 9080 }]
`;

describe('routes', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  let client: AgentHandle;
  const admin = () => ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];
  const dir = tempDir('routes');
  const file = path.join(dir, 'routes.yaml');
  const clientConfig = () => getJson<ConfigDump>(`${client.adminUrl}/config`);

  before(async () => {
    fed = await startFederationProc();
    const port = (name: string) => ({ name, ports: [{ name: 'http', port: 9080, targetPort: 18080, protocol: 'http' }, { name: 'grpc', port: 9090, targetPort: 18090, protocol: 'grpc' }] });
    agents.push(await startAgentProc(fed, { name: 'reviews', namespace: 'default', serviceAccount: 'reviews', address: '127.0.71.1', services: [port('reviews'), port('reviews-v1'), port('reviews-v2')] }));
    client = await startAgentProc(fed, { name: 'client', namespace: 'default', serviceAccount: 'client', address: '127.0.71.9', upstreams: [{ service: 'reviews.default', port: 9080 }] });
    agents.push(client);
    await eventually(async () => (await clientConfig()).services.some((s) => s.key === 'reviews.default'), 10_000, 'the client holds reviews');
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
  });

  it('kedge apply -f applies the good documents of a mixed file and names what is wrong with the bad one', async () => {
    fs.writeFileSync(file, ROUTES);
    const r = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(r.code, 1, 'a refused document makes the command fail');
    assert.match(r.stdout, /^trafficpolicy\/reviews\.default \(reviews\.default\) applied$/m);
    assert.match(r.stdout, /^httproute\/reviews-canary \(default\) applied$/m);
    assert.match(r.stdout, /^faultinjection\/flaky \(default\) applied$/m);
    assert.match(r.stdout, /^grpcroute\/reviews-rpc \(default\) applied$/m);
    assert.match(r.stderr, /HTTPRoute default\/broken: spec\.rules\[0\]\.backendRefs\[0\]: names the backend reviews-v9\.default, which no source of the federation knows/);
    assert.doesNotMatch(r.stdout, /broken/);
  });

  it('kedge get routes lists what was applied, with its parents and backends', async () => {
    const r = await runKedge(['get', 'routes', '-o', 'json', ...admin()]);
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as { kind: string; name: string; parents: string[]; backends: string[]; source: string; warnings: string[] }[];
    assert.deepEqual(rows.map((x) => [x.kind, x.name, x.source]), [['FaultInjection', 'flaky', 'kedge apply'], ['GRPCRoute', 'reviews-rpc', 'kedge apply'], ['HTTPRoute', 'reviews-canary', 'kedge apply']]);
    assert.deepEqual(rows.find((x) => x.kind === 'GRPCRoute')!.parents, ['reviews.default:grpc']);
    const route = rows.find((x) => x.kind === 'HTTPRoute')!;
    assert.deepEqual(route.parents, ['reviews.default:9080']);
    assert.deepEqual(route.backends, ['reviews-v2.default:9080', 'reviews-v1.default:9080=90', 'reviews-v2.default:9080=10']);
    assert.deepEqual(route.warnings, []);
    const table = await runKedge(['get', 'routes', ...admin()]);
    assert.match(table.stdout, /HTTPRoute\s+default\s+reviews-canary\s+reviews\.default:9080\s+\S+\s+kedge apply\s+ok/);
  });

  it('the client agent holds the routes with the service, and the backends without subscribing to them', async () => {
    await eventually(async () => {
      const cfg = await clientConfig();
      const reviews = cfg.services.find((s) => s.key === 'reviews.default');
      const kinds = (reviews?.routes ?? []).map((d) => `${d.kind}/${d.metadata.namespace}/${d.metadata.name}`);
      return kinds.join(',') === 'GRPCRoute/default/reviews-rpc,HTTPRoute/default/reviews-canary,FaultInjection/default/flaky' && cfg.services.some((s) => s.key === 'reviews-v1.default') && cfg.services.some((s) => s.key === 'reviews-v2.default');
    }, 10_000, 'routes and backends at the client');
  });

  it('kedge delete refuses a FaultInjection in use and one that does not exist, then deletes a route by kind and name', async () => {
    const inUse = await runKedge(['delete', 'faultinjection', 'flaky', ...admin()]);
    assert.equal(inUse.code, 1);
    assert.match(inUse.stderr, /FaultInjection default\/flaky is used by HTTPRoute default\/reviews-canary; delete or change those routes first/);
    const missing = await runKedge(['delete', 'httproute', 'default/nosuch', ...admin()]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no HTTPRoute default\/nosuch was applied with kedge apply/);
    const r = await runKedge(['delete', 'httproute', 'reviews-canary', ...admin()]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'httproute/reviews-canary (default) deleted\n');
    // reviews-v2 was only a backend of the deleted route: it leaves the agent; reviews-v1 stays (the GRPCRoute uses it).
    await eventually(async () => {
      const cfg = await clientConfig();
      const reviews = cfg.services.find((s) => s.key === 'reviews.default');
      return (reviews?.routes ?? []).map((d) => d.metadata.name).join() === 'reviews-rpc' && !cfg.services.some((s) => s.key === 'reviews-v2.default') && cfg.services.some((s) => s.key === 'reviews-v1.default');
    }, 10_000, 'the HTTPRoute gone at the client');
  });

  it('kedge delete -f removes every document of a file that is still applied', async () => {
    const r = await runKedge(['delete', '-f', file, ...admin()]);
    // reviews-canary is gone already and broken never existed: both named, the rest deleted.
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^faultinjection\/flaky \(default\) deleted$/m);
    assert.match(r.stdout, /^trafficpolicy\/reviews\.default \(reviews\.default\) deleted$/m);
    assert.match(r.stdout, /^grpcroute\/reviews-rpc \(default\) deleted$/m);
    assert.match(r.stderr, /no HTTPRoute default\/reviews-canary was applied/);
    assert.match(r.stderr, /no HTTPRoute default\/broken was applied/);
    const rows = JSON.parse((await runKedge(['get', 'routes', '-o', 'json', ...admin()])).stdout) as unknown[];
    assert.deepEqual(rows, []);
    await eventually(async () => {
      const cfg = await clientConfig();
      const reviews = cfg.services.find((s) => s.key === 'reviews.default');
      return reviews !== undefined && reviews.trafficPolicy === undefined && reviews.routes === undefined && !cfg.services.some((s) => s.key === 'reviews-v1.default');
    }, 10_000, 'policy, routes and backends gone at the client');
  });
});
