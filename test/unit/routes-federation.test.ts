// Routes between the sources and the agents, without sockets: which copy of
// a route wins (resolveRoutes), what a service carries, that a subscriber is
// pushed the backends of its services' routes and told when they go, and
// that an agent NACKs a service whose routes it cannot use while keeping the
// rest of the update.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolveRoutes } from '../../federation/mesh/routes';
import { PushSession } from '../../federation/push/session';
import type { MeshService, MeshView } from '../../federation/mesh/types';
import { applyUpdate, toProxySnapshot } from '../../agent/registration/updates';
import type { Service__Output, ServiceUpdate } from '../../proto/loader';
import { gatewayRoute } from '../support/fixtures/kube';
import { routeBatches } from '../../cli/apply';

const route = (name: string, backends: string[], extra: Record<string, unknown> = {}) =>
  gatewayRoute('HTTPRoute', name, 'default', 'reviews', 9080, [{ backendRefs: backends.map((b) => ({ name: b, port: 9080 })), ...extra }]);
const applied = (...docs: { kind: string; metadata: { name: string; namespace: string } }[]) =>
  new Map(docs.map((d) => [`${d.kind}/${d.metadata.namespace}/${d.metadata.name}`, JSON.stringify({ ...d, metadata: { ...d.metadata, creationTimestamp: '2026-01-01T00:00:00.000Z' } })]));
const fault = { apiVersion: 'kedge.io/v1alpha1', kind: 'FaultInjection', metadata: { name: 'flaky', namespace: 'default' }, spec: { abort: { httpStatus: 503, percentage: { value: 10 } } } };

describe('resolveRoutes', () => {
  it("kedge apply's copy wins over clusters, the first cluster by name over later ones, each loser a warning", () => {
    const r = resolveRoutes(applied(route('split', ['reviews-v1'])), [
      { cluster: 'west', doc: route('split', ['reviews-v2']) },
      { cluster: 'east', doc: route('split', ['reviews-v3']) },
      { cluster: 'west', doc: route('only-west', ['reviews-v2']) },
      { cluster: 'east', doc: route('only-west', ['reviews-v1']) },
    ]);
    const rows = Object.fromEntries(r.rows.map((x) => [x.name, x]));
    assert.equal(rows.split!.source, 'kedge apply');
    assert.deepEqual(rows.split!.warnings, ['also defined by cluster east; the copy from kedge apply is used', 'also defined by cluster west; the copy from kedge apply is used']);
    assert.equal(rows['only-west']!.source, 'cluster east');
    assert.deepEqual(rows['only-west']!.backends, ['reviews-v1.default:9080']);
  });

  it('an invalid copy never wins over a valid one, and is listed with its error when alone', () => {
    const bad = route('split', ['reviews-v1'], { filters: [{ type: 'CORS', cors: {} }] });
    const r = resolveRoutes(new Map(), [{ cluster: 'east', doc: bad }, { cluster: 'west', doc: route('split', ['reviews-v2']) }, { cluster: 'east', doc: route('cors-only', ['x'], { filters: [{ type: 'CORS', cors: {} }] }) }]);
    const rows = Object.fromEntries(r.rows.map((x) => [x.name, x]));
    assert.equal(rows.split!.source, 'cluster west');
    assert.deepEqual(rows.split!.warnings, ['also defined by cluster east (invalid there); the copy from cluster west is used']);
    assert.match(rows['cors-only']!.error!, /Kedge does not implement the CORS filter/);
    assert.ok(!JSON.parse(r.perService.get('reviews.default')!).some((d: { metadata: { name: string } }) => d.metadata.name === 'cors-only'));
  });

  it('an HTTPRoute sharing a service port with a GRPCRoute is warned that the GRPCRoute wins there', () => {
    const grpc = gatewayRoute('GRPCRoute', 'rpc', 'default', 'reviews', 9080, [{ backendRefs: [{ name: 'reviews-v1', port: 9080 }] }]);
    const other = gatewayRoute('HTTPRoute', 'other-port', 'default', 'reviews', 9090, [{ backendRefs: [{ name: 'reviews-v1', port: 9080 }] }]);
    const r = resolveRoutes(applied(route('web', ['reviews-v1']), grpc, other), []);
    const rows = Object.fromEntries(r.rows.map((x) => [x.name, x]));
    assert.deepEqual(rows.web!.warnings, ['GRPCRoute default/rpc attaches to the same port of reviews.default; a GRPCRoute wins there (GEP-1294), so this route is not used on that port']);
    assert.deepEqual(rows['other-port']!.warnings, []);
  });

  it('a service carries its routes and the FaultInjections they use; its route backends are listed for the push', () => {
    const withFault = route('split', ['reviews-v1', 'reviews-v2'], { filters: [{ type: 'ExtensionRef', extensionRef: { group: 'kedge.io', kind: 'FaultInjection', name: 'flaky' } }, { type: 'RequestMirror', requestMirror: { backendRef: { name: 'shadow', port: 9080 } } }] });
    const r = resolveRoutes(applied(withFault, fault), [], (k) => k !== 'shadow.default');
    const docs = JSON.parse(r.perService.get('reviews.default')!) as { kind: string; metadata: { name: string; creationTimestamp?: string } }[];
    assert.deepEqual(docs.map((d) => `${d.kind}/${d.metadata.name}`), ['HTTPRoute/split', 'FaultInjection/flaky']);
    assert.equal(docs[0]!.metadata.creationTimestamp, '2026-01-01T00:00:00.000Z');
    assert.deepEqual(r.backends.get('reviews.default'), ['reviews-v1.default', 'reviews-v2.default', 'shadow.default']);
    assert.deepEqual(r.rows.find((x) => x.name === 'split')!.warnings, ['backend shadow.default is not known to the federation; requests sent to it fail with 500']);
    const missing = resolveRoutes(applied(withFault), []);
    assert.deepEqual(missing.rows[0]!.warnings, ['FaultInjection default/flaky does not exist; requests of the rules using it fail with 500']);
  });
});

function svc(key: string, version: string, routes = ''): MeshService {
  const [name = '', namespace = ''] = key.split('.');
  return { key, name, namespace, hostname: `${key}.svc.cluster.local`, vip: '', ports: [{ name: 'http', port: 9080, targetPort: 9080, protocol: 'http' }], endpoints: [], version, warnings: [], trafficPolicy: '', routes };
}

describe('push with route backends', () => {
  it('a subscriber gets the backends of its services and is told when they are no longer referenced', () => {
    const sent: ServiceUpdate[] = [];
    const session = new PushSession((u, flushed) => {
      sent.push(u);
      flushed();
    });
    session.subscribe(['reviews.default'], []);
    const services = new Map([['reviews.default', svc('reviews.default', 'r1')], ['reviews-v2.default', svc('reviews-v2.default', 'v1')]]);
    const withRoute: MeshView = { services, routeBackends: new Map([['reviews.default', ['reviews-v2.default']]]) };
    session.push(withRoute);
    assert.deepEqual((sent.at(-1)!.services as MeshService[]).map((s) => s.key), ['reviews-v2.default', 'reviews.default']);
    // Nothing changed: nothing sent.
    assert.equal(session.push(withRoute), false);
    session.push({ services, routeBackends: new Map() });
    assert.deepEqual(sent.at(-1)!.removed, ['reviews-v2.default']);
    assert.equal(session.push({ services }), false, 'the removal is sent once');
    // Subscribed on its own, a backend stays when the route goes.
    session.subscribe(['reviews-v2.default'], []);
    session.push(withRoute);
    session.push({ services });
    assert.deepEqual(sent.at(-1)!.removed ?? [], []);
  });
});

describe('agent side', () => {
  const base = svc('reviews.default', 'v1');
  const routesJson = (docs: unknown[]) => JSON.stringify(docs.map((d) => ({ ...(d as object), metadata: { ...(d as { metadata: object }).metadata, creationTimestamp: '2026-01-01T00:00:00Z' } })));

  it('compiles the routes into the service view, for the agent namespace', () => {
    const s = { ...base, routes: routesJson([route('split', ['reviews-v2'])]) } as Service__Output;
    const applied = applyUpdate(new Map(), { nonce: '1', services: [s], removed: [] } as never);
    assert.deepEqual(applied.rejected, []);
    const view = toProxySnapshot(applied.services, '1', 'default').services.get('reviews.default')!;
    const target = view.routes!.forPort(9080)!.match({ method: 'GET', path: '/', query: '', headers: new Map() })!;
    assert.equal(target.backends[0]!.service, 'reviews-v2.default');
  });

  it('NACKs only the service whose routes it cannot use', () => {
    const bad = { ...base, routes: routesJson([route('split', ['reviews-v2'], { filters: [{ type: 'CORS', cors: {} }] })]) } as Service__Output;
    const good = svc('ratings.default', 'v1') as Service__Output;
    const notJson = { ...svc('details.default', 'v1'), routes: '{' } as Service__Output;
    const applied = applyUpdate(new Map(), { nonce: '1', services: [bad, good, notJson], removed: [] } as never);
    assert.deepEqual([...applied.services.keys()], ['ratings.default']);
    assert.equal(applied.rejected.length, 2);
    assert.match(applied.rejected[0]!, /^service reviews\.default: routes rejected: HTTPRoute default\/split: spec\.rules\[0\]\.filters\[0\]\.type: Kedge does not implement the CORS filter/);
    assert.equal(applied.rejected[1], 'service details.default: routes rejected: not JSON');
  });
});

describe('kedge apply batches', () => {
  it('splits route documents under the API body limit, FaultInjections first', () => {
    const docs = [route('a', ['x']), fault, route('b', ['y']), route('c', ['z'])];
    const one = JSON.stringify(docs[0]).length + 1;
    const batches = routeBatches(docs, one * 2 + 10);
    assert.deepEqual(batches.map((b) => b.map((d) => (d as { metadata: { name: string } }).metadata.name)), [['flaky', 'a'], ['b', 'c']]);
    assert.deepEqual(routeBatches(docs).length, 1);
  });
});
