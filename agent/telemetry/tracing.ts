// One span per proxy hop, exported over OTLP/HTTP with the OpenTelemetry JS
// SDK when `telemetry.tracing.otlpEndpoint` is set: a RecordSink that turns
// each sampled request record into a span with the ids the engine
// propagated (trace-context.ts), so the spans of every hop join one trace.
// Export is batched off the data path; spans the collector does not take
// (unreachable, refusing, too slow) and spans beyond the queue are dropped
// and counted, and traffic never waits for them.
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, type ReadableSpan, type SpanExporter, TracerProvider } from '@opentelemetry/sdk-trace';
import type { PeerWorkload, RecordSink, RequestRecord } from '../proxy/record';
import { isErrorRecord } from './access-log';
import { responseFlagsOf } from './istio-labels';

/** The `telemetry.tracing` settings. */
export interface TracingConfig {
  /** OTLP/HTTP traces URL (`http://collector:4318/v1/traces`); '' exports nothing. */
  otlpEndpoint: string;
  /** Share of new traces sampled (a caller's decision is kept), 0..1; Istio's default is 1%. */
  sample: number;
}

export const TRACING_DEFAULTS: TracingConfig = Object.freeze({ otlpEndpoint: '', sample: 0.01 });

/** Spans held for export at most; more are dropped and counted. */
export const MAX_QUEUED_SPANS = 2048;

/** Counts what the exporter did. */
export interface TracingStats {
  exported: number;
  /** Dropped: refused or failed by the collector, or over the queue. */
  dropped: number;
}

// ExportResultCode.SUCCESS in @opentelemetry/core.
const EXPORT_SUCCESS = 0;

/** A span sink over `exporter` (OTLP by default); close() flushes and stops it. */
export class SpanSink implements RecordSink {
  private readonly provider: TracerProvider;
  private readonly tracer;
  private ended = 0;
  private exported = 0;
  private failed = 0;
  private overQueue = 0;
  /** The ids of the span being started: the SDK asks its IdGenerator for them. */
  private nextTraceId = '';
  private nextSpanId = '';

  constructor(local: PeerWorkload, opts: { exporter?: SpanExporter; endpoint?: string; scheduledDelayMillis?: number; exportTimeoutMillis?: number }) {
    const inner = opts.exporter ?? new OTLPTraceExporter({ url: opts.endpoint, timeoutMillis: opts.exportTimeoutMillis ?? 10_000 });
    const counting: SpanExporter = {
      export: (spans: ReadableSpan[], done) => {
        inner.export(spans, (result) => {
          if (result.code === EXPORT_SUCCESS) this.exported += spans.length;
          else this.failed += spans.length;
          done(result);
        });
      },
      shutdown: () => inner.shutdown(),
      ...(inner.forceFlush ? { forceFlush: () => inner.forceFlush!() } : {}),
    };
    this.provider = new TracerProvider({
      resource: resourceFromAttributes({
        // Istio names a proxy's service canonical-service.namespace.
        'service.name': `${local.canonicalService || local.workload}.${local.namespace}`,
        'service.namespace': local.namespace,
        'k8s.namespace.name': local.namespace,
        'istio.canonical_service': local.canonicalService,
        'istio.canonical_revision': local.canonicalRevision,
      }),
      idGenerator: { generateTraceId: () => this.nextTraceId, generateSpanId: () => this.nextSpanId },
      spanProcessors: [new BatchSpanProcessor({ exporter: counting, maxQueueSize: MAX_QUEUED_SPANS, scheduledDelayMillis: opts.scheduledDelayMillis ?? 5_000, exportTimeoutMillis: opts.exportTimeoutMillis ?? 10_000 })],
    });
    this.tracer = this.provider.getTracer('kedge-proxy');
  }

  open(): void {}

  finish(r: Parameters<RecordSink['finish']>[0]): void {
    if (r.kind !== 'request' || r.traceSampled !== true || !r.spanId || !r.traceId) return;
    // Spans not yet handed to the exporter; past the queue the batch processor would drop them unseen.
    if (this.ended - this.exported - this.failed - this.overQueue >= MAX_QUEUED_SPANS) {
      this.overQueue++;
      return;
    }
    this.ended++;
    this.record(r);
  }

  private record(r: RequestRecord): void {
    this.nextTraceId = r.traceId;
    this.nextSpanId = r.spanId!;
    const parent = r.parentSpanId ? trace.setSpanContext(ROOT_CONTEXT, { traceId: r.traceId, spanId: r.parentSpanId, traceFlags: TraceFlags.SAMPLED, isRemote: true }) : ROOT_CONTEXT;
    const s = r.service;
    const span = this.tracer.startSpan(
      // Envoy's operation name for a route: host:port/*.
      `${s.hostname || r.authority}:${s.port}/*`,
      {
        kind: r.reporter === 'source' ? SpanKind.CLIENT : SpanKind.SERVER,
        startTime: r.startMs,
        root: !r.parentSpanId,
        attributes: {
          'http.method': r.method,
          'http.url': `${r.authority}${r.path}`,
          'http.protocol': r.httpVersion,
          'http.status_code': r.responseCode,
          'response_flags': responseFlagsOf(r),
          'upstream_cluster': r.reporter === 'source' ? `outbound|${s.port}||${s.hostname}` : `inbound|${s.port}||`,
          'peer.address': r.upstreamHost,
          'guid:x-request-id': r.requestId,
          component: 'proxy',
          ...(r.protocol === 'grpc' && r.grpcStatus >= 0 ? { 'grpc.status_code': r.grpcStatus } : {}),
        },
      },
      parent,
    );
    if (isErrorRecord(r)) span.setStatus({ code: SpanStatusCode.ERROR, message: r.errorCode || responseFlagsOf(r) });
    span.end(r.startMs + r.durationMs);
  }

  stats(): TracingStats {
    return { exported: this.exported, dropped: this.failed + this.overQueue };
  }

  /** Exports what is queued now (tests, shutdown). */
  flush(): Promise<void> {
    return this.provider.forceFlush();
  }

  async close(): Promise<void> {
    await this.provider.shutdown().catch(() => undefined);
  }
}
