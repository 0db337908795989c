// An explicit upstream listener: a local plaintext port whose connections
// are carried over mesh mTLS to an endpoint of one service.
import * as net from 'node:net';
import * as tls from 'node:tls';
import { formatHostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { buildSni } from '../../proto/model/sni';
import { splice } from './splice';
import { type DirectionCounters, failureCode } from './stats';
import { uriSans } from '../../proto/model/spiffe';
import { type IdentityContexts, type SessionCache, checkPeerIdentity } from './tls';
import type { EndpointView, ProxySnapshot, ServiceView, UpstreamSpec } from './types';

/** Connect attempts per client connection: the first pick plus two retries on other endpoints. */
export const MAX_ATTEMPTS = 3;

/** The client side of mesh TLS as it stands now; replaced as a whole on rotation. */
export interface ClientTls {
  contexts: IdentityContexts;
  sessions: SessionCache;
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

/** An explicit upstream listener; see the file comment. */
export class UpstreamListener {
  readonly server: net.Server;
  /** Client and mesh sockets, for drain on close. */
  readonly sockets = new Set<net.Socket>();
  private next = 0;

  constructor(
    readonly spec: UpstreamSpec,
    private readonly deps: UpstreamDeps,
  ) {
    // pauseOnConnect: what the client sends waits in the kernel buffer until
    // an endpoint is connected and verified, so a retry loses nothing.
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => void this.onConnection(client));
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private refuse(client: net.Socket, err: KedgeError): void {
    const { stats, logger } = this.deps;
    stats.totals.failed++;
    stats.failure(err.code);
    logger.warn({ service: this.spec.service, port: this.spec.port, code: err.code, err: err.message }, 'outbound connection refused');
    client.destroy();
  }

  private async onConnection(client: net.Socket): Promise<void> {
    const { stats, logger } = this.deps;
    const started = performance.now();
    this.track(client);
    // The client is paused, but an error may still arrive before splice
    // installs its handler; an unhandled 'error' would crash the agent.
    client.on('error', () => undefined);
    stats.totals.total++;

    const service = this.deps.snapshot().services.get(this.spec.service);
    if (service === undefined) {
      return this.refuse(client, new KedgeError('KEDGE_UNKNOWN_SERVICE', `service ${this.spec.service} is not in the mesh view; check its name.namespace and that the federation knows it`));
    }
    if (!service.ports.some((p) => p.port === this.spec.port)) {
      return this.refuse(client, new KedgeError('KEDGE_UNKNOWN_SERVICE_PORT', `service ${this.spec.service} has no port ${this.spec.port}; it has ${service.ports.map((p) => p.port).join(', ') || 'none'}`));
    }
    const order = attemptOrder(endpointPool(service), this.next++);
    if (order.length === 0) {
      return this.refuse(client, new KedgeError('KEDGE_NO_ENDPOINTS', `service ${this.spec.service} has no endpoints; check that its workloads are registered`));
    }

    const sni = buildSni(this.spec.port, service.hostname);
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
        upstream = await this.dial(candidate, sni);
        ep = candidate;
        break;
      } catch (err) {
        epStats.failed++;
        const code = failureCode(err, 'KEDGE_UPSTREAM_CONNECT_FAILED');
        stats.failure(code);
        logger.warn({ service: this.spec.service, sni, endpoint: epKey, workload: candidate.workload, attempt: attempts, code, err: errorMessage(err) }, 'outbound connect attempt failed');
        if (client.destroyed) break;
      }
    }
    if (client.destroyed) {
      // The client went away (or the proxy closed) while we were connecting.
      upstream?.destroy();
      return;
    }
    if (upstream === undefined || ep === undefined) {
      return this.refuse(client, new KedgeError('KEDGE_UPSTREAM_UNAVAILABLE', `no endpoint of ${this.spec.service} accepted the connection after ${attempts} attempt(s); see the attempt warnings above`));
    }

    const epStats = stats.key(epKey);
    stats.totals.active++;
    epStats.active++;
    const resumed = upstream.isSessionReused();
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    splice(client, upstream, (err) => {
      stats.totals.active--;
      epStats.active--;
      logger.info(
        {
          service: this.spec.service,
          sni,
          endpoint: epKey,
          peer: ep.identity,
          workload: ep.workload,
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

  /** Connects and verifies one endpoint; rejects with a KedgeError, never leaves a socket open on failure. */
  private dial(ep: EndpointView, sni: string): Promise<tls.TLSSocket> {
    const addr = formatHostPort({ host: ep.address, port: ep.mtlsPort });
    const sessionKey = `${addr}/${sni}`;
    const { contexts, sessions } = this.deps.clientTls();
    const offered = sessions.get(sessionKey);
    const timeoutMs = this.deps.connectTimeoutMs;
    return new Promise((resolve, reject) => {
      const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
        host: ep.address,
        port: ep.mtlsPort,
        servername: sni,
        secureContext: contexts.client,
        session: offered?.session,
        rejectUnauthorized: true,
        // The mesh names peers by SPIFFE ID, not DNS name; the check is done
        // below for every connection, because Node skips this callback on
        // resumed sessions (and reports no peer certificate for them).
        checkServerIdentity: () => undefined,
        // Honoured by tls.connect (passed to the TCP socket) though missing
        // from @types/node's ConnectionOptions.
        allowHalfOpen: true,
      };
      const socket = tls.connect(options);
      this.track(socket);
      let tcpConnected = false;
      let verified = false;
      let pendingSession: Buffer | undefined;
      socket.once('connect', () => (tcpConnected = true));
      // TLS 1.3 tickets can arrive before the identity check; keep only
      // sessions with a verified endpoint.
      socket.on('session', (s: Buffer) => (verified ? sessions.set(sessionKey, { session: s, peer: ep.identity }) : (pendingSession = s)));
      const fail = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        if (err instanceof KedgeError) return reject(err);
        const [code, what] = tcpConnected ? ['KEDGE_UPSTREAM_TLS_FAILED', 'TLS handshake with'] : ['KEDGE_UPSTREAM_CONNECT_FAILED', 'cannot connect to'];
        reject(new KedgeError(code, `${what} endpoint ${addr} (${ep.workload}) failed: ${errorMessage(err)}`, { cause: err }));
      };
      const timer = setTimeout(
        () => fail(new KedgeError('KEDGE_CONNECT_TIMEOUT', `endpoint ${addr} (${ep.workload}) did not complete TCP and TLS setup within ${timeoutMs} ms; check that its port ${ep.mtlsPort} is reachable`)),
        timeoutMs,
      );
      socket.once('error', fail);
      socket.once('secureConnect', () => {
        // A resumed session proves the server holds the session it was
        // issued with; its identity is the one verified back then.
        const presented = socket.isSessionReused() ? (offered ? [offered.peer] : []) : uriSans(socket.getPeerCertificate().subjectaltname);
        const mismatch = checkPeerIdentity(presented, ep.identity);
        if (mismatch) {
          sessions.delete(sessionKey);
          return fail(new KedgeError(mismatch.code, `endpoint ${addr} (${ep.workload}): ${mismatch.message}`));
        }
        clearTimeout(timer);
        verified = true;
        if (pendingSession !== undefined) sessions.set(sessionKey, { session: pendingSession, peer: ep.identity });
        // `fail` stays attached: until splice adds its handler an error must
        // not go unhandled, and destroying the socket is right either way.
        resolve(socket);
      });
    });
  }
}
