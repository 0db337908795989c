// The gateway's counters. The hot path bumps plain numbers in maps keyed by
// precomputed strings; stats() copies them out, so a reader never holds the
// live objects.

/** Connections through one endpoint: connect attempts, those forwarding now, and attempts that failed. */
export interface EndpointCounters {
  attempts: number;
  active: number;
  failed: number;
}

/** Connections for one service port (`<port>/<hostname>`): forwarded in total and now. */
export interface RouteCounters {
  total: number;
  active: number;
}

/**
 * A copy of the gateway's counters. `total` counts accepted connections,
 * `active` those being forwarded now, `forwarded` those that reached an
 * endpoint, `refused` those closed before (bad or slow ClientHello, unknown
 * service, no endpoint reachable); `refusals` breaks `refused` down by
 * KedgeError code and `attemptFailures` counts failed connect attempts,
 * retried or not, by code.
 */
export interface GatewayStats {
  total: number;
  active: number;
  forwarded: number;
  refused: number;
  refusals: Record<string, number>;
  attemptFailures: Record<string, number>;
  /** By endpoint `address:mtlsPort`. */
  byEndpoint: Record<string, EndpointCounters>;
  /** By `<port>/<hostname>`. */
  byRoute: Record<string, RouteCounters>;
}

/** The live counters behind GatewayStats. */
export class GatewayCounters {
  total = 0;
  active = 0;
  forwarded = 0;
  refused = 0;
  private readonly refusals = new Map<string, number>();
  private readonly attemptFailures = new Map<string, number>();
  private readonly endpoints = new Map<string, EndpointCounters>();
  private readonly routes = new Map<string, RouteCounters>();

  refuse(code: string): void {
    this.refused++;
    this.refusals.set(code, (this.refusals.get(code) ?? 0) + 1);
  }

  attemptFailed(code: string): void {
    this.attemptFailures.set(code, (this.attemptFailures.get(code) ?? 0) + 1);
  }

  endpoint(key: string): EndpointCounters {
    let c = this.endpoints.get(key);
    if (c === undefined) {
      c = { attempts: 0, active: 0, failed: 0 };
      this.endpoints.set(key, c);
    }
    return c;
  }

  route(key: string): RouteCounters {
    let c = this.routes.get(key);
    if (c === undefined) {
      c = { total: 0, active: 0 };
      this.routes.set(key, c);
    }
    return c;
  }

  snapshot(): GatewayStats {
    const copy = <T extends object>(m: Map<string, T>): Record<string, T> => {
      const out: Record<string, T> = {};
      for (const [k, v] of m) out[k] = { ...v };
      return out;
    };
    return {
      total: this.total,
      active: this.active,
      forwarded: this.forwarded,
      refused: this.refused,
      refusals: Object.fromEntries(this.refusals),
      attemptFailures: Object.fromEntries(this.attemptFailures),
      byEndpoint: copy(this.endpoints),
      byRoute: copy(this.routes),
    };
  }
}
