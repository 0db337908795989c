// The proxy's counters (GET /stats on the agent admin), derived from the
// records the forwarding engine produces and from nothing else: a
// DirectionStats is a RecordSink, so no listener counts inline. The hot
// path bumps plain numbers in maps keyed by strings the record already
// carries; snapshot() copies them out so a reader never holds the live
// objects.
import type { AttemptFailure, ConnectionRecord, RecordSink, TrafficRecord } from './record';

/** Totals for one direction, peer or endpoint. */
export interface ConnectionCounters {
  total: number;
  active: number;
  failed: number;
}

/** Failures by KedgeError code, e.g. KEDGE_PEER_IDENTITY_MISMATCH. */
export type FailureCounts = Record<string, number>;

/** HTTP and gRPC requests of one direction: finished requests, those that got no answer from the app or a 5xx, and counts by status sent. */
export interface RequestCounters {
  total: number;
  /** Status 0 (reset, no answer) or 5xx. */
  failed: number;
  /** By HTTP status sent to the client, e.g. { "200": 98, "503": 2 }. */
  byStatus: Record<string, number>;
}

/**
 * A copy of the proxy's counters. `total` counts accepted connections,
 * `active` those being forwarded now, `failed` those closed without being
 * forwarded (inbound: refused handshake, bad SNI, no or unreachable target,
 * plaintext in STRICT mode; outbound: unknown service, no endpoints, every
 * attempt failed, outside the registry). Outbound `byEndpoint` and
 * `failures` count attempts, so a connection (or request) that was retried
 * twice shows up on three endpoints. `passthrough` is the part of the
 * totals that bypassed mesh TLS with capture on: inbound plaintext and
 * non-mesh TLS handed to the app, outbound connections to destinations
 * outside the mesh. `http` is the part of the totals that carried HTTP
 * (an application's connection on an L7 port, a pooled mesh connection;
 * a pooled one stays open while idle, up to the pool idle timeout), and
 * `requests` counts the requests they carried.
 */
export interface ProxyStats {
  inbound: ConnectionCounters & { byPeer: Record<string, ConnectionCounters>; failures: FailureCounts; passthrough: ConnectionCounters; http: ConnectionCounters; requests: RequestCounters };
  outbound: ConnectionCounters & { byEndpoint: Record<string, ConnectionCounters>; failures: FailureCounts; passthrough: ConnectionCounters; http: ConnectionCounters; requests: RequestCounters };
}

/** What one direction's counters show, copied. */
export interface DirectionSnapshot {
  totals: ConnectionCounters;
  by: Record<string, ConnectionCounters>;
  failures: FailureCounts;
  passthrough: ConnectionCounters;
  http: ConnectionCounters;
  requests: RequestCounters;
}

type Opened = Parameters<RecordSink['open']>[0];

interface Live {
  /** Finished (total, failed) and open (active) counts; total shown is finished + active. */
  finished: number;
  active: number;
  failed: number;
}

const isHttp = (r: Pick<ConnectionRecord, 'stack'>): boolean => r.stack === 'http1' || r.stack === 'http2';
const live = (): Live => ({ finished: 0, active: 0, failed: 0 });
const show = (c: Live): ConnectionCounters => ({ total: c.finished + c.active, active: c.active, failed: c.failed });

/**
 * The counters of one direction, fed by records. `keyOf` names the
 * breakdown (inbound: the peer's SPIFFE ID; outbound: the endpoint),
 * `isPassthrough` says which connections bypassed mesh TLS.
 */
export class DirectionStats implements RecordSink {
  private readonly totals = live();
  private readonly passthrough = live();
  private readonly http = live();
  private readonly by = new Map<string, Live>();
  private readonly failures = new Map<string, number>();
  private readonly requests = { total: 0, failed: 0, byStatus: new Map<number, number>() };

  constructor(
    private readonly keyOf: (r: Opened) => string,
    private readonly isPassthrough: (r: Opened) => boolean,
  ) {}

  open(conn: Opened): void {
    this.attempts(conn.failedAttempts);
    this.totals.active++;
    if (this.isPassthrough(conn)) this.passthrough.active++;
    if (isHttp(conn)) this.http.active++;
    const key = this.keyOf(conn);
    if (key !== '') this.key(key).active++;
  }

  finish(r: TrafficRecord): void {
    if (r.errorCode !== '') this.fail(r.errorCode);
    if (r.kind === 'request') {
      this.attempts(r.failedAttempts);
      return this.request(r.responseCode);
    }
    // An opened connection's failed attempts were counted at open.
    if (!r.opened) this.attempts(r.failedAttempts);
    this.connection(r);
  }

  private attempts(failed: readonly AttemptFailure[]): void {
    for (const a of failed) {
      this.fail(a.code);
      const c = this.key(a.endpoint);
      c.finished++;
      c.failed++;
    }
  }

  private connection(r: ConnectionRecord): void {
    const pass = this.isPassthrough(r);
    const key = this.keyOf(r);
    const byKey = key === '' ? undefined : this.key(key);
    const counters = [this.totals];
    if (pass) counters.push(this.passthrough);
    if (isHttp(r)) counters.push(this.http);
    for (const c of counters) {
      c.finished++;
      if (r.opened) c.active--;
      else c.failed++;
    }
    if (byKey !== undefined) {
      byKey.finished++;
      if (r.opened) byKey.active--;
      else byKey.failed++;
    }
  }

  private request(status: number): void {
    this.requests.total++;
    if (status === 0 || status >= 500) this.requests.failed++;
    this.requests.byStatus.set(status, (this.requests.byStatus.get(status) ?? 0) + 1);
  }

  private fail(code: string): void {
    this.failures.set(code, (this.failures.get(code) ?? 0) + 1);
  }

  private key(k: string): Live {
    let c = this.by.get(k);
    if (c === undefined) this.by.set(k, (c = live()));
    return c;
  }

  snapshot(): DirectionSnapshot {
    const by: Record<string, ConnectionCounters> = {};
    for (const [k, c] of this.by) by[k] = show(c);
    const byStatus: Record<string, number> = {};
    for (const [s, n] of this.requests.byStatus) byStatus[String(s)] = n;
    return {
      totals: show(this.totals),
      by,
      failures: Object.fromEntries(this.failures),
      passthrough: show(this.passthrough),
      http: show(this.http),
      requests: { total: this.requests.total, failed: this.requests.failed, byStatus },
    };
  }
}

/**
 * Inbound counters: by the peer's SPIFFE ID; passthrough is what was
 * forwarded outside mesh mTLS (its record names the original destination
 * port; a refused one names none).
 */
export function inboundStats(): DirectionStats {
  return new DirectionStats(
    (r) => r.source.principal,
    (r) => r.connectionSecurityPolicy === 'none' && r.service.port !== 0,
  );
}

/**
 * Outbound counters: by endpoint address:port; passthrough is what went to
 * a destination outside the mesh (no service hostname, the original
 * destination port; a connection refused before a decision names none).
 */
export function outboundStats(): DirectionStats {
  return new DirectionStats(
    (r) => r.upstreamHost,
    (r) => r.service.hostname === '' && r.service.port !== 0,
  );
}

/** The error code to record for anything thrown or emitted on a socket. */
export function failureCode(err: unknown, fallback: string): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('KEDGE_') ? code : fallback;
}
