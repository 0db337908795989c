// Rate-limit back-off in the balancer: an endpoint that answered 429 or
// RESOURCE_EXHAUSTED is not picked until its pause ends, the pause doubles
// while answers stay rate-limited, a success ends the streak, and a
// rate-limited answer never counts toward outlier ejection.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseLocality } from '../../proto/model/locality';
import { ServiceBalancer } from '../../agent/proxy/balancer/service';
import { statusOutcome } from '../../agent/proxy/http1/session';
import type { BalancerEndpoint, Topology } from '../../agent/proxy/balancer/types';
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS } from '../../agent/proxy/balancer/backoff';

const ep = (key: string): BalancerEndpoint => ({ key, locality: parseLocality('r/z'), network: '', labels: {}, weight: 1, healthy: true });
const client: Topology = { locality: parseLocality('r/z'), network: '', labels: {} };

/** Counts which endpoints 200 first picks at `now` land on (seeded). */
function picks(lb: ServiceBalancer<BalancerEndpoint>, now: number): Record<string, number> {
  let seed = 7;
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const out: Record<string, number> = {};
  for (let i = 0; i < 200; i++) {
    const r = lb.picker(now).pick(random, () => 0);
    assert.equal(r.type, 'pick');
    if (r.type === 'pick') out[r.endpoint.key] = (out[r.endpoint.key] ?? 0) + 1;
  }
  return out;
}

describe('rate-limit back-off', () => {
  it('429 maps to rate-limited, not to a 5xx outcome', () => {
    assert.equal(statusOutcome(429), 'rate-limited');
    assert.equal(statusOutcome(503), 'gateway-error');
    assert.equal(statusOutcome(200), 'success');
  });

  it('a rate-limited endpoint gets no traffic until its pause ends, then gets its share again', () => {
    const lb = new ServiceBalancer<BalancerEndpoint>(client);
    lb.update([ep('a'), ep('b'), ep('c')], 0);
    assert.equal(Object.keys(picks(lb, 0)).length, 3);
    assert.deepEqual(lb.record('a', 'rate-limited', 100), { type: 'backed-off', key: 'a', until: 100 + BACKOFF_BASE_MS, streak: 1 });
    const during = picks(lb, 100 + BACKOFF_BASE_MS - 1);
    assert.equal(during.a, undefined, 'a is not picked while backed off');
    assert.equal((during.b ?? 0) + (during.c ?? 0), 200);
    assert.ok((picks(lb, 100 + BACKOFF_BASE_MS).a ?? 0) > 30, 'a is back at the end of its pause');
  });

  it('the pause doubles while answers stay rate-limited, up to the cap; a success ends the streak', () => {
    const lb = new ServiceBalancer<BalancerEndpoint>(client);
    lb.update([ep('a'), ep('b')], 0);
    const untils: number[] = [];
    let now = 0;
    for (let i = 0; i < 6; i++) {
      const r = lb.record('a', 'rate-limited', now);
      assert.equal(r.type, 'backed-off');
      if (r.type === 'backed-off') untils.push(r.until - now);
      now += 20_000;
    }
    assert.deepEqual(untils, [1_000, 2_000, 4_000, 8_000, BACKOFF_MAX_MS, BACKOFF_MAX_MS]);
    lb.record('a', 'success', now);
    const r = lb.record('a', 'rate-limited', now);
    assert.equal(r.type === 'backed-off' && r.until - now, BACKOFF_BASE_MS);
  });

  it('rate-limited answers never eject (they are not failures), and every endpoint paused means panic, not an outage', () => {
    const lb = new ServiceBalancer<BalancerEndpoint>(client);
    lb.update([ep('a'), ep('b')], 0);
    for (let i = 0; i < 10; i++) lb.record('a', 'rate-limited', 0);
    lb.record('b', 'rate-limited', 0);
    const d = lb.describe(1);
    assert.equal(d.endpoints.find((e) => e.key === 'a')?.consecutiveFailures, 0);
    const all = picks(lb, 1);
    assert.ok((all.a ?? 0) > 0 && (all.b ?? 0) > 0, 'with every endpoint paused the picker uses them all');
  });
});
