// The server proxy's side of MeshQuota: admits requests against the lease
// the federation gave it for each (quota, principal) key, and counts what it
// saw for the next report. No round trip per request: a request only
// compares two counters. Pure: the clock is passed in.
//
// Modes of one key (see docs/rate-limits.md, "Mesh-wide quotas"):
// - leased: the federation is heard from (a QuotaLeases within `staleMs`):
//   admit while admitted < grant of the current window; at a window's end
//   the grant becomes the lease's next_grant (0 if none came);
// - outage: nothing heard for longer than staleMs, but the last lease is
//   younger than the quota's leaseTimeout: each new window admits up to the
//   grant of the last leased window (the proxy's last share, so the mesh
//   total stays near the budget);
// - expired: no lease, or older than leaseTimeout, with the federation
//   unreachable: failureMode Open admits everything, Closed nothing.
import { clientMatches, type MeshQuotaPolicy } from './model';

/** A lease as the agent receives it (QuotaLease). */
export interface QuotaLeaseIn {
  quota: string;
  principal: string;
  window: number;
  windowRemainingMs: number;
  grant: number;
  nextGrant: number;
}

/** What the proxy reports per key (QuotaUsage). */
export interface QuotaUsageOut {
  quota: string;
  principal: string;
  window: number;
  admitted: number;
  seen: number;
  intervalMs: number;
}

/** A quota refusal. */
export interface QuotaRefusal {
  policy: string;
  retryAfterSeconds: number;
  /** Why, for the log: 'exhausted', 'waiting for a lease', 'lease expired (failureMode Closed)'. */
  reason: string;
}

interface Entry {
  policy: MeshQuotaPolicy;
  principal: string;
  /** Current window and when it ends (local clock); undefined before the first lease. */
  window: number | undefined;
  windowEnd: number;
  grant: number;
  nextGrant: number | undefined;
  /** The grant of the last window a lease came for: what an outage keeps admitting per window. */
  leasedGrant: number;
  lastLeaseAt: number;
  admitted: number;
  seen: number;
  reportedAt: number;
  lastSeenAt: number;
}

/** Keys tracked at most (distinct principals × quotas); a principal past it is refused as its quota says for an expired lease. */
export const MAX_QUOTA_KEYS = 10_000;

/** The quota state of one proxy. */
export class QuotaAdmission {
  private byService = new Map<string, MeshQuotaPolicy[]>();
  private readonly entries = new Map<string, Entry>();
  private lastContact = -Infinity;
  private reportIntervalMs = 1_000;

  /** Takes the quotas of a push; keys of quotas that are gone are dropped, kept ones keep their counts. */
  setPolicies(policies: readonly MeshQuotaPolicy[]): void {
    const by = new Map<string, MeshQuotaPolicy[]>();
    const ids = new Map<string, MeshQuotaPolicy>();
    for (const p of policies) {
      const s = `${p.service}.${p.namespace}`;
      by.set(s, [...(by.get(s) ?? []), p]);
      ids.set(`${p.namespace}/${p.name}`, p);
    }
    this.byService = by;
    for (const [k, e] of this.entries) {
      const p = ids.get(idOf(e.policy));
      if (p === undefined || p.requests !== e.policy.requests || p.windowMs !== e.policy.windowMs) this.entries.delete(k);
      else e.policy = p;
    }
  }

  get empty(): boolean {
    return this.byService.size === 0;
  }

  /** How long without a QuotaLeases the federation counts as unreachable. */
  get staleMs(): number {
    return Math.max(3_000, 3 * this.reportIntervalMs);
  }

  get interval(): number {
    return this.reportIntervalMs;
  }

  /** Admits one request of `principal` to `service`, or says why not. */
  admit(principal: string, service: string, now: number): QuotaRefusal | undefined {
    const quotas = this.byService.get(service);
    if (quotas === undefined) return undefined;
    const take: Entry[] = [];
    for (const q of quotas) {
      if (!clientMatches(q.clients, principal)) continue;
      const key = `${idOf(q)}|${principal}`;
      let e = this.entries.get(key);
      if (e === undefined) {
        if (this.entries.size >= MAX_QUOTA_KEYS) return { policy: idOf(q), retryAfterSeconds: 1, reason: `more than ${MAX_QUOTA_KEYS} quota keys at this proxy` };
        e = { policy: q, principal, window: undefined, windowEnd: 0, grant: 0, nextGrant: undefined, leasedGrant: 0, lastLeaseAt: -Infinity, admitted: 0, seen: 0, reportedAt: now, lastSeenAt: now };
        this.entries.set(key, e);
      }
      e.seen += 1;
      e.lastSeenAt = now;
      const heard = now - this.lastContact <= this.staleMs;
      this.advance(e, now, heard);
      const leaseAlive = e.window !== undefined && now - e.lastLeaseAt <= q.leaseTimeoutMs;
      if (!heard && !leaseAlive) {
        if (q.failureMode === 'Open') continue;
        return { policy: idOf(q), retryAfterSeconds: 1, reason: 'no lease from the federation (failureMode Closed)' };
      }
      if (e.window === undefined) return { policy: idOf(q), retryAfterSeconds: 1, reason: 'waiting for the first lease' };
      if (e.admitted >= e.grant) return { policy: idOf(q), retryAfterSeconds: Math.max(1, Math.ceil((e.windowEnd - now) / 1000)), reason: 'quota exhausted' };
      take.push(e);
    }
    for (const e of take) e.admitted += 1;
    return undefined;
  }

  /** Moves a key into the window `now` is in. */
  private advance(e: Entry, now: number, heard: boolean): void {
    if (e.window === undefined) return;
    while (now >= e.windowEnd) {
      e.window += 1;
      e.windowEnd += e.policy.windowMs;
      e.admitted = 0;
      // Leased: only what the federation granted for the new window. Outage: the last leased share.
      e.grant = heard ? (e.nextGrant ?? 0) : e.leasedGrant;
      e.nextGrant = undefined;
    }
  }

  /** Applies a QuotaLeases message: the federation is there, and these are this proxy's shares. */
  onLeases(leases: readonly QuotaLeaseIn[], reportIntervalMs: number, now: number): void {
    this.lastContact = now;
    if (reportIntervalMs > 0) this.reportIntervalMs = reportIntervalMs;
    for (const l of leases) {
      const e = this.entries.get(`${l.quota}|${l.principal}`);
      if (e === undefined) continue;
      this.advance(e, now, true);
      if (e.window !== undefined && l.window < e.window) continue;
      if (e.window === undefined || l.window > e.window) {
        e.admitted = e.window === undefined ? e.admitted : 0;
        e.window = l.window;
      }
      e.windowEnd = now + l.windowRemainingMs;
      // The lease is authoritative for its window (it counts what this proxy
      // reported admitted); after an outage it replaces the carried share.
      e.grant = l.grant;
      e.leasedGrant = l.grant;
      e.nextGrant = l.nextGrant;
      e.lastLeaseAt = now;
    }
  }

  /** The report to send now: every key seen or admitted since the last one; resets `seen`. */
  report(now: number): QuotaUsageOut[] {
    const out: QuotaUsageOut[] = [];
    for (const [k, e] of this.entries) {
      this.advance(e, now, now - this.lastContact <= this.staleMs);
      // A key nobody used for two windows is forgotten (its lease is no use any more).
      if (now - e.lastSeenAt > 2 * e.policy.windowMs) {
        this.entries.delete(k);
        continue;
      }
      out.push({ quota: idOf(e.policy), principal: e.principal, window: e.window ?? 0, admitted: e.admitted, seen: e.seen, intervalMs: Math.max(1, Math.round(now - e.reportedAt)) });
      e.seen = 0;
      e.reportedAt = now;
    }
    return out;
  }
}

function idOf(q: { namespace: string; name: string }): string {
  return `${q.namespace}/${q.name}`;
}
