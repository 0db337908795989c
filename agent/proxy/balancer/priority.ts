// Envoy's priority-level arithmetic, integer for integer, so a table from
// Envoy's own load_balancer_impl tests gives the same numbers here:
//   health(P)  = min(100, floor(140 × healthy / hosts))     (overprovisioning 1.4)
//   total      = min(100, Σ health)                          (normalized total health)
//   load(P)    = min(left, floor(health(P) × 100 / total))   in priority order,
//                the rounding remainder going to the first priority with health;
//   panic(P)   = total < 100 and 100 × healthy / hosts < panic threshold;
//   when every priority is in panic ("total panic"), load follows host
//   counts instead, remainder to the first non-empty priority.
// Health is counted in hosts, not weights (Envoy's default; a gateway
// standing in for ten endpoints is still one host here).
import { DEFAULT_PANIC_THRESHOLD } from '../../../policy/traffic-policy';

/** Envoy's default overprovisioning factor, in percent: a priority keeps all its load until fewer than 1/1.4 of its hosts are healthy. */
export const OVERPROVISIONING_FACTOR = 140;

/** Envoy's default healthy panic threshold, in percent (defined with TrafficPolicy in policy/). */
export { DEFAULT_PANIC_THRESHOLD };

/** Host counts of one priority level. */
export interface LevelCounts {
  hosts: number;
  healthy: number;
}

/** Knobs of the priority arithmetic; both in percent. */
export interface PriorityOptions {
  overprovisioningFactor?: number;
  /** 0 disables per-priority panic; total failure still panics (see priorityLoad). */
  panicThreshold?: number;
}

/** The outcome for a list of priority levels, index for index. */
export interface PriorityLoad {
  /** Health of each level, 0–100. */
  health: number[];
  /** min(100, Σ health). */
  totalHealth: number;
  /** Share of new connections per level, integers summing to 100 (empty when there are no levels). */
  load: number[];
  /** Levels whose traffic goes to all their hosts, healthy or not. */
  panic: boolean[];
  /** Every level is in panic; load follows host counts. */
  totalPanic: boolean;
}

/** Health of one level: the healthy share times the overprovisioning factor, capped at 100. */
export function levelHealth(c: LevelCounts, factor = OVERPROVISIONING_FACTOR): number {
  if (c.hosts <= 0) return 0;
  return Math.min(100, Math.floor((factor * c.healthy) / c.hosts));
}

/**
 * Envoy's priority load for the given levels (see the file comment). One
 * deliberate difference: with no healthy host anywhere Envoy sends nothing
 * when the panic threshold is 0; here total failure always means total panic,
 * because a connection attempt to a host believed unhealthy beats refusing
 * the client outright, and the proxy's connect retries bound the cost.
 */
export function priorityLoad(levels: readonly LevelCounts[], opts: PriorityOptions = {}): PriorityLoad {
  const factor = opts.overprovisioningFactor ?? OVERPROVISIONING_FACTOR;
  const threshold = Math.min(100, opts.panicThreshold ?? DEFAULT_PANIC_THRESHOLD);
  const n = levels.length;
  const health = levels.map((c) => levelHealth(c, factor));
  const totalHealth = Math.min(100, health.reduce((a, b) => a + b, 0));
  const load = new Array<number>(n).fill(0);
  const panic = new Array<boolean>(n).fill(false);
  if (n === 0) return { health, totalHealth, load, panic, totalPanic: false };

  if (totalHealth === 0) {
    panic.fill(true);
    return { health, totalHealth, load: hostCountLoad(levels), panic, totalPanic: true };
  }

  let left = 100;
  let first = -1;
  for (let i = 0; i < n; i++) {
    if (first < 0 && health[i]! > 0) first = i;
    const l = Math.min(left, Math.floor((health[i]! * 100) / totalHealth));
    load[i] = l;
    left -= l;
  }
  load[first]! += left;

  // Enough healthy hosts across all levels: no level panics, however
  // unhealthy it is on its own.
  if (totalHealth === 100) return { health, totalHealth, load, panic, totalPanic: false };
  for (let i = 0; i < n; i++) {
    const c = levels[i]!;
    const healthyPercent = c.hosts > 0 ? (100 * c.healthy) / c.hosts : 0;
    panic[i] = healthyPercent < threshold;
  }
  if (panic.every((p) => p)) return { health, totalHealth, load: hostCountLoad(levels), panic, totalPanic: true };
  return { health, totalHealth, load, panic, totalPanic: false };
}

// Total panic: load by host count, the remainder to the first non-empty level.
function hostCountLoad(levels: readonly LevelCounts[]): number[] {
  const total = levels.reduce((a, c) => a + c.hosts, 0);
  const load = new Array<number>(levels.length).fill(0);
  if (total === 0) {
    load[0] = 100;
    return load;
  }
  let left = 100;
  let first = -1;
  for (let i = 0; i < levels.length; i++) {
    if (first < 0 && levels[i]!.hosts > 0) first = i;
    load[i] = Math.floor((100 * levels[i]!.hosts) / total);
    left -= load[i]!;
  }
  load[first]! += left;
  return load;
}

/** One priority level of endpoints, as planPriorities takes them. */
export interface LevelInput<E> {
  /** The priority as assigned (locality rank or failover rank); levels come sorted by it. */
  priority: number;
  endpoints: readonly E[];
}

/** One priority level after planning. */
export interface PlannedLevel<E> {
  priority: number;
  health: number;
  load: number;
  panic: boolean;
  /** Every endpoint of the level. */
  endpoints: readonly E[];
  /** The endpoints this level's load goes to: the healthy ones, or all of them in panic. */
  eligible: readonly E[];
  hosts: number;
  healthy: number;
}

/** Levels with their load and eligible endpoints. */
export interface PriorityPlan<E> {
  levels: readonly PlannedLevel<E>[];
  /** Some level routes to unhealthy endpoints. */
  panic: boolean;
  totalPanic: boolean;
}

/**
 * Plans the load over levels of endpoints: which share each level takes and
 * which of its endpoints are eligible. Levels with no endpoints are dropped
 * first, as Istio compacts priorities before Envoy sees them.
 */
export function planPriorities<E>(levels: readonly LevelInput<E>[], isHealthy: (e: E) => boolean, opts: PriorityOptions = {}): PriorityPlan<E> {
  const present = levels.filter((l) => l.endpoints.length > 0);
  const counts = present.map((l) => ({ hosts: l.endpoints.length, healthy: l.endpoints.filter(isHealthy).length }));
  const r = priorityLoad(counts, opts);
  const planned = present.map((l, i) => ({
    priority: l.priority,
    health: r.health[i]!,
    load: r.load[i]!,
    panic: r.panic[i]!,
    endpoints: l.endpoints,
    eligible: r.panic[i] ? l.endpoints : l.endpoints.filter(isHealthy),
    hosts: counts[i]!.hosts,
    healthy: counts[i]!.healthy,
  }));
  // A level in panic only matters if it takes load.
  return { levels: planned, panic: planned.some((l) => l.panic && l.load > 0), totalPanic: r.totalPanic };
}
