// Both sides of the HTTP/2 stack. The client proxy reads the app's h2c
// connection (prior knowledge) and sends each stream, routed and balanced
// on its own, over one multiplexed mTLS session per endpoint (ALPN h2);
// the server proxy reads those sessions and sends each stream to the app
// over an h2c session. gRPC is HTTP/2 with trailers: it needs nothing more
// here than stream.ts's care for trailers, resets and grpc-timeout.
import type { AuthzMatcher } from '../../../policy/authz/compile';
import { authorizeHttp2 } from '../authz';
import type { InboundRateLimits } from '../ratelimit';
import { randomUUID } from 'node:crypto';
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import { buildSni } from '../../../proto/model/sni';
import { modifyPath, pickBackend, redirectLocation } from '../../../policy/routes/apply';
import type { HeaderModifier } from '../../../policy/routes/types';
import type { MeshEndpoint } from '../balancers';
import { type ConnectionTrace, destinationService } from '../connection-record';
import { endpointPeer } from '../../telemetry/peer-metadata';
import { PEER_HEADER, PEER_ONLY, peerFromHeader, peerHeaderOf, requestAdd, requestRemove, startHop } from '../../telemetry/hop';
import type { MeshDeps, MeshRoute } from '../engine';
import { dialApp } from '../http1/inbound';
import type { PeerWorkload, RecordSink } from '../record';
import { UNKNOWN_PEER } from '../record';
import { RequestTrace, requestLogFields, traceIdOf } from '../request-record';
import type { LocalTarget, ServiceView } from '../types';
import type { Logger } from '../../../proto/model/log';
import { retryAdmission, streamConnector } from './connect';
import { mirrorTap } from './mirror';
import { type H2Sessions, sessionOver } from './sessions';
import type { Drainable } from '../http1/session';
import { GRPC, type H2Answer, type H2Upstream, type StreamPlan, forwardStream, grpcTimeoutMs } from './stream';

/** Settings for sessions the proxy serves: room for many streams, a 1 MiB stream window. */
const SERVER_SETTINGS: http2.Settings = { maxConcurrentStreams: 1000, initialWindowSize: 1024 * 1024, enablePush: false };

/** Serves an HTTP/2 connection (h2c from an app, or a mesh TLS socket with ALPN h2) with `onStream` per stream; `done` when it has closed. */
function serveSession(socket: net.Socket, onStream: (s: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders) => void, done: () => void, logger: Logger, sessions: Set<Drainable>): void {
  const server = http2.createServer({ settings: SERVER_SETTINGS });
  server.on('stream', onStream);
  server.on('session', (session: http2.ServerHttp2Session) => {
    // A closing proxy sends GOAWAY: open streams finish, new ones go elsewhere.
    const d: Drainable = { drain: () => session.close() };
    sessions.add(d);
    session.once('close', () => sessions.delete(d));
    session.on('error', () => undefined);
    session.once('connect', () => {
      try {
        session.setLocalWindowSize(16 * 1024 * 1024);
      } catch {
        // closed already
      }
    });
  });
  // A peer that breaks HTTP/2 gets GOAWAY from Node's session; log it.
  server.on('sessionError', (err: Error) => logger.warn({ err: err.message }, 'HTTP/2 session error'));
  socket.once('close', done);
  server.emit('connection', socket);
  // Listeners accept with pauseOnConnect; the session reads the handle itself once it flows.
  socket.resume();
}

function headerMap(h: http2.IncomingHttpHeaders): Map<string, string> {
  const m = new Map<string, string>();
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !k.startsWith(':')) m.set(k, Array.isArray(v) ? v.join(', ') : v);
  return m;
}

function modify(set: Record<string, string>, remove: Set<string>, mod: HeaderModifier | undefined): void {
  if (mod === undefined) return;
  for (const n of mod.remove) remove.add(n);
  for (const { name, value } of mod.set) set[name] = value;
  // HTTP/2 headers are a map here: an added value joins any existing one.
  for (const { name, value } of mod.add) set[name] = set[name] === undefined ? value : `${set[name]}, ${value}`;
}

const isGrpc = (h: http2.IncomingHttpHeaders): boolean => String(h['content-type'] ?? '').startsWith('application/grpc');

/** The client proxy's HTTP/2 stack for one app connection to `route`. */
export function serveHttp2Outbound(client: net.Socket, route: MeshRoute, trace: ConnectionTrace, deps: MeshDeps, prefix?: Buffer): void {
  const { port } = route;
  const fields = { service: route.service.key, port, ...route.log };
  trace.update({ stack: 'http2' });
  trace.open('');
  if (prefix !== undefined && prefix.length > 0) client.unshift(prefix);

  const onStream = (down: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void => {
    // The view now, not the one the connection was accepted with: a
    // long-lived session must follow route and endpoint changes.
    const service = deps.service(route.service.key) ?? route.service;
    const grpc = isGrpc(headers);
    const method = String(headers[':method'] ?? '');
    const fullPath = String(headers[':path'] ?? '');
    const q = fullPath.indexOf('?');
    const path = q < 0 ? fullPath : fullPath.slice(0, q);
    const query = q < 0 ? '' : fullPath.slice(q + 1);
    const authority = String(headers[':authority'] ?? headers.host ?? '');
    const given = headers['x-request-id'];
    const requestId = typeof given === 'string' ? given : randomUUID();
    let ep: MeshEndpoint | undefined;
    const releases: Array<() => void> = [];
    const hop = startHop(headers, deps.traceSample);
    const t = new RequestTrace(
      deps.sink,
      { reporter: 'source', source: deps.self(), destination: UNKNOWN_PEER, service: destinationService(service.key, service.hostname, port), connectionSecurityPolicy: 'unknown', protocol: grpc ? 'grpc' : 'http', httpVersion: 'HTTP/2', method, path: fullPath, authority, requestId, traceId: traceIdOf(headers.traceparent as string | undefined), hop },
      (rec) => {
        for (const r of releases) r();
        if (!deps.logger.isLevelEnabled('info')) return;
        deps.logger.info({ ...fields, ...(ep ? { endpoint: ep.key, workload: ep.view.workload, peer: ep.view.identity } : {}), ...requestLogFields(rec) }, 'outbound');
      },
    );
    const setHeaders: Record<string, string> = { 'x-forwarded-proto': 'http' };
    if (typeof given !== 'string') setHeaders['x-request-id'] = requestId;
    // Telemetry: this proxy's metadata and the hop's trace headers replace any the app sent.
    const removeHeaders = new Set<string>(requestRemove(hop));
    for (const [k, v] of requestAdd(hop, deps.self())) setHeaders[k] = v;
    const plan: StreamPlan = {
      trace: t, grpc, setHeaders, removeHeaders, responseSet: {}, responseRemove: new Set(PEER_ONLY),
      // The server proxy's metadata, believed only from a meshed endpoint (its identity was checked).
      onResponse: (h) => {
        const p = ep === undefined || ep.view.plaintext ? undefined : peerFromHeader(h[PEER_HEADER], ep.view.identity);
        if (p !== undefined) t.destination = p;
      },
    };
    let backend: { service: ServiceView; port: number } = { service, port };
    const deadline = grpc ? grpcTimeoutMs(headers['grpc-timeout']) : undefined;

    const table = service.routes?.forPort(port);
    if (table !== undefined) {
      const target = table.match({ method, path, query, headers: headerMap(headers) });
      if (target === undefined) {
        plan.answer = { status: 404, grpcStatus: GRPC.UNIMPLEMENTED, code: 'KEDGE_NO_ROUTE', message: `no route rule of ${service.key} port ${port} matches ${method} ${path}`, flag: 'NR' };
      } else {
        t.route = target.ref.id;
        const fault = target.filters.fault;
        if (target.redirect !== undefined) {
          const location = redirectLocation(target.redirect, { scheme: 'http', host: authority.replace(/:\d+$/, ''), port, path, query });
          plan.answer = { status: target.redirect.statusCode, grpcStatus: GRPC.UNIMPLEMENTED, code: 'KEDGE_REDIRECT', message: location, flag: '-' };
          plan.responseSet.location = location;
        } else if (fault?.abort !== undefined && Math.random() < fault.abort.fraction) {
          plan.answer = { status: fault.abort.httpStatus, grpcStatus: fault.abort.grpcStatus, code: 'KEDGE_FAULT_ABORT', message: `aborted by fault injection ${fault.name}`, flag: 'FI' };
        } else {
          if (fault?.delay !== undefined && Math.random() < fault.delay.fraction) {
            plan.delayMs = fault.delay.ms;
            t.flag('DI');
          }
          const b = pickBackend(target, deps.random());
          const bs = b === undefined ? undefined : b.service === service.key ? service : deps.service(b.service);
          if (b === undefined || bs === undefined) {
            plan.answer = { status: 500, grpcStatus: GRPC.UNAVAILABLE, code: 'KEDGE_ROUTE_BACKEND_MISSING', message: `route ${target.ref.id} sends to ${b?.service ?? 'no backend'}, which is not in the mesh view`, flag: 'NR' };
          } else {
            backend = { service: bs, port: b.port };
            modify(setHeaders, removeHeaders, target.filters.requestHeaders);
            modify(setHeaders, removeHeaders, b.filters?.requestHeaders);
            modify(plan.responseSet, plan.responseRemove as Set<string>, target.filters.responseHeaders);
            modify(plan.responseSet, plan.responseRemove as Set<string>, b.filters?.responseHeaders);
            const rw = target.filters.rewrite;
            if (rw?.path !== undefined) plan.path = `${modifyPath(path, rw.path)}${query ? `?${query}` : ''}`;
            if (rw?.hostname !== undefined) setHeaders[':authority'] = rw.hostname;
            if (target.timeouts.requestMs !== undefined && target.timeouts.requestMs > 0) plan.timeoutMs = target.timeouts.requestMs;
            if (target.timeouts.backendRequestMs !== undefined && target.timeouts.backendRequestMs > 0) plan.attemptTimeoutMs = target.timeouts.backendRequestMs;
            const mirrors = target.filters.mirrors.filter((m) => Math.random() < m.fraction);
            if (mirrors.length > 0) plan.taps = mirrors.map((mirror) => mirrorTap(deps, { mirror, request: { method, path: fullPath, authority }, fields, timeoutMs: target.timeouts.requestMs }));
            if (target.retry !== undefined) plan.retry = { httpStatuses: target.retry.httpCodes, grpcStatuses: target.retry.grpcCodes, attempts: target.retry.attempts, backoffMs: target.retry.backoffMs };
          }
        }
      }
    }
    // grpc-timeout caps the route's timeout (the client gives up then anyway).
    if (deadline !== undefined && plan.timeoutMs !== undefined) plan.timeoutMs = Math.min(plan.timeoutMs, deadline);

    const preferred = route.preferred && backend.service === service && backend.port === port ? deps.balancers.entry(service).endpointFor(route.preferred, port) : undefined;
    const connect = streamConnector(deps, {
      backend: { service: backend.service, port: backend.port, preferred },
      request: { method, path: fullPath, authority },
      fields,
      gone: () => down.destroyed,
      log: t,
      releases,
      onEndpoint: (e) => {
        ep = e;
        t.destination = endpointPeer(e.view);
      },
    });
    if (plan.retry !== undefined) plan.admitRetry = retryAdmission(deps, backend.service, fields, releases);
    forwardStream(down, headers, plan, connect);
  };
  serveSession(client, onStream, () => trace.finish('', client.bytesWritten, client.bytesRead), deps.logger, deps.sessions);
}

/** What the server side needs. */
export interface Http2InboundDeps {
  logger: Logger;
  sink: RecordSink;
  connectTimeoutMs: number;
  track: (s: net.Socket) => void;
  /** h2c sessions to local apps, by host:port. */
  apps: H2Sessions;
  sessions: Set<Drainable>;
  /** The current snapshot's authorization matcher (authz helper's hook). */
  authorization?: () => AuthzMatcher | undefined;
  /** Tracing on: the share of new traces sampled; undefined: trace headers pass through. */
  traceSample?: number | undefined;
  /** Local rate limits and quotas (ratelimit helper's hook), after authorization. */
  rateLimits?: InboundRateLimits;
}

/** The server proxy's HTTP/2 stack for one mesh connection (ALPN h2) to `target`. */
export function serveHttp2Inbound(socket: net.Socket, target: LocalTarget, peer: PeerWorkload, self: PeerWorkload, trace: ConnectionTrace, deps: Http2InboundDeps): void {
  const appAddr = `${target.host}:${target.targetPort}`;
  const service = destinationService(target.hostname, target.hostname, target.servicePort);
  trace.update({ stack: 'http2' });
  trace.open(appAddr);
  const onStream = (down: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void => {
    const grpc = isGrpc(headers);
    // Telemetry: the client proxy's metadata (believed from the verified peer only), the hop's span.
    const source = peerFromHeader(headers[PEER_HEADER], peer.principal) ?? peer;
    const hop = startHop(headers, deps.traceSample);
    const t = new RequestTrace(
      deps.sink,
      { reporter: 'destination', source, destination: self, service, connectionSecurityPolicy: 'mutual_tls', protocol: grpc ? 'grpc' : 'http', httpVersion: 'HTTP/2', method: String(headers[':method'] ?? ''), path: String(headers[':path'] ?? ''), authority: String(headers[':authority'] ?? ''), requestId: String(headers['x-request-id'] ?? ''), traceId: traceIdOf(headers.traceparent as string | undefined), hop },
      (rec) => deps.logger.isLevelEnabled('info') && deps.logger.info({ peer: peer.principal, sni: buildSni(target.servicePort, target.hostname), target: appAddr, ...requestLogFields(rec) }, 'inbound'),
    );
    t.upstreamHost = appAddr;
    // The app sees neither proxy's metadata; the client proxy gets this one's.
    const plan: StreamPlan = { trace: t, grpc, setHeaders: Object.fromEntries(requestAdd(hop, undefined)), removeHeaders: requestRemove(hop), responseSet: { [PEER_HEADER]: peerHeaderOf(self) }, responseRemove: PEER_ONLY };
    const denied = authorizeHttp2(deps.authorization?.(), deps.logger, { principal: peer.principal, remoteAddress: socket.remoteAddress, localAddress: socket.localAddress, targetPort: target.targetPort, sni: buildSni(target.servicePort, target.hostname) }, headers);
    const limited = denied ? undefined : deps.rateLimits?.http2({ principal: peer.principal, hostname: target.hostname }, headers);
    if (denied ?? limited) plan.answer = denied ?? limited;
    const connect = async (): Promise<H2Upstream | H2Answer> => {
      try {
        const conn = await deps.apps.get(appAddr, appAddr, async () => sessionOver(await dialApp(target, deps.connectTimeoutMs, deps.track), `http://${appAddr}`));
        // No stream limit towards apps: the reservation always succeeds.
        conn.reserve();
        return { request: (h, o) => conn.request(h, o), host: appAddr, done: () => undefined };
      } catch (err) {
        return { status: 503, grpcStatus: GRPC.UNAVAILABLE, code: 'KEDGE_TARGET_CONNECT_FAILED', message: `the app at ${appAddr} refused the connection (${(err as Error).message}); check that it listens there`, flag: 'UF' };
      }
    };
    forwardStream(down, headers, plan, connect);
  };
  serveSession(socket, onStream, () => trace.finish('', socket.bytesWritten, socket.bytesRead), deps.logger, deps.sessions);
}
