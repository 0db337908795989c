// The proxy's side of load balancing: one ServiceBalancer per service of the
// current snapshot, the endpoint objects it picks from, and the per-endpoint
// connection counts least-request compares. The balancer itself
// (./balancer) is pure; this file is the thin layer that maps snapshot views
// onto it and remembers what must survive a snapshot swap (outlier state,
// active connection counts).
import { formatHostPort } from '../../proto/model/address';
import { formatLocality } from '../../proto/model/locality';
import type { Ejection, Outcome, RecordResult } from './balancer/outlier';
import type { PickResult, Picker, PriorityDescription } from './balancer/picker';
import { TRAFFIC_POLICY_DEFAULTS } from './balancer/policy';
import { ServiceBalancer } from './balancer/service';
import type { BalancerEndpoint, Random, Topology } from './balancer/types';
import type { EndpointView, ProxySnapshot, ServiceView } from './types';

/** Connections to one endpoint; a connection keeps its own reference, so a count stays right across snapshot swaps. */
export interface EndpointLoad {
  /** Connections being set up (dialling) or forwarded now; what least-request compares. */
  active: number;
  /** Connections forwarded to it since it appeared (successful connects). */
  forwarded: number;
}

/** An endpoint as the balancer picks it: the snapshot's view plus what the balancer compares. */
export interface MeshEndpoint extends BalancerEndpoint {
  view: EndpointView;
  load: EndpointLoad;
}

/** The client topology of a proxy that knows nothing about where it runs: every endpoint is priority 0. */
export const UNKNOWN_TOPOLOGY: Topology = Object.freeze({ locality: Object.freeze({ region: '', zone: '', subzone: '' }), network: '', labels: Object.freeze({}) });

const NO_LOCALITY = UNKNOWN_TOPOLOGY.locality;
const NO_LABELS: Readonly<Record<string, string>> = UNKNOWN_TOPOLOGY.labels;

/** Outlier state and retries are keyed by this: `address:mtlsPort` (IPv6 in brackets), the same key as the outbound stats. */
export function endpointKey(view: Pick<EndpointView, 'address' | 'mtlsPort'>): string {
  return formatHostPort({ host: view.address, port: view.mtlsPort });
}

/** The balancer's view of an endpoint; a missing weight is 1, missing topology is unknown (''). */
export function toMeshEndpoint(view: EndpointView, load: EndpointLoad = { active: 0, forwarded: 0 }): MeshEndpoint {
  return {
    key: endpointKey(view),
    locality: view.locality ?? NO_LOCALITY,
    network: view.network ?? '',
    labels: view.labels ?? NO_LABELS,
    weight: view.weight ?? 1,
    healthy: view.healthy,
    view,
    load,
  };
}

/** What least-request compares: connections open or opening to the endpoint. */
export const activeConnections = (e: MeshEndpoint): number => e.load.active;

/** One service's balancer with the endpoints of the view it was last updated from. */
export class ServiceEntry {
  readonly balancer: ServiceBalancer<MeshEndpoint>;
  private byKey = new Map<string, MeshEndpoint>();
  private current: ServiceView | undefined;

  constructor(client: Topology, view: ServiceView, now: number) {
    this.balancer = new ServiceBalancer<MeshEndpoint>(client, view.policy ?? TRAFFIC_POLICY_DEFAULTS);
    this.update(view, now);
  }

  get view(): ServiceView | undefined {
    return this.current;
  }

  /** Takes a new view of the service; a no-op for the view it already has. Outlier state and load counts carry over by endpoint key. */
  update(view: ServiceView, now: number): void {
    if (view === this.current) return;
    const byKey = new Map<string, MeshEndpoint>();
    for (const v of view.endpoints) {
      const key = endpointKey(v);
      // Two views of one address:port (a malformed push) would share one
      // outlier state anyway; the first wins.
      if (!byKey.has(key)) byKey.set(key, toMeshEndpoint(v, this.byKey.get(key)?.load));
    }
    this.byKey = byKey;
    this.current = view;
    // A view without a policy means the defaults, also when it had one before.
    this.balancer.update([...byKey.values()], now, view.policy ?? TRAFFIC_POLICY_DEFAULTS);
  }

  /** The endpoint with this view's address and port, or a stand-in the balancer does not track (so outcomes for it are ignored). */
  endpointFor(view: EndpointView): MeshEndpoint {
    return this.byKey.get(endpointKey(view)) ?? toMeshEndpoint(view);
  }

  endpoints(): IterableIterator<MeshEndpoint> {
    return this.byKey.values();
  }
}

/**
 * The endpoint for attempt `attempt` (1-based) of one connection: the
 * endpoint the client addressed directly first (even if unhealthy: it asked
 * for that machine, and retries cover its failure), otherwise the picker's
 * choice — pick() for a first attempt, pickRetry() after failures. Returns
 * undefined when every endpoint has been tried, so a connection never dials
 * the same endpoint twice.
 */
export function pickAttempt(
  picker: Picker<MeshEndpoint>,
  tried: ReadonlySet<string>,
  random: Random,
  preferred: MeshEndpoint | undefined,
): PickResult<MeshEndpoint> | undefined {
  if (tried.size === 0 && preferred !== undefined) return { type: 'pick', endpoint: preferred, priority: -1, panic: false };
  const r = tried.size === 0 ? picker.pick(random, activeConnections) : picker.pickRetry(tried, random, activeConnections);
  if (r.type === 'pick' && tried.has(r.endpoint.key)) return undefined;
  return r;
}

/** One endpoint as the admin endpoint shows it. */
export interface EndpointBalancerState {
  key: string;
  workload: string;
  /** region/zone/subzone */
  locality: string;
  network: string;
  weight: number;
  /** null when excluded by weight 0 or a distribute rule. */
  priority: number | null;
  /** healthy: takes traffic; ejected: by outlier detection; unhealthy: by the federation. */
  health: 'healthy' | 'ejected' | 'unhealthy';
  /** The federation's health alone. */
  federationHealthy: boolean;
  ejection: { since: string; until: string; remainingMs: number; multiplier: number } | null;
  consecutiveFailures: number;
  excluded: string | null;
  /** Takes new connections now (healthy, or in a priority in panic). */
  eligible: boolean;
  /** Expected percent of new connections, assuming equal active counts. */
  share: number;
  /** Connections open or opening now. */
  active: number;
  /** Connections forwarded to it so far. */
  forwarded: number;
}

/** One service's balancer as the admin endpoint shows it. */
export interface ServiceBalancerState {
  mode: string;
  loadBalancer: string;
  /** Some traffic goes to endpoints believed unhealthy (Envoy's panic threshold); with every endpoint unhealthy, to all of them. */
  panic: boolean;
  totalPanic: boolean;
  priorities: PriorityDescription[];
  endpoints: EndpointBalancerState[];
}

/** What GET /balancer on the agent admin endpoint returns. */
export interface BalancerState {
  client: { locality: string; network: string; labels: Readonly<Record<string, string>> };
  services: Record<string, ServiceBalancerState>;
}

/** The balancers of every service in the snapshot; see the file comment. */
export class MeshBalancers {
  private readonly entries = new Map<string, ServiceEntry>();

  /** `now` is monotonic milliseconds (performance.now by default); ejection times are kept in it. */
  constructor(
    readonly client: Topology,
    readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * Follows a new snapshot: a balancer for each new service, update() for
   * each service whose view object changed, and services that left are
   * dropped (connections still open keep their own references).
   */
  sync(snapshot: ProxySnapshot): void {
    const now = this.now();
    for (const view of snapshot.services.values()) {
      const entry = this.entries.get(view.key);
      if (entry === undefined) this.entries.set(view.key, new ServiceEntry(this.client, view, now));
      else entry.update(view, now);
    }
    for (const key of this.entries.keys()) if (!snapshot.services.has(key)) this.entries.delete(key);
  }

  /**
   * The entry for a service view. A view that is not the synced one (a
   * connection that read the snapshot just before a swap) gets the current
   * entry for its key; one whose service is gone gets a throwaway entry.
   */
  entry(view: ServiceView): ServiceEntry {
    return this.entries.get(view.key) ?? new ServiceEntry(this.client, view, this.now());
  }

  /** Records an outcome; returns what the detector did. */
  record(entry: ServiceEntry, key: string, outcome: Outcome): RecordResult {
    return entry.balancer.record(key, outcome, this.now());
  }

  /** Priorities, health, ejections, panic and shares per service, for the admin endpoint. */
  describe(): BalancerState {
    const now = this.now();
    // Ejection times are monotonic; shown as wall-clock times.
    const wall = (t: number): string => new Date(Date.now() + (t - now)).toISOString();
    const services: Record<string, ServiceBalancerState> = {};
    for (const [key, entry] of [...this.entries].sort(([a], [b]) => a.localeCompare(b))) {
      const d = entry.balancer.describe(now);
      const byKey = new Map([...entry.endpoints()].map((e) => [e.key, e]));
      services[key] = {
        mode: d.mode,
        loadBalancer: d.loadBalancer,
        panic: d.panic,
        totalPanic: d.totalPanic,
        priorities: d.priorities,
        endpoints: d.endpoints.map((e) => {
          const ep = byKey.get(e.key);
          const ej: Ejection | null = e.ejection;
          return {
            key: e.key,
            workload: ep?.view.workload ?? '',
            locality: e.locality,
            network: e.network,
            weight: e.weight,
            priority: e.priority,
            health: !e.healthy ? 'unhealthy' : ej ? 'ejected' : 'healthy',
            federationHealthy: e.healthy,
            ejection: ej ? { since: wall(ej.since), until: wall(ej.until), remainingMs: Math.max(0, Math.round(ej.until - now)), multiplier: ej.multiplier } : null,
            consecutiveFailures: e.consecutiveFailures,
            excluded: e.excluded,
            eligible: e.eligible,
            share: e.share,
            active: ep?.load.active ?? 0,
            forwarded: ep?.load.forwarded ?? 0,
          };
        }),
      };
    }
    return { client: { locality: formatLocality(this.client.locality), network: this.client.network, labels: this.client.labels }, services };
  }
}
