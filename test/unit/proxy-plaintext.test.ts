// Auto mTLS without sockets: how the agent turns the federation's plaintext
// (unmeshed) endpoints into views, which address:port the balancer dials
// and keys them by, per-port pickers for services with plaintext endpoints,
// and the gateway keeping them out of its pool.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpointPool } from '../../agent/gateway/route';
import type { Topology } from '../../agent/proxy/balancer/types';
import { MeshBalancers, dialTargets, pickAttempt } from '../../agent/proxy/balancers';
import type { EndpointView, ProxySnapshot, ServiceView } from '../../agent/proxy/types';
import { checkService, toProxySnapshot } from '../../agent/registration/updates';
import type { Service__Output } from '../../proto/loader';
import { parseLocality } from '../../proto/model/locality';

type WireEndpoint = Service__Output['endpoints'][number];

const client: Topology = { locality: parseLocality('us-east/zone-a'), network: '', labels: {} };
const DB_PORTS = [{ name: 'pg', port: 5432, protocol: 'tcp' }, { name: 'metrics', port: 9187, protocol: 'http' }];

function wireEndpoint(address: string, over: Partial<WireEndpoint> = {}): WireEndpoint {
  return {
    address, ports: [{ name: 'pg', port: 15432 }], mtlsPort: 15006, locality: { region: 'us-east', zone: 'zone-a', subzone: '' },
    cluster: 'vms', network: '', health: 'HEALTHY', weight: 1, labels: {}, identity: 'spiffe://cluster.local/ns/shop/sa/db', meshed: true, workload: `shop/${address}`,
    ...over,
  };
}

function plainWire(address: string, ports: { name: string; port: number }[]): WireEndpoint {
  return wireEndpoint(address, { ports, mtlsPort: 0, identity: '', meshed: false, cluster: 'static', workload: `static/shop/billing-db/${address}` });
}

function wireService(endpoints: WireEndpoint[]): Service__Output {
  return { key: 'billing-db.shop', name: 'billing-db', namespace: 'shop', hostname: 'billing-db.shop.svc.cluster.local', vip: '240.240.0.9', ports: DB_PORTS.map((p) => ({ ...p, targetPort: p.port })), endpoints, version: 'v1', warnings: [], trafficPolicy: '', routes: '' };
}

function meshed(address: string): EndpointView {
  return { address, mtlsPort: 15006, identity: 'spiffe://cluster.local/ns/shop/sa/db', workload: address, healthy: true, ports: [{ name: 'pg', port: 15432 }, { name: 'metrics', port: 19187 }], locality: parseLocality('us-east/zone-a') };
}

function plain(address: string, ports: { name: string; port: number }[]): EndpointView {
  return { address, mtlsPort: 0, identity: '', workload: address, healthy: true, ports, plaintext: true, locality: parseLocality('us-east/zone-a') };
}

function view(endpoints: EndpointView[]): ServiceView {
  return { key: 'billing-db.shop', hostname: 'billing-db.shop.svc.cluster.local', vip: '', ports: DB_PORTS, endpoints, version: '1' };
}

function snap(v: ServiceView): ProxySnapshot {
  return { version: 'v', services: new Map([[v.key, v]]) };
}

/** Keys of the endpoints the picker for `port` chooses from. */
function pickable(lbs: MeshBalancers, v: ServiceView, port: number): string[] {
  return lbs.entry(v).balancer.describe(0, port).endpoints.filter((e) => e.eligible).map((e) => e.key).sort();
}

describe('plaintext endpoints in the agent view', () => {
  it('keeps every endpoint, marking the unmeshed ones plaintext with the ports to dial', () => {
    const svc = wireService([wireEndpoint('10.0.0.1'), plainWire('10.1.2.3', [{ name: 'pg', port: 5432 }])]);
    const v = toProxySnapshot(new Map([[svc.key, svc]]), '3').services.get(svc.key)!;
    assert.deepEqual(
      v.endpoints.map((e) => [e.address, e.plaintext, e.mtlsPort, e.identity, e.ports]),
      [
        ['10.0.0.1', false, 15006, 'spiffe://cluster.local/ns/shop/sa/db', [{ name: 'pg', port: 15432 }]],
        ['10.1.2.3', true, 0, '', [{ name: 'pg', port: 5432 }]],
      ],
    );
    assert.ok(Object.isFrozen(v.endpoints[1]));
  });

  it('rejects a service whose plaintext endpoint has a port it cannot dial, and needs no identity or mTLS port for one', () => {
    assert.equal(checkService(wireService([plainWire('10.1.2.3', [{ name: 'pg', port: 5432 }])])), undefined);
    assert.match(checkService(wireService([plainWire('10.1.2.3', [{ name: 'pg', port: 0 }])]))!, /plaintext endpoint 10\.1\.2\.3 has port 0 for "pg"/);
  });
});

describe('dial targets and balancer keys', () => {
  it('dials a meshed endpoint at its mTLS port for every service port', () => {
    assert.deepEqual(dialTargets(meshed('10.0.0.1'), DB_PORTS), [{ port: 15006 }]);
  });

  it('dials a plaintext endpoint at its own port per service port, one target per distinct port', () => {
    assert.deepEqual(dialTargets(plain('10.1.2.3', [{ name: 'pg', port: 5432 }, { name: 'metrics', port: 9187 }]), DB_PORTS), [
      { port: 5432, servicePorts: new Set([5432]) },
      { port: 9187, servicePorts: new Set([9187]) },
    ]);
    // Two service ports on one app port are one listener: one target.
    assert.deepEqual(dialTargets(plain('10.1.2.3', [{ name: 'pg', port: 5432 }, { name: 'metrics', port: 5432 }]), DB_PORTS), [{ port: 5432, servicePorts: new Set([5432, 9187]) }]);
    // Ports the service does not declare are not dialled.
    assert.deepEqual(dialTargets(plain('10.1.2.3', [{ name: 'other', port: 1 }]), DB_PORTS), []);
  });

  it('keys plaintext endpoints by address:port, so two instances on one host (Consul) are two endpoints', () => {
    const lbs = new MeshBalancers(client, () => 0);
    const v = view([plain('10.0.0.5', [{ name: 'pg', port: 8080 }]), plain('10.0.0.5', [{ name: 'pg', port: 8081 }])]);
    lbs.sync(snap(v));
    assert.deepEqual(pickable(lbs, v, 5432), ['10.0.0.5:8080', '10.0.0.5:8081']);
  });
});

describe('per-port pickers for a service with plaintext endpoints', () => {
  const db = plain('10.1.2.3', [{ name: 'pg', port: 5432 }, { name: 'metrics', port: 9187 }]);
  const pgOnly = plain('10.1.2.4', [{ name: 'pg', port: 5432 }]);
  const proxy = meshed('10.0.0.1');

  it('picks for a port among the meshed endpoints and the plaintext ones serving it', () => {
    const lbs = new MeshBalancers(client, () => 0);
    const v = view([proxy, db, pgOnly]);
    lbs.sync(snap(v));
    assert.deepEqual(pickable(lbs, v, 5432), ['10.0.0.1:15006', '10.1.2.3:5432', '10.1.2.4:5432']);
    assert.deepEqual(pickable(lbs, v, 9187), ['10.0.0.1:15006', '10.1.2.3:9187']);
    // A pick for 9187 never lands on a pg-only listener.
    const entry = lbs.entry(v);
    for (let i = 0; i < 50; i++) {
      const r = pickAttempt(entry.balancer.picker(0, 9187), new Set(), Math.random, undefined);
      assert.ok(r?.type === 'pick' && ['10.0.0.1:15006', '10.1.2.3:9187'].includes(r.endpoint.key));
    }
  });

  it('ejects one port of a plaintext endpoint without touching its other port; a meshed endpoint keeps one state for all', () => {
    const lbs = new MeshBalancers(client, () => 0);
    const v = view([proxy, db]);
    lbs.sync(snap(v));
    const entry = lbs.entry(v);
    for (let i = 0; i < 3; i++) lbs.record(entry, '10.1.2.3:5432', 'connect-failure');
    assert.deepEqual(pickable(lbs, v, 5432), ['10.0.0.1:15006']);
    assert.deepEqual(pickable(lbs, v, 9187), ['10.0.0.1:15006', '10.1.2.3:9187']);
    for (let i = 0; i < 3; i++) lbs.record(entry, '10.0.0.1:15006', 'connect-failure');
    assert.deepEqual(pickable(lbs, v, 9187), ['10.1.2.3:9187']);
  });

  it('sends a client that addressed a plaintext endpoint directly to that endpoint\'s listener for the port', () => {
    const lbs = new MeshBalancers(client, () => 0);
    const v = view([proxy, db]);
    lbs.sync(snap(v));
    const entry = lbs.entry(v);
    assert.equal(entry.endpointFor(db, 9187)?.key, '10.1.2.3:9187');
    assert.equal(entry.endpointFor(pgOnly, 9187), undefined, 'serves no metrics port');
    assert.equal(entry.endpointFor(proxy, 9187)?.key, '10.0.0.1:15006');
  });

  it('shows plaintext endpoints, and each port\'s picker, on the admin endpoint', () => {
    const lbs = new MeshBalancers(client, () => 0);
    lbs.sync(snap(view([proxy, db, pgOnly])));
    const s = lbs.describe().services['billing-db.shop']!;
    assert.equal(s.servicePort, 5432);
    assert.deepEqual(s.endpoints.map((e) => [e.key, e.plaintext]), [['10.0.0.1:15006', false], ['10.1.2.3:5432', true], ['10.1.2.4:5432', true]]);
    assert.deepEqual(Object.keys(s.byPort!), ['5432', '9187']);
    assert.deepEqual(s.byPort!['9187']!.endpoints.map((e) => e.key), ['10.0.0.1:15006', '10.1.2.3:9187']);
    // A service with meshed endpoints only looks as it always did.
    lbs.sync(snap(view([proxy])));
    const m = lbs.describe().services['billing-db.shop']!;
    assert.equal(m.servicePort, undefined);
    assert.equal(m.byPort, undefined);
  });
});

describe('the east-west gateway and plaintext endpoints', () => {
  it('never forwards mesh TLS to a plaintext endpoint, whatever its mTLS port says', () => {
    const v: ServiceView = { ...view([meshed('10.0.0.1'), { ...plain('10.1.2.3', [{ name: 'pg', port: 5432 }]), mtlsPort: 15006 }]) };
    assert.deepEqual(endpointPool(v, 5432).map((e) => e.address), ['10.0.0.1']);
  });
});
