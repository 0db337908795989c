// Mesh-wide quota leases (MeshQuota). Every replica leases shares of each
// (quota, principal) budget to the server proxies connected to it, sized
// from their reports (QuotaReport) and sent every report interval
// (QuotaLeases). Replicas sharing a store never give out more than the
// budget between them: each replica first claims budget for a window in
// the store with a compare-and-swap on one key per (quota, principal,
// window), `{"<replica>": claimed, ...}`, and only then grants from what it
// claimed. Claims only grow within a window, a claim no proxy used is lost
// for that window (never handed out twice), and a replica that restarts
// counts its earlier claim as spent. So the mesh total of a window is at
// most the budget; what is lost is at most the headroom of proxies whose
// demand stopped, or of proxies that moved replica mid-window.
// See docs/rate-limits.md for the whole design.
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import type { MeshQuotaPolicy } from '../../policy/ratelimit/model';
import type { QuotaUsageOut } from '../../policy/ratelimit/quota';
import type { Store } from '../store/types';
import { needOf, split } from './allocate';

export const QUOTA_CLAIMS_PREFIX = '/kedge/quota/claims/';

/** Reports a proxy may send at once; more are dropped. */
export const MAX_USAGE_PER_REPORT = 1_000;
/** Keys (quota × principal) one replica tracks; reports of new keys past it are dropped. */
export const MAX_KEYS = 50_000;

/** The lease message for one proxy (FederationMessage.leases). */
export interface LeasesMessage {
  leases: { quota: string; principal: string; window: number; windowRemainingMs: number; grant: number; nextGrant: number }[];
  reportIntervalMs: number;
}

/** One QuotaUsage as received: what the proxy's QuotaAdmission reports. */
export type UsageIn = QuotaUsageOut;

interface ProxyState {
  /** Admitted in `window` as last reported. */
  admitted: number;
  window: number;
  rate: number;
  grant: number;
  next: number;
  reportedAt: number;
}

interface KeyState {
  quota: string;
  principal: string;
  window: number;
  /** What this replica claimed in the store for `window` and `window + 1`. */
  claimed: number;
  claimedNext: number;
  proxies: Map<string, ProxyState>;
}

/** The report interval for quotas of `windowMs`: a tenth of the window, between 200 ms and 1 s. */
export function reportIntervalFor(windowMs: number): number {
  return Math.max(200, Math.min(1_000, Math.floor(windowMs / 10)));
}

/** The leases of one replica; see the file comment. */
export class QuotaLeaser {
  private readonly keys = new Map<string, KeyState>();
  private readonly attached = new Map<string, (m: LeasesMessage) => void>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private closed = false;
  private readonly clock: () => number;

  constructor(
    private readonly opts: {
      store: Store;
      replica: string;
      logger: Logger;
      /** The valid MeshQuotas by namespace/name. */
      quotas: () => ReadonlyMap<string, MeshQuotaPolicy>;
      clock?: () => number;
      /** false: no timer; the caller calls tick() (tests with a simulated clock). */
      timers?: boolean;
    },
  ) {
    this.clock = opts.clock ?? Date.now;
  }

  /** The interval ticks run at: the shortest any quota needs. */
  interval(): number {
    let ms = 1_000;
    for (const q of this.opts.quotas().values()) ms = Math.min(ms, reportIntervalFor(q.windowMs));
    return ms;
  }

  /** A proxy that was pushed MeshQuotas: it gets a QuotaLeases every interval (a heartbeat when empty). */
  attach(agent: string, send: (m: LeasesMessage) => void): void {
    this.attached.set(agent, send);
    this.schedule();
  }

  detach(agent: string): void {
    this.attached.delete(agent);
    for (const k of this.keys.values()) k.proxies.delete(agent);
  }

  /** Records a proxy's report; usage for unknown quotas, or quotas `allowed` refuses, is dropped. */
  report(agent: string, usage: readonly UsageIn[], allowed: (quota: string) => boolean): void {
    const now = this.clock();
    const quotas = this.opts.quotas();
    for (const u of usage.slice(0, MAX_USAGE_PER_REPORT)) {
      const q = quotas.get(u.quota);
      if (!q || !allowed(u.quota) || u.principal.length === 0 || u.principal.length > 320) continue;
      const id = `${u.quota}|${u.principal}`;
      let k = this.keys.get(id);
      if (!k) {
        if (this.keys.size >= MAX_KEYS) continue;
        this.keys.set(id, (k = { quota: u.quota, principal: u.principal, window: Math.floor(now / q.windowMs), claimed: 0, claimedNext: 0, proxies: new Map() }));
      }
      let p = k.proxies.get(agent);
      if (!p) k.proxies.set(agent, (p = { admitted: 0, window: 0, rate: 0, grant: 0, next: 0, reportedAt: now }));
      // A count for another window than ours says nothing about this one.
      const w = Math.floor(now / q.windowMs);
      if (u.window === w) {
        p.admitted = p.window === w ? Math.max(p.admitted, Math.min(u.admitted, q.requests)) : Math.min(u.admitted, q.requests);
        p.window = w;
      }
      p.rate = Math.min(u.seen, 1e9) / Math.max(1, Math.min(u.intervalMs, 60_000));
      p.reportedAt = now;
    }
  }

  private schedule(): void {
    if (this.timer || this.closed || this.opts.timers === false) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.tick().finally(() => {
        if (this.attached.size > 0 || this.keys.size > 0) this.schedule();
      });
    }, this.interval());
    this.timer.unref();
  }

  /** One round: size, claim and send every proxy's leases. Exposed for tests. */
  async tick(): Promise<void> {
    if (this.running || this.closed) return;
    this.running = true;
    try {
      const now = this.clock();
      const quotas = this.opts.quotas();
      const out = new Map<string, LeasesMessage['leases']>();
      for (const [id, k] of this.keys) {
        const q = quotas.get(k.quota);
        if (!q) {
          this.keys.delete(id);
          continue;
        }
        await this.step(k, q, now, out);
        if (k.proxies.size === 0) this.keys.delete(id);
      }
      for (const [agent, send] of this.attached) send({ leases: out.get(agent) ?? [], reportIntervalMs: this.interval() });
    } finally {
      this.running = false;
    }
  }

  private async step(k: KeyState, q: MeshQuotaPolicy, now: number, out: Map<string, LeasesMessage['leases']>): Promise<void> {
    const tickMs = reportIntervalFor(q.windowMs);
    const w = Math.floor(now / q.windowMs);
    if (k.window !== w) {
      const carried = k.window === w - 1;
      for (const p of k.proxies.values()) {
        p.grant = carried ? p.next : 0;
        p.next = 0;
        // A report for the new window may already be in.
        if (p.window !== w) p.admitted = 0;
      }
      k.claimed = carried ? k.claimedNext : 0;
      k.claimedNext = 0;
      void this.opts.store.delete(this.claimKey(k, w - 2)).catch(() => undefined);
      k.window = w;
    }
    // A proxy that stopped reporting (gone, or moved replica) keeps nothing more.
    for (const [agent, p] of k.proxies) if (!this.attached.has(agent) || now - p.reportedAt > 5 * tickMs) k.proxies.delete(agent);
    const agents = [...k.proxies.keys()];
    const states = agents.map((a) => k.proxies.get(a)!);
    const horizon = 2 * tickMs;
    // This window.
    const needs = states.map((p) => needOf(p, horizon, q.requests));
    k.claimed += await this.topUp(k, q, w, k.claimed, states.reduce((a, p) => a + p.grant, 0), needs);
    const pool = k.claimed - states.reduce((a, p) => a + p.grant, 0);
    split(needs, pool).forEach((n, i) => (states[i]!.grant += n));
    // The start of the next one, granted before it begins so no proxy waits at the boundary.
    const remaining = (w + 1) * q.windowMs - now;
    if (remaining <= 3 * tickMs) {
      const nextNeeds = states.map((p) => Math.max(0, Math.min(q.requests, Math.ceil(p.rate * horizon)) - p.next));
      k.claimedNext += await this.topUp(k, q, w + 1, k.claimedNext, states.reduce((a, p) => a + p.next, 0), nextNeeds);
      const nextPool = k.claimedNext - states.reduce((a, p) => a + p.next, 0);
      split(nextNeeds, nextPool).forEach((n, i) => (states[i]!.next += n));
    }
    agents.forEach((a, i) => {
      const p = states[i]!;
      const list = out.get(a) ?? [];
      list.push({ quota: k.quota, principal: k.principal, window: w, windowRemainingMs: remaining, grant: p.grant, nextGrant: p.next });
      out.set(a, list);
    });
  }

  /** Claims in the store what the proxies need beyond what this replica holds unspent; returns what it got. */
  private async topUp(k: KeyState, q: MeshQuotaPolicy, window: number, claimed: number, granted: number, needs: readonly number[]): Promise<number> {
    const want = needs.reduce((a, b) => a + b, 0) - (claimed - granted);
    if (want <= 0) return 0;
    const key = this.claimKey(k, window);
    for (let attempt = 0; attempt < 8; attempt++) {
      try {
        const kv = await this.opts.store.get(key);
        const claims = kv ? (JSON.parse(kv.value) as Record<string, number>) : {};
        const total = Object.values(claims).reduce((a, b) => a + b, 0);
        const give = Math.min(want, q.requests - total);
        if (give <= 0) return 0;
        claims[this.opts.replica] = (claims[this.opts.replica] ?? 0) + give;
        await this.opts.store.put(key, JSON.stringify(claims), { expectRevision: kv?.modRevision ?? 0 });
        return give;
      } catch (err) {
        if (err instanceof KedgeError && err.code === 'KEDGE_STORE_CONFLICT') continue;
        // The store is away: grant nothing new; proxies keep what they have.
        this.opts.logger.warn({ quota: k.quota, err: errorMessage(err) }, 'cannot claim quota budget in the store; leases stay as they are');
        return 0;
      }
    }
    return 0;
  }

  private claimKey(k: KeyState, window: number): string {
    return `${QUOTA_CLAIMS_PREFIX}${k.quota}/${Buffer.from(k.principal).toString('base64url')}/${window}`;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
