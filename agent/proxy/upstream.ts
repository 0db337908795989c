// Carrying a client connection to a mesh service port: the balancing seam
// (attemptOrder over endpointPool), connect retries on other endpoints, and
// the splice. Used by the explicit upstream listener below (a local
// plaintext port bound to one service port) and by the capture outbound
// listener (outbound.ts).
import * as net from 'node:net';
import type * as tls from 'node:tls';
import { formatHostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { buildSni } from '../../proto/model/sni';
import { type ClientTls, dialEndpoint } from './dial';
import { splice } from './splice';
import { type DirectionCounters, failureCode } from './stats';
import type { EndpointView, ProxySnapshot, ServiceView, UpstreamSpec } from './types';

export type { ClientTls } from './dial';

/** Connect attempts per client connection: the first pick plus two retries on other endpoints. */
export const MAX_ATTEMPTS = 3;

/** What forwarding over the mesh needs; getters, so it always sees the current identity. */
export interface MeshDeps {
  clientTls: () => ClientTls;
  logger: Logger;
  stats: DirectionCounters;
  connectTimeoutMs: number;
  /** Registers a socket for drain on close. */
  track: (socket: net.Socket) => void;
}

/** What an upstream listener reads at accept time; getters, so it always sees the current snapshot and identity. */
export interface UpstreamDeps {
  snapshot: () => ProxySnapshot;
  clientTls: () => ClientTls;
  logger: Logger;
  stats: DirectionCounters;
  connectTimeoutMs: number;
}

/**
 * The endpoints to try, in order, for one connection: round robin from
 * `start` over `pool`, at most `max` distinct endpoints.
 */
export function attemptOrder(pool: readonly EndpointView[], start: number, max = MAX_ATTEMPTS): EndpointView[] {
  const n = Math.min(max, pool.length);
  const out: EndpointView[] = [];
  for (let i = 0; i < n; i++) out.push(pool[(start + i) % pool.length]!);
  return out;
}

// Healthy endpoints per service view. Views are immutable and replaced on
// every snapshot, so the filter runs once per view, not per connection.
const pools = new WeakMap<ServiceView, readonly EndpointView[]>();

/** The endpoints to balance over: the healthy ones, or all of them when none is healthy (better to try than to fail outright). */
export function endpointPool(service: ServiceView): readonly EndpointView[] {
  let pool = pools.get(service);
  if (pool === undefined) {
    const healthy = service.endpoints.filter((e) => e.healthy);
    pool = healthy.length > 0 ? healthy : service.endpoints;
    pools.set(service, pool);
  }
  return pool;
}

/**
 * `order` with `preferred` first and not repeated, at most `max` long. The
 * preferred endpoint goes first even when marked unhealthy: the client
 * addressed that very machine, and the retries still cover its failure.
 */
export function preferFirst(order: readonly EndpointView[], preferred: EndpointView | undefined, max = MAX_ATTEMPTS): EndpointView[] {
  if (preferred === undefined) return order.slice(0, max);
  const same = (e: EndpointView): boolean => e === preferred || (e.address === preferred.address && e.mtlsPort === preferred.mtlsPort);
  return [preferred, ...order.filter((e) => !same(e))].slice(0, max);
}

/** One client connection's way into the mesh: a service port, where round robin starts, and an endpoint to try first. */
export interface MeshRoute {
  service: ServiceView;
  /** Service port; the SNI names it. */
  port: number;
  /** Round-robin position for attemptOrder. */
  start: number;
  /** Tried first (the client addressed this endpoint directly). */
  preferred?: EndpointView;
  /** Extra fields for this connection's log lines (a captured connection's original destination). */
  log?: Record<string, unknown>;
}

/** Counts and logs a refused outbound connection, then closes it (`reset`: with a TCP RST, so the client sees ECONNRESET). */
export function refuseOutbound(client: net.Socket, err: KedgeError, deps: Pick<MeshDeps, 'stats' | 'logger'>, fields: Record<string, unknown>, reset = false): void {
  deps.stats.totals.failed++;
  deps.stats.failure(err.code);
  deps.logger.warn({ ...fields, code: err.code, err: err.message }, 'outbound connection refused');
  closeClient(client, reset);
}

/** Destroys `socket`, with a TCP RST when `reset` and the socket still has a handle. */
export function closeClient(socket: net.Socket, reset: boolean): void {
  if (reset && !socket.destroyed) socket.resetAndDestroy();
  else socket.destroy();
}

/**
 * Carries `client` (paused, so nothing it sent is lost on a retry) to one
 * endpoint of `route.service` over mTLS: tries up to MAX_ATTEMPTS endpoints
 * in balancing order, then splices and writes the access log line.
 */
export async function forwardOverMesh(client: net.Socket, route: MeshRoute, deps: MeshDeps): Promise<void> {
  const { stats, logger } = deps;
  const started = performance.now();
  const { service } = route;
  const fields = { service: service.key, port: route.port, ...route.log };
  const order = preferFirst(attemptOrder(endpointPool(service), route.start), route.preferred);
  if (order.length === 0) {
    return refuseOutbound(client, new KedgeError('KEDGE_NO_ENDPOINTS', `service ${service.key} has no endpoints; check that its workloads are registered`), deps, fields);
  }

  const sni = buildSni(route.port, service.hostname);
  let upstream: tls.TLSSocket | undefined;
  let ep: EndpointView | undefined;
  let epKey = '';
  let attempts = 0;
  for (const candidate of order) {
    attempts++;
    epKey = formatHostPort({ host: candidate.address, port: candidate.mtlsPort });
    const epStats = stats.key(epKey);
    epStats.total++;
    try {
      upstream = await dialEndpoint(candidate, sni, deps.clientTls(), deps.connectTimeoutMs, deps.track);
      ep = candidate;
      break;
    } catch (err) {
      epStats.failed++;
      const code = failureCode(err, 'KEDGE_UPSTREAM_CONNECT_FAILED');
      stats.failure(code);
      logger.warn({ ...fields, sni, endpoint: epKey, workload: candidate.workload, attempt: attempts, code, err: errorMessage(err) }, 'outbound connect attempt failed');
      if (client.destroyed) break;
    }
  }
  if (client.destroyed) {
    // The client went away (or the proxy closed) while we were connecting.
    upstream?.destroy();
    return;
  }
  if (upstream === undefined || ep === undefined) {
    return refuseOutbound(client, new KedgeError('KEDGE_UPSTREAM_UNAVAILABLE', `no endpoint of ${service.key} accepted the connection after ${attempts} attempt(s); see the attempt warnings above`), deps, fields);
  }

  const epStats = stats.key(epKey);
  stats.totals.active++;
  epStats.active++;
  const resumed = upstream.isSessionReused();
  upstream.setNoDelay(true);
  client.setNoDelay(true);
  const peer = ep;
  splice(client, upstream, (err) => {
    stats.totals.active--;
    epStats.active--;
    logger.info(
      {
        ...fields,
        sni,
        endpoint: epKey,
        peer: peer.identity,
        workload: peer.workload,
        attempts,
        bytesIn: client.bytesWritten,
        bytesOut: client.bytesRead,
        durationMs: Math.round(performance.now() - started),
        resumed,
        ...(err ? { err: errorMessage(err) } : {}),
      },
      'outbound',
    );
  });
}

/** An explicit upstream listener: a local plaintext port carried to one service port. */
export class UpstreamListener {
  readonly server: net.Server;
  /** Client and mesh sockets, for drain on close. */
  readonly sockets = new Set<net.Socket>();
  private next = 0;
  private readonly mesh: MeshDeps;

  constructor(
    readonly spec: UpstreamSpec,
    private readonly deps: UpstreamDeps,
  ) {
    this.mesh = { ...deps, track: (s) => this.track(s) };
    // pauseOnConnect: what the client sends waits in the kernel buffer until
    // an endpoint is connected and verified, so a retry loses nothing.
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => void this.onConnection(client));
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private async onConnection(client: net.Socket): Promise<void> {
    this.track(client);
    // The client is paused, but an error may still arrive before splice
    // installs its handler; an unhandled 'error' would crash the agent.
    client.on('error', () => undefined);
    this.deps.stats.totals.total++;
    const fields = { service: this.spec.service, port: this.spec.port };

    const service = this.deps.snapshot().services.get(this.spec.service);
    if (service === undefined) {
      return refuseOutbound(client, new KedgeError('KEDGE_UNKNOWN_SERVICE', `service ${this.spec.service} is not in the mesh view; check its name.namespace and that the federation knows it`), this.deps, fields);
    }
    if (!service.ports.some((p) => p.port === this.spec.port)) {
      return refuseOutbound(client, new KedgeError('KEDGE_UNKNOWN_SERVICE_PORT', `service ${this.spec.service} has no port ${this.spec.port}; it has ${service.ports.map((p) => p.port).join(', ') || 'none'}`), this.deps, fields);
    }
    await forwardOverMesh(client, { service, port: this.spec.port, start: this.next++ }, this.mesh);
  }
}
