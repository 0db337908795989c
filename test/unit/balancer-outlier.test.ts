// The passive outlier detector as a state machine driven by outcomes and an
// explicit clock.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { type OutlierConfig, OutlierDetector } from '../../agent/proxy/balancer/outlier';
import { TRAFFIC_POLICY_DEFAULTS } from '../../policy/traffic-policy';

const S = 1000;
const config = (over: Partial<OutlierConfig> = {}): OutlierConfig => ({ ...TRAFFIC_POLICY_DEFAULTS.outlierDetection, ...over });

function detector(keys: string[], over: Partial<OutlierConfig> = {}, now = 0): OutlierDetector {
  const d = new OutlierDetector(config(over));
  d.sync(
    keys.map((key) => ({ key, healthy: true })),
    now,
  );
  return d;
}

// Fails `key` n times at `now`; returns the last result.
function fail(d: OutlierDetector, key: string, n: number, now: number) {
  let r = d.record(key, 'connect-failure', now);
  for (let i = 1; i < n; i++) r = d.record(key, 'connect-failure', now);
  return r;
}

describe('OutlierDetector', () => {
  it('is on by default: 3 consecutive failures eject for 10 s', () => {
    const d = detector(['a', 'b']);
    assert.deepEqual(d.record('a', 'connect-failure', 0), { type: 'counted', consecutive: 1 });
    assert.deepEqual(d.record('a', 'reset', 0), { type: 'counted', consecutive: 2 });
    assert.deepEqual(d.record('a', 'connect-failure', 5), { type: 'ejected', key: 'a', ejection: { since: 5, until: 5 + 10 * S, multiplier: 1 } });
    assert.deepEqual([...d.ejections(5).keys()], ['a']);
    assert.equal(d.nextReturnAt(), 5 + 10 * S);
  });

  it('a success resets the consecutive count', () => {
    const d = detector(['a']);
    fail(d, 'a', 2, 0);
    d.record('a', 'success', 0);
    assert.equal(d.consecutiveFailures('a'), 0);
    assert.deepEqual(fail(d, 'a', 2, 0), { type: 'counted', consecutive: 2 });
    assert.equal(d.ejections(0).size, 0);
  });

  it('returns an endpoint exactly when its ejection ends, and not before', () => {
    const d = detector(['a', 'b']);
    fail(d, 'a', 3, 0);
    assert.equal(d.ejections(10 * S - 1).size, 1);
    assert.deepEqual(d.expire(10 * S - 1), []);
    assert.deepEqual(d.expire(10 * S), ['a']);
    assert.equal(d.ejections(10 * S).size, 0);
    assert.equal(d.nextReturnAt(), undefined);
    // Counts start over after a return.
    assert.deepEqual(d.record('a', 'connect-failure', 10 * S), { type: 'counted', consecutive: 1 });
  });

  it('each ejection in a row lasts longer, up to maxEjectionTime', () => {
    const d = detector(['a', 'b'], { baseEjectionTimeMs: 10 * S, maxEjectionTimeMs: 35 * S, intervalMs: 60 * S });
    const durations: number[] = [];
    let now = 0;
    for (let i = 0; i < 5; i++) {
      const r = fail(d, 'a', 3, now);
      assert.equal(r.type, 'ejected');
      if (r.type !== 'ejected') return;
      durations.push(r.ejection.until - r.ejection.since);
      now = r.ejection.until; // fails again the moment it is back
    }
    assert.deepEqual(durations, [10 * S, 20 * S, 30 * S, 35 * S, 35 * S]);
  });

  it('the multiplier drops by one per interval spent in service', () => {
    const d = detector(['a', 'b'], { baseEjectionTimeMs: 10 * S, maxEjectionTimeMs: 300 * S, intervalMs: 10 * S });
    fail(d, 'a', 3, 0); // ×1, back at 10 s
    fail(d, 'a', 3, 10 * S); // ×2, back at 30 s
    fail(d, 'a', 3, 30 * S); // ×3, back at 60 s
    // 25 s in service: two full intervals, 3 → 1, so the next ejection is ×2.
    const r = fail(d, 'a', 3, 85 * S);
    assert.equal(r.type, 'ejected');
    if (r.type === 'ejected') assert.equal(r.ejection.multiplier, 2);
    // Long in service: back to the base time.
    const r2 = fail(d, 'a', 3, 1000 * S);
    if (r2.type === 'ejected') assert.equal(r2.ejection.until - r2.ejection.since, 10 * S);
    else assert.fail(`expected an ejection, got ${r2.type}`);
  });

  it('never ejects more than maxEjectionPercent at once, but always allows one (Envoy)', () => {
    const keys = ['a', 'b', 'c', 'd', 'e', 'f'];
    const d = detector(keys, { maxEjectionPercent: 10 });
    assert.equal(fail(d, 'a', 3, 0).type, 'ejected'); // 1 of 6 is 17% > 10%, allowed as the first
    assert.deepEqual(fail(d, 'b', 3, 0), { type: 'ejection-refused', key: 'b', ejected: 1, total: 6 });
    // The count stays at the threshold, so b goes as soon as there is room.
    d.expire(10 * S);
    assert.equal(d.record('b', 'connect-failure', 10 * S).type, 'ejected');
  });

  it('maxEjectionPercent is inclusive: 50% of 4 allows two, refuses the third', () => {
    const d = detector(['a', 'b', 'c', 'd'], { maxEjectionPercent: 50 });
    assert.equal(fail(d, 'a', 3, 0).type, 'ejected');
    assert.equal(fail(d, 'b', 3, 0).type, 'ejected');
    assert.equal(fail(d, 'c', 3, 0).type, 'ejection-refused');
  });

  it('with the 10% default of Envoy and Istio a dead zone of 2 of 6 could never be ejected whole; the Kedge default ejects it', () => {
    const zone = ['a1', 'a2'];
    const all = [...zone, 'b1', 'b2', 'c1', 'c2'];
    const envoyLike = detector(all, { maxEjectionPercent: 10 });
    const kedge = detector(all);
    for (const key of zone) {
      fail(envoyLike, key, 3, 0);
      fail(kedge, key, 3, 0);
    }
    assert.deepEqual([...envoyLike.ejections(0).keys()], ['a1']);
    assert.deepEqual([...kedge.ejections(0).keys()], ['a1', 'a2']);
  });

  it('with the default 100% every endpoint can be ejected (the picker then panics)', () => {
    const d = detector(['a', 'b', 'c']);
    for (const k of ['a', 'b', 'c']) assert.equal(fail(d, k, 3, 0).type, 'ejected');
    assert.equal(d.counts().ejected, 3);
  });

  it('consecutiveErrors 0 or maxEjectionPercent 0 disable ejection', () => {
    for (const over of [{ consecutiveErrors: 0 }, { maxEjectionPercent: 0 }]) {
      const d = detector(['a', 'b'], over);
      assert.equal(fail(d, 'a', 10, 0).type, 'ignored');
      assert.equal(d.ejections(0).size, 0);
    }
  });

  it('the federation declaring an endpoint healthy again returns it at once with clean counters', () => {
    const d = detector(['a', 'b']);
    fail(d, 'a', 3, 0);
    assert.deepEqual(d.sync([{ key: 'a', healthy: false }, { key: 'b', healthy: true }], S), []);
    assert.equal(d.ejections(S).size, 1);
    assert.deepEqual(d.sync([{ key: 'a', healthy: true }, { key: 'b', healthy: true }], 2 * S), ['a']);
    assert.equal(d.ejections(2 * S).size, 0);
    assert.equal(d.counts().ejected, 0);
    // Clean: the next ejection is ×1 again.
    const r = fail(d, 'a', 3, 3 * S);
    assert.ok(r.type === 'ejected' && r.ejection.multiplier === 1);
  });

  it('forgets endpoints that leave the service, and ignores outcomes for unknown ones', () => {
    const d = detector(['a', 'b']);
    fail(d, 'a', 3, 0);
    d.sync([{ key: 'b', healthy: true }], S);
    assert.deepEqual(d.counts(), { tracked: 1, ejected: 0 });
    assert.deepEqual(d.record('a', 'connect-failure', S), { type: 'ignored' });
  });

  it('a success while ejected (the picker in panic) does not return the endpoint early', () => {
    const d = detector(['a']);
    fail(d, 'a', 3, 0);
    d.record('a', 'success', S);
    assert.equal(d.ejections(S).size, 1);
  });

  it('ejections() hands out copies', () => {
    const d = detector(['a']);
    fail(d, 'a', 3, 0);
    const e = d.ejections(0).get('a')!;
    e.until = 0;
    assert.equal(d.ejections(1).size, 1);
  });
});
