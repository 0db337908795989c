// The one record per request and per connection. A listener builds it where
// the request (or connection) starts and finishes it exactly once when it
// ends; counters, Prometheus metrics (istio_* names) and the access log read
// finished records through a RecordSink and nothing else. Listeners never
// count inline.
//
// This file is the contract between the forwarding engine (which produces
// records) and telemetry (which consumes them). Fields may be added; a field
// is never renamed or given another meaning without changing both sides.

/** Which side of the mesh hop produced the record (Istio's `reporter` label). */
export type Reporter = 'source' | 'destination';

/** The protocol the record describes (Istio's `request_protocol`: http, grpc; tcp for connections). */
export type RecordProtocol = 'http' | 'grpc' | 'tcp';

/**
 * Who a peer workload is, as metadata exchange carries it between proxies
 * (Istio's peer metadata). Any field may be '' when unknown; telemetry
 * writes `unknown` for it, as Istio does.
 */
export interface PeerWorkload {
  /** SPIFFE ID from the peer's certificate (`spiffe://td/ns/N/sa/S`), '' for plaintext. */
  principal: string;
  workload: string;
  namespace: string;
  app: string;
  version: string;
  canonicalService: string;
  canonicalRevision: string;
  cluster: string;
}

/** The destination service a request or connection was addressed to. */
export interface DestinationService {
  /** Hostname, e.g. reviews.default.svc.cluster.local ('' when unknown: passthrough). */
  hostname: string;
  name: string;
  namespace: string;
  /** Service port. */
  port: number;
}

/** Fields every record has. */
export interface RecordBase {
  reporter: Reporter;
  /** Wall-clock start, ms since the epoch. */
  startMs: number;
  /** From start to end, ms (fractional allowed). */
  durationMs: number;
  source: PeerWorkload;
  destination: PeerWorkload;
  service: DestinationService;
  /** `address:port` of the endpoint the request went to (source reporter) or the local app (destination). '' when none. */
  upstreamHost: string;
  /** Envoy-style response flags, comma-separated (`UF`, `UH`, `URX`, `UT`, `UO`, `NR`, `UAEX`, `DC`, `RL`, `FI`, `DI`, ...), '-' when none. */
  responseFlags: string;
  /** `mutual_tls` or `none` (Istio's connection_security_policy; `unknown` on the source side as Istio writes it). */
  connectionSecurityPolicy: 'mutual_tls' | 'none' | 'unknown';
  /** KedgeError code that ended it, '' on success. */
  errorCode: string;
  /**
   * Attempts that failed before the one that carried it (or before giving
   * up): the endpoint tried (`address:port`) and the KedgeError code, in
   * order. Empty when the first attempt went through.
   */
  failedAttempts: readonly AttemptFailure[];
}

/** One failed attempt to reach an endpoint (connect, TLS, identity, a refused stream, a retried response). */
export interface AttemptFailure {
  endpoint: string;
  code: string;
}

/** One HTTP/1.1, HTTP/2 or gRPC request. */
export interface RequestRecord extends RecordBase {
  kind: 'request';
  protocol: 'http' | 'grpc';
  /** HTTP/1.1, HTTP/2 */
  httpVersion: string;
  method: string;
  /** Path as received (before rewrites). */
  path: string;
  authority: string;
  /** HTTP status sent to the client; 0 when none was sent (reset). */
  responseCode: number;
  /** gRPC status code; -1 when not gRPC or none was received. */
  grpcStatus: number;
  /** Request and response body bytes (headers excluded). */
  requestBytes: number;
  responseBytes: number;
  /** gRPC messages each way (0 for HTTP). */
  requestMessages: number;
  responseMessages: number;
  /** Name of the route that matched (`namespace/name`), '' for the default route. */
  route: string;
  /** Attempts made (1 without retries). */
  attempts: number;
  requestId: string;
  /** W3C trace id when the request carried or was given one, else ''. */
  traceId: string;
  /** This hop's span id (agent/telemetry/trace-context.ts hopContext); absent when the engine kept no span. */
  spanId?: string;
  /** The caller's span id, '' for a trace this hop started. */
  parentSpanId?: string;
  /** The trace is sampled: the span is exported when OTLP is configured. */
  traceSampled?: boolean;
}

/** One TCP connection (opaque, TLS passthrough, or the connection an HTTP stream rode on). */
export interface ConnectionRecord extends RecordBase {
  kind: 'connection';
  protocol: 'tcp';
  /** Bytes sent to and received from the downstream peer (Istio's tcp_sent/received from the reporter's view). */
  sentBytes: number;
  receivedBytes: number;
  /**
   * What the connection carried: `opaque` bytes, `tls` passed through
   * unread (the gateway, non-mesh TLS), or HTTP (`http1`, `http2`) whose
   * requests have records of their own. Istio's istio_tcp_* metrics count
   * `opaque` and `tls` only.
   */
  stack: 'opaque' | 'tls' | 'http1' | 'http2';
  /** True when the connection reached its upstream (open() was called for it); false when it was refused or no attempt succeeded. */
  opened: boolean;
}

/** A finished record. */
export type TrafficRecord = RequestRecord | ConnectionRecord;

/**
 * Where finished records go. `open` is called when a TCP connection is
 * opened (istio_tcp_connections_opened_total counts at open, not at close),
 * with the attempts that failed before it (they are in the finished record
 * again: count them at open for an opened connection, at finish otherwise);
 * `finish` once per record when it ends. Implementations must be cheap and
 * must not throw: they run on the data path.
 */
export interface RecordSink {
  open(conn: Pick<ConnectionRecord, 'reporter' | 'source' | 'destination' | 'service' | 'connectionSecurityPolicy' | 'upstreamHost' | 'stack' | 'failedAttempts'>): void;
  finish(record: TrafficRecord): void;
}

/** A sink that drops everything (tests, metrics off). */
export const NULL_SINK: RecordSink = { open: () => undefined, finish: () => undefined };

/** A sink that hands every call to each of `sinks` in order (the proxy's own counters, then telemetry). */
export function fanOut(...sinks: RecordSink[]): RecordSink {
  const live = sinks.filter((s) => s !== NULL_SINK);
  if (live.length === 1) return live[0]!;
  return {
    open: (conn) => {
      for (const s of live) s.open(conn);
    },
    finish: (record) => {
      for (const s of live) s.finish(record);
    },
  };
}

/** A PeerWorkload with every field unknown. */
export const UNKNOWN_PEER: PeerWorkload = Object.freeze({
  principal: '',
  workload: '',
  namespace: '',
  app: '',
  version: '',
  canonicalService: '',
  canonicalRevision: '',
  cluster: '',
});
