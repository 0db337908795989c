// The picker: everything the balancer decided for one service, frozen into
// a value the proxy consults per connection. Built whenever endpoints,
// health, ejections or policy change (grpc-js style: the balancer publishes a
// new picker, pick() is synchronous and returns a discriminated union).
//
// A pick is three draws: a priority by its load (Envoy's priority levels), a
// locality group within it when `distribute` weights localities, then an
// endpoint: least-request over two weighted random candidates (power of two
// choices), or weighted round robin.
import { formatLocality } from '../../../proto/model/locality';
import { distributeWeights } from './distribute';
import { type FailoverKey, failoverPriority, isUnknownLocality, localityKey, localityPriority, parseFailoverOrder } from './locality';
import type { Ejection } from './outlier';
import { OVERPROVISIONING_FACTOR, type PriorityPlan, planPriorities } from './priority';
import { type LoadBalancerKind, TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../../policy/traffic-policy';
import type { ActiveRequests, BalancerEndpoint, Random, Topology } from './types';

/** What a picker is built from. */
export interface PickerInput<E extends BalancerEndpoint> {
  endpoints: readonly E[];
  /** The client's own locality, network and labels. */
  client: Topology;
  policy?: TrafficPolicy;
  /** Current ejections by endpoint key (OutlierDetector.ejections(now)). */
  ejections?: ReadonlyMap<string, Ejection>;
}

/** Why a pick found nothing. */
export type NoPickReason = 'no-endpoints' | 'no-eligible-endpoints';

/** The result of a pick: an endpoint and the priority it came from, or why there is none. */
export type PickResult<E> =
  | { type: 'pick'; endpoint: E; priority: number; panic: boolean }
  | { type: 'none'; reason: NoPickReason; message: string };

/** How priorities were assigned. */
export type PriorityMode = 'locality' | 'failover-priority' | 'distribute' | 'disabled' | 'unknown-client-locality';

/** Why an endpoint takes no traffic whatever its health. */
export type ExclusionReason = 'zero-weight' | 'not-in-distribute';

/** One endpoint as the admin endpoint shows it. */
export interface EndpointDescription {
  key: string;
  /** region/zone/subzone */
  locality: string;
  network: string;
  weight: number;
  /** null when excluded. */
  priority: number | null;
  /** The federation's health. */
  healthy: boolean;
  ejection: Ejection | null;
  excluded: ExclusionReason | null;
  /** Takes new connections now: healthy and not ejected, or in a priority in panic. */
  eligible: boolean;
  /** Expected percent of new connections, assuming equal active counts. */
  share: number;
}

/** One priority level as the admin endpoint shows it. */
export interface PriorityDescription {
  priority: number;
  hosts: number;
  /** Healthy and not ejected. */
  healthy: number;
  /** Envoy's priority health, 0–100. */
  health: number;
  /** Percent of new connections. */
  load: number;
  panic: boolean;
}

/** The whole picker, for visibility. */
export interface BalancerDescription {
  mode: PriorityMode;
  loadBalancer: LoadBalancerKind;
  /** Some traffic goes to endpoints believed unhealthy. */
  panic: boolean;
  totalPanic: boolean;
  priorities: PriorityDescription[];
  endpoints: EndpointDescription[];
}

/** An immutable picker for one service; only round robin keeps a cursor. */
export interface Picker<E extends BalancerEndpoint> {
  /** Picks an endpoint for a new connection. */
  pick(random: Random, activeRequests: ActiveRequests<E>): PickResult<E>;
  /**
   * Picks the endpoint for a retry after the endpoints in `excluded` (keys)
   * failed for this connection: a different endpoint where one exists,
   * preferring priorities not yet attempted (Envoy's previous_priorities
   * retry plugin) and healthy endpoints over the panic threshold. When every
   * endpoint has been tried, it picks as for a new connection.
   */
  pickRetry(excluded: ReadonlySet<string>, random: Random, activeRequests: ActiveRequests<E>): PickResult<E>;
  describe(): BalancerDescription;
}

/** Builds the picker for one service; see the file comment. */
export function buildPicker<E extends BalancerEndpoint>(input: PickerInput<E>): Picker<E> {
  return new PriorityPicker(input);
}

interface Assigned<E> {
  ep: E;
  priority: number | undefined;
  excluded: ExclusionReason | undefined;
}

interface Group<E> {
  weight: number;
  endpoints: readonly E[];
  /** Cumulative endpoint weights, for weighted draws. */
  cum: number[];
  total: number;
  rr: RoundRobin | undefined;
}

interface Level<E> {
  priority: number;
  load: number;
  panic: boolean;
  groups: Group<E>[];
  groupCum: number[];
  groupTotal: number;
}

interface Compiled<E> {
  plan: PriorityPlan<E>;
  levels: Level<E>[];
}

class PriorityPicker<E extends BalancerEndpoint> implements Picker<E> {
  private readonly assigned: Assigned<E>[];
  private readonly mode: PriorityMode;
  private readonly policy: TrafficPolicy;
  private readonly ejections: ReadonlyMap<string, Ejection>;
  private readonly localityWeights: ReadonlyMap<string, number> | undefined;
  private readonly main: Compiled<E>;
  private readonly priorityOf = new Map<string, number>();
  private readonly healthy = (e: E): boolean => e.healthy && !this.ejections.has(e.key);

  constructor(input: PickerInput<E>) {
    this.policy = input.policy ?? TRAFFIC_POLICY_DEFAULTS;
    // A copy: the picker must not change under its users if the map does.
    this.ejections = new Map(input.ejections ?? []);
    const { client, endpoints } = input;
    const loc = this.policy.locality;
    const usable = endpoints.filter((e) => e.weight > 0 && Number.isFinite(e.weight));
    const dist = loc.enabled && loc.distribute.length > 0 ? distributeWeights(client.locality, usable, loc.distribute) : undefined;
    this.localityWeights = dist?.weights;

    let assign: (e: E) => number | undefined;
    if (!loc.enabled) {
      this.mode = 'disabled';
      assign = () => 0;
    } else if (dist) {
      this.mode = 'distribute';
      assign = (e) => (dist.weights.has(localityKey(e.locality)) ? 0 : undefined);
    } else if (loc.failoverPriority.length > 0) {
      this.mode = 'failover-priority';
      const keys: FailoverKey[] = parseFailoverOrder(loc.failoverPriority);
      assign = (e) => failoverPriority(client, e, keys);
    } else if (isUnknownLocality(client.locality)) {
      this.mode = 'unknown-client-locality';
      assign = () => 0;
    } else {
      this.mode = 'locality';
      assign = (e) => localityPriority(client.locality, e.locality);
    }

    this.assigned = endpoints.map((ep) => {
      if (!(ep.weight > 0 && Number.isFinite(ep.weight))) return { ep, priority: undefined, excluded: 'zero-weight' as const };
      const priority = assign(ep);
      if (priority === undefined) return { ep, priority, excluded: 'not-in-distribute' as const };
      this.priorityOf.set(ep.key, priority);
      return { ep, priority, excluded: undefined };
    });
    this.main = this.compile(this.assigned, this.policy.panicThreshold, this.policy.loadBalancer === 'round-robin');
  }

  pick(random: Random, activeRequests: ActiveRequests<E>): PickResult<E> {
    return this.choose(this.main, random, activeRequests);
  }

  pickRetry(excluded: ReadonlySet<string>, random: Random, activeRequests: ActiveRequests<E>): PickResult<E> {
    if (excluded.size === 0) return this.pick(random, activeRequests);
    const remaining = this.assigned.filter((a) => a.priority !== undefined && !excluded.has(a.ep.key));
    if (remaining.length === 0) return this.pick(random, activeRequests);
    const attempted = new Set<number>();
    for (const key of excluded) {
      const p = this.priorityOf.get(key);
      if (p !== undefined) attempted.add(p);
    }
    const untried = remaining.filter((a) => !attempted.has(a.priority!));
    const candidates = untried.some((a) => this.healthy(a.ep)) ? untried : remaining;
    // Panic threshold 0: a retry goes to a healthy endpoint whenever one is
    // left, and to any remaining endpoint only when none is.
    return this.choose(this.compile(candidates, 0, false), random, activeRequests);
  }

  describe(): BalancerDescription {
    const share = new Map<string, number>();
    const eligible = new Set<string>();
    for (const level of this.main.levels) {
      for (const g of level.groups) {
        for (let i = 0; i < g.endpoints.length; i++) {
          const e = g.endpoints[i]!;
          const w = g.cum[i]! - (i > 0 ? g.cum[i - 1]! : 0);
          eligible.add(e.key);
          share.set(e.key, (share.get(e.key) ?? 0) + level.load * (g.weight / level.groupTotal) * (w / g.total));
        }
      }
    }
    const plan = this.main.plan;
    return {
      mode: this.mode,
      loadBalancer: this.policy.loadBalancer,
      panic: plan.panic,
      totalPanic: plan.totalPanic,
      priorities: plan.levels.map((l) => ({ priority: l.priority, hosts: l.hosts, healthy: l.healthy, health: l.health, load: l.load, panic: l.panic })),
      endpoints: this.assigned.map((a) => ({
        key: a.ep.key,
        locality: formatLocality(a.ep.locality),
        network: a.ep.network,
        weight: a.ep.weight,
        priority: a.priority ?? null,
        healthy: a.ep.healthy,
        ejection: this.ejections.get(a.ep.key) ?? null,
        excluded: a.excluded ?? null,
        eligible: eligible.has(a.ep.key),
        share: Math.round((share.get(a.ep.key) ?? 0) * 1e6) / 1e6,
      })),
    };
  }

  // Levels, loads and groups for a set of endpoints.
  private compile(assigned: readonly Assigned<E>[], panicThreshold: number, roundRobin: boolean): Compiled<E> {
    const byPriority = new Map<number, E[]>();
    for (const a of assigned) {
      if (a.priority === undefined) continue;
      let list = byPriority.get(a.priority);
      if (list === undefined) byPriority.set(a.priority, (list = []));
      list.push(a.ep);
    }
    const inputs = [...byPriority].sort(([a], [b]) => a - b).map(([priority, endpoints]) => ({ priority, endpoints }));
    const plan = planPriorities(inputs, this.healthy, { panicThreshold });
    const levels = plan.levels.map((l): Level<E> => {
      const groups = l.load > 0 ? this.groups(l.endpoints, l.eligible, l.panic, roundRobin) : [];
      const groupCum = cumulative(groups.map((g) => g.weight));
      return { priority: l.priority, load: l.load, panic: l.panic, groups, groupCum, groupTotal: groupCum[groupCum.length - 1] ?? 0 };
    });
    return { plan, levels };
  }

  // Without distribute a level is one group. With it, each locality is a
  // group weighted by its distribute weight times its availability,
  // min(1, 1.4 × healthy share), as Envoy's locality-weighted balancing;
  // a level in panic ignores locality weights, as Envoy does.
  private groups(all: readonly E[], eligible: readonly E[], panic: boolean, roundRobin: boolean): Group<E>[] {
    const lw = this.localityWeights;
    if (lw === undefined || panic) return eligible.length > 0 ? [group(1, eligible, roundRobin)] : [];
    const byLocality = new Map<string, { total: number; eligible: E[] }>();
    for (const e of all) {
      const k = localityKey(e.locality);
      let entry = byLocality.get(k);
      if (entry === undefined) byLocality.set(k, (entry = { total: 0, eligible: [] }));
      entry.total++;
    }
    for (const e of eligible) byLocality.get(localityKey(e.locality))!.eligible.push(e);
    const out: Group<E>[] = [];
    for (const [k, { total, eligible: es }] of byLocality) {
      const availability = Math.min(1, ((OVERPROVISIONING_FACTOR / 100) * es.length) / total);
      const weight = (lw.get(k) ?? 0) * availability;
      if (weight > 0 && es.length > 0) out.push(group(weight, es, roundRobin));
    }
    return out;
  }

  private choose(c: Compiled<E>, random: Random, active: ActiveRequests<E>): PickResult<E> {
    if (c.levels.length === 0) {
      return this.assigned.length === 0
        ? { type: 'none', reason: 'no-endpoints', message: 'the service has no endpoints' }
        : { type: 'none', reason: 'no-eligible-endpoints', message: 'every endpoint is excluded by weight 0 or by the locality distribute policy' };
    }
    let level: Level<E> | undefined;
    const r = clamp01(random()) * 100;
    let cum = 0;
    for (const l of c.levels) {
      if (l.load <= 0) continue;
      cum += l.load;
      level = l;
      if (r < cum) break;
    }
    if (level === undefined || level.groups.length === 0) {
      return { type: 'none', reason: 'no-eligible-endpoints', message: 'no endpoint is eligible' };
    }
    const g = level.groups.length === 1 ? level.groups[0]! : level.groups[draw(level.groupCum, level.groupTotal, random())]!;
    const endpoint = g.rr ? g.endpoints[g.rr.next(random)]! : p2c(g, random, active);
    return { type: 'pick', endpoint, priority: level.priority, panic: level.panic };
  }
}

function group<E extends BalancerEndpoint>(weight: number, endpoints: readonly E[], roundRobin: boolean): Group<E> {
  const cum = cumulative(endpoints.map((e) => e.weight));
  return { weight, endpoints, cum, total: cum[cum.length - 1] ?? 0, rr: roundRobin ? new RoundRobin(endpoints.map((e) => e.weight)) : undefined };
}

/**
 * Power of two choices: two distinct candidates drawn by weight, the one
 * with fewer active connections wins, the first on a tie, so with equal
 * load the shares follow the weights exactly.
 */
function p2c<E>(g: Group<E>, random: Random, active: ActiveRequests<E>): E {
  const n = g.endpoints.length;
  const first = draw(g.cum, g.total, random());
  if (n === 1) return g.endpoints[first]!;
  // Draw the second from the weight line with the first's segment cut out.
  const start = first > 0 ? g.cum[first - 1]! : 0;
  const w = g.cum[first]! - start;
  let r = clamp01(random()) * (g.total - w);
  if (r >= start) r += w;
  let second = draw(g.cum, g.total, r / g.total);
  if (second === first) second = (first + 1) % n;
  const a = g.endpoints[first]!;
  const b = g.endpoints[second]!;
  return active(b) < active(a) ? b : a;
}

// Index of the segment a uniform draw u in [0, 1) falls into.
function draw(cum: readonly number[], total: number, u: number): number {
  const r = clamp01(u) * total;
  let lo = 0;
  let hi = cum.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (r < cum[mid]!) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function cumulative(ws: readonly number[]): number[] {
  let sum = 0;
  return ws.map((w) => (sum += w));
}

// A broken random source must not index past the end.
function clamp01(u: number): number {
  return u >= 0 && u < 1 ? u : u >= 1 ? 1 - Number.EPSILON : 0;
}

/**
 * Weighted round robin. Equal weights: a cursor, starting at a random
 * offset so proxies that rebuilt their pickers together do not all start on
 * the same endpoint. Unequal weights: nginx's smooth weighted round robin,
 * O(n) per pick, which spreads a heavy endpoint's turns instead of bunching them.
 */
class RoundRobin {
  private cursor = -1;
  private readonly current: number[] | undefined;
  private readonly total: number;

  constructor(private readonly weights: readonly number[]) {
    this.total = weights.reduce((a, b) => a + b, 0);
    this.current = weights.every((w) => w === weights[0]) ? undefined : weights.map(() => 0);
  }

  next(random: Random): number {
    const n = this.weights.length;
    if (this.current === undefined) {
      this.cursor = this.cursor < 0 ? Math.floor(clamp01(random()) * n) : (this.cursor + 1) % n;
      return this.cursor;
    }
    let best = 0;
    for (let i = 0; i < n; i++) {
      this.current[i]! += this.weights[i]!;
      if (this.current[i]! > this.current[best]!) best = i;
    }
    this.current[best]! -= this.total;
    return best;
  }
}
