// The proxy's side of load balancing: one ServiceBalancer per service of the
// current snapshot, the endpoint objects it picks from, and the per-endpoint
// connection counts least-request compares. The balancer itself
// (./balancer) is pure; this file is the thin layer that maps snapshot views
// onto it and remembers what must survive a snapshot swap (outlier state,
// active connection counts).
//
// A balancer endpoint is one socket address the proxy dials: a meshed
// endpoint is one (its proxy's mTLS port, whatever the service port); a
// plaintext endpoint is one per app port it serves, since each of its ports
// is its own listener that may be down while another is up.
import { formatHostPort } from '../../proto/model/address';
import { formatLocality } from '../../proto/model/locality';
import type { Ejection, Outcome, RecordResult } from './balancer/outlier';
import type { PickResult, Picker, PriorityDescription } from './balancer/picker';
import { TRAFFIC_POLICY_DEFAULTS } from '../../policy/traffic-policy';
import { type LoadTracker, type RequestPicker, requestPicker } from './balancer/request-picker';
import { ServiceBalancer } from './balancer/service';
import type { BalancerEndpoint, Random, Topology } from './balancer/types';
import type { EndpointView, ProxySnapshot, ServicePortView, ServiceView } from './types';

/** Load on one endpoint; an attempt keeps its own reference, so a count stays right across snapshot swaps. */
export interface EndpointLoad {
  /** Requests and opaque connections being set up or forwarded now; what least-request compares. */
  active: number;
  /** Attempts started on it since it appeared. */
  forwarded: number;
}

/** The load callbacks of a pick: in-flight counts on the endpoint's own load object. */
export const MESH_LOAD: LoadTracker<MeshEndpoint> = {
  active: (e) => e.load.active,
  started: (e) => {
    e.load.active++;
    e.load.forwarded++;
  },
  ended: (e) => {
    e.load.active--;
  },
};

/** An endpoint as the balancer picks it: the snapshot's view plus what the balancer compares. */
export interface MeshEndpoint extends BalancerEndpoint {
  view: EndpointView;
  /** The TCP port dialled: the mTLS port of a meshed endpoint's proxy, the app's own port of a plaintext one. */
  port: number;
  load: EndpointLoad;
}

/** Where one endpoint is dialled, and for a plaintext endpoint the service ports that port carries. */
export interface DialTarget {
  port: number;
  servicePorts?: ReadonlySet<number>;
}

/** The client topology of a proxy that knows nothing about where it runs: every endpoint is priority 0. */
export const UNKNOWN_TOPOLOGY: Topology = Object.freeze({ locality: Object.freeze({ region: '', zone: '', subzone: '' }), network: '', labels: Object.freeze({}) });

const NO_LOCALITY = UNKNOWN_TOPOLOGY.locality;
const NO_LABELS: Readonly<Record<string, string>> = UNKNOWN_TOPOLOGY.labels;

/**
 * Outlier state and retries are keyed by the socket address dialled,
 * `address:port` (IPv6 in brackets), the same key as the outbound stats:
 * the mTLS port for a meshed endpoint, the app's port for a plaintext one.
 */
export function endpointKey(address: string, port: number): string {
  return formatHostPort({ host: address, port });
}

/**
 * Where `view` is dialled for the service's `ports`: a meshed endpoint at its
 * mTLS port for every service port (its proxy routes on the SNI); a
 * plaintext endpoint at its own port for each service port it lists by
 * name, one target per distinct port (two service ports on one app port are
 * one listener, so one outlier state). A plaintext endpoint that lists none
 * of the service's ports has nothing to dial.
 */
export function dialTargets(view: EndpointView, ports: readonly ServicePortView[]): DialTarget[] {
  if (!view.plaintext) return [{ port: view.mtlsPort }];
  const byPort = new Map<number, Set<number>>();
  for (const sp of ports) {
    const port = plaintextPort(view, sp.name);
    if (port === undefined) continue;
    let carried = byPort.get(port);
    if (carried === undefined) byPort.set(port, (carried = new Set()));
    carried.add(sp.port);
  }
  return [...byPort].map(([port, servicePorts]) => ({ port, servicePorts }));
}

/** The port a plaintext endpoint serves the service port named `name` on, if it lists one. */
export function plaintextPort(view: EndpointView, name: string): number | undefined {
  return view.ports.find((p) => p.name === name)?.port;
}

/** The balancer's view of an endpoint dialled at `target` (default: its mTLS port); a missing weight is 1, missing topology is unknown (''). */
export function toMeshEndpoint(view: EndpointView, load: EndpointLoad = { active: 0, forwarded: 0 }, target: DialTarget = { port: view.mtlsPort }): MeshEndpoint {
  return {
    key: endpointKey(view.address, target.port),
    ...(target.servicePorts ? { servicePorts: target.servicePorts } : {}),
    port: target.port,
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
  private readonly wrapped = new WeakMap<Picker<MeshEndpoint>, RequestPicker<MeshEndpoint>>();

  constructor(
    client: Topology,
    view: ServiceView,
    private readonly now: () => number,
  ) {
    this.balancer = new ServiceBalancer<MeshEndpoint>(client, view.policy ?? TRAFFIC_POLICY_DEFAULTS);
    this.update(view, now());
  }

  /**
   * The per-request picker for `servicePort` now: the balancer's current
   * picker with load callbacks and outlier detection wrapped around it (see
   * balancer/request-picker.ts). The same object until the picker changes.
   */
  picker(servicePort?: number): RequestPicker<MeshEndpoint> {
    const p = this.balancer.picker(this.now(), servicePort);
    let rp = this.wrapped.get(p);
    if (rp === undefined) {
      rp = requestPicker(p, MESH_LOAD, (key, outcome) => this.balancer.record(key, outcome, this.now()));
      this.wrapped.set(p, rp);
    }
    return rp;
  }

  get view(): ServiceView | undefined {
    return this.current;
  }

  /** Takes a new view of the service; a no-op for the view it already has. Outlier state and load counts carry over by endpoint key. */
  update(view: ServiceView, now: number): void {
    if (view === this.current) return;
    const byKey = new Map<string, MeshEndpoint>();
    for (const v of view.endpoints) {
      for (const target of dialTargets(v, view.ports)) {
        const key = endpointKey(v.address, target.port);
        // Two views of one address:port (a malformed push, or one listener
        // listed twice) would share one outlier state anyway; the first wins.
        if (!byKey.has(key)) byKey.set(key, toMeshEndpoint(v, this.byKey.get(key)?.load, target));
      }
    }
    this.byKey = byKey;
    this.current = view;
    // A view without a policy means the defaults, also when it had one before.
    this.balancer.update([...byKey.values()], now, view.policy ?? TRAFFIC_POLICY_DEFAULTS);
  }

  /**
   * The endpoint the proxy dials for `view` on `servicePort`, or a stand-in
   * the balancer does not track (so outcomes for it are ignored); undefined
   * for a plaintext endpoint that does not serve that port.
   */
  endpointFor(view: EndpointView, servicePort?: number): MeshEndpoint | undefined {
    let target: DialTarget = { port: view.mtlsPort };
    if (view.plaintext) {
      const name = this.current?.ports.find((p) => p.port === servicePort)?.name;
      const port = name === undefined ? undefined : plaintextPort(view, name);
      if (port === undefined || servicePort === undefined) return undefined;
      target = { port, servicePorts: new Set([servicePort]) };
    }
    return this.byKey.get(endpointKey(view.address, target.port)) ?? toMeshEndpoint(view, undefined, target);
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
  /** address:port dialled. */
  key: string;
  workload: string;
  /** Dialled in plain TCP (no Kedge proxy in front, no identity check) rather than mTLS. */
  plaintext: boolean;
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
  /**
   * Set when the service has plaintext endpoints, whose pickers differ by
   * service port: the port this state describes (the service's first), with
   * every port's own state in `byPort` when it has several.
   */
  servicePort?: number;
  byPort?: Record<string, ServiceBalancerState>;
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
      if (entry === undefined) this.entries.set(view.key, new ServiceEntry(this.client, view, this.now));
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
    return this.entries.get(view.key) ?? new ServiceEntry(this.client, view, this.now);
  }

  /**
   * The entry for `view`, created or updated on demand, for a caller that
   * has no snapshot to sync (the gateway builds its views per route).
   */
  ensure(view: ServiceView): ServiceEntry {
    const entry = this.entries.get(view.key);
    if (entry === undefined) {
      const created = new ServiceEntry(this.client, view, this.now);
      this.entries.set(view.key, created);
      return created;
    }
    entry.update(view, this.now());
    return entry;
  }

  /** Every endpoint key (address:port dialled) of every service now. */
  *endpointKeys(): IterableIterator<string> {
    for (const entry of this.entries.values()) for (const e of entry.endpoints()) yield e.key;
  }

  /** Drops the entries `keep` says no to (services gone from the caller's view). */
  prune(keep: (key: string) => boolean): void {
    for (const key of this.entries.keys()) if (!keep(key)) this.entries.delete(key);
  }

  /** Records an outcome; returns what the detector did. */
  record(entry: ServiceEntry, key: string, outcome: Outcome): RecordResult {
    return entry.balancer.record(key, outcome, this.now());
  }

  /** Priorities, health, ejections, panic and shares per service, for the admin endpoint. */
  describe(): BalancerState {
    const now = this.now();
    const services: Record<string, ServiceBalancerState> = {};
    for (const [key, entry] of [...this.entries].sort(([a], [b]) => a.localeCompare(b))) {
      if (!entry.balancer.portSpecific) {
        services[key] = describeEntry(entry, now);
        continue;
      }
      const ports = entry.view?.ports ?? [];
      const state: ServiceBalancerState = { ...describeEntry(entry, now, ports[0]?.port), ...(ports[0] ? { servicePort: ports[0].port } : {}) };
      if (ports.length > 1) state.byPort = Object.fromEntries(ports.map((p) => [String(p.port), { ...describeEntry(entry, now, p.port), servicePort: p.port }]));
      services[key] = state;
    }
    return { client: { locality: formatLocality(this.client.locality), network: this.client.network, labels: this.client.labels }, services };
  }
}

// One service's (or one service port's) balancer state as the admin endpoint shows it.
function describeEntry(entry: ServiceEntry, now: number, servicePort?: number): ServiceBalancerState {
  // Ejection times are monotonic; shown as wall-clock times.
  const wall = (t: number): string => new Date(Date.now() + (t - now)).toISOString();
  const d = entry.balancer.describe(now, servicePort);
  const byKey = new Map([...entry.endpoints()].map((e) => [e.key, e]));
  return {
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
        plaintext: ep?.view.plaintext === true,
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
