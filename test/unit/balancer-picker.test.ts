// The picker end to end over plain data: priorities from locality, the 1.4
// spill, panic, least-request with two choices, retries, distribute, round
// robin, and what describe() reports. Statistical checks draw from a seeded
// PRNG, so they are deterministic; tolerances are several standard errors.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import type { Ejection } from '../../agent/proxy/balancer/outlier';
import { type Picker, type PickResult, buildPicker } from '../../agent/proxy/balancer/picker';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../policy/traffic-policy';
import { mulberry32 } from '../../agent/proxy/balancer/random';
import type { BalancerEndpoint, Random, Topology } from '../../agent/proxy/balancer/types';
import { parseLocality } from '../../proto/model/locality';

type Ep = BalancerEndpoint;

function ep(key: string, locality: string, o: { healthy?: boolean; weight?: number; network?: string; labels?: Record<string, string> } = {}): Ep {
  return { key, locality: parseLocality(locality), network: o.network ?? 'net-a', labels: o.labels ?? {}, weight: o.weight ?? 1, healthy: o.healthy ?? true };
}

const client: Topology = { locality: parseLocality('us-east/zone-a'), network: 'net-a', labels: {} };
const idle = (): number => 0;

function policy(over: Omit<Partial<TrafficPolicy>, 'locality'> & { locality?: Partial<TrafficPolicy['locality']> } = {}): TrafficPolicy {
  const d = TRAFFIC_POLICY_DEFAULTS;
  return { ...d, ...over, locality: { ...d.locality, ...over.locality } };
}

function ejected(...keys: string[]): Map<string, Ejection> {
  return new Map(keys.map((k) => [k, { since: 0, until: 10_000, multiplier: 1 }]));
}

// Percent of n picks that went to each endpoint key.
function shares(p: Picker<Ep>, n: number, random: Random = mulberry32(42), active: (e: Ep) => number = idle): Record<string, number> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = p.pick(random, active);
    assert.equal(r.type, 'pick');
    if (r.type === 'pick') counts[r.endpoint.key] = (counts[r.endpoint.key] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(counts).map(([k, c]) => [k, (100 * c) / n]));
}

function assertShares(got: Record<string, number>, want: Record<string, number>, tolerance: number): void {
  for (const k of new Set([...Object.keys(got), ...Object.keys(want)])) {
    const g = got[k] ?? 0;
    const w = want[k] ?? 0;
    assert.ok(Math.abs(g - w) <= tolerance, `${k}: got ${g.toFixed(2)}%, want ${w}% ± ${tolerance} (all: ${JSON.stringify(got)})`);
  }
}

// Scripted random draws, cycling.
function seq(...xs: number[]): Random {
  let i = 0;
  return () => xs[i++ % xs.length]!;
}

const picked = (r: PickResult<Ep>): string => (r.type === 'pick' ? r.endpoint.key : `none:${r.reason}`);

// The acceptance lab in miniature: zone-a local, zone-b same region, a
// gateway standing in for us-west (weight = healthy endpoints behind it).
const lab = (o: { a1?: boolean; a2?: boolean; b1?: boolean; b2?: boolean } = {}): Ep[] => [
  ep('a1', 'us-east/zone-a', { healthy: o.a1 ?? true }),
  ep('a2', 'us-east/zone-a', { healthy: o.a2 ?? true }),
  ep('b1', 'us-east/zone-b', { healthy: o.b1 ?? true }),
  ep('b2', 'us-east/zone-b', { healthy: o.b2 ?? true }),
  ep('gw-west', 'us-west/zone-a', { weight: 2, network: 'net-b' }),
];

describe('buildPicker: locality and the 1.4 rule', () => {
  it('steady state: everything stays in the client zone', () => {
    const p = buildPicker({ endpoints: lab(), client });
    assertShares(shares(p, 20_000), { a1: 50, a2: 50 }, 1.5);
    const d = p.describe();
    assert.equal(d.mode, 'locality');
    assert.deepEqual(
      d.endpoints.map((e) => [e.key, e.priority, e.share]),
      [
        ['a1', 0, 50],
        ['a2', 0, 50],
        ['b1', 2, 0],
        ['b2', 2, 0],
        ['gw-west', 3, 0],
      ],
    );
    assert.deepEqual(
      d.priorities.map((l) => [l.priority, l.load]),
      [
        [0, 100],
        [2, 0],
        [3, 0],
      ],
    );
  });

  it('half of zone-a down: 70% stays, 30% spills to zone-b', () => {
    const p = buildPicker({ endpoints: lab({ a2: false }), client });
    const want = { a1: 70, b1: 15, b2: 15 };
    assertShares(shares(p, 100_000), want, 0.75);
    assert.deepEqual(Object.fromEntries(p.describe().endpoints.map((e) => [e.key, e.share])), { ...want, a2: 0, 'gw-west': 0 });
  });

  it('the same split when outlier detection, not the federation, took a2 out', () => {
    const p = buildPicker({ endpoints: lab(), client, ejections: ejected('a2') });
    assertShares(shares(p, 50_000), { a1: 70, b1: 15, b2: 15 }, 1);
    const a2 = p.describe().endpoints.find((e) => e.key === 'a2')!;
    assert.deepEqual([a2.healthy, a2.eligible, a2.ejection?.until], [true, false, 10_000]);
  });

  it('zone-a gone: everything to zone-b; zone-b gone too: to the gateway', () => {
    const zoneB = buildPicker({ endpoints: lab(), client, ejections: ejected('a1', 'a2') });
    assertShares(shares(zoneB, 10_000), { b1: 50, b2: 50 }, 2);
    const west = buildPicker({ endpoints: lab({ b1: false, b2: false }), client, ejections: ejected('a1', 'a2') });
    assert.deepEqual(shares(west, 1000), { 'gw-west': 100 });
    const r = west.pick(Math.random, idle);
    assert.deepEqual(r.type === 'pick' && [r.priority, r.panic], [3, false]);
  });

  it('brought back: traffic returns to zone-a', () => {
    const p = buildPicker({ endpoints: lab(), client, ejections: new Map() });
    assert.deepEqual(Object.keys(shares(p, 5000)).sort(), ['a1', 'a2']);
  });

  it('locality disabled: every endpoint is priority 0, shared by weight', () => {
    const p = buildPicker({ endpoints: lab(), client, policy: policy({ locality: { enabled: false } }) });
    assert.equal(p.describe().mode, 'disabled');
    assertShares(shares(p, 60_000), { a1: 100 / 6, a2: 100 / 6, b1: 100 / 6, b2: 100 / 6, 'gw-west': 200 / 6 }, 1);
  });

  it('a client with no locality treats all endpoints alike', () => {
    const p = buildPicker({ endpoints: lab(), client: { ...client, locality: parseLocality('') } });
    const d = p.describe();
    assert.equal(d.mode, 'unknown-client-locality');
    assert.ok(d.endpoints.every((e) => e.priority === 0));
  });
});

describe('buildPicker: panic', () => {
  it('every endpoint unhealthy: traffic goes to all of them, and the result says panic', () => {
    const eps = lab({ a1: false, a2: false, b1: false, b2: false }).map((e) => ({ ...e, healthy: false }));
    const p = buildPicker({ endpoints: eps, client });
    const r = p.pick(mulberry32(1), idle);
    assert.ok(r.type === 'pick' && r.panic);
    const d = p.describe();
    assert.deepEqual([d.panic, d.totalPanic], [true, true]);
    assert.ok(d.endpoints.every((e) => e.eligible && e.share > 0));
    // Total panic spreads by host count over the priorities: 2 / 2 / 1 hosts.
    assert.deepEqual(
      d.priorities.map((l) => [l.priority, l.load]),
      [
        [0, 40],
        [2, 40],
        [3, 20],
      ],
    );
    assertShares(shares(p, 50_000), { a1: 20, a2: 20, b1: 20, b2: 20, 'gw-west': 20 }, 1);
  });

  it('every endpoint ejected: panic as well', () => {
    const p = buildPicker({ endpoints: lab(), client, ejections: ejected('a1', 'a2', 'b1', 'b2', 'gw-west') });
    assert.equal(p.describe().totalPanic, true);
    assert.equal(p.pick(mulberry32(3), idle).type, 'pick');
  });

  it('one priority at 1 of 4 healthy panics (Envoy threshold 50%) and sends to all four', () => {
    const eps = [ep('a1', 'us-east/zone-a'), ep('a2', 'us-east/zone-a', { healthy: false }), ep('a3', 'us-east/zone-a', { healthy: false }), ep('a4', 'us-east/zone-a', { healthy: false })];
    assertShares(shares(buildPicker({ endpoints: eps, client }), 40_000), { a1: 25, a2: 25, a3: 25, a4: 25 }, 1);
    // With the threshold at 0 the single healthy endpoint takes everything.
    assert.deepEqual(shares(buildPicker({ endpoints: eps, client, policy: policy({ panicThreshold: 0 }) }), 1000), { a1: 100 });
  });

  it('no endpoints, or none that may take traffic: a reasoned none', () => {
    assert.deepEqual(buildPicker<Ep>({ endpoints: [], client }).pick(Math.random, idle), { type: 'none', reason: 'no-endpoints', message: 'the service has no endpoints' });
    const r = buildPicker({ endpoints: [ep('a', 'us-east/zone-a', { weight: 0 })], client }).pick(Math.random, idle);
    assert.equal(r.type === 'none' && r.reason, 'no-eligible-endpoints');
  });
});

describe('buildPicker: least request, two choices', () => {
  const three = [ep('a', 'us-east/zone-a'), ep('b', 'us-east/zone-a'), ep('c', 'us-east/zone-a')];

  it('of the two candidates drawn, the one with fewer active connections wins', () => {
    const p = buildPicker({ endpoints: three, client });
    // Draws: priority, first candidate (0.1 → a), second (0.5 of the rest → c).
    const draws = (): Random => seq(0, 0.1, 0.5);
    const active = (load: Record<string, number>) => (e: Ep) => load[e.key] ?? 0;
    assert.equal(picked(p.pick(draws(), active({ a: 5, c: 1 }))), 'c');
    assert.equal(picked(p.pick(draws(), active({ a: 1, c: 5 }))), 'a');
    assert.equal(picked(p.pick(draws(), active({ a: 3, c: 3 }))), 'a', 'a tie goes to the first draw');
    assert.equal(picked(p.pick(draws(), active({ a: 1, b: 0, c: 5 }))), 'a', 'b was not a candidate');
  });

  it('the two candidates are always different endpoints', () => {
    const p = buildPicker({ endpoints: [ep('a', 'us-east/zone-a'), ep('b', 'us-east/zone-a')], client });
    const random = mulberry32(7);
    for (let i = 0; i < 1000; i++) assert.equal(picked(p.pick(random, (e) => (e.key === 'a' ? 1 : 0))), 'b');
  });

  it('an idle endpoint among busy ones gets the 2/3 it is a candidate in', () => {
    const p = buildPicker({ endpoints: three, client });
    assertShares(shares(p, 60_000, mulberry32(5), (e) => (e.key === 'a' ? 0 : 10)), { a: 200 / 3, b: 100 / 6, c: 100 / 6 }, 1);
  });

  it('with equal load the shares follow the weights', () => {
    const eps = [ep('w1', 'us-east/zone-a', { weight: 1 }), ep('w2', 'us-east/zone-a', { weight: 2 }), ep('w3', 'us-east/zone-a', { weight: 3 })];
    const p = buildPicker({ endpoints: eps, client });
    const want = { w1: 100 / 6, w2: 200 / 6, w3: 300 / 6 };
    assertShares(shares(p, 60_000, mulberry32(11)), want, 1);
    for (const e of p.describe().endpoints) assert.ok(Math.abs(e.share - want[e.key as keyof typeof want]) < 1e-6);
  });
});

describe('buildPicker: retries', () => {
  it('a retry goes to an untried priority: zone-a failed, zone-b takes it, before any ejection', () => {
    const p = buildPicker({ endpoints: lab(), client });
    const random = mulberry32(9);
    for (let i = 0; i < 200; i++) {
      const r = p.pickRetry(new Set(['a1']), random, idle);
      assert.ok(r.type === 'pick' && r.priority === 2, picked(r));
    }
    // Zone-a and zone-b both failed this connection: the third attempt crosses to the gateway.
    assert.equal(picked(p.pickRetry(new Set(['a1', 'b2']), random, idle)), 'gw-west');
  });

  it('with a single priority, a retry takes a different endpoint', () => {
    const eps = [ep('a', 'us-east/zone-a'), ep('b', 'us-east/zone-a'), ep('c', 'us-east/zone-a')];
    const p = buildPicker({ endpoints: eps, client });
    const random = mulberry32(13);
    const seen = new Set<string>();
    for (let i = 0; i < 300; i++) seen.add(picked(p.pickRetry(new Set(['a']), random, idle)));
    assert.deepEqual([...seen].sort(), ['b', 'c']);
    assert.deepEqual(new Set(Array.from({ length: 100 }, () => picked(p.pickRetry(new Set(['a', 'b']), random, idle)))), new Set(['c']));
  });

  it('when every endpoint has failed, the retry picks as for a new connection', () => {
    const p = buildPicker({ endpoints: [ep('only', 'us-east/zone-a')], client });
    assert.equal(picked(p.pickRetry(new Set(['only']), Math.random, idle)), 'only');
  });

  it('prefers a healthy endpoint in a tried priority over unhealthy ones in an untried one', () => {
    const eps = [ep('a1', 'us-east/zone-a'), ep('a2', 'us-east/zone-a'), ep('b1', 'us-east/zone-b', { healthy: false })];
    const p = buildPicker({ endpoints: eps, client });
    const random = mulberry32(17);
    for (let i = 0; i < 100; i++) assert.equal(picked(p.pickRetry(new Set(['a1']), random, idle)), 'a2');
  });

  it('ignores the panic threshold: one healthy endpoint left takes every retry', () => {
    const eps = ['a', 'b', 'c', 'd', 'e'].map((k, i) => ep(k, 'us-east/zone-a', { healthy: i < 2 }));
    const p = buildPicker({ endpoints: eps, client });
    // A first pick panics here (2 of 5 healthy is under 50%)...
    assert.equal(p.describe().totalPanic, true);
    // ...but once a connect failed, the retry goes where it is likeliest to work.
    const random = mulberry32(19);
    for (let i = 0; i < 100; i++) assert.equal(picked(p.pickRetry(new Set(['a']), random, idle)), 'b');
  });

  it('nothing healthy left: the retry still takes an endpoint not tried yet', () => {
    const eps = [ep('a', 'us-east/zone-a', { healthy: false }), ep('b', 'us-east/zone-a', { healthy: false })];
    const r = buildPicker({ endpoints: eps, client }).pickRetry(new Set(['a']), Math.random, idle);
    assert.ok(r.type === 'pick' && r.endpoint.key === 'b' && r.panic);
  });
});

describe('buildPicker: failoverPriority', () => {
  // x is in the client's zone but on another network; y is on the client's network in another region.
  const eps = [ep('x', 'us-east/zone-a', { network: 'net-b' }), ep('y', 'us-west/zone-a', { network: 'net-a' })];

  it('by default the same zone wins', () => {
    assert.deepEqual(shares(buildPicker({ endpoints: eps, client }), 500), { x: 100 });
  });

  it('[network, region, zone] puts the same network first, as written', () => {
    const p = buildPicker({ endpoints: eps, client, policy: policy({ locality: { failoverPriority: ['network', 'region', 'zone'] } }) });
    assert.deepEqual(shares(p, 500), { y: 100 });
    const d = p.describe();
    assert.equal(d.mode, 'failover-priority');
    assert.deepEqual(
      d.endpoints.map((e) => [e.key, e.priority]),
      [
        ['x', 3],
        ['y', 2],
      ],
    );
  });

  it('label keys order by labels', () => {
    const labelled = [ep('v1', 'eu/z', { labels: { version: 'v1' } }), ep('v2', 'us-east/zone-a', { labels: { version: 'v2' } })];
    const p = buildPicker({ endpoints: labelled, client: { ...client, labels: { version: 'v1' } }, policy: policy({ locality: { failoverPriority: ['version'] } }) });
    assert.deepEqual(shares(p, 500), { v1: 100 });
  });
});

describe('buildPicker: distribute', () => {
  const eps = [
    ep('a1', 'us-east/zone-a'),
    ep('a2', 'us-east/zone-a'),
    ep('b1', 'us-east/zone-b'),
    ep('b2', 'us-east/zone-b'),
    ep('w1', 'us-west/zone-a'),
  ];
  const dist = policy({
    locality: {
      distribute: [
        {
          from: 'us-east/zone-a/*',
          to: [
            { locality: 'us-east/zone-a/*', weight: 80 },
            { locality: 'us-east/zone-b/*', weight: 20 },
          ],
        },
      ],
    },
  });

  it('splits by locality weight; localities not listed get nothing', () => {
    const p = buildPicker({ endpoints: eps, client, policy: dist });
    assertShares(shares(p, 50_000, mulberry32(23)), { a1: 40, a2: 40, b1: 10, b2: 10 }, 1);
    const w1 = p.describe().endpoints.find((e) => e.key === 'w1')!;
    assert.deepEqual([w1.priority, w1.excluded, w1.share], [null, 'not-in-distribute', 0]);
  });

  it("a locality's weight scales with its availability, min(1, 1.4 × healthy share)", () => {
    const half = eps.map((e) => (e.key === 'a2' ? { ...e, healthy: false } : e));
    // zone-a: 80 × 0.7 = 56, zone-b: 20 → 56/76 and 20/76.
    const p = buildPicker({ endpoints: half, client, policy: dist });
    const want = { a1: (100 * 56) / 76, b1: (100 * 10) / 76, b2: (100 * 10) / 76 };
    assertShares(shares(p, 80_000, mulberry32(29)), want, 1);
    for (const e of p.describe().endpoints) assert.ok(Math.abs(e.share - ((want as Record<string, number>)[e.key] ?? 0)) < 1e-4, `${e.key} ${e.share}`);
  });

  it('a client no rule matches keeps locality priorities', () => {
    const p = buildPicker({ endpoints: eps, client: { ...client, locality: parseLocality('us-west/zone-a') }, policy: dist });
    assert.equal(p.describe().mode, 'locality');
    assert.deepEqual(shares(p, 500), { w1: 100 });
  });
});

describe('buildPicker: round robin', () => {
  const rr = policy({ loadBalancer: 'round-robin' });

  it('cycles through equal endpoints from a random offset, ignoring load', () => {
    const eps = [ep('a', 'us-east/zone-a'), ep('b', 'us-east/zone-a'), ep('c', 'us-east/zone-a')];
    const p = buildPicker({ endpoints: eps, client, policy: rr });
    // Draws: priority, then the start offset (0.5 → b) on the first pick only.
    const order = Array.from({ length: 6 }, () => picked(p.pick(seq(0.5), (e) => (e.key === 'b' ? 100 : 0))));
    assert.deepEqual(order, ['b', 'c', 'a', 'b', 'c', 'a']);
  });

  it('smooth weighted round robin spreads a heavy endpoint', () => {
    const eps = [ep('a', 'us-east/zone-a', { weight: 5 }), ep('b', 'us-east/zone-a'), ep('c', 'us-east/zone-a')];
    const p = buildPicker({ endpoints: eps, client, policy: rr });
    const order = Array.from({ length: 7 }, () => picked(p.pick(seq(0), idle)));
    assert.deepEqual(order, ['a', 'a', 'b', 'a', 'c', 'a', 'a']);
  });
});

describe('buildPicker: describe()', () => {
  it('shares add up to 100 and match what pick() does', () => {
    const p = buildPicker({ endpoints: lab({ a2: false, b1: false }), client });
    const d = p.describe();
    // P0 70 → a1; P1 (1 of 2 → 70 health) takes the remaining 30 → b2.
    assert.deepEqual(Object.fromEntries(d.endpoints.map((e) => [e.key, e.share])), { a1: 70, a2: 0, b1: 0, b2: 30, 'gw-west': 0 });
    assert.equal(
      d.endpoints.reduce((a, e) => a + e.share, 0),
      100,
    );
    assertShares(shares(p, 50_000, mulberry32(31)), { a1: 70, b2: 30 }, 1);
  });

  it('a built picker does not change when the ejection map it was given does', () => {
    const ej = ejected('a1');
    const p = buildPicker({ endpoints: lab(), client, ejections: ej });
    ej.clear();
    assert.equal(p.describe().endpoints.find((e) => e.key === 'a1')!.eligible, false);
  });
});
