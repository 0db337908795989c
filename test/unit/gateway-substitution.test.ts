// Gateway substitution (federation/mesh/gateways.ts) as tables: what a
// service looks like from one network.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_GATEWAY_PORT, type GatewayInfo, gatewayIdentity, gatewayView, substituteGateways, viewForNetwork } from '../../federation/mesh/gateways';
import { serviceVersion } from '../../federation/mesh/merge';
import type { MeshEndpoint, MeshService } from '../../federation/mesh/types';

const REVIEWS = 'spiffe://cluster.local/ns/default/sa/reviews';
const REVIEWS_V2 = 'spiffe://cluster.local/ns/default/sa/reviews-v2';

function ep(address: string, network: string, over: Partial<MeshEndpoint> = {}): MeshEndpoint {
  return {
    address,
    ports: [{ name: 'http', port: 9080 }],
    mtlsPort: 15006,
    locality: { region: network === 'net-b' ? 'us-west' : 'us-east', zone: 'zone-1', subzone: '' },
    cluster: `cluster-${network}`,
    network,
    health: 'HEALTHY',
    weight: 1,
    labels: { app: 'reviews', version: address },
    identity: REVIEWS,
    meshed: true,
    workload: `default/${address}`,
    ...over,
  };
}

function svc(endpoints: MeshEndpoint[]): MeshService {
  const s: MeshService = {
    key: 'reviews.default',
    name: 'reviews',
    namespace: 'default',
    hostname: 'reviews.default.svc.cluster.local',
    vip: '240.240.0.1',
    ports: [{ name: 'http', port: 9080, targetPort: 9080, protocol: 'http' }],
    endpoints,
    version: '',
    warnings: [],
    trafficPolicy: '', routes: '',
  };
  s.version = serviceVersion(s);
  return s;
}

const GW_B: GatewayInfo = { network: 'net-b', address: '192.0.2.10', port: DEFAULT_GATEWAY_PORT };
const GW_B2: GatewayInfo = { network: 'net-b', address: '192.0.2.11', port: DEFAULT_GATEWAY_PORT };
const GW_C: GatewayInfo = { network: 'net-c', address: '198.51.100.10', port: DEFAULT_GATEWAY_PORT, locality: { region: 'eu', zone: 'eu-1', subzone: '' }, workload: 'kedge-system/gw-c' };
const GW_A: GatewayInfo = { network: 'net-a', address: '203.0.113.10', port: DEFAULT_GATEWAY_PORT };

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** The fields of an endpoint a client dials and checks, for compact expectations. */
const brief = (e: MeshEndpoint) => ({ address: e.address, mtlsPort: e.mtlsPort, network: e.network, health: e.health, weight: e.weight, identity: e.identity });

describe('gateway substitution', () => {
  it('returns the service itself when every endpoint is on the client network or has none', () => {
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.0.0.2', '')]);
    assert.equal(substituteGateways(s, 'net-a', [GW_B]), s);
  });

  it('returns the service itself for a client without a network (everything taken as reachable)', () => {
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b')]);
    assert.equal(substituteGateways(s, '', [GW_B]), s);
  });

  it("replaces another network's endpoints by its gateway, weighted by its usable endpoints, carrying the destination identity", () => {
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b'), ep('10.1.0.2', 'net-b'), ep('10.1.0.3', 'net-b', { health: 'UNHEALTHY' }), ep('10.9.0.1', '')]);
    const out = substituteGateways(s, 'net-a', [GW_B, GW_C, GW_A]);
    assert.deepEqual(out.endpoints.map(brief), [
      brief(ep('10.0.0.1', 'net-a')),
      brief(ep('10.9.0.1', '')),
      { address: '192.0.2.10', mtlsPort: 15443, network: 'net-b', health: 'HEALTHY', weight: 2, identity: REVIEWS },
    ]);
    const gw = out.endpoints[2]!;
    assert.equal(gw.meshed, true);
    assert.equal(gw.workload, 'gateway/net-b/192.0.2.10:15443');
    assert.deepEqual(gw.locality, { region: 'us-west', zone: 'zone-1', subzone: '' }, 'what the endpoints behind it share');
    assert.equal(gw.cluster, 'cluster-net-b');
    assert.deepEqual(gw.labels, { app: 'reviews' }, 'labels every endpoint behind it shares');
    assert.deepEqual(gw.ports, [{ name: 'http', port: 9080 }]);
    assert.deepEqual(out.warnings, []);
  });

  it('takes the locality and workload name of a gateway that declares them', () => {
    const out = substituteGateways(svc([ep('10.2.0.1', 'net-c'), ep('10.2.0.2', 'net-c', { locality: { region: 'eu', zone: 'eu-2', subzone: '' } })]), 'net-a', [GW_C]);
    assert.deepEqual(out.endpoints.map((e) => [e.locality, e.workload, e.weight]), [[{ region: 'eu', zone: 'eu-1', subzone: '' }, 'kedge-system/gw-c', 2]]);
  });

  it('shares only the locality prefix the endpoints have in common', () => {
    const out = substituteGateways(svc([ep('10.1.0.1', 'net-b'), ep('10.1.0.2', 'net-b', { locality: { region: 'us-west', zone: 'zone-2', subzone: '' } })]), 'net-a', [GW_B]);
    assert.deepEqual(out.endpoints[0]!.locality, { region: 'us-west', zone: '', subzone: '' });
  });

  it('gives one endpoint per gateway and splits the network weight between them (all weights scaled by the gateway count)', () => {
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b'), ep('10.1.0.2', 'net-b'), ep('10.1.0.3', 'net-b')]);
    const out = substituteGateways(s, 'net-a', [GW_B2, GW_B]);
    assert.deepEqual(out.endpoints.map((e) => [e.address, e.weight]), [
      ['10.0.0.1', 2],
      ['192.0.2.10', 3],
      ['192.0.2.11', 3],
    ]);
    // net-a's one endpoint to net-b's three, as if they were reachable directly.
  });

  it('scales by the LCM of the gateway counts of several networks', () => {
    const GW_C2 = { ...GW_C, address: '198.51.100.11', workload: undefined };
    const GW_C3 = { ...GW_C, address: '198.51.100.12', workload: undefined };
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b'), ep('10.2.0.1', 'net-c')]);
    const out = substituteGateways(s, 'net-a', [GW_B, GW_B2, GW_C, GW_C2, GW_C3]);
    assert.deepEqual(out.endpoints.map((e) => [e.network, e.weight]), [
      ['net-a', 6],
      ['net-b', 3],
      ['net-b', 3],
      ['net-c', 2],
      ['net-c', 2],
      ['net-c', 2],
    ]);
  });

  it('sums endpoint weights behind a gateway (a count when they are 1), counting unset weight as 1', () => {
    const out = substituteGateways(svc([ep('10.1.0.1', 'net-b', { weight: 5 }), ep('10.1.0.2', 'net-b', { weight: 0 })]), 'net-a', [GW_B]);
    assert.equal(out.endpoints[0]!.weight, 6);
  });

  const healthCases: { name: string; health: MeshEndpoint['health'][]; want: MeshEndpoint['health']; weight: number }[] = [
    { name: 'every endpoint unhealthy: UNHEALTHY, weight 1 (for panic mode)', health: ['UNHEALTHY', 'UNHEALTHY'], want: 'UNHEALTHY', weight: 1 },
    { name: 'only stale ones: STALE, counted (the agent treats stale as usable)', health: ['STALE', 'UNHEALTHY', 'STALE'], want: 'STALE', weight: 2 },
    { name: 'unknown and stale: HEALTH_UNKNOWN', health: ['STALE', 'HEALTH_UNKNOWN'], want: 'HEALTH_UNKNOWN', weight: 2 },
    { name: 'one healthy is enough for HEALTHY', health: ['UNHEALTHY', 'STALE', 'HEALTHY'], want: 'HEALTHY', weight: 2 },
  ];
  for (const c of healthCases) {
    it(`health behind the gateway: ${c.name}`, () => {
      const out = substituteGateways(svc(c.health.map((h, i) => ep(`10.1.0.${i + 1}`, 'net-b', { health: h }))), 'net-a', [GW_B]);
      assert.deepEqual(out.endpoints.map((e) => [e.health, e.weight]), [[c.want, c.weight]]);
    });
  }

  it('drops the endpoints of a network without a gateway, with a warning', () => {
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.2.0.1', 'net-c'), ep('10.2.0.2', 'net-c')]);
    const out = substituteGateways(s, 'net-a', [GW_B]);
    assert.deepEqual(out.endpoints.map((e) => e.address), ['10.0.0.1']);
    assert.deepEqual(out.warnings, ['network net-c: 2 endpoint(s) unreachable from network net-a; no east-west gateway is registered for net-c']);
  });

  it('never substitutes a gateway of the client network for anything', () => {
    const out = substituteGateways(svc([ep('10.1.0.1', 'net-b')]), 'net-a', [GW_A]);
    assert.deepEqual(out.endpoints, []);
  });

  it('drops plaintext endpoints of another network (a gateway carries mesh TLS only), with a warning', () => {
    const out = substituteGateways(svc([ep('10.1.0.1', 'net-b'), ep('10.1.0.2', 'net-b', { meshed: false, identity: '', mtlsPort: 0 })]), 'net-a', [GW_B]);
    assert.deepEqual(out.endpoints.map(brief), [{ address: '192.0.2.10', mtlsPort: 15443, network: 'net-b', health: 'HEALTHY', weight: 1, identity: REVIEWS }]);
    assert.match(out.warnings.join('\n'), /net-b: 1 plaintext endpoint\(s\) unreachable/);
  });

  describe('several identities behind one network', () => {
    // Three endpoints are reviews (one of them unhealthy), two reviews-v2.
    const mixed = svc([
      ep('10.1.0.1', 'net-b'),
      ep('10.1.0.2', 'net-b', { identity: REVIEWS_V2 }),
      ep('10.1.0.3', 'net-b', { health: 'UNHEALTHY' }),
      ep('10.1.0.4', 'net-b', { identity: REVIEWS_V2 }),
      ep('10.1.0.5', 'net-b'),
      ep('10.0.0.1', 'net-a', { identity: REVIEWS_V2 }),
    ]);

    it('advertises one endpoint per gateway with the identity most endpoints there have, weighted by those only, with a warning', () => {
      const out = substituteGateways(mixed, 'net-a', [GW_B, GW_B2]);
      assert.deepEqual(out.endpoints.map((e) => [e.address, e.identity, e.weight, e.health]), [
        ['10.0.0.1', REVIEWS_V2, 2, 'HEALTHY'],
        ['192.0.2.10', REVIEWS, 2, 'HEALTHY'],
        ['192.0.2.11', REVIEWS, 2, 'HEALTHY'],
      ]);
      assert.match(out.warnings.join('\n'), /network net-b: 2 endpoint\(s\) with identity .*reviews-v2 unreachable from network net-a; its gateway serves only .*sa\/reviews,/);
    });

    it('gives the gateway exactly the endpoints of that identity on its network, so every connection it carries passes the client check', () => {
      const out = gatewayView(mixed, 'net-b');
      assert.deepEqual(out.endpoints.map((e) => [e.address, e.identity]), [
        ['10.1.0.1', REVIEWS],
        ['10.1.0.3', REVIEWS],
        ['10.1.0.5', REVIEWS],
      ]);
      assert.match(out.warnings.join('\n'), /net-b: 2 endpoint\(s\) with identity .*reviews-v2 not served by its gateway/);
    });

    it('chooses by endpoint count whatever their health (stable while health changes), ties to the smallest identity', () => {
      const allSick = mixed.endpoints.filter((e) => e.network === 'net-b').map((e) => (e.identity === REVIEWS ? { ...e, health: 'UNHEALTHY' as const } : e));
      assert.equal(gatewayIdentity(allSick), REVIEWS);
      const tie = [ep('1.1.1.1', 'n', { identity: 'spiffe://x/b' }), ep('1.1.1.2', 'n', { identity: 'spiffe://x/a' })];
      assert.equal(gatewayIdentity(tie), 'spiffe://x/a');
      assert.equal(gatewayIdentity([...tie].reverse()), 'spiffe://x/a');
    });
  });

  it('ignores duplicate gateway registrations and the order gateways are listed in', () => {
    const s = svc([ep('10.1.0.1', 'net-b'), ep('10.2.0.1', 'net-c')]);
    const a = substituteGateways(s, 'net-a', [GW_B, GW_C, GW_B2, GW_B]);
    const b = substituteGateways(s, 'net-a', [GW_C, GW_B2, GW_B]);
    assert.deepEqual(a, b);
  });

  it('recomputes the version, which follows the gateway set and the health behind it', () => {
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b')]);
    const one = substituteGateways(s, 'net-a', [GW_B]);
    assert.notEqual(one.version, s.version);
    assert.equal(one.version, serviceVersion(one));
    assert.equal(substituteGateways(s, 'net-a', [GW_B]).version, one.version, 'deterministic');
    assert.notEqual(substituteGateways(s, 'net-a', [GW_B, GW_B2]).version, one.version, 'a second gateway changes it');
    assert.notEqual(substituteGateways(s, 'net-a', []).version, one.version, 'losing the gateway changes it');
    const sick = svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b', { health: 'UNHEALTHY' })]);
    assert.notEqual(substituteGateways(sick, 'net-a', [GW_B]).version, one.version, 'health behind the gateway changes it');
  });

  it('does not modify its inputs', () => {
    const s = deepFreeze(svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b'), ep('10.1.0.2', 'net-b')]));
    const gws = deepFreeze([GW_B, GW_B2]);
    const before = JSON.stringify(s);
    substituteGateways(s, 'net-a', gws);
    assert.equal(JSON.stringify(s), before);
  });

  it('gives a gateway only the meshed endpoints of its own network', () => {
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b'), ep('10.1.0.2', 'net-b', { meshed: false, identity: '', mtlsPort: 0 }), ep('10.9.0.1', '')]);
    const out = gatewayView(s, 'net-b');
    assert.deepEqual(out.endpoints.map((e) => e.address), ['10.1.0.1']);
    assert.equal(out.version, serviceVersion(out));
    const only = svc([ep('10.1.0.1', 'net-b')]);
    assert.equal(gatewayView(only, 'net-b'), only);
    assert.deepEqual(gatewayView(svc([ep('10.0.0.1', 'net-a')]), 'net-b').endpoints, []);
  });

  it('builds a whole view for a network, for workloads and for gateways', () => {
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b')]);
    const view = { services: new Map([[s.key, s]]) };
    assert.deepEqual(viewForNetwork(view, 'net-a', [GW_B]).services.get(s.key)!.endpoints.map((e) => e.address), ['10.0.0.1', '192.0.2.10']);
    assert.deepEqual(viewForNetwork(view, 'net-b', [GW_B], 'gateway').services.get(s.key)!.endpoints.map((e) => e.address), ['10.1.0.1']);
  });

  it('gives a workload with no network the view itself, as substituteGateways gives it every service', () => {
    const s = svc([ep('10.0.0.1', 'net-a'), ep('10.1.0.1', 'net-b')]);
    const view = { services: new Map([[s.key, s]]) };
    assert.equal(viewForNetwork(view, '', [GW_B]), view);
    assert.equal(substituteGateways(s, '', [GW_B]), s);
    // A gateway with no network still gets its own view.
    assert.notEqual(viewForNetwork(view, '', [GW_B], 'gateway'), view);
  });
});
