// Passive outlier detection: the proxy reports how each connection to an
// endpoint went, and an endpoint that fails `consecutiveErrors` times in a
// row is ejected (treated as unhealthy by the picker) for a while. It follows
// Envoy's consecutive-failure detector:
// - ejection time = baseEjectionTime × times ejected, capped at
//   maxEjectionTime; the multiplier drops by one for every `interval` the
//   endpoint then spends in service, so one bad minute is forgotten;
// - an ejection is refused when it would take the ejected share above
//   maxEjectionPercent, except that one endpoint may always be ejected;
// - a success resets the consecutive count; so do ejection and return;
// - the federation turning an endpoint from unhealthy to healthy returns it
//   at once (Envoy does the same on a successful active health check).
// Unlike Envoy, nothing waits for an interval sweep: an endpoint returns at
// exactly its ejection end, evaluated lazily from the `now` each call is
// given, and `nextReturnAt` tells the caller when to rebuild its picker.
// No timers and no clock in here.
import type { OutlierConfig } from '../../../policy/traffic-policy';

/** Outlier detection settings: the contract lives with TrafficPolicy in policy/. */
export type { OutlierConfig };

/** What one connection taught us about an endpoint. */
export type Outcome =
  /** The endpoint proved it works: it sent data, or the stream closed cleanly. */
  | 'success'
  /** TCP or TLS setup failed or timed out. */
  | 'connect-failure'
  /** An established connection was reset by the endpoint side before a clean close. */
  | 'reset'
  /** An HTTP response with a 5xx status other than a gateway error (counts toward consecutive5xxErrors). */
  | 'http-5xx'
  /** 502, 503, 504 or gRPC UNAVAILABLE (counts toward consecutiveGatewayErrors and consecutive5xxErrors). */
  | 'gateway-error'
  /** 429 or gRPC RESOURCE_EXHAUSTED: the endpoint is busy, not broken; it is backed off (backoff.ts), never ejected. */
  | 'rate-limited';

/** An endpoint's ejection, as the picker and the admin endpoint see it. */
export interface Ejection {
  /** When the endpoint returns to service. */
  until: number;
  since: number;
  /** The ejection multiplier: how many ejections in a row this one counts as. */
  multiplier: number;
}

/** What record() did. */
export type RecordResult =
  | { type: 'counted'; consecutive: number }
  | { type: 'ejected'; key: string; ejection: Ejection }
  /** Ejection was due but would exceed maxEjectionPercent. */
  | { type: 'ejection-refused'; key: string; ejected: number; total: number }
  /** Not tracked (removed from the service, or sync() not called yet) or detection disabled. */
  | { type: 'ignored' }
  /** A rate-limited answer paused the endpoint until `until` (backoff.ts). */
  | { type: 'backed-off'; key: string; until: number; streak: number };

interface State {
  /** Consecutive connect failures and resets. */
  consecutive: number;
  /** Consecutive 5xx responses, gateway errors included. */
  consecutive5xx: number;
  consecutiveGateway: number;
  multiplier: number;
  ejection: Ejection | undefined;
  /** When the endpoint last returned to service, for the multiplier's decay. */
  returnedAt: number | undefined;
  federationHealthy: boolean;
}

/** The passive outlier detector of one service (one upstream cluster). */
export class OutlierDetector {
  private readonly states = new Map<string, State>();
  private ejectedCount = 0;

  constructor(readonly config: OutlierConfig) {}

  /**
   * Sets the endpoints to track, with their federation health. New ones
   * start clean, removed ones are forgotten, and an endpoint the federation
   * has just declared healthy again returns to service with clean counters.
   * Returns the keys that returned to service.
   */
  sync(endpoints: Iterable<{ key: string; healthy: boolean }>, now: number): string[] {
    this.expire(now);
    const seen = new Set<string>();
    const returned: string[] = [];
    for (const { key, healthy } of endpoints) {
      seen.add(key);
      const s = this.states.get(key);
      if (s === undefined) {
        this.states.set(key, fresh(healthy));
      } else {
        if (healthy && !s.federationHealthy) {
          if (s.ejection) {
            this.ejectedCount--;
            returned.push(key);
          }
          this.states.set(key, fresh(true));
        } else {
          s.federationHealthy = healthy;
        }
      }
    }
    for (const [key, s] of this.states) {
      if (seen.has(key)) continue;
      if (s.ejection) this.ejectedCount--;
      this.states.delete(key);
    }
    return returned;
  }

  /** Records the outcome of one connection (attempt) to an endpoint. */
  record(key: string, outcome: Outcome, now: number): RecordResult {
    const s = this.states.get(key);
    // A rate-limited answer says nothing about failure; the balancer backs the endpoint off instead.
    if (s === undefined || outcome === 'rate-limited') return { type: 'ignored' };
    this.expire(now);
    if (outcome === 'success') {
      s.consecutive = 0;
      s.consecutive5xx = 0;
      s.consecutiveGateway = 0;
      return { type: 'counted', consecutive: 0 };
    }
    const { consecutiveErrors, consecutive5xxErrors, consecutiveGatewayErrors, maxEjectionPercent } = this.config;
    let tripped: boolean;
    let count: number;
    let enabled: boolean;
    if (outcome === 'connect-failure' || outcome === 'reset') {
      count = ++s.consecutive;
      enabled = consecutiveErrors > 0;
      tripped = enabled && s.consecutive >= consecutiveErrors;
    } else {
      enabled = consecutive5xxErrors > 0 || (outcome === 'gateway-error' && consecutiveGatewayErrors > 0);
      // A response, even a 5xx, proves the connection works; the
      // connection-level count is left as it is (Envoy keeps local-origin
      // and external errors apart the same way).
      count = ++s.consecutive5xx;
      s.consecutiveGateway = outcome === 'gateway-error' ? s.consecutiveGateway + 1 : 0;
      tripped = (consecutive5xxErrors > 0 && s.consecutive5xx >= consecutive5xxErrors) || (consecutiveGatewayErrors > 0 && s.consecutiveGateway >= consecutiveGatewayErrors);
    }
    if (maxEjectionPercent <= 0 || !enabled) return { type: 'ignored' };
    // Already out (the picker only sends traffic there in panic): keep counting, nothing to do.
    if (s.ejection || !tripped) return { type: 'counted', consecutive: count };

    const total = this.states.size;
    // Envoy: eject if the ejected share after this ejection stays within the
    // maximum, or if nothing is ejected yet. The count is kept at the
    // threshold, so the next failure tries again once room frees up.
    if (this.ejectedCount > 0 && (this.ejectedCount + 1) * 100 > maxEjectionPercent * total) {
      return { type: 'ejection-refused', key, ejected: this.ejectedCount, total };
    }
    s.multiplier = Math.min(decayed(s, now, this.config.intervalMs) + 1, maxMultiplier(this.config));
    const duration = Math.min(this.config.baseEjectionTimeMs * s.multiplier, this.config.maxEjectionTimeMs);
    s.ejection = { since: now, until: now + duration, multiplier: s.multiplier };
    s.consecutive = 0;
    s.consecutive5xx = 0;
    s.consecutiveGateway = 0;
    this.ejectedCount++;
    return { type: 'ejected', key, ejection: s.ejection };
  }

  /** Returns endpoints whose ejection has ended by `now`; the keys that came back. */
  expire(now: number): string[] {
    if (this.ejectedCount === 0) return [];
    const returned: string[] = [];
    for (const [key, s] of this.states) {
      if (s.ejection && s.ejection.until <= now) {
        // The multiplier decays from when the endpoint was due back, not from
        // when someone happened to look.
        s.returnedAt = s.ejection.until;
        s.ejection = undefined;
        s.consecutive = 0;
        s.consecutive5xx = 0;
        s.consecutiveGateway = 0;
        this.ejectedCount--;
        returned.push(key);
      }
    }
    return returned;
  }

  /** The current ejections by endpoint key, after expiring those that ended by `now`; a copy. */
  ejections(now: number): ReadonlyMap<string, Ejection> {
    this.expire(now);
    const out = new Map<string, Ejection>();
    for (const [key, s] of this.states) if (s.ejection) out.set(key, { ...s.ejection });
    return out;
  }

  /** When the next ejected endpoint returns, so the caller can rebuild its picker then; undefined when none is ejected. */
  nextReturnAt(): number | undefined {
    let next: number | undefined;
    for (const s of this.states.values()) if (s.ejection && (next === undefined || s.ejection.until < next)) next = s.ejection.until;
    return next;
  }

  /** Consecutive failures counted for an endpoint (0 when unknown), for the admin endpoint. */
  consecutiveFailures(key: string): number {
    return this.states.get(key)?.consecutive ?? 0;
  }

  /** Endpoints tracked and ejected, for the admin endpoint. */
  counts(): { tracked: number; ejected: number } {
    return { tracked: this.states.size, ejected: this.ejectedCount };
  }
}

function fresh(federationHealthy: boolean): State {
  return { consecutive: 0, consecutive5xx: 0, consecutiveGateway: 0, multiplier: 0, ejection: undefined, returnedAt: undefined, federationHealthy };
}

// The multiplier after its decay: one less per full interval in service.
function decayed(s: State, now: number, intervalMs: number): number {
  if (s.returnedAt === undefined || intervalMs <= 0) return s.multiplier;
  return Math.max(0, s.multiplier - Math.floor((now - s.returnedAt) / intervalMs));
}

// Past this multiplier the ejection time is at its cap anyway; stopping here
// keeps the decay back to base time as short as Envoy's.
function maxMultiplier(c: OutlierConfig): number {
  return Math.max(1, Math.ceil(c.maxEjectionTimeMs / Math.max(1, c.baseEjectionTimeMs)));
}
