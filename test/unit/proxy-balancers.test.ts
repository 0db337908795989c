// The proxy's balancer wiring without sockets: snapshot views onto
// ServiceBalancers (kept per service, updated only when a view changes),
// which endpoint each attempt of a connection goes to, what the admin
// endpoint shows, and the verdict a silent upstream close gives.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../policy/traffic-policy';
import { mulberry32 } from '../../agent/proxy/balancer/random';
import type { Topology } from '../../agent/proxy/balancer/types';
import { MeshBalancers, type MeshEndpoint, endpointKey, pickAttempt, toMeshEndpoint } from '../../agent/proxy/balancers';
import { DEAD_APP_WINDOW_MS, type SilentEnd, silentEndOutcome } from '../../agent/proxy/outcome';
import type { EndpointView, ProxySnapshot, ServiceView } from '../../agent/proxy/types';
import { parseLocality } from '../../proto/model/locality';

const client: Topology = { locality: parseLocality('us-east/zone-a'), network: 'net-a', labels: {} };

function ep(address: string, locality: string, healthy = true, port = 15006): EndpointView {
  return { address, mtlsPort: port, identity: `spiffe://t/ns/shop/sa/${address}`, workload: address, healthy, ports: [], locality: parseLocality(locality), network: 'net-a', labels: {} };
}

function view(endpoints: EndpointView[], policy?: TrafficPolicy, key = 'cart.shop'): ServiceView {
  return { key, hostname: `${key}.svc`, vip: '', ports: [{ name: 'tcp', port: 80, protocol: 'TCP' }], endpoints, version: '1', ...(policy ? { policy } : {}) };
}

function snap(...views: ServiceView[]): ProxySnapshot {
  return { version: 'v', services: new Map(views.map((v) => [v.key, v])) };
}

class Clock {
  t = 1_000;
  readonly now = (): number => this.t;
}

const ZONES = [ep('10.0.0.1', 'us-east/zone-a'), ep('10.0.0.2', 'us-east/zone-a'), ep('10.0.1.1', 'us-east/zone-b'), ep('10.0.2.1', 'us-west/zone-a')];

describe('endpoint keys and views', () => {
  it('keys an endpoint by the address:port dialled, IPv6 in brackets (the outbound stats key)', () => {
    assert.equal(endpointKey('10.0.0.1', 15006), '10.0.0.1:15006');
    assert.equal(endpointKey('fd00::1', 15006), '[fd00::1]:15006');
    assert.equal(toMeshEndpoint(ZONES[0]!).key, '10.0.0.1:15006');
  });

  it('fills what an older federation does not send: weight 1, unknown locality and network, no labels', () => {
    const e = toMeshEndpoint({ address: '10.0.0.9', mtlsPort: 1, identity: 'x', workload: 'w', healthy: false, ports: [] });
    assert.deepEqual(
      { key: e.key, weight: e.weight, healthy: e.healthy, locality: e.locality, network: e.network, labels: e.labels, load: e.load },
      { key: '10.0.0.9:1', weight: 1, healthy: false, locality: { region: '', zone: '', subzone: '' }, network: '', labels: {}, load: { active: 0, forwarded: 0 } },
    );
  });
});

describe('MeshBalancers.sync', () => {
  it('keeps one balancer per service and updates it only when its view object changes', () => {
    const clock = new Clock();
    const lbs = new MeshBalancers(client, clock.now);
    const v1 = view(ZONES);
    lbs.sync(snap(v1));
    const entry = lbs.entry(v1);
    const p1 = entry.balancer.picker(clock.t);
    // The same view in a new snapshot: nothing rebuilt.
    lbs.sync(snap(v1, view([ep('10.9.9.9', 'us-east/zone-a')], undefined, 'other.shop')));
    assert.equal(lbs.entry(v1), entry);
    assert.equal(entry.balancer.picker(clock.t), p1);
    // A new view object: same entry, new picker.
    const v2 = view(ZONES.slice(1));
    lbs.sync(snap(v2));
    assert.equal(lbs.entry(v2), entry);
    assert.notEqual(entry.balancer.picker(clock.t), p1);
    assert.equal(entry.view, v2);
  });

  it('drops the balancers of services that left the snapshot, outlier state with them', () => {
    const clock = new Clock();
    const lbs = new MeshBalancers(client, clock.now);
    const v = view(ZONES);
    lbs.sync(snap(v));
    for (let i = 0; i < 3; i++) lbs.record(lbs.entry(v), '10.0.0.1:15006', 'connect-failure');
    assert.equal(lbs.describe().services['cart.shop']!.endpoints[0]!.health, 'ejected');
    lbs.sync(snap());
    assert.deepEqual(lbs.describe().services, {});
    lbs.sync(snap(v));
    assert.equal(lbs.describe().services['cart.shop']!.endpoints[0]!.health, 'healthy');
  });

  it('carries outlier state and connection counts over to the next view by endpoint key', () => {
    const clock = new Clock();
    const lbs = new MeshBalancers(client, clock.now);
    const v1 = view(ZONES);
    lbs.sync(snap(v1));
    const e1 = lbs.entry(v1);
    e1.endpointFor(ZONES[1]!)!.load.active = 4;
    for (let i = 0; i < 3; i++) lbs.record(e1, '10.0.0.1:15006', 'connect-failure');
    // Fresh objects for the same endpoints, as every push builds them.
    const v2 = view(ZONES.map((e) => ({ ...e })));
    lbs.sync(snap(v2));
    const e2 = lbs.entry(v2);
    assert.equal(e2.endpointFor(ZONES[1]!)!.load.active, 4);
    const d = lbs.describe().services['cart.shop']!;
    assert.equal(d.endpoints.find((e) => e.key === '10.0.0.1:15006')!.health, 'ejected');
    assert.equal(d.endpoints.find((e) => e.key === '10.0.0.2:15006')!.active, 4);
  });

  it('takes a new policy, and falls back to the defaults when the view no longer has one', () => {
    const clock = new Clock();
    const lbs = new MeshBalancers(client, clock.now);
    const rr: TrafficPolicy = { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin', connectTimeoutMs: 250 };
    lbs.sync(snap(view(ZONES, rr)));
    assert.equal(lbs.describe().services['cart.shop']!.loadBalancer, 'round-robin');
    assert.equal(lbs.entry(view([])).balancer.connectTimeoutMs(), 250);
    lbs.sync(snap(view(ZONES)));
    assert.equal(lbs.describe().services['cart.shop']!.loadBalancer, 'least-request');
    assert.equal(lbs.entry(view([])).balancer.connectTimeoutMs(), undefined);
  });

  it('gives a view whose service is not synced a throwaway balancer', () => {
    const lbs = new MeshBalancers(client);
    const e = lbs.entry(view([ep('10.0.0.1', 'us-east/zone-a')], undefined, 'gone.shop'));
    const r = e.balancer.picker(0).pick(Math.random, () => 0);
    assert.equal(r.type === 'pick' && r.endpoint.key, '10.0.0.1:15006');
    assert.deepEqual(lbs.describe().services, {});
  });
});

describe('pickAttempt', () => {
  const setup = (endpoints = ZONES) => {
    const lbs = new MeshBalancers(client, () => 0);
    const v = view(endpoints);
    lbs.sync(snap(v));
    return lbs.entry(v);
  };
  const keyOf = (r: ReturnType<typeof pickAttempt>): string | undefined => (r?.type === 'pick' ? r.endpoint.view.address : r?.type);

  it('first attempt: the client zone; retries: a priority not yet tried, then the next', () => {
    const entry = setup();
    const random = mulberry32(7);
    const tried = new Set<string>();
    const order: Array<string | undefined> = [];
    for (let i = 0; i < 4; i++) {
      const r = pickAttempt(entry.balancer.picker(0), tried, random, undefined);
      order.push(keyOf(r));
      if (r?.type === 'pick') tried.add(r.endpoint.key);
    }
    assert.ok(['10.0.0.1', '10.0.0.2'].includes(order[0]!), `first: ${order[0]}`);
    assert.deepEqual(order.slice(1, 3), ['10.0.1.1', '10.0.2.1']);
    // The fourth goes back to zone-a's other endpoint: different endpoint before repeating.
    assert.ok(['10.0.0.1', '10.0.0.2'].includes(order[3]!) && order[3] !== order[0]);
  });

  it('puts the endpoint the client addressed first, even when unhealthy, then balances', () => {
    const west = { ...ZONES[3]!, healthy: false };
    const entry = setup([...ZONES.slice(0, 3), west]);
    const preferred: MeshEndpoint = entry.endpointFor(west)!;
    assert.equal(preferred.key, '10.0.2.1:15006');
    const first = pickAttempt(entry.balancer.picker(0), new Set(), Math.random, preferred);
    assert.equal(keyOf(first), '10.0.2.1');
    const second = pickAttempt(entry.balancer.picker(0), new Set([preferred.key]), mulberry32(1), preferred);
    assert.ok(['10.0.0.1', '10.0.0.2'].includes(keyOf(second)!), `second: ${keyOf(second)}`);
  });

  it('stops (undefined) once every endpoint has been tried, rather than dial one twice', () => {
    const entry = setup([ZONES[0]!]);
    const r = pickAttempt(entry.balancer.picker(0), new Set(['10.0.0.1:15006']), Math.random, undefined);
    assert.equal(r, undefined);
  });

  it('says why when there is nothing to pick', () => {
    const r = pickAttempt(setup([]).balancer.picker(0), new Set(), Math.random, undefined);
    assert.equal(r?.type, 'none');
    assert.equal(r?.type === 'none' && r.reason, 'no-endpoints');
  });
});

describe('MeshBalancers.describe', () => {
  it('shows priority, health, ejection, consecutive failures and share per endpoint', () => {
    const clock = new Clock();
    const lbs = new MeshBalancers(client, clock.now);
    const v = view(ZONES);
    lbs.sync(snap(v));
    for (let i = 0; i < 3; i++) lbs.record(lbs.entry(v), '10.0.0.1:15006', 'connect-failure');
    lbs.record(lbs.entry(v), '10.0.0.2:15006', 'reset');
    clock.t += 4_000;
    const d = lbs.describe();
    assert.equal(d.client.locality, 'us-east/zone-a');
    const s = d.services['cart.shop']!;
    assert.equal(s.mode, 'locality');
    assert.equal(s.panic, false);
    const row = (k: string) => s.endpoints.find((e) => e.key === k)!;
    const a1 = row('10.0.0.1:15006');
    assert.equal(a1.health, 'ejected');
    assert.equal(a1.ejection!.remainingMs, 6_000);
    assert.equal(a1.ejection!.multiplier, 1);
    assert.ok(Math.abs(Date.parse(a1.ejection!.until) - (Date.now() + 6_000)) < 1_000);
    assert.equal(row('10.0.0.2:15006').consecutiveFailures, 1);
    // Half of zone-a out: 70 / 30 by the 1.4 rule.
    assert.deepEqual(
      s.endpoints.map((e) => [e.workload, e.priority, e.share]),
      [
        ['10.0.0.1', 0, 0],
        ['10.0.0.2', 0, 70],
        ['10.0.1.1', 2, 30],
        ['10.0.2.1', 3, 0],
      ],
    );
  });

  it('says panic when every endpoint is unhealthy, and shares traffic over all of them', () => {
    const lbs = new MeshBalancers(client, () => 0);
    lbs.sync(snap(view(ZONES.map((e) => ({ ...e, healthy: false })))));
    const s = lbs.describe().services['cart.shop']!;
    assert.equal(s.panic, true);
    assert.equal(s.totalPanic, true);
    assert.ok(s.endpoints.every((e) => e.health === 'unhealthy' && e.eligible && e.share > 0));
    assert.equal(Math.round(s.endpoints.reduce((a, e) => a + e.share, 0)), 100);
  });
});

describe('silentEndOutcome: an upstream that ended before sending a byte', () => {
  const cases: Array<[string, SilentEnd, string | undefined]> = [
    ['a reset is a reset', { how: 'error', clientEndedFirst: false, elapsedMs: 5 }, 'reset'],
    ['a reset after the client hung up is still a reset', { how: 'error', clientEndedFirst: true, elapsedMs: 5_000 }, 'reset'],
    ['a clean close right after the handshake, client still there: the app is dead', { how: 'end', clientEndedFirst: false, elapsedMs: 3 }, 'reset'],
    ['a clean close after holding the connection a while: works', { how: 'end', clientEndedFirst: false, elapsedMs: DEAD_APP_WINDOW_MS }, 'success'],
    ['a close that followed the client\'s half-close says nothing', { how: 'end', clientEndedFirst: true, elapsedMs: 3 }, undefined],
    ['a socket we closed because the client went away says nothing', { how: 'close', clientEndedFirst: false, elapsedMs: 3 }, undefined],
  ];
  for (const [name, e, want] of cases) it(name, () => assert.equal(silentEndOutcome(e), want));
});
