// Builds the one RequestRecord of an HTTP or gRPC request: started when its
// head is read, given the route, endpoint, status and bytes as they become
// known, finished exactly once (response complete, reset, or answered by
// the proxy itself).
import type { AttemptFailure, DestinationService, PeerWorkload, RecordSink, Reporter, RequestRecord } from './record';
import { UNKNOWN_PEER } from './record';
import type { HopTrace } from '../telemetry/trace-context';

/** What is known when a request's head has been read. */
export interface RequestStart {
  reporter: Reporter;
  source: PeerWorkload;
  destination: PeerWorkload;
  service: DestinationService;
  connectionSecurityPolicy: RequestRecord['connectionSecurityPolicy'];
  protocol: 'http' | 'grpc';
  httpVersion: string;
  method: string;
  path: string;
  authority: string;
  requestId: string;
  traceId: string;
  /** This hop's span, with tracing on (agent/telemetry/hop.ts startHop). */
  hop?: HopTrace | undefined;
}

/** One request's record in the making. */
export class RequestTrace {
  private readonly startMs = Date.now();
  private readonly t0 = performance.now();
  private readonly failures: AttemptFailure[] = [];
  private done = false;
  route = '';
  upstreamHost = '';
  destination: PeerWorkload = UNKNOWN_PEER;
  responseCode = 0;
  grpcStatus = -1;
  requestBytes = 0;
  responseBytes = 0;
  requestMessages = 0;
  responseMessages = 0;
  attempts = 0;
  private flags: string[] = [];

  constructor(
    private readonly sink: RecordSink,
    private readonly start: RequestStart,
    /** Runs with the finished record (the access log line), after the sink. */
    private readonly onFinish?: (r: RequestRecord) => void,
  ) {
    this.destination = start.destination;
  }

  attemptFailed(endpoint: string, code: string): void {
    this.failures.push({ endpoint, code });
  }

  /** Adds an Envoy response flag (UF, UH, NR, UT, UO, URX, DC, UC, DPE, UPE, FI, DI). */
  flag(f: string): void {
    if (!this.flags.includes(f)) this.flags.push(f);
  }

  get finished(): boolean {
    return this.done;
  }

  /** Ends the record; later calls do nothing. */
  finish(errorCode = ''): void {
    if (this.done) return;
    this.done = true;
    const s = this.start;
    const record: RequestRecord = {
      kind: 'request',
      protocol: s.protocol,
      reporter: s.reporter,
      startMs: this.startMs,
      durationMs: performance.now() - this.t0,
      source: s.source,
      destination: this.destination,
      service: s.service,
      upstreamHost: this.upstreamHost,
      responseFlags: this.flags.length === 0 ? '-' : this.flags.join(','),
      connectionSecurityPolicy: s.connectionSecurityPolicy,
      errorCode,
      failedAttempts: this.failures,
      httpVersion: s.httpVersion,
      method: s.method,
      path: s.path,
      authority: s.authority,
      responseCode: this.responseCode,
      grpcStatus: this.grpcStatus,
      requestBytes: this.requestBytes,
      responseBytes: this.responseBytes,
      requestMessages: this.requestMessages,
      responseMessages: this.responseMessages,
      route: this.route,
      // Every failed attempt (connect, reset, retried status) plus the last.
      attempts: Math.max(1, this.attempts, this.failures.length + 1),
      requestId: s.requestId,
      traceId: s.hop?.traceId ?? s.traceId,
      ...(s.hop !== undefined ? { spanId: s.hop.spanId, parentSpanId: s.hop.parentSpanId, traceSampled: s.hop.sampled } : {}),
    };
    this.sink.finish(record);
    this.onFinish?.(record);
  }
}

/** The access-log fields of a finished request record. */
export function requestLogFields(r: RequestRecord): Record<string, unknown> {
  return {
    method: r.method,
    path: r.path,
    authority: r.authority,
    status: r.responseCode,
    ...(r.grpcStatus >= 0 ? { grpcStatus: r.grpcStatus } : {}),
    flags: r.responseFlags,
    attempts: r.attempts,
    bytesIn: r.requestBytes,
    bytesOut: r.responseBytes,
    durationMs: Math.round(r.durationMs),
    requestId: r.requestId,
    ...(r.route ? { httpRoute: r.route } : {}),
    ...(r.errorCode ? { code: r.errorCode } : {}),
  };
}

/** The W3C trace id of a `traceparent` header value, '' when absent or malformed. */
export function traceIdOf(traceparent: string | undefined): string {
  const m = traceparent === undefined ? null : /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}/.exec(traceparent);
  return m?.[1] ?? '';
}
