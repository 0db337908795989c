// The federation's Prometheus metrics (GET /metrics on its HTTP port, the one
// path there that needs no admin token): connected agents, push latency from
// a change to the agent's ACK, pushes and NACKs, each source's sync state,
// store latency and errors, certificates issued and refused, join tokens
// used and refused, and Node's process metrics. Counters are bumped by the
// parts through the small hooks below; gauges are read at scrape time.
import * as client from 'prom-client';
import type { SourceStatus } from './sources/types';
import type { Store } from './store/types';

/** Push latency buckets, seconds: a push normally acks in milliseconds; a loaded replica in seconds. */
const PUSH_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Store operations timed (watch and close pass through). */
const TIMED_OPS: ReadonlySet<string> = new Set(['get', 'list', 'put', 'delete', 'grantLease', 'keepAlive', 'revokeLease']);
const STORE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** What a push session reports (federation/push/session.ts). */
export interface PushObserver {
  /** An update was sent. */
  pushed(): void;
  /** The agent acked an update; `latencyMs` from the change it carried to the ACK. */
  acked(latencyMs: number): void;
  nacked(): void;
}

/** What the scrape reads. */
export interface FederationMetricsSources {
  replica: string;
  connectedAgents: () => number;
  sources: () => SourceStatus[];
  storeKind: string;
}

/** The federation's metrics; see the file comment. */
export class FederationMetrics {
  readonly registry = new client.Registry();
  private readonly pushes: client.Counter;
  private readonly nacks: client.Counter;
  private readonly pushLatency: client.Histogram;
  private readonly storeLatency: client.Histogram;
  private readonly storeErrors: client.Counter;
  private readonly certs: client.Counter;
  private readonly tokens: client.Counter;
  /** For push sessions. */
  readonly push: PushObserver;

  constructor(src: FederationMetricsSources) {
    const r = [this.registry];
    client.collectDefaultMetrics({ register: this.registry });
    new client.Gauge({ name: 'kedge_federation_connected_agents', help: 'Agents with a Connect stream to this replica.', labelNames: ['replica'], registers: r, collect(this: client.Gauge) {
      this.set({ replica: src.replica }, src.connectedAgents());
    } });
    this.pushes = new client.Counter({ name: 'kedge_federation_pushes_total', help: 'Service updates sent to agents.', labelNames: ['replica'], registers: r });
    this.nacks = new client.Counter({ name: 'kedge_federation_nacks_total', help: 'Updates agents rejected in part (NACK).', labelNames: ['replica'], registers: r });
    this.pushLatency = new client.Histogram({ name: 'kedge_federation_push_latency_seconds', help: 'From a mesh change being pushed to a stream to the agent acking the update that carried it.', labelNames: ['replica'], buckets: PUSH_BUCKETS, registers: r });
    const source = (name: string, help: string, get: (s: SourceStatus) => number | undefined): void => {
      new client.Gauge({ name, help, labelNames: ['source', 'kind'], registers: r, collect(this: client.Gauge) {
        this.reset();
        for (const s of src.sources()) {
          const v = get(s);
          if (v !== undefined) this.set({ source: s.name, kind: s.kind }, v);
        }
      } });
    };
    source('kedge_federation_source_connected', '1 while the source reaches its backend (watch established, last query answered).', (s) => (s.connected ? 1 : 0));
    source('kedge_federation_source_stale', '1 while the source serves the last known endpoints of an unreachable backend.', (s) => (s.stale ? 1 : 0));
    source('kedge_federation_source_last_sync_timestamp_seconds', 'When the source last had a complete, current view of its backend.', (s) => (s.lastSync ? Date.parse(s.lastSync) / 1000 : undefined));
    source('kedge_federation_source_services', 'Services the source currently provides.', (s) => s.services);
    source('kedge_federation_source_endpoints', 'Endpoints the source currently provides.', (s) => s.endpoints);
    this.storeLatency = new client.Histogram({ name: 'kedge_federation_store_operation_duration_seconds', help: 'Store operations, by operation and outcome.', labelNames: ['store', 'op', 'outcome'], buckets: STORE_BUCKETS, registers: r });
    this.storeErrors = new client.Counter({ name: 'kedge_federation_store_errors_total', help: 'Store operations that failed, by operation and error code.', labelNames: ['store', 'op', 'code'], registers: r });
    this.certs = new client.Counter({ name: 'kedge_federation_certificates_total', help: 'Workload certificate requests, by credential (token, kubernetes, mtls) and outcome (issued, or the refusal code).', labelNames: ['credential', 'outcome'], registers: r });
    this.tokens = new client.Counter({ name: 'kedge_federation_join_tokens_total', help: 'Join tokens presented, used or refused (with the refusal code).', labelNames: ['outcome', 'reason'], registers: r });
    const replica = { replica: src.replica };
    this.push = {
      pushed: () => this.pushes.inc(replica),
      acked: (ms) => this.pushLatency.observe(replica, ms / 1000),
      nacked: () => this.nacks.inc(replica),
    };
    // Present from the first scrape, so rate() has a start.
    this.pushes.inc(replica, 0);
    this.nacks.inc(replica, 0);
  }

  /** A Sign call ended: `code` undefined when a certificate was issued. */
  signed(credential: 'token' | 'kubernetes' | 'mtls', code: string | undefined): void {
    this.certs.inc({ credential, outcome: code ?? 'issued' });
    if (credential === 'token') this.tokens.inc({ outcome: code === undefined ? 'used' : 'refused', reason: code ?? '' });
  }

  /** `store`, with every operation timed and its failures counted (watch and close pass through). */
  instrumentStore(store: Store): Store {
    const timed = <A extends unknown[], R>(op: string, fn: (...a: A) => Promise<R>) => async (...a: A): Promise<R> => {
      const t0 = performance.now();
      try {
        const r = await fn(...a);
        this.storeLatency.observe({ store: store.kind, op, outcome: 'ok' }, (performance.now() - t0) / 1000);
        return r;
      } catch (err) {
        this.storeLatency.observe({ store: store.kind, op, outcome: 'error' }, (performance.now() - t0) / 1000);
        const code = (err as { code?: unknown }).code;
        this.storeErrors.inc({ store: store.kind, op, code: typeof code === 'string' ? code : 'error' });
        throw err;
      }
    };
    // A Proxy, so members the Store interface gains later pass through untouched.
    const wrapped = new Map<PropertyKey, unknown>();
    return new Proxy(store, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof prop !== 'string' || !TIMED_OPS.has(prop) || typeof v !== 'function') return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        let w = wrapped.get(prop);
        if (w === undefined) {
          w = timed(prop, (v as (...a: unknown[]) => Promise<unknown>).bind(target));
          wrapped.set(prop, w);
        }
        return w;
      },
    });
  }

  /** The /metrics page. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
