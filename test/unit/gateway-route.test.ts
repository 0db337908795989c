// The gateway's routing decisions without sockets: SNI to service port,
// the pool of local endpoints, and the view the shared balancer gets.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpointPool, hostnameIndex, resolveRoute, routeView } from '../../agent/gateway/route';
import type { EndpointView, ProxySnapshot, ServiceView } from '../../agent/proxy/types';
import { hasCode } from '../../proto/model/errors';
import { buildSni } from '../../proto/model/sni';

const HOST = 'reviews.default.svc.cluster.local';

function ep(name: string, over: Partial<EndpointView> = {}): EndpointView {
  return { address: `10.0.0.${name.length}`, mtlsPort: 15006, identity: 'spiffe://cluster.local/ns/default/sa/reviews', workload: `default/${name}`, healthy: true, ports: [{ name: 'http', port: 9080 }], ...over };
}

function service(endpoints: EndpointView[], over: Partial<ServiceView> = {}): ServiceView {
  return { key: 'reviews.default', hostname: HOST, vip: '', ports: [{ name: 'http', port: 9080, protocol: 'http' }, { name: 'grpc', port: 9090, protocol: 'grpc' }], endpoints, version: 'v1', ...over };
}

function snapshot(...services: ServiceView[]): ProxySnapshot {
  return { version: '1', services: new Map(services.map((s) => [s.key, s])) };
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code ?? 'no code';
  }
  return 'no error';
}

describe('gateway routing', () => {
  const a = ep('a', { address: '10.0.0.1' });
  const b = ep('b', { address: '10.0.0.2' });
  const sick = ep('sick', { address: '10.0.0.3', healthy: false });
  const grpcOnly = ep('grpc', { address: '10.0.0.4', ports: [{ name: 'grpc', port: 9090 }] });
  const plaintext = ep('plain', { address: '10.0.0.5', mtlsPort: 0 });
  const noPorts = ep('noports', { address: '10.0.0.6', ports: [] });

  it('resolves a mesh SNI to the service port and its healthy local endpoints serving it', () => {
    const r = resolveRoute(snapshot(service([a, sick, grpcOnly, plaintext, b, noPorts])), buildSni(9080, HOST));
    assert.equal(r.service.key, 'reviews.default');
    assert.equal(r.port, 9080);
    assert.equal(r.key, `9080/${HOST}`);
    assert.deepEqual(r.pool.map((e) => e.address), ['10.0.0.1', '10.0.0.2', '10.0.0.6']);
  });

  it('picks the endpoints serving the port by its name', () => {
    const r = resolveRoute(snapshot(service([a, grpcOnly])), buildSni(9090, HOST));
    assert.deepEqual(r.pool.map((e) => e.address), ['10.0.0.4']);
  });

  it('matches the hostname without regard to case', () => {
    assert.equal(resolveRoute(snapshot(service([a])), buildSni(9080, HOST.toUpperCase())).service.key, 'reviews.default');
  });

  it('falls back to every serving endpoint when none is healthy (panic), never to a plaintext one', () => {
    const sick2 = ep('sick2', { address: '10.0.0.7', healthy: false });
    assert.deepEqual(endpointPool(service([sick, plaintext, sick2]), 9080).map((e) => e.address), ['10.0.0.3', '10.0.0.7']);
  });

  const refusals: { name: string; snap: ProxySnapshot; sni: string; code: string }[] = [
    { name: 'not a mesh name', snap: snapshot(service([a])), sni: 'example.com', code: 'KEDGE_BAD_SNI' },
    { name: 'port 0', snap: snapshot(service([a])), sni: `outbound_.0_._.${HOST}`, code: 'KEDGE_BAD_SNI' },
    { name: 'unknown service', snap: snapshot(service([a])), sni: buildSni(9080, 'ratings.default.svc.cluster.local'), code: 'KEDGE_UNKNOWN_SERVICE' },
    { name: 'empty view', snap: snapshot(), sni: buildSni(9080, HOST), code: 'KEDGE_UNKNOWN_SERVICE' },
    { name: 'port the service does not have', snap: snapshot(service([a])), sni: buildSni(8080, HOST), code: 'KEDGE_UNKNOWN_SERVICE_PORT' },
    { name: 'no endpoints', snap: snapshot(service([])), sni: buildSni(9080, HOST), code: 'KEDGE_NO_ENDPOINTS' },
    { name: 'only plaintext endpoints', snap: snapshot(service([plaintext])), sni: buildSni(9080, HOST), code: 'KEDGE_NO_ENDPOINTS' },
    { name: 'no endpoint serving the port', snap: snapshot(service([grpcOnly])), sni: buildSni(9080, HOST), code: 'KEDGE_NO_ENDPOINTS' },
  ];
  for (const r of refusals) {
    it(`refuses ${r.name} with ${r.code}`, () => {
      assert.equal(code(() => resolveRoute(r.snap, r.sni)), r.code);
      try {
        resolveRoute(r.snap, r.sni);
      } catch (err) {
        assert.ok(hasCode(err, r.code), 'a KedgeError');
      }
    });
  }

  it('indexes each snapshot once and each service view once per port', () => {
    const svc = service([a, b]);
    const snap = snapshot(svc);
    assert.equal(hostnameIndex(snap), hostnameIndex(snap));
    assert.equal(endpointPool(svc, 9080), endpointPool(svc, 9080));
    // A new snapshot (as after an update) is indexed afresh.
    const svc2 = service([a]);
    assert.deepEqual(resolveRoute(snapshot(svc2), buildSni(9080, HOST)).pool, [a]);
  });

  it('gives the balancer one round-robin view per route pool, keyed by the route', () => {
    const a = ep('a');
    const b = ep('bb', { healthy: false });
    const svc = service([a, b], { policy: undefined });
    const route = resolveRoute(snapshot(svc), buildSni(9080, HOST));
    const view = routeView(route);
    assert.equal(view.key, `9080/${HOST}`);
    assert.deepEqual(view.endpoints, [a]);
    assert.equal(view.policy?.loadBalancer, 'round-robin');
    // The same pool gives the same view object, so the balancer is not rebuilt per connection.
    assert.equal(routeView(resolveRoute(snapshot(svc), buildSni(9080, HOST))), view);
  });
});
