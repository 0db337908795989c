// The client proxy's HTTP/1.1 connection pools: one per endpoint and SNI
// (the SNI names the service port, so the server proxy's target is fixed
// per connection), created on first use, configured from the destination
// service's traffic policy (idle timeout, requests per connection), and
// closed when their endpoint leaves the mesh view.
import type * as net from 'node:net';
import { ConnectionPool } from './pool';

/** Idle connections kept per endpoint: enough for a busy client's concurrency, few enough to bound sockets. */
export const MAX_IDLE_PER_ENDPOINT = 64;

/** Every HTTP/1.1 pool of one proxy. */
export class Http1Pools {
  private readonly pools = new Map<string, { endpoint: string; pool: ConnectionPool }>();

  /** The pool for `endpoint` (address:port) and `sni`, created with `connect` on first use. */
  get(endpoint: string, sni: string, connect: () => Promise<net.Socket>, idleTimeoutMs: number, maxRequestsPerConnection: number): ConnectionPool {
    const key = `${endpoint}|${sni}`;
    let p = this.pools.get(key);
    if (p === undefined) {
      p = { endpoint, pool: new ConnectionPool({ connect, idleTimeoutMs, maxIdle: MAX_IDLE_PER_ENDPOINT, maxRequestsPerConnection }) };
      this.pools.set(key, p);
    } else p.pool.configure({ idleTimeoutMs, maxIdle: MAX_IDLE_PER_ENDPOINT, maxRequestsPerConnection });
    return p.pool;
  }

  /** Connections open or opening to `endpoints` now (leased, idle, dialling), for maxConnections. */
  connections(endpoints: Iterable<string>): number {
    const want = new Set(endpoints);
    let n = 0;
    for (const { endpoint, pool } of this.pools.values()) if (want.has(endpoint)) n += pool.busy + pool.idleCount + pool.dialing;
    return n;
  }

  /** Closes the pools of endpoints `keep` rejects (gone from the snapshot). */
  prune(keep: (endpoint: string) => boolean): void {
    for (const [key, { endpoint, pool }] of this.pools) {
      if (keep(endpoint)) continue;
      pool.close();
      this.pools.delete(key);
    }
  }

  /** Idle connections per pool key, for tests and the admin endpoint. */
  describe(): Record<string, { busy: number; idle: number }> {
    const out: Record<string, { busy: number; idle: number }> = {};
    for (const [key, { pool }] of this.pools) out[key] = { busy: pool.busy, idle: pool.idleCount };
    return out;
  }

  close(): void {
    for (const { pool } of this.pools.values()) pool.close();
    this.pools.clear();
  }
}
