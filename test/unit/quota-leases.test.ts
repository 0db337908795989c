// Mesh-wide quota leases, simulated: four server proxies (QuotaAdmission)
// behind two federation replicas (QuotaLeaser) sharing one real embedded
// store, a client sending 3× the budget unevenly across them, and a clock
// the test advances. Counts what the proxies admit per window: within the
// budget -10% and never above it, through rebalancing, a federation
// outage (last lease, then failureMode) and its return.
import { describe, it, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { openEmbeddedStore } from '../../federation/store/embedded';
import type { Store } from '../../federation/store/types';
import { QuotaLeaser, type LeasesMessage } from '../../federation/quota/leases';
import { split, needOf } from '../../federation/quota/allocate';
import { QuotaAdmission } from '../../policy/ratelimit/quota';
import type { MeshQuotaPolicy } from '../../policy/ratelimit/model';
import { parseRateLimitDocument } from '../../policy/ratelimit/validate';
import { silentLogger } from '../../proto/model/log';
import { tempDir } from '../support/procs';

const A = 'cluster.local/ns/default/sa/a';
const WINDOW = 10_000;

function quota(failureMode: 'Open' | 'Closed'): MeshQuotaPolicy {
  return parseRateLimitDocument({ apiVersion: 'policy.kedge.dev/v1alpha1', kind: 'MeshQuota', metadata: { name: 'a-to-b', namespace: 'shop' }, spec: { targetRef: { kind: 'Service', name: 'b' }, clientRefs: [{ kind: 'ServiceAccount', namespace: 'default', name: 'a' }], requests: 100, window: '10s', failureMode, leaseTimeout: '20s' } }) as MeshQuotaPolicy;
}

/** The mesh: proxies 0 and 1 on replica r1, 2 and 3 on r2; `share` is each proxy's part of A's traffic. */
class Sim {
  now: number;
  readonly proxies: QuotaAdmission[] = [0, 1, 2, 3].map(() => new QuotaAdmission());
  readonly replicas: QuotaLeaser[];
  /** Whether the federation is reachable (leases delivered, reports received). */
  up = true;
  share = [0.5, 0.25, 0.15, 0.1];
  private credit = [0, 0, 0, 0];
  /** Admitted per window index, all proxies together. */
  readonly admitted = new Map<number, number>();

  /** `startWindow`: where the clock starts (a window boundary); each test its own, as the claims of one stay in the store. */
  constructor(store: Store, q: MeshQuotaPolicy, startWindow: number) {
    this.now = startWindow * WINDOW;
    const quotas = new Map([['shop/a-to-b', q]]);
    this.replicas = ['r1', 'r2'].map((replica) => new QuotaLeaser({ store, replica, logger: silentLogger(), quotas: () => quotas, clock: () => this.now, timers: false }));
    this.proxies.forEach((p, i) => {
      p.setPolicies([q]);
      this.replicas[i < 2 ? 0 : 1]!.attach(`agent-${i}`, (m: LeasesMessage) => {
        if (this.up) p.onLeases(m.leases, m.reportIntervalMs, this.now);
      });
    });
  }

  /** Runs `ms` of simulated time: 30 requests per second in all, reports and ticks every second. */
  async run(ms: number): Promise<void> {
    const end = this.now + ms;
    while (this.now < end) {
      this.now += 100;
      this.proxies.forEach((p, i) => {
        this.credit[i]! += 3 * this.share[i]!;
        while (this.credit[i]! >= 1) {
          this.credit[i]! -= 1;
          if (p.admit(A, 'b.shop', this.now) === undefined) {
            const w = Math.floor(this.now / WINDOW);
            this.admitted.set(w, (this.admitted.get(w) ?? 0) + 1);
          }
        }
      });
      if (this.now % 1_000 === 0 && this.up) {
        this.proxies.forEach((p, i) => this.replicas[i < 2 ? 0 : 1]!.report(`agent-${i}`, p.report(this.now), () => true));
        for (const r of this.replicas) await r.tick();
      }
    }
  }

  windows(from: number, to: number): number[] {
    const base = Math.floor(this.now / WINDOW);
    const out: number[] = [];
    for (let w = from; w < to; w++) out.push(this.admitted.get(base - (to - w)) ?? 0);
    return out;
  }
}

describe('quota leases', () => {
  let store: Store;
  before(async () => {
    store = await openEmbeddedStore(tempDir('quota-store'), { logger: silentLogger() });
  });
  after(async () => {
    await store.close();
  });

  it('split hands out a limited pool in proportion to need and adds up exactly', () => {
    assert.deepEqual(split([10, 20, 30], 100), [10, 20, 30]);
    assert.deepEqual(split([10, 20, 30], 30), [5, 10, 15]);
    assert.deepEqual(split([1, 1, 1], 2), [1, 1, 0]);
    assert.equal(split([7, 3, 9, 1], 11).reduce((a, b) => a + b, 0), 11);
    assert.equal(needOf({ admitted: 5, rate: 0.01, grant: 5 }, 2_000, 100), 20);
    assert.equal(needOf({ admitted: 95, rate: 0.01, grant: 95 }, 2_000, 100), 5, 'never past the budget');
  });

  it('reports are untrusted: a quota the agent was not pushed, an unknown quota or an oversized principal is dropped; counts are capped at the budget', async () => {
    const q = quota('Closed');
    let now = 5_000 * WINDOW + 1_000;
    const leaser = new QuotaLeaser({ store, replica: 'r1', logger: silentLogger(), quotas: () => new Map([['shop/a-to-b', q]]), clock: () => now, timers: false });
    const got: LeasesMessage[] = [];
    leaser.attach('agent-x', (m) => got.push(m));
    const w = Math.floor(now / WINDOW);
    const usage = (over: Partial<{ quota: string; principal: string; admitted: number; seen: number }>) => ({ quota: 'shop/a-to-b', principal: A, window: w, admitted: 0, seen: 10, intervalMs: 1_000, ...over });
    leaser.report('agent-x', [usage({})], () => false);
    leaser.report('agent-x', [usage({ quota: 'shop/other' })], () => true);
    leaser.report('agent-x', [usage({ principal: 'x'.repeat(321) })], () => true);
    await leaser.tick();
    assert.deepEqual(got.at(-1), { leases: [], reportIntervalMs: 1_000 }, 'a heartbeat, no lease');
    leaser.report('agent-x', [usage({ admitted: 1e12, seen: 1e12 })], () => true);
    now += 1_000;
    await leaser.tick();
    const lease = got.at(-1)!.leases[0]!;
    assert.equal(lease.grant, 100, 'a claimed count past the budget gets the budget, no more');
    leaser.close();
  });

  it('300 requests per window unevenly across four proxies on two replicas: 100 ± 10% admitted per window, never more; demand moving is followed', async () => {
    const sim = new Sim(store, quota('Closed'), 1_000);
    await sim.run(6 * WINDOW);
    const steady = sim.windows(1, 6);
    for (const n of steady) assert.ok(n >= 90 && n <= 100, `admitted per window ${steady.join(', ')}`);
    // The demand moves: the quiet proxy becomes the busy one.
    sim.share = [0.1, 0.15, 0.25, 0.5];
    await sim.run(4 * WINDOW);
    const moved = sim.windows(1, 4);
    for (const n of moved) assert.ok(n >= 90 && n <= 100, `after the move ${moved.join(', ')}`);
    // Both replicas claimed budget in the store, and no window's claims exceed it.
    const { kvs } = await store.list('/kedge/quota/claims/');
    assert.ok(kvs.length > 0);
    for (const kv of kvs) {
      const claims = JSON.parse(kv.value) as Record<string, number>;
      assert.ok(Object.values(claims).reduce((a, b) => a + b, 0) <= 100, kv.value);
    }
    assert.ok(kvs.some((kv) => Object.keys(JSON.parse(kv.value) as object).length === 2), 'both replicas hold shares');
  });

  it('federation outage, failureMode Closed: proxies keep admitting at their last lease, refuse all once it expires, and recover', async () => {
    const sim = new Sim(store, quota('Closed'), 2_000);
    await sim.run(3 * WINDOW + 5_000);
    sim.up = false;
    await sim.run(5_000 + 4 * WINDOW);
    const outage = sim.windows(0, 4);
    assert.ok(outage[0]! >= 90 && outage[0]! <= 100, `first outage window at the last lease: ${outage.join(', ')}`);
    assert.equal(outage[3], 0, `after leaseTimeout (20 s) nothing is admitted: ${outage.join(', ')}`);
    sim.up = true;
    await sim.run(4 * WINDOW);
    const back = sim.windows(1, 4);
    for (const n of back) assert.ok(n >= 90 && n <= 100, `after the federation returns: ${back.join(', ')}`);
  });

  it('federation outage, failureMode Open: the last lease first, then every request once it expires', async () => {
    const sim = new Sim(store, quota('Open'), 3_000);
    await sim.run(3 * WINDOW + 5_000);
    sim.up = false;
    await sim.run(5_000 + 4 * WINDOW);
    const outage = sim.windows(0, 4);
    assert.ok(outage[0]! >= 90 && outage[0]! <= 100, `first outage window: ${outage.join(', ')}`);
    assert.equal(outage[3], 300, `after leaseTimeout everything is admitted: ${outage.join(', ')}`);
    sim.up = true;
    await sim.run(4 * WINDOW);
    const back = sim.windows(1, 4);
    for (const n of back) assert.ok(n >= 90 && n <= 100, `after the federation returns: ${back.join(', ')}`);
  });
});
