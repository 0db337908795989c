// Carrying a client connection to a mesh service port: the balancer's pick
// (least-request or round robin over locality priorities, see
// ./balancer), connect retries on other endpoints, the splice, and the
// outcome each attempt reports back to outlier detection. Auto mTLS: a
// meshed endpoint is dialled over mTLS, a plaintext one (no Kedge proxy in
// front) in plain TCP at its own port; everything else (timeouts, retries,
// outlier accounting, splice, access log) is the same. Used by the
// explicit upstream listener below (a local plaintext port bound to one
// service port) and by the capture outbound listener (outbound.ts).
import * as net from 'node:net';
import * as tls from 'node:tls';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { buildSni } from '../../proto/model/sni';
import type { Outcome } from './balancer/outlier';
import type { Random } from './balancer/types';
import { type MeshBalancers, type MeshEndpoint, type ServiceEntry, pickAttempt } from './balancers';
import { type ClientTls, dialEndpoint, dialPlaintext } from './dial';
import { watchOutcome } from './outcome';
import { splice } from './splice';
import { type DirectionCounters, failureCode } from './stats';
import type { EndpointView, ProxySnapshot, ServiceView, UpstreamSpec } from './types';

export type { ClientTls } from './dial';

/**
 * Connect attempts per client connection: the first pick plus two retries
 * on other endpoints. Retries prefer priorities not yet tried, so one
 * locality dying, or two one after the other, costs no client connection.
 */
export const MAX_ATTEMPTS = 3;

/** What forwarding over the mesh needs; getters, so it always sees the current identity. */
export interface MeshDeps {
  clientTls: () => ClientTls;
  logger: Logger;
  stats: DirectionCounters;
  /** Per attempt, unless the service's traffic policy sets connectTimeout. */
  connectTimeoutMs: number;
  balancers: MeshBalancers;
  random: Random;
  /** Attempts per connection; MAX_ATTEMPTS unless configured (1 turns retries off). */
  maxAttempts: number;
  /** Registers a socket for drain on close. */
  track: (socket: net.Socket) => void;
}

/** What an upstream listener reads at accept time; getters, so it always sees the current snapshot and identity. */
export interface UpstreamDeps extends Omit<MeshDeps, 'track'> {
  snapshot: () => ProxySnapshot;
}

/** One client connection's way into the mesh: a service port, and an endpoint to try first. */
export interface MeshRoute {
  service: ServiceView;
  /** Service port; the SNI names it. */
  port: number;
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

// Feeds one outcome to outlier detection and says so when it ejects.
function report(deps: MeshDeps, entry: ServiceEntry, ep: MeshEndpoint, outcome: Outcome, fields: Record<string, unknown>): void {
  const r = deps.balancers.record(entry, ep.key, outcome);
  if (r.type === 'ejected') {
    deps.logger.warn({ ...fields, endpoint: ep.key, workload: ep.view.workload, outcome, ejectedForMs: Math.round(r.ejection.until - r.ejection.since), multiplier: r.ejection.multiplier }, 'endpoint ejected by outlier detection');
  } else if (r.type === 'ejection-refused') {
    deps.logger.warn({ ...fields, endpoint: ep.key, workload: ep.view.workload, ejected: r.ejected, endpoints: r.total }, 'endpoint kept in service: ejecting it would exceed maxEjectionPercent');
  }
}

/**
 * Carries `client` (paused, so nothing it sent is lost on a retry) to one
 * endpoint of `route.service` that serves `route.port`, over mTLS or, for a
 * plaintext endpoint, plain TCP: up to `maxAttempts` distinct endpoints as
 * the balancer picks them, each outcome recorded for outlier detection,
 * then splices and writes the access log line.
 */
export async function forwardOverMesh(client: net.Socket, route: MeshRoute, deps: MeshDeps): Promise<void> {
  const { stats, logger, balancers } = deps;
  const started = performance.now();
  const { service } = route;
  const fields = { service: service.key, port: route.port, ...route.log };
  const entry = balancers.entry(service);
  const preferred = route.preferred ? entry.endpointFor(route.preferred, route.port) : undefined;
  const timeoutMs = entry.balancer.connectTimeoutMs() ?? deps.connectTimeoutMs;

  const sni = buildSni(route.port, service.hostname);
  const tried = new Set<string>();
  let upstream: net.Socket | undefined;
  let ep: MeshEndpoint | undefined;
  let priority = -1;
  let attempts = 0;
  while (attempts < deps.maxAttempts) {
    const pick = pickAttempt(entry.balancer.picker(balancers.now(), route.port), tried, deps.random, attempts === 0 ? preferred : undefined);
    if (pick === undefined) break; // every endpoint tried
    if (pick.type === 'none') {
      if (attempts > 0) break;
      return refuseOutbound(client, new KedgeError('KEDGE_NO_ENDPOINTS', `service ${service.key} has no endpoints for port ${route.port} to send to (${pick.message}); check that its workloads are registered and its traffic policy`), deps, fields);
    }
    const candidate = pick.endpoint;
    attempts++;
    tried.add(candidate.key);
    const epStats = stats.key(candidate.key);
    epStats.total++;
    candidate.load.active++;
    try {
      upstream = candidate.view.plaintext
        ? await dialPlaintext(candidate.view, candidate.port, timeoutMs, deps.track)
        : await dialEndpoint(candidate.view, sni, deps.clientTls(), timeoutMs, deps.track);
      ep = candidate;
      priority = pick.priority;
      break;
    } catch (err) {
      candidate.load.active--;
      epStats.failed++;
      const code = failureCode(err, 'KEDGE_UPSTREAM_CONNECT_FAILED');
      stats.failure(code);
      logger.warn({ ...fields, ...transportFields(candidate, sni), endpoint: candidate.key, workload: candidate.view.workload, attempt: attempts, code, err: errorMessage(err) }, 'outbound connect attempt failed');
      report(deps, entry, candidate, 'connect-failure', fields);
      if (client.destroyed) break;
    }
  }
  if (client.destroyed) {
    // The client went away (or the proxy closed) while we were connecting.
    if (upstream !== undefined && ep !== undefined) ep.load.active--;
    upstream?.destroy();
    return;
  }
  if (upstream === undefined || ep === undefined) {
    return refuseOutbound(client, new KedgeError('KEDGE_UPSTREAM_UNAVAILABLE', `no endpoint of ${service.key} accepted the connection after ${attempts} attempt(s); see the attempt warnings above`), deps, fields);
  }

  const epStats = stats.key(ep.key);
  stats.totals.active++;
  epStats.active++;
  ep.load.forwarded++;
  const resumed = upstream instanceof tls.TLSSocket && upstream.isSessionReused();
  upstream.setNoDelay(true);
  client.setNoDelay(true);
  const peer = ep;
  const connectedAt = balancers.now();
  splice(client, upstream, (err) => {
    stats.totals.active--;
    epStats.active--;
    peer.load.active--;
    logger.info(
      {
        ...fields,
        ...transportFields(peer, sni),
        endpoint: peer.key,
        workload: peer.view.workload,
        ...(priority >= 0 ? { priority } : {}),
        attempts,
        bytesIn: client.bytesWritten,
        bytesOut: client.bytesRead,
        durationMs: Math.round(performance.now() - started),
        ...(peer.view.plaintext ? {} : { resumed }),
        ...(err ? { err: errorMessage(err) } : {}),
      },
      'outbound',
    );
  });
  // After splice: pipe() has made the upstream flow, so watching its first
  // byte takes nothing from the client.
  watchOutcome(upstream, client, connectedAt, balancers.now, (outcome) => report(deps, entry, peer, outcome, fields));
}

// Log fields naming how an endpoint is reached: the SNI and the identity
// checked for mTLS, or that it went in plain TCP.
function transportFields(ep: MeshEndpoint, sni: string): Record<string, unknown> {
  return ep.view.plaintext ? { plaintext: true } : { sni, peer: ep.view.identity };
}

/** An explicit upstream listener: a local plaintext port carried to one service port. */
export class UpstreamListener {
  readonly server: net.Server;
  /** Client and mesh sockets, for drain on close. */
  readonly sockets = new Set<net.Socket>();
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
    await forwardOverMesh(client, { service, port: this.spec.port }, this.mesh);
  }
}
