// The traffic summaries agents report (TrafficStats on the Connect stream),
// kept for an hour on the replica that received them, and the rows `kedge
// stat` shows: per service or workload, success rate, requests per second,
// latency percentiles (interpolated in Envoy's buckets, as Prometheus'
// histogram_quantile does) and TCP connections over a window. Pure apart
// from the clock passed in.

import type { TrafficError, TrafficStatRow } from '../proto/model/traffic';

/** Envoy's default buckets (ms), the ones agents report latency in. */
export const LATENCY_BUCKETS_MS: readonly number[] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

/** Summaries older than this are dropped. */
export const RETAIN_MS = 60 * 60_000;
/** At most this many stored aggregates; the oldest go first. */
const MAX_ENTRIES = 200_000;

/** One reported aggregate, as received. */
export type ReportedStat = TrafficStatRow;

/** One failure an agent reported. */
export type ReportedError = TrafficError;

/** Reported aggregates summed over a window, per reporter, workloads and service: what the service graph is drawn from. */
export interface EdgeAggregate {
  reporter: string;
  sourceWorkload: string;
  destinationWorkload: string;
  destinationService: string;
  requests: number;
  failures: number;
  latencyBuckets: number[];
  tcpConnections: number;
  tcpBytes: number;
  mtls: number;
  /** The newest failures, newest first, at most EDGE_ERRORS. */
  errors: ReportedError[];
}

/** Failures kept per edge aggregate. */
export const EDGE_ERRORS = 10;

/** A `kedge stat` row. */
export interface StatRow {
  name: string;
  /** Share of requests that succeeded; null with no requests. */
  success: number | null;
  rps: number;
  requests: number;
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  tcpConnections: number;
}

/** What to aggregate. */
export interface StatQuery {
  kind: 'services' | 'workloads';
  /** A service (name.namespace) or workload (namespace/name); all when absent. */
  name?: string;
  /** Only traffic from this workload (namespace/name), as its client proxy reported it. */
  from?: string;
  windowMs: number;
}

/** A quantile from per-bucket counts, interpolated linearly inside the bucket. */
export function bucketQuantile(q: number, counts: readonly number[]): number | null {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let cum = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!;
    if (cum + c >= rank && c > 0) {
      const lower = i === 0 ? 0 : LATENCY_BUCKETS_MS[i - 1]!;
      // The overflow bucket has no upper bound: report its lower one, as Prometheus does.
      if (i >= LATENCY_BUCKETS_MS.length) return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1]!;
      const upper = LATENCY_BUCKETS_MS[i]!;
      return lower + ((upper - lower) * (rank - cum)) / c;
    }
    cum += c;
  }
  return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1]!;
}

function addBuckets(into: number[], counts: readonly number[]): void {
  for (let i = 0; i < counts.length && i < into.length; i++) into[i]! += counts[i]!;
}

/** The reported summaries of this replica's agents; see the file comment. */
export class TrafficStatsStore {
  private entries: { at: number; stat: ReportedStat }[] = [];

  constructor(private readonly now: () => number = Date.now) {}

  /** Adds one report. */
  add(stats: readonly ReportedStat[]): void {
    const at = this.now();
    for (const stat of stats) this.entries.push({ at, stat });
    const cutoff = at - RETAIN_MS;
    let drop = 0;
    while (drop < this.entries.length && this.entries[drop]!.at < cutoff) drop++;
    if (this.entries.length - drop > MAX_ENTRIES) drop = this.entries.length - MAX_ENTRIES;
    if (drop > 0) this.entries = this.entries.slice(drop);
  }

  /** Every aggregate reported within `windowMs`, summed per reporter, source and destination workload and service. */
  edges(windowMs: number): EdgeAggregate[] {
    const since = this.now() - windowMs;
    const groups = new Map<string, EdgeAggregate>();
    for (const { at, stat } of this.entries) {
      if (at < since) continue;
      const key = `${stat.reporter}|${stat.sourceWorkload}|${stat.destinationWorkload}|${stat.destinationService}`;
      let g = groups.get(key);
      if (g === undefined) {
        g = { reporter: stat.reporter, sourceWorkload: stat.sourceWorkload, destinationWorkload: stat.destinationWorkload, destinationService: stat.destinationService, requests: 0, failures: 0, latencyBuckets: new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0), tcpConnections: 0, tcpBytes: 0, mtls: 0, errors: [] };
        groups.set(key, g);
      }
      g.requests += stat.requests;
      g.failures += stat.failures;
      g.tcpConnections += stat.tcpConnections;
      g.tcpBytes += stat.tcpSentBytes + stat.tcpReceivedBytes;
      g.mtls += stat.mtls;
      addBuckets(g.latencyBuckets, stat.latencyBuckets);
      // Entries are in arrival order: newer errors go to the front.
      for (const e of stat.errors) g.errors.unshift(e);
      if (g.errors.length > EDGE_ERRORS) g.errors.length = EDGE_ERRORS;
    }
    return [...groups.values()];
  }

  /** The rows for `q`, sorted by name. */
  query(q: StatQuery): StatRow[] {
    const since = this.now() - q.windowMs;
    const groups = new Map<string, { requests: number; failures: number; buckets: number[]; tcp: number }>();
    for (const { at, stat } of this.entries) {
      if (at < since) continue;
      // Without --from: the server proxies' view (every client counted once);
      // with it: what that workload's client proxy saw.
      if (q.from !== undefined) {
        if (stat.reporter !== 'source' || stat.sourceWorkload !== q.from) continue;
      } else if (stat.reporter !== 'destination') continue;
      const name = q.kind === 'services' ? stat.destinationService : stat.destinationWorkload;
      if (name === '' || (q.name !== undefined && name !== q.name)) continue;
      let g = groups.get(name);
      if (g === undefined) {
        g = { requests: 0, failures: 0, buckets: new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0), tcp: 0 };
        groups.set(name, g);
      }
      g.requests += stat.requests;
      g.failures += stat.failures;
      g.tcp += stat.tcpConnections;
      addBuckets(g.buckets, stat.latencyBuckets);
    }
    const seconds = q.windowMs / 1000;
    return [...groups.entries()]
      .map(([name, g]) => ({
        name,
        success: g.requests === 0 ? null : (g.requests - g.failures) / g.requests,
        rps: g.requests / seconds,
        requests: g.requests,
        p50Ms: bucketQuantile(0.5, g.buckets),
        p95Ms: bucketQuantile(0.95, g.buckets),
        p99Ms: bucketQuantile(0.99, g.buckets),
        tcpConnections: g.tcp,
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }
}
