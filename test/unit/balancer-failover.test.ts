// The acceptance scenario in simulated time: a client opens a connection
// every 10 ms through ServiceBalancer, with up to three attempts per
// connection (the proxy's MAX_ATTEMPTS) and outlier detection at its
// defaults. Endpoints "die" by failing every connect. No sockets, no
// clocks: time is a number the test advances.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { mulberry32 } from '../../agent/proxy/balancer/random';
import { ServiceBalancer } from '../../agent/proxy/balancer/service';
import type { BalancerEndpoint, Topology } from '../../agent/proxy/balancer/types';
import { parseLocality } from '../../proto/model/locality';

const MAX_ATTEMPTS = 3;
const STEP_MS = 10;

const ep = (key: string, locality: string, weight = 1): BalancerEndpoint => ({ key, locality: parseLocality(locality), network: 'net-a', labels: {}, weight, healthy: true });
const client: Topology = { locality: parseLocality('us-east/zone-a'), network: 'net-a', labels: {} };
const endpoints = [ep('a1', 'us-east/zone-a'), ep('a2', 'us-east/zone-a'), ep('b1', 'us-east/zone-b'), ep('b2', 'us-east/zone-b'), ep('gw-west', 'us-west/zone-a', 2)];

interface Window {
  connections: number;
  /** Connections whose every attempt failed. */
  failed: number;
  /** Connections that needed a retry. */
  retried: number;
  /** Time of the last connection whose first attempt failed, relative to the window start (-1: none). */
  lastRetryAt: number;
  byEndpoint: Record<string, number>;
}

class Lab {
  now = 0;
  readonly dead = new Set<string>();
  readonly lb = new ServiceBalancer<BalancerEndpoint>(client);
  private readonly random = mulberry32(2024);

  constructor() {
    this.lb.update(endpoints, 0);
  }

  // Runs connections for `ms` of simulated time.
  run(ms: number): Window {
    const w: Window = { connections: 0, failed: 0, retried: 0, lastRetryAt: -1, byEndpoint: {} };
    const start = this.now;
    for (const end = this.now + ms; this.now < end; this.now += STEP_MS) {
      w.connections++;
      const tried = new Set<string>();
      let ok: string | undefined;
      for (let attempt = 0; attempt < MAX_ATTEMPTS && ok === undefined; attempt++) {
        const picker = this.lb.picker(this.now);
        const r = attempt === 0 ? picker.pick(this.random, () => 0) : picker.pickRetry(tried, this.random, () => 0);
        assert.equal(r.type, 'pick');
        if (r.type !== 'pick') break;
        const key = r.endpoint.key;
        if (this.dead.has(key)) {
          this.lb.record(key, 'connect-failure', this.now);
          tried.add(key);
          if (attempt === 0) {
            w.retried++;
            w.lastRetryAt = this.now - start;
          }
        } else {
          this.lb.record(key, 'success', this.now);
          ok = key;
        }
      }
      if (ok === undefined) w.failed++;
      else w.byEndpoint[ok] = (w.byEndpoint[ok] ?? 0) + 1;
    }
    return w;
  }
}

const keysOf = (w: Window): string[] => Object.keys(w.byEndpoint).sort();

describe('failover with passive outlier detection alone', () => {
  it('steady load stays in zone-a', () => {
    const lab = new Lab();
    const w = lab.run(2000);
    assert.deepEqual(keysOf(w), ['a1', 'a2']);
    assert.equal(w.retried, 0);
  });

  it('zone-a dies: no failed connection, first attempts clean within a second; zone-b dies: on to the gateway; back: traffic returns', () => {
    const lab = new Lab();
    lab.run(1000);

    lab.dead.add('a1').add('a2');
    const zoneB = lab.run(2000);
    assert.equal(zoneB.failed, 0);
    assert.ok(zoneB.lastRetryAt >= 0 && zoneB.lastRetryAt < 1000, `last retry ${zoneB.lastRetryAt} ms after the kill`);
    const settled = lab.run(2000);
    assert.deepEqual(keysOf(settled), ['b1', 'b2']);
    assert.equal(settled.retried, 0);

    lab.dead.add('b1').add('b2');
    const west = lab.run(2000);
    assert.equal(west.failed, 0);
    assert.ok(west.lastRetryAt < 1000, `last retry ${west.lastRetryAt} ms after the kill`);
    assert.deepEqual(keysOf(lab.run(2000)), ['gw-west']);

    // Everything comes back. Ejections (10 s, the first time) run out and
    // each zone returns; nothing fails along the way.
    lab.dead.clear();
    const back = lab.run(15_000);
    assert.equal(back.failed, 0);
    assert.equal(back.retried, 0);
    assert.deepEqual(keysOf(lab.run(2000)), ['a1', 'a2']);
  });

  it('half of zone-a dies: the split settles at 70 / 30', () => {
    const lab = new Lab();
    lab.dead.add('a2');
    const w = lab.run(5000);
    assert.equal(w.failed, 0);
    const settled = lab.run(60_000);
    const n = settled.connections;
    const zoneA = (100 * (settled.byEndpoint.a1 ?? 0)) / n;
    // a2 comes back for a few attempts each time its ejection ends; those retry.
    assert.ok(Math.abs(zoneA - 70) < 2.5, `zone-a took ${zoneA.toFixed(1)}%`);
    assert.equal(settled.failed, 0);
  });
});

describe('failover with federation health', () => {
  it('an endpoint the federation marks unhealthy gets no first attempt at all, and returns the moment it is healthy', () => {
    const lab = new Lab();
    lab.run(500);
    lab.dead.add('a1').add('a2');
    lab.lb.update(
      endpoints.map((e) => (e.key.startsWith('a') ? { ...e, healthy: false } : e)),
      lab.now,
    );
    const w = lab.run(2000);
    assert.deepEqual([w.failed, w.retried], [0, 0]);
    assert.deepEqual(keysOf(w), ['b1', 'b2']);

    lab.dead.clear();
    lab.lb.update(endpoints, lab.now);
    assert.deepEqual(keysOf(lab.run(1000)), ['a1', 'a2']);
  });

  it('returns an ejected endpoint at once when the federation sees it recover', () => {
    const lab = new Lab();
    lab.dead.add('a1').add('a2');
    lab.run(1000); // both ejected
    assert.equal(lab.lb.describe(lab.now).endpoints.filter((e) => e.ejection !== null).length, 2);
    lab.lb.update(endpoints.map((e) => (e.key.startsWith('a') ? { ...e, healthy: false } : e)), lab.now);
    lab.dead.clear();
    lab.lb.update(endpoints, lab.now);
    assert.deepEqual(keysOf(lab.run(1000)), ['a1', 'a2']);
  });
});

describe('ServiceBalancer', () => {
  it('keeps one picker until something changes', () => {
    const lb = new ServiceBalancer<BalancerEndpoint>(client);
    lb.update(endpoints, 0);
    const p = lb.picker(0);
    assert.equal(lb.picker(5), p);
    lb.record('a1', 'success', 5);
    assert.equal(lb.picker(6), p);
    for (let i = 0; i < 3; i++) lb.record('a1', 'connect-failure', 7);
    const ejected = lb.picker(7);
    assert.notEqual(ejected, p);
    assert.equal(lb.picker(8), ejected);
    // The ejection ends at 10 007 ms; the next picker(now) after that rebuilds.
    assert.notEqual(lb.picker(10_007), ejected);
  });

  it('describe() adds the running failure count', () => {
    const lb = new ServiceBalancer<BalancerEndpoint>(client);
    lb.update(endpoints, 0);
    lb.record('b1', 'reset', 1);
    lb.record('b1', 'connect-failure', 2);
    const b1 = lb.describe(3).endpoints.find((e) => e.key === 'b1')!;
    assert.deepEqual([b1.consecutiveFailures, b1.priority, b1.healthy, b1.ejection], [2, 2, true, null]);
  });
});
