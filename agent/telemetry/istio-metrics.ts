// Istio's standard metrics from finished records: a RecordSink that keeps
// one series object per label set (all of a request label set's counters and
// histograms in one object) and writes them in the Prometheus text format
// on scrape. The 20 peer labels of a record are resolved once per peer
// object and service object the engine hands in (a WeakMap hit) and
// interned to a small id, so a record costs a short key and one lookup,
// not 25 label values joined and hashed (measured 2.2 us vs 0.4 us). Series
// idle longer than `idleMs` (10 minutes, as Linkerd keeps idle series) are
// dropped, so peers and endpoints that are gone do not accumulate; a TCP
// series with connections still open is never dropped. A hard cap on series
// protects the agent from a burst of label sets; what the cap refuses is
// counted, never silently lost.
import type { ConnectionRecord, PeerWorkload, RecordSink, RequestRecord, TrafficRecord } from '../proxy/record';
import { escapeLabelValue, familyHeader, formatValue, renderLabels } from './exposition';
import { PEER_LABELS, type PeerInput, REQUEST_TAIL_LABELS, TCP_TAIL_LABELS, peerLabelValues, requestTailValues, responseFlagsOf, tcpTailValues } from './istio-labels';

/** Envoy's default histogram buckets, which Istio's proxies use for every istio_* histogram (ms and bytes). */
export const ENVOY_DEFAULT_BUCKETS: readonly number[] = Object.freeze([0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000]);

/** Linkerd keeps a series this long after its last update. */
export const DEFAULT_IDLE_MS = 10 * 60_000;
/** At most this many request plus TCP series at once. */
export const DEFAULT_MAX_SERIES = 20_000;

/** A histogram's state: per-bucket (non-cumulative) counts, sum and count. */
class Histogram {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

/** Everything counted for one request label set. */
class RequestSeries {
  requests = 0;
  part!: PeerPart;
  code = 0;
  sub = '';
  requestMessages = 0;
  responseMessages = 0;
  readonly duration: Histogram;
  readonly requestBytes: Histogram;
  readonly responseBytes: Histogram;
  constructor(readonly labels: string, readonly grpc: boolean, public lastUsed: number, buckets: readonly number[]) {
    this.duration = new Histogram(buckets);
    this.requestBytes = new Histogram(buckets);
    this.responseBytes = new Histogram(buckets);
  }
}

/** Everything counted for one TCP label set. */
class TcpSeries {
  opened = 0;
  closed = 0;
  sent = 0;
  received = 0;
  constructor(readonly labels: string, readonly openKey: string, readonly part: PeerPart, public lastUsed: number) {}
}

/** The 20 peer label values of a set of records, interned: equal values share one id. */
interface PeerPart {
  id: number;
  /** Rendered PEER_LABELS, escaped. */
  rendered: string;
  /** Series using it; the part is forgotten with its last series. */
  refs: number;
  alive: boolean;
  /** Its request series, by response code, then by the rest of the tail labels. */
  requests: Map<number, Map<string, RequestSeries>>;
}

/** How the Istio metrics are kept. */
export interface IstioMetricsOptions {
  /** This agent's workload, written for its own side of every record. */
  local: PeerWorkload;
  /** For istio_build's tag label. */
  version: string;
  /** Milliseconds clock for idle expiry; Date.now by default. */
  now?: () => number;
  idleMs?: number;
  maxSeries?: number;
  buckets?: readonly number[];
}

/** Counts of the sink's own bookkeeping, for kedge_telemetry_* metrics. */
export interface IstioMetricsStats {
  requestSeries: number;
  tcpSeries: number;
  /** Records (or opens) not counted because the series cap was reached. */
  overflow: number;
  /** Series dropped after being idle. */
  expired: number;
}

const SEP = '\u0000';
/** Histogram series rendered between two yields of renderAsync (~3 MB of text). */
const RENDER_SLICE = 50;

/** Istio's standard metrics as a RecordSink; see the file comment. */
export class IstioMetrics implements RecordSink {
  private readonly requests = new Set<RequestSeries>();
  private readonly tcp = new Map<string, TcpSeries>();
  private readonly openConns = new Map<string, number>();
  private readonly parts = new Map<string, PeerPart>();
  private readonly partKeys = new Map<PeerPart, string>();
  private readonly partCache = new WeakMap<object, WeakMap<object, WeakMap<object, Map<string, PeerPart>>>>();
  private nextPart = 0;
  private readonly now: () => number;
  private readonly idleMs: number;
  private readonly maxSeries: number;
  private readonly buckets: readonly number[];
  private readonly bucketLabels: readonly string[];
  private overflow = 0;
  private expired = 0;

  constructor(private readonly opts: IstioMetricsOptions) {
    this.now = opts.now ?? Date.now;
    this.idleMs = opts.idleMs ?? DEFAULT_IDLE_MS;
    this.maxSeries = opts.maxSeries ?? DEFAULT_MAX_SERIES;
    this.buckets = opts.buckets ?? ENVOY_DEFAULT_BUCKETS;
    this.bucketLabels = this.buckets.map((b) => `,le="${formatValue(b)}"}`);
  }

  private full(): boolean {
    return this.requests.size + this.tcp.size >= this.maxSeries;
  }

  /** The interned peer labels of a record; see the file comment. */
  private peerPart(r: PeerInput & { responseFlags?: string }): PeerPart {
    // Keyed by the objects the labels are read from (records are immutable),
    // then by a short string of what else the labels depend on.
    const dest = r.reporter === 'destination';
    const peerObj = dest ? r.source : r.destination;
    const localObj = dest ? r.destination : r.source;
    let bySvc = this.partCache.get(peerObj);
    if (bySvc === undefined) {
      bySvc = new WeakMap();
      this.partCache.set(peerObj, bySvc);
    }
    let byLocal = bySvc.get(r.service);
    if (byLocal === undefined) {
      byLocal = new WeakMap();
      bySvc.set(r.service, byLocal);
    }
    let byRest = byLocal.get(localObj);
    if (byRest === undefined) {
      byRest = new Map();
      byLocal.set(localObj, byRest);
    }
    // The flags only matter for passthrough (the service name), mTLS only for the local principal.
    const rest = r.service.hostname === '' ? `${r.reporter}|${r.connectionSecurityPolicy}|${responseFlagsOf(r)}` : dest ? (r.connectionSecurityPolicy === 'mutual_tls' ? 'dm' : 'dn') : 's';
    const cached = byRest.get(rest);
    if (cached !== undefined && cached.alive) return cached;
    const values = peerLabelValues(r, this.opts.local);
    const key = values.join(SEP);
    let part = this.parts.get(key);
    if (part === undefined) {
      part = { id: this.nextPart++, rendered: renderLabels(PEER_LABELS, values), refs: 0, alive: true, requests: new Map() };
      this.parts.set(key, part);
      this.partKeys.set(part, key);
    }
    byRest.set(rest, part);
    return part;
  }

  private release(part: PeerPart): void {
    if (--part.refs > 0) return;
    part.alive = false;
    const key = this.partKeys.get(part);
    if (key !== undefined) this.parts.delete(key);
    this.partKeys.delete(part);
  }

  private tcpSeries(r: PeerInput & { responseFlags?: string }): TcpSeries | undefined {
    const part = this.peerPart(r);
    const tail = tcpTailValues(r);
    const key = `${part.id}${SEP}${tail[1]}${SEP}${tail[2]}`;
    let s = this.tcp.get(key);
    if (s === undefined) {
      if (this.full()) {
        this.overflow++;
        return undefined;
      }
      s = new TcpSeries(`${part.rendered},${renderLabels(TCP_TAIL_LABELS, tail)}`, `${part.id}${SEP}${tail[2]}`, part, 0);
      part.refs++;
      this.tcp.set(key, s);
    }
    s.lastUsed = this.now();
    return s;
  }

  open(conn: Parameters<RecordSink['open']>[0]): void {
    if (conn.stack === 'http1' || conn.stack === 'http2') return;
    const s = this.tcpSeries(conn);
    if (s === undefined) return;
    s.opened++;
    // Keyed without the flags: the close may carry flags the open could not know.
    this.openConns.set(s.openKey, (this.openConns.get(s.openKey) ?? 0) + 1);
  }

  finish(record: TrafficRecord): void {
    if (record.kind === 'request') this.finishRequest(record);
    else this.finishConnection(record);
  }

  private finishRequest(r: RequestRecord): void {
    const part = this.peerPart(r);
    const grpc = r.protocol === 'grpc';
    const flags = responseFlagsOf(r);
    const csp = r.reporter === 'source' ? 's' : r.connectionSecurityPolicy === 'mutual_tls' ? 'm' : 'n';
    // Short keys, per peer part and response code; a constant string in the common case.
    const sub = !grpc && flags === '-' ? csp : `${csp}|${r.protocol}|${grpc ? r.grpcStatus : ''}|${flags}`;
    let byCode = part.requests.get(r.responseCode);
    if (byCode === undefined) {
      byCode = new Map();
      part.requests.set(r.responseCode, byCode);
    }
    let s = byCode.get(sub);
    const now = this.now();
    if (s === undefined) {
      if (this.full()) {
        this.overflow++;
        return;
      }
      s = new RequestSeries(`${part.rendered},${renderLabels(REQUEST_TAIL_LABELS, requestTailValues(r))}`, grpc, now, this.buckets);
      s.part = part;
      s.code = r.responseCode;
      s.sub = sub;
      part.refs++;
      byCode.set(sub, s);
      this.requests.add(s);
    }
    s.lastUsed = now;
    s.requests++;
    s.duration.observe(r.durationMs);
    s.requestBytes.observe(r.requestBytes);
    s.responseBytes.observe(r.responseBytes);
    s.requestMessages += r.requestMessages;
    s.responseMessages += r.responseMessages;
  }

  private finishConnection(r: ConnectionRecord): void {
    // A connection that carried HTTP is counted by its requests; Istio's
    // istio_tcp_* cover opaque TCP and TLS passthrough only.
    if (r.stack === 'http1' || r.stack === 'http2') return;
    const s = this.tcpSeries(r);
    if (s === undefined) return;
    // Never opened (refused, or no attempt reached an endpoint): Istio
    // reports the open at the close then, with the same labels.
    if (!r.opened) s.opened++;
    const n = this.openConns.get(s.openKey);
    if (n !== undefined) {
      if (n <= 1) this.openConns.delete(s.openKey);
      else this.openConns.set(s.openKey, n - 1);
    }
    s.closed++;
    s.sent += r.sentBytes;
    s.received += r.receivedBytes;
  }

  /** Drops series idle longer than idleMs (TCP series with open connections stay). Called by a timer. */
  sweep(): void {
    const cutoff = this.now() - this.idleMs;
    for (const s of this.requests) {
      if (s.lastUsed < cutoff) {
        this.requests.delete(s);
        const byCode = s.part.requests.get(s.code);
        byCode?.delete(s.sub);
        if (byCode?.size === 0) s.part.requests.delete(s.code);
        this.release(s.part);
        this.expired++;
      }
    }
    for (const [k, s] of this.tcp) {
      if (s.lastUsed < cutoff && !this.openConns.has(s.openKey)) {
        this.tcp.delete(k);
        this.release(s.part);
        this.expired++;
      }
    }
  }

  stats(): IstioMetricsStats {
    return { requestSeries: this.requests.size, tcpSeries: this.tcp.size, overflow: this.overflow, expired: this.expired };
  }

  /** The text exposition of every istio_* family. */
  render(): string {
    let text = '';
    for (const part of this.pieces()) text += part;
    return text;
  }

  /**
   * The same text in pieces of RENDER_SLICE series, the event loop free
   * between them, for /metrics to stream: a request series with Istio's
   * labels is ~57 KB of text (three histograms of 20 buckets, ~1 KB of
   * labels a line), so one string of a few hundred series would hold the
   * data path for hundreds of milliseconds, and one of ~9,000 would pass
   * V8's longest string.
   */
  async *stream(): AsyncGenerator<string> {
    for (const part of this.pieces()) {
      yield part;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** The exposition in pieces of at most RENDER_SLICE series each. */
  private *pieces(): Generator<string> {
    const out: string[] = [];
    let n = 0;
    // Called after each series: hands out what was built every RENDER_SLICE series.
    const tick = (): string | undefined => {
      if (++n % RENDER_SLICE !== 0) return undefined;
      const piece = out.join('');
      out.length = 0;
      return piece;
    };
    const req = [...this.requests.values()];
    const tcp = [...this.tcp.values()];
    out.push(familyHeader('istio_requests_total', 'counter', 'Requests, by Istio standard labels.'));
    for (const s of req) out.push(`istio_requests_total{${s.labels}} ${s.requests}\n`);
    const histograms: [string, string, (s: RequestSeries) => Histogram][] = [
      ['istio_request_duration_milliseconds', 'Request duration in milliseconds.', (s) => s.duration],
      ['istio_request_bytes', 'Request body sizes in bytes.', (s) => s.requestBytes],
      ['istio_response_bytes', 'Response body sizes in bytes.', (s) => s.responseBytes],
    ];
    for (const [name, help, get] of histograms) {
      out.push(familyHeader(name, 'histogram', help));
      for (const s of req) {
        this.histogram(out, name, s.labels, get(s));
        const piece = tick();
        if (piece !== undefined) yield piece;
      }
    }
    const grpc = req.filter((s) => s.grpc);
    out.push(familyHeader('istio_request_messages_total', 'counter', 'gRPC messages sent by clients.'));
    for (const s of grpc) out.push(`istio_request_messages_total{${s.labels}} ${s.requestMessages}\n`);
    out.push(familyHeader('istio_response_messages_total', 'counter', 'gRPC messages sent by servers.'));
    for (const s of grpc) out.push(`istio_response_messages_total{${s.labels}} ${s.responseMessages}\n`);
    const counter = (name: string, help: string, get: (s: TcpSeries) => number): void => {
      out.push(familyHeader(name, 'counter', help));
      for (const s of tcp) out.push(`${name}{${s.labels}} ${get(s)}\n`);
    };
    counter('istio_tcp_sent_bytes_total', 'Bytes sent to the downstream peer on TCP connections.', (s) => s.sent);
    counter('istio_tcp_received_bytes_total', 'Bytes received from the downstream peer on TCP connections.', (s) => s.received);
    counter('istio_tcp_connections_opened_total', 'TCP connections opened.', (s) => s.opened);
    counter('istio_tcp_connections_closed_total', 'TCP connections closed.', (s) => s.closed);
    out.push(familyHeader('istio_build', 'gauge', 'Proxy build: component and version.'));
    out.push(`istio_build{component="proxy",tag="${escapeLabelValue(this.opts.version)}"} 1\n`);
    yield out.join('');
  }

  /** One series of a histogram family: cumulative buckets, +Inf, sum and count. */
  private histogram(out: string[], name: string, labels: string, h: Histogram): void {
    let cum = 0;
    const prefix = `${name}_bucket{${labels}`;
    for (let i = 0; i < h.counts.length; i++) {
      cum += h.counts[i]!;
      out.push(`${prefix}${this.bucketLabels[i]} ${cum}\n`);
    }
    out.push(`${prefix},le="+Inf"} ${h.count}\n${name}_sum{${labels}} ${formatValue(h.sum)}\n${name}_count{${labels}} ${h.count}\n`);
  }
}
