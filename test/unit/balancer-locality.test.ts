// Priorities from locality, from an explicit failover order (Istio's
// failoverPriority), and locality weights from distribute rules.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { distributeWeights } from '../../agent/proxy/balancer/distribute';
import { failoverPriority, localityMatches, localityPriority } from '../../agent/proxy/balancer/locality';
import type { BalancerEndpoint, Locality, Topology } from '../../agent/proxy/balancer/types';
import { parseLocality } from '../../proto/model/locality';

const loc = (s: string): Locality => parseLocality(s);
const topo = (locality: string, network = '', labels: Record<string, string> = {}): Topology => ({ locality: loc(locality), network, labels });

describe('localityPriority', () => {
  const client = 'us-east/zone-a/rack-1';
  const cases: { ep: string; want: number; client?: string }[] = [
    { ep: 'us-east/zone-a/rack-1', want: 0 },
    { ep: 'us-east/zone-a/rack-2', want: 1 },
    { ep: 'us-east/zone-a', want: 1 },
    { ep: 'us-east/zone-b/rack-1', want: 2 },
    { ep: 'us-east', want: 2 },
    { ep: 'us-west/zone-a/rack-1', want: 3 },
    { ep: '', want: 3 },
    { client: 'us-east/zone-a', ep: 'us-east/zone-a', want: 0 },
    { client: 'us-east/zone-a', ep: 'us-east/zone-a/rack-9', want: 1 },
    { client: 'us-east', ep: 'us-east', want: 0 },
    { client: 'us-east', ep: 'us-east/zone-a', want: 2 },
  ];
  for (const c of cases) {
    const from = c.client ?? client;
    it(`${from} → ${c.ep || '(unknown)'}: ${c.want}`, () => assert.equal(localityPriority(loc(from), loc(c.ep)), c.want));
  }
});

describe('failoverPriority', () => {
  const client = topo('us-east/zone-a', 'net-a', { version: 'v1', tier: 'gold' });
  const cases: { name: string; order: string[]; ep: Topology; want: number }[] = [
    { name: 'all three keys match → 0', order: ['network', 'region', 'zone'], ep: topo('us-east/zone-a', 'net-a'), want: 0 },
    { name: 'network and region match → 1', order: ['network', 'region', 'zone'], ep: topo('us-east/zone-b', 'net-a'), want: 1 },
    { name: 'only network matches → 2', order: ['network', 'region', 'zone'], ep: topo('us-west/zone-a', 'net-a'), want: 2 },
    { name: 'network differs → 3 (N)', order: ['network', 'region', 'zone'], ep: topo('us-east/zone-a', 'net-b'), want: 3 },
    {
      name: 'a later key counts only when every earlier one matched',
      order: ['region', 'zone'],
      ep: topo('us-west/zone-a', 'net-a'),
      want: 2,
    },
    { name: 'order matters: zone first ignores region', order: ['zone'], ep: topo('us-west/zone-a'), want: 0 },
    { name: 'label names', order: ['version', 'tier'], ep: topo('eu/x', 'net-z', { version: 'v1', tier: 'gold' }), want: 0 },
    { name: 'label names, second differs', order: ['version', 'tier'], ep: topo('eu/x', 'net-z', { version: 'v1', tier: 'silver' }), want: 1 },
    { name: 'label missing on the endpoint', order: ['version'], ep: topo('us-east/zone-a'), want: 1 },
    { name: 'label missing on both sides matches (Istio compares empty values)', order: ['shard', 'version'], ep: topo('x', '', { version: 'v1' }), want: 0 },
    {
      name: "Istio's topology label names",
      order: ['topology.istio.io/network', 'topology.kubernetes.io/region', 'topology.kubernetes.io/zone'],
      ep: topo('us-east/zone-b', 'net-a'),
      want: 1,
    },
    { name: 'key=value compares the endpoint with the value, not the client', order: ['network=net-b', 'region'], ep: topo('us-east/zone-a', 'net-b'), want: 0 },
    { name: 'key=value that the endpoint does not match', order: ['network=net-b', 'region'], ep: topo('us-east/zone-a', 'net-a'), want: 2 },
    { name: 'empty order: everything is 0', order: [], ep: topo('mars/base'), want: 0 },
  ];
  for (const c of cases) {
    it(c.name, () => assert.equal(failoverPriority(client, c.ep, c.order), c.want));
  }
});

describe('localityMatches', () => {
  const l = loc('us-east/zone-a/rack-1');
  const cases: [string, boolean][] = [
    ['*', true],
    ['us-east', true],
    ['us-east/*', true],
    ['us-east/zone-a', true],
    ['us-east/zone-a/*', true],
    ['us-east/zone-a/rack-1', true],
    ['us-east/zone-a/rack-2', false],
    ['us-east/zone-b/*', false],
    ['us-west/*', false],
    ['', false],
  ];
  for (const [pattern, want] of cases) it(`${pattern || '(empty)'} → ${want}`, () => assert.equal(localityMatches(pattern, l), want));
});

describe('distributeWeights', () => {
  const ep = (key: string, locality: string, weight = 1): BalancerEndpoint => ({ key, locality: loc(locality), network: '', labels: {}, weight, healthy: true });
  const eps = [ep('a1', 'us-east/zone-a'), ep('a2', 'us-east/zone-a'), ep('b1', 'us-east/zone-b'), ep('c1', 'us-east/zone-c', 2), ep('w1', 'us-west/zone-a')];
  const asObject = (m: ReadonlyMap<string, number> | undefined): Record<string, number> => Object.fromEntries(m ?? []);

  it('the first rule whose from matches the client decides', () => {
    const r = distributeWeights(loc('us-east/zone-a'), eps, [
      { from: 'us-west/*', to: [{ locality: 'us-west/*', weight: 100 }] },
      { from: 'us-east/zone-a/*', to: [{ locality: 'us-east/zone-a/*', weight: 80 }, { locality: 'us-west/*', weight: 20 }] },
      { from: 'us-east/*', to: [{ locality: 'us-east/*', weight: 100 }] },
    ]);
    assert.equal(r?.from, 'us-east/zone-a/*');
    assert.deepEqual(asObject(r?.weights), { 'us-east/zone-a/': 80, 'us-west/zone-a/': 20 });
  });

  it('a wildcard splits its weight over the localities it claims by their endpoint weight', () => {
    // zone-a has weight 2 (two endpoints), zone-b 1, zone-c 2 (one endpoint of weight 2).
    const r = distributeWeights(loc('us-east/zone-a'), eps, [{ from: '*', to: [{ locality: 'us-east/*', weight: 100 }] }]);
    assert.deepEqual(asObject(r?.weights), { 'us-east/zone-a/': 40, 'us-east/zone-b/': 20, 'us-east/zone-c/': 40 });
  });

  it('an earlier pattern keeps what it claimed', () => {
    const r = distributeWeights(loc('us-east/zone-a'), eps, [
      { from: '*', to: [{ locality: 'us-east/zone-b', weight: 30 }, { locality: 'us-east/*', weight: 70 }] },
    ]);
    assert.deepEqual(asObject(r?.weights), { 'us-east/zone-b/': 30, 'us-east/zone-a/': 35, 'us-east/zone-c/': 35 });
  });

  it('no rule for the client: undefined (failover priorities apply)', () => {
    assert.equal(distributeWeights(loc('eu/x'), eps, [{ from: 'us-east/*', to: [{ locality: 'us-east/*', weight: 100 }] }]), undefined);
  });
});
