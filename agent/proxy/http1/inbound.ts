// The server proxy's HTTP/1.1 stack: a mesh connection whose ALPN is
// http/1.1 is read request by request (session.ts) and each request goes
// to the local app over a pooled keep-alive connection, the app's own
// HTTP/1.1. One record per request (reporter `destination`).
import * as net from 'node:net';
import type { Logger } from '../../../proto/model/log';
import { type ConnectionTrace, destinationService } from '../connection-record';
import type { PeerWorkload, RecordSink } from '../record';
import { RequestTrace, requestLogFields, traceIdOf } from '../request-record';
import { buildSni } from '../../../proto/model/sni';
import type { LocalTarget } from '../types';
import { headerValue } from './parse';
import { PEER_HEADER, PEER_ONLY, peerFromHeader, peerHeaderOf, requestAdd, requestRemove, startHop, traceHeadersOf } from '../../telemetry/hop';
import type { AuthzMatcher } from '../../../policy/authz/compile';
import { authorizeHttp1 } from '../authz';
import type { InboundRateLimits } from '../ratelimit';
import { ConnectionPool } from './pool';
import { type Drainable, type Http1Side, Http1Session, type LocalAnswer, type Upstream } from './session';

/**
 * Idle connections to the app are closed after 4 s: Node's http server
 * closes idle keep-alive connections after 5 s, and a pool that lets them
 * go first rarely writes into a connection the app is closing.
 */
export const APP_POOL_IDLE_MS = 4_000;
const APP_POOL_MAX_IDLE = 64;

/** What the server side needs. */
export interface Http1InboundDeps {
  logger: Logger;
  sink: RecordSink;
  connectTimeoutMs: number;
  track: (s: net.Socket) => void;
  /** Open sessions, so a closing proxy can drain them. */
  sessions: Set<Drainable>;
  /** The pool to the app at `host:port`, created on first use. */
  appPool: (target: LocalTarget) => ConnectionPool;
  /** The current snapshot's authorization matcher (authz helper's hook). */
  authorization?: () => AuthzMatcher | undefined;
  /** Tracing on: the share of new traces sampled; undefined: trace headers pass through. */
  traceSample?: number | undefined;
  /** Local rate limits and quotas (ratelimit helper's hook), after authorization. */
  rateLimits?: InboundRateLimits;
}

/** Opens a connection to the app within `timeoutMs`. */
export function dialApp(target: LocalTarget, timeoutMs: number, track: (s: net.Socket) => void): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: target.host, port: target.targetPort, allowHalfOpen: true });
    track(s);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`the app at ${target.host}:${target.targetPort} did not accept a connection within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.once('connect', () => {
      clearTimeout(timer);
      s.setNoDelay(true);
      resolve(s);
    });
  });
}

/** A pool to one local app. */
export function appPool(target: LocalTarget, timeoutMs: number, track: (s: net.Socket) => void): ConnectionPool {
  return new ConnectionPool({ connect: () => dialApp(target, timeoutMs, track), idleTimeoutMs: APP_POOL_IDLE_MS, maxIdle: APP_POOL_MAX_IDLE, maxRequestsPerConnection: 0 });
}

/** Serves one mesh connection (ALPN http/1.1) for `target`. */
export function serveHttp1Inbound(socket: net.Socket, target: LocalTarget, peer: PeerWorkload, self: PeerWorkload, trace: ConnectionTrace, deps: Http1InboundDeps, resumed: boolean): void {
  const appAddr = `${target.host}:${target.targetPort}`;
  const authzConn = { principal: peer.principal, remoteAddress: socket.remoteAddress, localAddress: socket.localAddress, targetPort: target.targetPort, sni: buildSni(target.servicePort, target.hostname) };
  const service = destinationService(target.hostname, target.hostname, target.servicePort);
  const refused = (err: unknown): LocalAnswer => ({
    status: 503,
    code: 'KEDGE_TARGET_CONNECT_FAILED',
    message: `the app at ${appAddr} refused the connection (${(err as Error).message}); check that it listens there`,
    flag: 'UF',
  });
  const side: Http1Side = {
    logger: deps.logger,
    plan(req) {
      // Telemetry: the client proxy's metadata (believed from the verified peer only), the hop's span.
      const source = peerFromHeader(headerValue(req.headers, PEER_HEADER), peer.principal) ?? peer;
      const hop = startHop(deps.traceSample === undefined ? undefined : traceHeadersOf(req.headers), deps.traceSample);
      const t = new RequestTrace(deps.sink, {
        reporter: 'destination',
        source,
        destination: self,
        service,
        connectionSecurityPolicy: 'mutual_tls',
        protocol: 'http',
        httpVersion: `HTTP/1.${req.minor}`,
        method: req.method,
        path: req.target,
        authority: headerValue(req.headers, 'host') ?? '',
        requestId: headerValue(req.headers, 'x-request-id') ?? '',
        traceId: traceIdOf(headerValue(req.headers, 'traceparent')),
        hop,
      }, (rec) => deps.logger.isLevelEnabled('info') && deps.logger.info({ peer: peer.principal, sni: buildSni(target.servicePort, target.hostname), target: appAddr, resumed, ...requestLogFields(rec) }, 'inbound'));
      t.upstreamHost = appAddr;
      const denied = authorizeHttp1(deps.authorization?.(), deps.logger, authzConn, req.method, req.target, req.headers) ?? deps.rateLimits?.http1({ principal: peer.principal, hostname: target.hostname }, req.method, req.target, req.headers);
      // The app sees neither proxy's metadata; the client proxy gets this one's.
      const edit = { remove: requestRemove(hop), add: requestAdd(hop, undefined) };
      const responseEdit = { remove: PEER_ONLY, add: [[PEER_HEADER, peerHeaderOf(self)]] as const };
      return { trace: t, edit, responseEdit, ...(denied ? { answer: denied } : {}) };
    },
    async connect(): Promise<Upstream | LocalAnswer> {
      const pool = deps.appPool(target);
      try {
        const lease = await pool.acquire();
        return { lease, host: appAddr, done: (reusable) => pool.release(lease, reusable) };
      } catch (err) {
        return refused(err);
      }
    },
    async tunnel() {
      try {
        const s = await dialApp(target, deps.connectTimeoutMs, deps.track);
        s.on('error', () => undefined);
        return { socket: s, host: appAddr, done: () => undefined };
      } catch (err) {
        return refused(err);
      }
    },
  };
  trace.update({ stack: 'http1' });
  trace.open(appAddr);
  const session = new Http1Session(socket, side);
  deps.sessions.add(session);
  session.start(() => {
    deps.sessions.delete(session);
    trace.finish('', socket.bytesWritten, socket.bytesRead);
  });
}
