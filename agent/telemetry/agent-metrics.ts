// kedge_* metrics about the agent itself, read from the agent's parts at
// scrape time (prom-client gauges with collect callbacks), plus Node's
// process metrics. Nothing here runs on the data path.
import * as client from 'prom-client';
import type { BalancerState } from '../proxy/balancers';
import type { TlsIdentity } from '../proxy/types';
import type { SessionStatus } from '../registration/session';
import type { IstioMetricsStats } from './istio-metrics';

/** What the agent metrics read; every getter is optional (a gateway has no proxy, DNS may be off). */
export interface AgentMetricsSources {
  identity?: () => TlsIdentity | undefined;
  /** Wall-clock seconds of the last successful certificate renewal (or first issue), undefined before any. */
  lastRenewal?: () => number | undefined;
  session?: () => SessionStatus | undefined;
  /** Each service held with the version of the update that last changed it. */
  services?: () => Iterable<{ key: string; version: string }>;
  balancer?: () => BalancerState;
  dns?: () => { queries: number; answeredLocally: number; forwarded: number; errors: number; nxDomain: number } | undefined;
  /** Transparent capture: undefined when off. */
  capture?: () => { inboundMode: string; outboundPolicy: string; dns: boolean } | undefined;
  telemetry?: () => IstioMetricsStats;
  /** Spans dropped because the OTLP endpoint could not take them. */
  droppedSpans?: () => number;
  /** Access log lines written and skipped by the filter. */
  accessLog?: () => { written: number; filtered: number };
}

/** Builds the registry of kedge_* and process metrics over `src`. */
export function createAgentRegistry(src: AgentMetricsSources, mode: 'sidecar' | 'gateway'): client.Registry {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  // Values are read from the agent's parts at scrape time; counters are
  // totals kept elsewhere, reset and set on each collect.
  type Set = (labels: Record<string, string>, v: number) => void;
  const gauge = (name: string, help: string, labelNames: string[], collect: (set: Set) => void): void => {
    new client.Gauge({ name, help, labelNames, registers: [registry], collect(this: client.Gauge) {
      this.reset();
      collect((l, v) => this.set(l, v));
    } });
  };
  const counter = (name: string, help: string, labelNames: string[], collect: (set: Set) => void): void => {
    new client.Counter({ name, help, labelNames, registers: [registry], collect(this: client.Counter) {
      this.reset();
      collect((l, v) => this.inc(l, v));
    } });
  };

  gauge('kedge_agent_info', 'The agent: mode (sidecar or gateway).', ['mode'], (set) => set({ mode }, 1));
  gauge('kedge_certificate_expiration_timestamp_seconds', 'When the workload certificate expires (Unix seconds).', ['spiffe_id'], (set) => {
    const id = src.identity?.();
    if (id) set({ spiffe_id: id.spiffeId }, id.notAfter.getTime() / 1000);
  });
  gauge('kedge_certificate_last_renewal_timestamp_seconds', 'When the workload certificate was last issued or renewed (Unix seconds).', [], (set) => {
    const t = src.lastRenewal?.();
    if (t !== undefined) set({}, t);
  });
  gauge('kedge_federation_connected', '1 while the Connect stream to a federation replica is up.', ['replica'], (set) => {
    const s = src.session?.();
    if (s) set({ replica: s.replica ?? '' }, s.connected ? 1 : 0);
  });
  counter('kedge_federation_connects_total', 'Successful registrations with the federation since start.', [], (set) => set({}, src.session?.()?.connects ?? 0));
  counter('kedge_config_nacks_total', 'Updates from the federation rejected in part (NACKs) since start.', [], (set) => set({}, src.session?.()?.nacks ?? 0));
  gauge('kedge_config_service_version', 'Services held, by the version of the update that last changed each (value 1).', ['service', 'version'], (set) => {
    for (const s of src.services?.() ?? []) set({ service: s.key, version: s.version }, 1);
  });
  gauge('kedge_outlier_ejected', '1 for each endpoint outlier detection has ejected now.', ['service', 'endpoint', 'workload'], (set) => {
    for (const [service, st] of Object.entries(src.balancer?.().services ?? {})) {
      for (const e of st.endpoints) if (e.health === 'ejected') set({ service, endpoint: e.key, workload: e.workload }, 1);
    }
  });
  gauge('kedge_balancer_panic', '1 while a service balancer sends traffic to endpoints believed unhealthy (panic).', ['service'], (set) => {
    for (const [service, st] of Object.entries(src.balancer?.().services ?? {})) set({ service }, st.panic ? 1 : 0);
  });
  counter('kedge_dns_queries_total', 'DNS messages received by the DNS proxy.', [], (set) => {
    const d = src.dns?.();
    if (d) set({}, d.queries);
  });
  counter('kedge_dns_answers_total', 'DNS answers, by where they came from (mesh, upstream) and errors.', ['source'], (set) => {
    const d = src.dns?.();
    if (!d) return;
    set({ source: 'mesh' }, d.answeredLocally);
    set({ source: 'upstream' }, d.forwarded);
    set({ source: 'error' }, d.errors);
    set({ source: 'nxdomain' }, d.nxDomain);
  });
  gauge('kedge_capture_enabled', '1 when transparent capture is configured, with its inbound mode and outbound policy.', ['inbound_mode', 'outbound_policy', 'dns'], (set) => {
    const c = src.capture?.();
    if (c) set({ inbound_mode: c.inboundMode, outbound_policy: c.outboundPolicy, dns: String(c.dns) }, 1);
    else set({ inbound_mode: '', outbound_policy: '', dns: '' }, 0);
  });
  gauge('kedge_telemetry_series', 'istio_* label sets held, by kind.', ['kind'], (set) => {
    const t = src.telemetry?.();
    if (!t) return;
    set({ kind: 'request' }, t.requestSeries);
    set({ kind: 'tcp' }, t.tcpSeries);
  });
  counter('kedge_telemetry_series_overflow_total', 'Records not counted in istio_* because the series cap was reached.', [], (set) => set({}, src.telemetry?.().overflow ?? 0));
  counter('kedge_telemetry_series_expired_total', 'istio_* series dropped after being idle.', [], (set) => set({}, src.telemetry?.().expired ?? 0));
  counter('kedge_tracing_spans_dropped_total', 'Spans dropped because the OTLP endpoint was unreachable or too slow.', [], (set) => set({}, src.droppedSpans?.() ?? 0));
  counter('kedge_access_log_lines_total', 'Access log lines, written or skipped by the filter.', ['outcome'], (set) => {
    const a = src.accessLog?.();
    if (!a) return;
    set({ outcome: 'written' }, a.written);
    set({ outcome: 'filtered' }, a.filtered);
  });
  return registry;
}
