// The agent's telemetry, assembled: the RecordSink the forwarding engine
// writes finished records to (Istio metrics, and whatever else is
// configured), the kedge_* registry, and the /metrics listener. A metrics
// port that cannot be bound is logged as an error and the agent goes on:
// the data path never depends on telemetry.
import type { Registry } from 'prom-client';
import { errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { type HostPort, formatHostPort } from '../../proto/model/address';
import { NULL_SINK, type PeerWorkload, type RecordSink } from '../proxy/record';
import { type AgentMetricsSources, createAgentRegistry } from './agent-metrics';
import { fanout } from './fanout';
import { IstioMetrics } from './istio-metrics';
import { type MetricsServer, startMetricsServer } from './server';
import type { ListenerLimits } from '../../proto/model/limits';
import type { SpanSink } from './tracing';
import { type StatRow, StatsSummary } from './stats-summary';

/** How often idle series are looked for. */
const SWEEP_INTERVAL_MS = 60_000;
/** How often the traffic summary goes to the federation (`kedge stat`). */
export const STATS_REPORT_INTERVAL_MS = 10_000;

/** What the agent's telemetry is built from. */
export interface TelemetryOptions {
  local: PeerWorkload;
  version: string;
  mode: 'sidecar' | 'gateway';
  /** false: records go nowhere (NULL_SINK), /metrics still serves kedge_* and process metrics. */
  istioMetrics: boolean;
  /** Further sinks (access log, tracing, stats summary), after the metrics. */
  sinks?: readonly RecordSink[];
  /** The access log's counts, for kedge_access_log_lines_total. */
  accessLog?: () => { written: number; filtered: number };
  /** The span exporter, when OTLP is configured. */
  spans?: SpanSink | undefined;
  logger: Logger;
}

/** The agent's telemetry; see the file comment. */
export class AgentTelemetry {
  /** Where the forwarding engine sends records. */
  readonly sink: RecordSink;
  readonly istio: IstioMetrics | undefined;
  /** The traffic summary reported to the federation. */
  readonly summary: StatsSummary;
  private reportTimer: NodeJS.Timeout | undefined;
  private registry: Registry | undefined;
  private server: MetricsServer | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sources: AgentMetricsSources = {};

  /** This workload's metadata, as records carry it for the local side. */
  get local(): PeerWorkload {
    return this.opts.local;
  }

  constructor(private readonly opts: TelemetryOptions) {
    this.istio = opts.istioMetrics ? new IstioMetrics({ local: opts.local, version: opts.version }) : undefined;
    this.summary = new StatsSummary(opts.local);
    const sinks = [...(this.istio ? [this.istio] : []), this.summary, ...(opts.sinks ?? []), ...(opts.spans ? [opts.spans] : [])];
    this.sink = sinks.length === 0 ? NULL_SINK : sinks.length === 1 ? sinks[0]! : fanout(sinks);
  }

  /** Connects the kedge_* metrics to the agent's parts (called once they exist). */
  setSources(src: AgentMetricsSources): void {
    this.sources = { ...src, telemetry: () => this.istio?.stats() ?? { requestSeries: 0, tcpSeries: 0, overflow: 0, expired: 0 }, ...(this.opts.accessLog ? { accessLog: this.opts.accessLog } : {}), droppedSpans: () => this.opts.spans?.stats().dropped ?? 0 };
    this.registry = undefined;
  }

  /** The whole /metrics page: istio_* then kedge_* and process metrics. */
  async render(): Promise<string> {
    let text = '';
    for await (const piece of this.stream()) text += piece;
    return text;
  }

  /** The same page in pieces, as /metrics streams it. */
  async *stream(): AsyncGenerator<string> {
    this.registry ??= createAgentRegistry(this.sources, this.opts.mode);
    if (this.istio) yield* this.istio.stream();
    yield await this.registry.metrics();
  }

  /** Binds /metrics; on failure logs why and returns undefined (the agent keeps running). */
  async listen(at: HostPort, limits?: ListenerLimits): Promise<HostPort | undefined> {
    this.sweepTimer ??= setInterval(() => this.istio?.sweep(), SWEEP_INTERVAL_MS).unref();
    try {
      this.server = await startMetricsServer(at, () => this.stream(), undefined, limits ? { limits, logger: this.opts.logger } : undefined);
      return this.server.address;
    } catch (err) {
      this.opts.logger.error({ component: 'telemetry', listen: formatHostPort(at), code: (err as { code?: string }).code, err: errorMessage(err) }, 'metrics endpoint not started; the data path runs without it');
      return undefined;
    }
  }

  /** Sends the traffic summary every `intervalMs` through `send` (the Connect stream); nothing when there was no traffic. */
  reportStats(send: (stats: { intervalMs: number; stats: StatRow[] }) => void, intervalMs = STATS_REPORT_INTERVAL_MS): void {
    this.reportTimer ??= setInterval(() => {
      const s = this.summary.take();
      if (s) send(s);
    }, intervalMs).unref();
  }

  async close(): Promise<void> {
    if (this.reportTimer) clearInterval(this.reportTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    await Promise.all([this.server?.close(), this.opts.spans?.close()]);
  }
}
