// The gateway's counters, derived from the records its connections produce
// (a GatewayStats is a RecordSink): nothing in the gateway counts inline.
// Plain numbers in maps keyed by strings the record already carries;
// snapshot() copies them out, so a reader never holds the live objects.
import type { ConnectionRecord, RecordSink, TrafficRecord } from '../proxy/record';

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

type Opened = Parameters<RecordSink['open']>[0];

const routeKey = (r: Pick<ConnectionRecord, 'service'>): string => `${r.service.port}/${r.service.hostname}`;

/** The record-fed counters behind GatewayStats. */
export class GatewayCounters implements RecordSink {
  private finished = 0;
  private active = 0;
  private forwarded = 0;
  private refused = 0;
  private readonly refusals = new Map<string, number>();
  private readonly attemptFailures = new Map<string, number>();
  private readonly endpoints = new Map<string, EndpointCounters>();
  private readonly routes = new Map<string, RouteCounters>();

  open(conn: Opened): void {
    this.attempts(conn.failedAttempts);
    this.active++;
    this.forwarded++;
    const ep = this.endpoint(conn.upstreamHost);
    ep.attempts++;
    ep.active++;
    const route = this.route(routeKey(conn));
    route.total++;
    route.active++;
  }

  finish(r: TrafficRecord): void {
    if (r.kind !== 'connection') return;
    this.finished++;
    // An opened connection's failed attempts were counted at open.
    if (!r.opened) this.attempts(r.failedAttempts);
    if (!r.opened) {
      this.refused++;
      this.refusals.set(r.errorCode, (this.refusals.get(r.errorCode) ?? 0) + 1);
      return;
    }
    this.active--;
    this.endpoint(r.upstreamHost).active--;
    this.route(routeKey(r)).active--;
  }

  private attempts(failed: ConnectionRecord['failedAttempts']): void {
    for (const a of failed) {
      this.attemptFailures.set(a.code, (this.attemptFailures.get(a.code) ?? 0) + 1);
      const ep = this.endpoint(a.endpoint);
      ep.attempts++;
      ep.failed++;
    }
  }

  private endpoint(key: string): EndpointCounters {
    let c = this.endpoints.get(key);
    if (c === undefined) this.endpoints.set(key, (c = { attempts: 0, active: 0, failed: 0 }));
    return c;
  }

  private route(key: string): RouteCounters {
    let c = this.routes.get(key);
    if (c === undefined) this.routes.set(key, (c = { total: 0, active: 0 }));
    return c;
  }

  snapshot(): GatewayStats {
    const copy = <T extends object>(m: Map<string, T>): Record<string, T> => {
      const out: Record<string, T> = {};
      for (const [k, v] of m) out[k] = { ...v };
      return out;
    };
    return {
      total: this.finished + this.active,
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
