// Envoy's priority arithmetic as tables. Most rows are Envoy's own
// (load_balancer_impl_test.cc: GentleFailover, GentleFailoverWithExtraLevels,
// OverProvisioningFactor), so a difference from Envoy shows up here first.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { levelHealth, planPriorities, priorityLoad } from '../../agent/proxy/balancer/priority';

// [hosts, healthy] per level.
type Row = { name: string; levels: [number, number][]; load: number[]; panic: boolean[]; totalPanic?: boolean; threshold?: number };

const rows: Row[] = [
  { name: 'all healthy: P0 takes everything', levels: [[1, 1], [1, 1]], load: [100, 0], panic: [false, false] },
  { name: 'the 1.4 rule: 2 of 4 healthy in P0 → 70 / 30', levels: [[4, 2], [4, 4]], load: [70, 30], panic: [false, false] },
  { name: 'half healthy in both: 70 / 30 (Envoy GentleFailover)', levels: [[2, 1], [2, 1]], load: [70, 30], panic: [false, false] },
  { name: '3 of 4 healthy: 105 capped at 100, P0 keeps all', levels: [[4, 3], [4, 4]], load: [100, 0], panic: [false, false] },
  { name: 'exactly 1/1.4 healthy (5 of 7): P0 keeps all', levels: [[7, 5], [7, 7]], load: [100, 0], panic: [false, false] },
  { name: '1 of 4 healthy: 35 / 65, P0 under the panic threshold but total health is 100', levels: [[4, 1], [2, 2]], load: [35, 65], panic: [false, false] },
  { name: '1 of 3 healthy: floor(46.6) = 46', levels: [[3, 1], [3, 3]], load: [46, 54], panic: [false, false] },
  { name: '2 of 3 healthy: floor(93.3) = 93', levels: [[3, 2], [3, 3]], load: [93, 7], panic: [false, false] },
  { name: 'P0 dead: everything to P1', levels: [[2, 0], [2, 2]], load: [0, 100], panic: [false, false] },
  { name: 'total health 70 < 100: scaled to 50 / 50, both in panic', levels: [[4, 1], [4, 1]], load: [50, 50], panic: [true, true], totalPanic: true },
  { name: 'three levels: 70 / 30 / 0', levels: [[2, 1], [2, 1], [2, 1]], load: [70, 30, 0], panic: [false, false, false] },
  { name: 'three levels: 35 / 65 / 0', levels: [[4, 1], [2, 2], [2, 1]], load: [35, 65, 0], panic: [false, false, false] },
  { name: 'three levels at 35: 105 caps at 100, 35 / 35 / 30, no panic', levels: [[4, 1], [4, 1], [4, 1]], load: [35, 35, 30], panic: [false, false, false] },
  { name: 'three levels at 28: total panic, 34 / 33 / 33 (rounding to P0)', levels: [[5, 1], [5, 1], [5, 1]], load: [34, 33, 33], panic: [true, true, true], totalPanic: true },
  { name: 'P0 and P1 dead, P2 healthy', levels: [[5, 0], [5, 0], [5, 5]], load: [0, 0, 100], panic: [false, false, false] },
  { name: 'P0 and P1 dead, P2 at 4/5: 112 → 100', levels: [[5, 0], [5, 0], [5, 4]], load: [0, 0, 100], panic: [false, false, false] },
  { name: 'P0 and P1 dead, P2 at 2/5: total panic by host count', levels: [[5, 0], [5, 0], [5, 2]], load: [34, 33, 33], panic: [true, true, true], totalPanic: true },
  { name: 'everything dead: by host count 5/3/2', levels: [[5, 0], [3, 0], [2, 0]], load: [50, 30, 20], panic: [true, true, true], totalPanic: true },
  { name: 'total panic rounding: 5/6/3 hosts → 37 / 42 / 21', levels: [[5, 0], [6, 2], [3, 1]], load: [37, 42, 21], panic: [true, true, true], totalPanic: true },
  { name: 'total panic with an empty P0: remainder to P1', levels: [[0, 0], [6, 0], [3, 0]], load: [0, 67, 33], panic: [true, true, true], totalPanic: true },
  { name: 'one level, every endpoint unhealthy: panic, all load', levels: [[3, 0]], load: [100], panic: [true], totalPanic: true },
  { name: 'one level, 1 of 4 healthy: 25% < 50% → panic', levels: [[4, 1]], load: [100], panic: [true], totalPanic: true },
  { name: 'one level, 2 of 4 healthy: 50% is not below 50% → no panic', levels: [[4, 2]], load: [100], panic: [false] },
  {
    name: 'P1 in panic without load does not matter; P0 at 60% is not in panic',
    levels: [[10, 6], [10, 0]],
    load: [100, 0],
    panic: [false, true],
  },
  { name: 'panic threshold 0: a weak P0 is not in panic', levels: [[4, 1]], load: [100], panic: [false], threshold: 0 },
  { name: 'panic threshold 0 still panics when nothing is healthy (Kedge, not Envoy)', levels: [[2, 0], [1, 0]], load: [67, 33], panic: [true, true], totalPanic: true, threshold: 0 },
  { name: 'no levels', levels: [], load: [], panic: [] },
];

describe('priorityLoad', () => {
  for (const r of rows) {
    it(r.name, () => {
      const got = priorityLoad(
        r.levels.map(([hosts, healthy]) => ({ hosts, healthy })),
        r.threshold === undefined ? {} : { panicThreshold: r.threshold },
      );
      assert.deepEqual(got.load, r.load);
      assert.deepEqual(got.panic, r.panic);
      assert.equal(got.totalPanic, r.totalPanic ?? false);
      if (r.levels.length > 0) assert.equal(got.load.reduce((a, b) => a + b, 0), 100);
    });
  }

  it('an overprovisioning factor of 1.0 makes load follow the healthy ratio (Envoy OverProvisioningFactor)', () => {
    assert.deepEqual(priorityLoad([{ hosts: 4, healthy: 2 }, { hosts: 4, healthy: 2 }], { overprovisioningFactor: 100 }).load, [50, 50]);
  });

  it('always sums to 100 and never goes negative', () => {
    for (let a = 0; a <= 7; a++)
      for (let b = 0; b <= 5; b++)
        for (let c = 0; c <= 3; c++) {
          const levels = [
            { hosts: 7, healthy: a },
            { hosts: 5, healthy: b },
            { hosts: 3, healthy: c },
          ];
          const { load } = priorityLoad(levels);
          assert.equal(load.reduce((x, y) => x + y, 0), 100, JSON.stringify(levels));
          assert.ok(load.every((l) => Number.isInteger(l) && l >= 0), JSON.stringify(load));
        }
  });
});

describe('levelHealth', () => {
  const cases: [number, number, number][] = [
    [4, 4, 100],
    [4, 2, 70],
    [4, 1, 35],
    [10, 7, 98],
    [10, 8, 100],
    [3, 0, 0],
    [0, 0, 0],
  ];
  for (const [hosts, healthy, want] of cases) {
    it(`${healthy} of ${hosts} healthy → ${want}`, () => assert.equal(levelHealth({ hosts, healthy }), want));
  }
});

describe('planPriorities', () => {
  type E = { key: string; healthy: boolean };
  const e = (key: string, healthy = true): E => ({ key, healthy });
  const keys = (es: readonly E[]): string[] => es.map((x) => x.key);

  it('eligible endpoints are the healthy ones outside panic', () => {
    const plan = planPriorities(
      [
        { priority: 0, endpoints: [e('a'), e('b', false)] },
        { priority: 1, endpoints: [e('c'), e('d')] },
      ],
      (x) => x.healthy,
    );
    assert.deepEqual(
      plan.levels.map((l) => [l.priority, l.load, keys(l.eligible)]),
      [
        [0, 70, ['a']],
        [1, 30, ['c', 'd']],
      ],
    );
    assert.equal(plan.panic, false);
  });

  it('every endpoint unhealthy: all are eligible and the plan says panic', () => {
    const plan = planPriorities([{ priority: 0, endpoints: [e('a', false), e('b', false)] }], (x) => x.healthy);
    assert.deepEqual(keys(plan.levels[0]!.eligible), ['a', 'b']);
    assert.equal(plan.panic, true);
    assert.equal(plan.totalPanic, true);
  });

  it('drops empty levels and keeps the assigned priority numbers (compaction)', () => {
    const plan = planPriorities(
      [
        { priority: 0, endpoints: [] },
        { priority: 2, endpoints: [e('a', false), e('b')] },
        { priority: 3, endpoints: [e('c')] },
      ],
      (x) => x.healthy,
    );
    assert.deepEqual(
      plan.levels.map((l) => [l.priority, l.load]),
      [
        [2, 70],
        [3, 30],
      ],
    );
  });

  it('a level in panic that takes no load does not make the plan panic', () => {
    const es = Array.from({ length: 10 }, (_, i) => e(`p0-${i}`, i < 6));
    const dead = Array.from({ length: 10 }, (_, i) => e(`p1-${i}`, false));
    const plan = planPriorities(
      [
        { priority: 0, endpoints: es },
        { priority: 1, endpoints: dead },
      ],
      (x) => x.healthy,
    );
    assert.equal(plan.panic, false);
    assert.equal(plan.levels[0]!.eligible.length, 6);
  });
});
