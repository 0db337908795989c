// The access log: one pino JSON line per finished request and TCP
// connection, with the fields of Envoy's (and Istio's) default access log
// format under their snake_case names, plus the peers' SPIFFE IDs and the
// Kedge error code. On by default at `info`; an operator turns the level
// down, keeps errors only, or samples the rest.
import type { Logger } from '../../proto/model/log';
import type { ConnectionRecord, RecordSink, RequestRecord, TrafficRecord } from '../proxy/record';
import { responseFlagsOf } from './istio-labels';

/** The `telemetry.accessLog` settings. */
export interface AccessLogConfig {
  /** The pino level lines are written at; `off` writes none. */
  level: 'off' | 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** `all`, or `errors`: only records that failed (5xx, reset, gRPC error, flags, an error code). */
  filter: 'all' | 'errors';
  /** Share of the successful records written (0..1); errors are always written. */
  sample: number;
}

/** Defaults: every record at info. */
export const ACCESS_LOG_DEFAULTS: AccessLogConfig = Object.freeze({ level: 'info', filter: 'all', sample: 1 });

/** Whether a record describes a failure (Envoy's flags, an error code, a 5xx, no response, a gRPC error). */
export function isErrorRecord(r: TrafficRecord): boolean {
  if (r.errorCode !== '' || responseFlagsOf(r) !== '-') return true;
  if (r.kind === 'connection') return false;
  return r.responseCode === 0 || r.responseCode >= 500 || (r.protocol === 'grpc' && r.grpcStatus > 0);
}

/** The line for a request, Envoy's fields by name. */
function requestLine(r: RequestRecord): Record<string, unknown> {
  return {
    start_time: new Date(r.startMs).toISOString(),
    reporter: r.reporter,
    method: r.method,
    path: r.path,
    protocol: r.httpVersion,
    response_code: r.responseCode,
    grpc_status: r.grpcStatus >= 0 ? r.grpcStatus : null,
    response_flags: responseFlagsOf(r),
    bytes_received: r.requestBytes,
    bytes_sent: r.responseBytes,
    duration: Math.round(r.durationMs),
    upstream_host: r.upstreamHost || null,
    upstream_cluster: upstreamCluster(r),
    authority: r.authority,
    route_name: r.route || null,
    x_request_id: r.requestId || null,
    trace_id: r.traceId || null,
    attempts: r.attempts,
    downstream_peer_uri_san: r.source.principal || null,
    upstream_peer_uri_san: r.destination.principal || null,
    kedge_error: r.errorCode || null,
  };
}

/** The line for a TCP connection. */
function connectionLine(r: ConnectionRecord): Record<string, unknown> {
  return {
    start_time: new Date(r.startMs).toISOString(),
    reporter: r.reporter,
    protocol: r.stack === 'opaque' ? 'tcp' : r.stack,
    response_flags: responseFlagsOf(r),
    bytes_received: r.receivedBytes,
    bytes_sent: r.sentBytes,
    duration: Math.round(r.durationMs),
    upstream_host: r.upstreamHost || null,
    upstream_cluster: upstreamCluster(r),
    downstream_peer_uri_san: r.source.principal || null,
    upstream_peer_uri_san: r.destination.principal || null,
    failed_attempts: r.failedAttempts.length > 0 ? r.failedAttempts : undefined,
    kedge_error: r.errorCode || null,
  };
}

/** Envoy's cluster name for the hop: `outbound|port||host` on the client, `inbound|port||` on the server. */
function upstreamCluster(r: TrafficRecord): string {
  const s = r.service;
  if (s.hostname === '') return r.reporter === 'source' ? 'PassthroughCluster' : 'InboundPassthroughCluster';
  return r.reporter === 'source' ? `outbound|${s.port}||${s.hostname}` : `inbound|${s.port}||`;
}

/** Counts for kedge_access_log_lines_total. */
export interface AccessLogStats {
  written: number;
  filtered: number;
}

/** The access log as a RecordSink; `random` decides sampling (Math.random by default). */
export function accessLogSink(logger: Logger, config: AccessLogConfig, random: () => number = Math.random): RecordSink & { stats(): AccessLogStats } {
  const stats: AccessLogStats = { written: 0, filtered: 0 };
  const log = logger.child({ component: 'access' });
  const level = config.level;
  return {
    open: () => undefined,
    finish(r) {
      if (level === 'off' || !log.isLevelEnabled(level)) return;
      // HTTP connections are logged through their requests, as Envoy's HTTP access log does.
      if (r.kind === 'connection' && (r.stack === 'http1' || r.stack === 'http2')) return;
      const error = isErrorRecord(r);
      if (!error && (config.filter === 'errors' || (config.sample < 1 && random() >= config.sample))) {
        stats.filtered++;
        return;
      }
      stats.written++;
      log[level](r.kind === 'request' ? requestLine(r) : connectionLine(r), r.kind === 'request' ? 'request' : 'connection');
    },
    stats: () => ({ ...stats }),
  };
}
