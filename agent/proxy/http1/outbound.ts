// The client proxy's HTTP/1.1 stack: the application's connection is read
// request by request (session.ts); each request is routed (the service's
// compiled Gateway API routes: match, filters, weighted backend, timeouts,
// retry), balanced on its own (the per-request picker), and sent over a
// pooled keep-alive mTLS connection to the chosen endpoint (ALPN
// http/1.1), or a pooled plain connection to a plaintext endpoint.
import { randomUUID } from 'node:crypto';
import type * as net from 'node:net';
import { KedgeError } from '../../../proto/model/errors';
import { buildSni } from '../../../proto/model/sni';
import { modifyPath, pickBackend, redirectLocation } from '../../../policy/routes/apply';
import type { HeaderModifier, RouteRequest } from '../../../policy/routes/types';
import { TRAFFIC_POLICY_DEFAULTS } from '../../../policy/traffic-policy';
import { connectAttempts, logOutlier } from '../attempts';
import { refusalMessage } from '../breaker';
import type { ServiceEntry } from '../balancers';
import { type ConnectionTrace, destinationService } from '../connection-record';
import { endpointPeer } from '../../telemetry/peer-metadata';
import { PEER_HEADER, peerFromHeader, requestAdd, requestRemove, startHop, traceHeadersOf } from '../../telemetry/hop';
import { dialEndpoint, dialPlaintext } from '../dial';
import type { MeshDeps, MeshRoute } from '../engine';
import { UNKNOWN_PEER } from '../record';
import { RequestTrace, requestLogFields, traceIdOf } from '../request-record';
import type { ServiceView } from '../types';
import type { HeadEdit } from './head';
import { BodyTracker } from './body';
import { type HeaderLine, type RequestHead, headerValue, parseResponseHead } from './parse';
import { type Http1Side, Http1Session, type LocalAnswer, type RequestPlan, type Upstream, statusOutcome } from './session';

/** What the HTTP/1.1 client side needs: the engine's deps. */
export type Http1OutboundDeps = MeshDeps;

/** Where one request goes after routing. */
interface Backend {
  service: ServiceView;
  port: number;
  /** The endpoint the client addressed directly, for the addressed service only. */
  preferred: import('../types').EndpointView | undefined;
}

const plans = new WeakMap<RequestPlan, Backend>();
/** What to release when a request's record is finished (circuit breaker counts). */
const cleanup = new WeakMap<RequestTrace, Array<() => void>>();
function onFinish(t: RequestTrace, release: () => void): void {
  let list = cleanup.get(t);
  if (list === undefined) cleanup.set(t, (list = []));
  list.push(release);
}
/** The endpoint a request's last attempt went to, for its access-log line. */
const endpointOf = new WeakMap<RequestTrace, import('../balancers').MeshEndpoint>();

/** A header lookup over parsed lines, repeated headers joined with ", " (built only when a route table needs it). */
function headerMap(headers: readonly HeaderLine[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const h of headers) {
    const prev = m.get(h.name);
    m.set(h.name, prev === undefined ? h.value : `${prev}, ${h.value}`);
  }
  return m;
}

/** Path and query of a request target (origin-form, or absolute-form as proxies may get). */
export function splitTarget(target: string): { path: string; query: string } {
  let t = target;
  if (!t.startsWith('/')) {
    const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/.exec(t);
    t = m ? t.slice(m[0].length) || '/' : t;
  }
  const q = t.indexOf('?');
  return q < 0 ? { path: t, query: '' } : { path: t.slice(0, q), query: t.slice(q + 1) };
}

function applyModifier(edit: { remove: Set<string>; add: Array<[string, string]> }, mod: HeaderModifier | undefined): void {
  if (mod === undefined) return;
  for (const n of mod.remove) edit.remove.add(n);
  for (const { name, value } of mod.set) {
    edit.remove.add(name);
    edit.add.push([name, value]);
  }
  for (const { name, value } of mod.add) edit.add.push([name, value]);
}

/** Serves one application connection to `route` with the HTTP/1.1 stack. */
export function serveHttp1Outbound(client: net.Socket, route: MeshRoute, trace: ConnectionTrace, deps: Http1OutboundDeps, prefix?: Buffer): void {
  const { port } = route;
  const fields = { service: route.service.key, port, ...route.log };
  const scheme = 'http';

  const side: Http1Side = {
    logger: deps.logger,
    retriesProxyErrors: true,
    plan(req: RequestHead): RequestPlan {
      // The view now, not the one the connection was accepted with: a
      // keep-alive connection must follow route and endpoint changes.
      const service = deps.service(route.service.key) ?? route.service;
      const { path, query } = splitTarget(req.target);
      const authority = headerValue(req.headers, 'host') ?? '';
      const given = headerValue(req.headers, 'x-request-id');
      const requestId = given ?? randomUUID();
      const hop = startHop(deps.traceSample === undefined ? undefined : traceHeadersOf(req.headers), deps.traceSample);
      const t = new RequestTrace(deps.sink, {
        reporter: 'source',
        source: deps.self(),
        destination: UNKNOWN_PEER,
        service: destinationService(service.key, service.hostname, port),
        connectionSecurityPolicy: 'unknown',
        protocol: 'http',
        httpVersion: `HTTP/1.${req.minor}`,
        method: req.method,
        path: req.target,
        authority,
        requestId,
        traceId: traceIdOf(headerValue(req.headers, 'traceparent')),
        hop,
      }, (rec) => {
        for (const release of cleanup.get(t) ?? []) release();
        // Built only when written: the fields cost more than the request's parse.
        if (!deps.logger.isLevelEnabled('info')) return;
        const ep = endpointOf.get(t);
        deps.logger.info({ ...fields, ...(ep ? { endpoint: ep.key, workload: ep.view.workload, ...(ep.view.plaintext ? { plaintext: true } : { sni: buildSni(rec.service.port, rec.service.hostname), peer: ep.view.identity }) } : {}), ...requestLogFields(rec) }, 'outbound');
      });
      // Telemetry: this proxy's metadata and the hop's trace headers replace any the app sent.
      const edit = { remove: new Set<string>(['x-forwarded-proto', ...requestRemove(hop)]), add: [['x-forwarded-proto', scheme], ...requestAdd(hop, deps.self())] as Array<[string, string]> };
      if (given === undefined) edit.add.push(['x-request-id', requestId]);
      // HTTP/1.0 closes by default; between proxies and to the app the pool keeps connections.
      if (req.minor === 0) edit.add.push(['connection', 'keep-alive']);
      const responseEdit = { remove: new Set<string>([PEER_HEADER]), add: [] as Array<[string, string]> };
      const plan: RequestPlan = { trace: t, edit: edit as HeadEdit, responseEdit: responseEdit as HeadEdit, onResponse: (res) => learnDestination(t, headerValue(res.headers, PEER_HEADER)) };
      const backend: Backend = { service, port, preferred: route.preferred };
      plans.set(plan, backend);

      const table = service.routes?.forPort(port);
      if (table === undefined) return plan;
      const rr: RouteRequest = { method: req.method, path, query, headers: headerMap(req.headers) };
      const target = table.match(rr);
      if (target === undefined) {
        plan.answer = { status: 404, code: 'KEDGE_NO_ROUTE', message: `no route rule of ${service.key} port ${port} matches ${req.method} ${path}`, flag: 'NR' };
        return plan;
      }
      t.route = target.ref.id;
      if (target.redirect !== undefined) {
        const r = target.redirect;
        const host = authority.replace(/:\d+$/, '');
        const location = redirectLocation(r, { scheme, host, port, path, query });
        plan.answer = { status: r.statusCode, code: 'KEDGE_REDIRECT', message: `redirected to ${location}`, flag: '-', headers: [['location', location]], body: '' };
        return plan;
      }
      const fault = target.filters.fault;
      if (fault?.abort !== undefined && Math.random() < fault.abort.fraction) {
        plan.answer = { status: fault.abort.httpStatus, code: 'KEDGE_FAULT_ABORT', message: `aborted by fault injection ${fault.name}`, flag: 'FI' };
        return plan;
      }
      if (fault?.delay !== undefined && Math.random() < fault.delay.fraction) {
        plan.delayMs = fault.delay.ms;
        t.flag('DI');
      }
      const b = pickBackend(target, deps.random());
      const bs = b === undefined ? undefined : b.service === service.key ? service : deps.service(b.service);
      if (b === undefined || bs === undefined) {
        plan.answer = { status: 500, code: 'KEDGE_ROUTE_BACKEND_MISSING', message: `route ${target.ref.id} sends to ${b?.service ?? 'no backend'}, which is not in the mesh view`, flag: 'NR' };
        return plan;
      }
      plans.set(plan, { service: bs, port: b.port, preferred: bs === service && b.port === port ? route.preferred : undefined });
      applyModifier(edit, target.filters.requestHeaders);
      applyModifier(edit, b.filters?.requestHeaders);
      applyModifier(responseEdit, target.filters.responseHeaders);
      applyModifier(responseEdit, b.filters?.responseHeaders);
      const rw = target.filters.rewrite;
      if (rw?.path !== undefined) plan.edit.firstLine = `${req.method} ${modifyPath(path, rw.path)}${query ? `?${query}` : ''} HTTP/1.${req.minor}`;
      if (rw?.hostname !== undefined) {
        edit.remove.add('host');
        edit.add.push(['host', rw.hostname]);
      }
      const { requestMs, backendRequestMs } = target.timeouts;
      if (requestMs !== undefined) plan.requestTimeoutMs = requestMs;
      if (backendRequestMs !== undefined) plan.attemptTimeoutMs = backendRequestMs;
      if (target.retry !== undefined) plan.retry = { statuses: target.retry.httpCodes, attempts: target.retry.attempts, backoffMs: target.retry.backoffMs };
      const mirrors = target.filters.mirrors.filter((m) => Math.random() < m.fraction);
      if (mirrors.length > 0) {
        plan.mirror = (head, body) => {
          for (const m of mirrors) void sendMirror(m.service, m.port, head, body, deps, fields);
        };
      }
      return plan;
    },

    admitRetry(plan) {
      const backend = plans.get(plan)!;
      const policy = backend.service.policy ?? TRAFFIC_POLICY_DEFAULTS;
      const r = deps.breakers.get(backend.service.key, policy.circuitBreaker, policy.retryBudget).admitRetry(performance.now());
      if (typeof r === 'string') {
        deps.logger.warn({ ...fields, code: 'KEDGE_RETRY_REFUSED', err: refusalMessage(backend.service.key, r, policy.circuitBreaker) }, 'retry not made');
        return false;
      }
      onFinish(plan.trace, r);
      return true;
    },

    async connect(req, plan, tried): Promise<Upstream | LocalAnswer> {
      const backend = plans.get(plan)!;
      const entry = deps.balancers.entry(backend.service);
      const policy = backend.service.policy ?? TRAFFIC_POLICY_DEFAULTS;
      const breaker = deps.breakers.get(backend.service.key, policy.circuitBreaker, policy.retryBudget);
      if (!cleanup.has(plan.trace)) {
        const admitted = breaker.admitRequest();
        if (typeof admitted === 'string') return { status: 503, code: 'KEDGE_CIRCUIT_OPEN', message: refusalMessage(backend.service.key, admitted, policy.circuitBreaker), flag: 'UO' };
        onFinish(plan.trace, admitted);
      }
      const endpointKeys = (): Iterable<string> => [...entry.endpoints()].map((e) => e.key);
      // A pooled connection, or a new one within maxConnections; past it the
      // request waits for a free one, as one of at most maxPendingRequests.
      const acquire = async (ep: import('../balancers').MeshEndpoint): Promise<import('./pool').Lease> => {
        const pool = deps.pools.get(ep.key, ep.view.plaintext ? '' : sni, () => connect(ep), policy.poolIdleTimeoutMs, policy.circuitBreaker.maxRequestsPerConnection);
        if (pool.idleCount > 0) return pool.acquire();
        const full = (): boolean => deps.pools.connections(endpointKeys()) >= policy.circuitBreaker.maxConnections;
        const pending = await breaker.pend(full());
        if (typeof pending === 'string') throw new KedgeError('KEDGE_CIRCUIT_OPEN', refusalMessage(backend.service.key, pending, policy.circuitBreaker));
        try {
          // Woken by a released connection: it may have gone idle in any
          // pool of the service; another may have taken it, so wait again.
          while (pool.idleCount === 0 && full()) await new Promise<void>((r) => breaker.waitOnce(r));
          return await pool.acquire();
        } finally {
          pending();
        }
      };
      const timeoutMs = entry.balancer.connectTimeoutMs() ?? deps.connectTimeoutMs;
      const sni = buildSni(backend.port, backend.service.hostname);
      const connect = (ep: import('../balancers').MeshEndpoint): Promise<net.Socket> =>
        ep.view.plaintext ? dialPlaintext(ep.view, ep.port, timeoutMs, deps.track) : dialEndpoint(ep.view, sni, deps.clientTls(), timeoutMs, deps.track, ['http/1.1']);
      const r = await connectAttempts(
        { entry, servicePort: backend.port, preferred: preferredOf(entry, backend), request: { method: req.method, path: req.target, authority: headerValue(req.headers, 'host') ?? '' }, tried, fields, gone: () => client.destroyed, allowRepeat: true },
        deps,
        plan.trace,
        acquire,
      );
      if (r instanceof KedgeError) return answerFor(r);
      const { pick, conn: lease } = r;
      const ep = pick.endpoint;
      plan.trace.destination = endpointPeer(ep.view);
      endpointOf.set(plan.trace, ep);
      const pool = deps.pools.get(ep.key, ep.view.plaintext ? '' : sni, () => connect(ep), policy.poolIdleTimeoutMs, policy.circuitBreaker.maxRequestsPerConnection);
      return {
        lease,
        host: ep.key,
        done(reusable, outcome) {
          pool.release(lease, reusable);
          breaker.wake();
          logOutlier(deps.logger, pick.onEnd(outcome), ep, fields, outcome ?? '');
        },
      };
    },

    async tunnel(req, plan) {
      const backend = plans.get(plan)!;
      const entry = deps.balancers.entry(backend.service);
      const timeoutMs = entry.balancer.connectTimeoutMs() ?? deps.connectTimeoutMs;
      const sni = buildSni(backend.port, backend.service.hostname);
      const r = await connectAttempts(
        { entry, servicePort: backend.port, preferred: preferredOf(entry, backend), request: { method: req.method, path: req.target, authority: headerValue(req.headers, 'host') ?? '' }, fields, gone: () => client.destroyed },
        deps,
        plan.trace,
        (ep): Promise<net.Socket> => (ep.view.plaintext ? dialPlaintext(ep.view, ep.port, timeoutMs, deps.track) : dialEndpoint(ep.view, sni, deps.clientTls(), timeoutMs, deps.track, ['http/1.1'])),
      );
      if (r instanceof KedgeError) return answerFor(r);
      plan.trace.destination = endpointPeer(r.pick.endpoint.view);
      endpointOf.set(plan.trace, r.pick.endpoint);
      return { socket: r.conn, host: r.pick.endpoint.key, done: () => void r.pick.onEnd() };
    },
  };

  trace.update({ stack: 'http1' });
  trace.open('');
  const session = new Http1Session(client, side, prefix);
  deps.sessions.add(session);
  session.start(() => {
    deps.sessions.delete(session);
    trace.finish('', client.bytesWritten, client.bytesRead);
  });
}

/**
 * RequestMirror: sends a copy of a finished request to `service:port`
 * (another pick, another pooled connection) and drops the answer. A body
 * that outgrew the replay buffer is not mirrored; a mirror that fails is
 * logged and changes nothing for the client.
 */
async function sendMirror(key: string, port: number, head: Buffer, body: readonly Buffer[] | undefined, deps: Http1OutboundDeps, fields: Record<string, unknown>): Promise<void> {
  const view = deps.service(key);
  if (view === undefined || body === undefined) {
    deps.logger.warn({ ...fields, mirror: `${key}:${port}`, reason: view === undefined ? 'the mirror service is not in the mesh view' : 'the body outgrew the replay buffer' }, 'request not mirrored');
    return;
  }
  const entry = deps.balancers.entry(view);
  const policy = view.policy ?? TRAFFIC_POLICY_DEFAULTS;
  const timeoutMs = entry.balancer.connectTimeoutMs() ?? deps.connectTimeoutMs;
  const sni = buildSni(port, view.hostname);
  const poolOf = (ep: import('../balancers').MeshEndpoint): import('./pool').ConnectionPool =>
    deps.pools.get(ep.key, ep.view.plaintext ? '' : sni, () => (ep.view.plaintext ? dialPlaintext(ep.view, ep.port, timeoutMs, deps.track) : dialEndpoint(ep.view, sni, deps.clientTls(), timeoutMs, deps.track, ['http/1.1'])), policy.poolIdleTimeoutMs, policy.circuitBreaker.maxRequestsPerConnection);
  const r = await connectAttempts({ entry, servicePort: port, fields, gone: () => false }, deps, { attemptFailed: () => undefined }, (ep) => poolOf(ep).acquire());
  if (r instanceof KedgeError) {
    deps.logger.warn({ ...fields, mirror: `${key}:${port}`, code: r.code, err: r.message }, 'request not mirrored');
    return;
  }
  const { lease, pick } = { lease: r.conn, pick: r.pick };
  const pool = poolOf(pick.endpoint);
  const s = lease.socket;
  let buf: Buffer = Buffer.alloc(0);
  let tracker: import('./body').BodyTracker | undefined;
  const method = head.subarray(0, head.indexOf(0x20)).toString('latin1');
  const done = (reusable: boolean, outcome: import('../balancer/outlier').Outcome | undefined): void => {
    s.off('data', onData);
    s.off('close', onClose);
    pool.release(lease, reusable);
    pick.onEnd(outcome);
  };
  const onClose = (): void => done(false, 'reset');
  const onData = (d: Buffer): void => {
    if (tracker === undefined) {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      const h = parseResponseHead(buf, 0, method);
      if (h.kind === 'more') return;
      if (h.kind === 'error' || h.head.body.type === 'close') return done(false, undefined);
      if (h.head.status < 200) {
        buf = buf.subarray(h.end);
        return onData(Buffer.alloc(0));
      }
      tracker = new BodyTracker(h.head.body);
      d = buf.subarray(h.end);
      if (tracker.done) return done(h.head.keepAlive && d.length === 0, statusOutcome(h.head.status));
    }
    const c = tracker.consume(d, 0);
    if ('error' in c) return done(false, undefined);
    if (c.done) done(c.used === d.length, 'success');
  };
  s.on('data', onData);
  s.once('close', onClose);
  s.resume();
  s.write(Buffer.concat([head, ...body]));
}

/** The server proxy's metadata from its response header, believed only from a meshed endpoint (its identity was checked). */
function learnDestination(t: RequestTrace, value: string | undefined): void {
  const ep = endpointOf.get(t);
  if (value === undefined || ep === undefined || ep.view.plaintext) return;
  const p = peerFromHeader(value, ep.view.identity);
  if (p !== undefined) t.destination = p;
}

function preferredOf(entry: ServiceEntry, b: Backend): import('../balancers').MeshEndpoint | undefined {
  return b.preferred ? entry.endpointFor(b.preferred, b.port) : undefined;
}

/** What the client gets when no endpoint could take the request. */
function answerFor(err: KedgeError): LocalAnswer {
  if (err.code === 'KEDGE_NO_ENDPOINTS') return { status: 503, code: err.code, message: err.message, flag: 'UH' };
  if (err.code === 'KEDGE_CLIENT_CLOSED') return { status: 503, code: err.code, message: err.message, flag: 'DC' };
  if (err.code === 'KEDGE_CIRCUIT_OPEN') return { status: 503, code: err.code, message: err.message, flag: 'UO' };
  return { status: 503, code: err.code, message: err.message, flag: 'UF' };
}
