// The compact traffic summary an agent sends the federation for `kedge
// stat`: finished records aggregated per reporter, source workload,
// destination workload and service, taken (and reset) on each report. The
// number of keys is bounded by the peers seen in one interval.
import type { PeerWorkload, RecordSink, TrafficRecord } from '../proxy/record';
import type { TrafficStatRow } from '../../proto/model/traffic';
import { isErrorRecord } from './access-log';
import { ENVOY_DEFAULT_BUCKETS } from './istio-metrics';

/** One aggregate, as TrafficStat carries it. */
export type StatRow = TrafficStatRow;

/** Failures kept per aggregate per interval: the newest replace the oldest. */
export const MAX_ERRORS = 3;
const MAX_ERROR_PATH = 256;

/** At most this many keys per interval; more are folded into an `unknown` key. */
const MAX_KEYS = 5_000;

function workloadKey(p: PeerWorkload, local: PeerWorkload | undefined): string {
  const w = local ?? p;
  return w.workload === '' ? '' : `${w.namespace}/${w.workload}`;
}

/** Aggregates records between reports; see the file comment. */
export class StatsSummary implements RecordSink {
  private stats = new Map<string, StatRow>();
  private since: number;

  constructor(private readonly local: PeerWorkload, private readonly now: () => number = Date.now) {
    this.since = now();
  }

  open(): void {}

  finish(r: TrafficRecord): void {
    if (r.kind === 'connection' && (r.stack === 'http1' || r.stack === 'http2')) return;
    const src = workloadKey(r.source, r.reporter === 'source' ? this.local : undefined);
    const dst = workloadKey(r.destination, r.reporter === 'destination' ? this.local : undefined);
    const svc = r.service.name === '' ? '' : `${r.service.name}.${r.service.namespace}`;
    // The server side keeps mTLS and plaintext apart: plaintext is traffic from outside the mesh, whose client reports nothing.
    const mtls = r.reporter === 'destination' && r.connectionSecurityPolicy === 'mutual_tls';
    let key = `${r.reporter}|${src}|${dst}|${svc}|${mtls ? 'm' : ''}`;
    let s = this.stats.get(key);
    if (s === undefined) {
      if (this.stats.size >= MAX_KEYS) key = `${r.reporter}|||`;
      s = this.stats.get(key);
      if (s === undefined) {
        const folded = this.stats.size >= MAX_KEYS;
        s = { reporter: r.reporter, sourceWorkload: folded ? '' : src, destinationWorkload: folded ? '' : dst, destinationService: folded ? '' : svc, requests: 0, failures: 0, latencyBuckets: new Array<number>(ENVOY_DEFAULT_BUCKETS.length + 1).fill(0), tcpConnections: 0, tcpSentBytes: 0, tcpReceivedBytes: 0, mtls: 0, errors: [] };
        this.stats.set(key, s);
      }
    }
    if (mtls) s.mtls++;
    const failed = isErrorRecord(r);
    if (failed) {
      if (s.errors.length >= MAX_ERRORS) s.errors.shift();
      s.errors.push(r.kind === 'request'
        ? { startMs: r.startMs, responseCode: r.responseCode, grpcStatus: r.grpcStatus, responseFlags: r.responseFlags, errorCode: r.errorCode, method: r.method, path: r.path.slice(0, MAX_ERROR_PATH), upstreamHost: r.upstreamHost }
        : { startMs: r.startMs, responseCode: 0, grpcStatus: -1, responseFlags: r.responseFlags, errorCode: r.errorCode, method: '', path: '', upstreamHost: r.upstreamHost });
    }
    if (r.kind === 'connection') {
      s.tcpConnections++;
      s.tcpSentBytes += r.sentBytes;
      s.tcpReceivedBytes += r.receivedBytes;
      return;
    }
    s.requests++;
    if (failed) s.failures++;
    const b = ENVOY_DEFAULT_BUCKETS.findIndex((le) => r.durationMs <= le);
    const buckets = s.latencyBuckets;
    buckets[b < 0 ? buckets.length - 1 : b]!++;
  }

  /** The summary since the previous take, or undefined when nothing happened; resets. */
  take(): { intervalMs: number; stats: StatRow[] } | undefined {
    const now = this.now();
    const intervalMs = Math.max(0, Math.round(now - this.since));
    this.since = now;
    if (this.stats.size === 0) return undefined;
    const stats = [...this.stats.values()];
    this.stats = new Map();
    return { intervalMs, stats };
  }
}
