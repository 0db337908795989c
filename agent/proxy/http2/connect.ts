// How the client proxy's HTTP/2 stack reaches an endpoint for one stream:
// the destination service's circuit breaker admits the request
// (maxRequests), the per-request pick and connect attempts choose an
// endpoint, and the endpoint's pooled session (sessions.ts) carries the
// stream. Streams waiting for a session being opened, or for a free
// connection under maxConnections, are pending requests
// (maxPendingRequests). As in Envoy, maxConnections counts active and
// draining sessions of the service, and a selected endpoint that has no
// session at all still gets one. Used by routed streams and by their
// mirrors alike.
import * as http2 from 'node:http2';
import { KedgeError } from '../../../proto/model/errors';
import { buildSni } from '../../../proto/model/sni';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../../policy/traffic-policy';
import { type AttemptLog, connectAttempts, logOutlier } from '../attempts';
import type { MeshEndpoint } from '../balancers';
import type { RequestInfo } from '../balancer/request-picker';
import { type ServiceBreaker, refusalMessage } from '../breaker';
import { dialEndpoint, dialPlaintext } from '../dial';
import type { MeshDeps } from '../engine';
import type { ServiceView } from '../types';
import { type H2Conn, sessionOver } from './sessions';
import { GRPC, type H2Answer, type H2Upstream } from './stream';

/** Where one stream goes. */
export interface StreamBackend {
  service: ServiceView;
  port: number;
  /** Tried first (the client addressed this endpoint), for the addressed service only. */
  preferred?: MeshEndpoint | undefined;
}

/** What one stream's connector is for. */
export interface StreamConnectArgs {
  backend: StreamBackend;
  request: RequestInfo;
  fields: Record<string, unknown>;
  /** True once the client went away. */
  gone: () => boolean;
  log: AttemptLog;
  /** The chosen endpoint of each connected attempt. */
  onEndpoint?: (ep: MeshEndpoint) => void;
  /** Where the breaker's release goes (run when the request's record is finished). */
  releases: Array<() => void>;
}

/** The breaker and policy of a destination service. */
export function breakerOf(deps: MeshDeps, service: ServiceView): { policy: TrafficPolicy; breaker: ServiceBreaker } {
  const policy = service.policy ?? TRAFFIC_POLICY_DEFAULTS;
  return { policy, breaker: deps.breakers.get(service.key, policy.circuitBreaker, policy.retryBudget) };
}

/** A connector for forwardStream: each call is one attempt (breaker admission on the first). */
export function streamConnector(deps: MeshDeps, a: StreamConnectArgs): (tried: Set<string>) => Promise<H2Upstream | H2Answer> {
  const { backend, fields } = a;
  const entry = deps.balancers.entry(backend.service);
  const { policy, breaker } = breakerOf(deps, backend.service);
  const limits = policy.circuitBreaker;
  const sni = buildSni(backend.port, backend.service.hostname);
  const timeoutMs = entry.balancer.connectTimeoutMs() ?? deps.connectTimeoutMs;
  const keyOf = (e: MeshEndpoint): string => `${e.key}|${e.view.plaintext ? '' : sni}`;
  const open = async (e: MeshEndpoint): Promise<http2.ClientHttp2Session> => {
    if (e.view.plaintext) return sessionOver(await dialPlaintext(e.view, e.port, timeoutMs, deps.track), `http://${backend.service.hostname}:${backend.port}`);
    const s = await dialEndpoint(e.view, sni, deps.clientTls(), timeoutMs, deps.track, ['h2']);
    if (s.alpnProtocol !== 'h2') {
      s.destroy();
      throw new KedgeError('KEDGE_UPSTREAM_NO_H2', `endpoint ${e.key} (${e.view.workload}) did not agree to HTTP/2 on mesh TLS (ALPN ${String(s.alpnProtocol)}); its agent may predate the HTTP/2 stack`);
    }
    return sessionOver(s, `https://${backend.service.hostname}:${backend.port}`);
  };
  const sessionLimits = { maxRequestsPerConnection: limits.maxRequestsPerConnection, idleTimeoutMs: policy.poolIdleTimeoutMs };
  // A session with a stream reserved for this request.
  const session = async (e: MeshEndpoint): Promise<H2Conn> => {
    const key = keyOf(e);
    const endpointKeys = [...entry.endpoints()].map((x) => x.key);
    // Over maxConnections, a new session is opened only for an endpoint with none (Envoy's rule).
    const full = (): boolean => deps.h2.has(key) && deps.h2.connections(endpointKeys) >= limits.maxConnections;
    for (;;) {
      const ready = deps.h2.ready(key, sessionLimits);
      if (ready?.reserve() === true) return ready;
      const pending = await breaker.pend(full());
      if (typeof pending === 'string') throw new KedgeError('KEDGE_CIRCUIT_OPEN', refusalMessage(backend.service.key, pending, limits));
      try {
        // Woken when a session of the service closes or opens; another stream may have been first, so look again.
        while (deps.h2.ready(key) === undefined && full()) await new Promise<void>((r) => breaker.waitOnce(r));
        const conn = await deps.h2.get(key, e.key, () => open(e), sessionLimits, () => breaker.wakeAll());
        breaker.wakeAll();
        if (conn.reserve()) return conn;
      } finally {
        pending();
      }
    }
  };
  let admitted = false;
  return async (tried) => {
    if (!admitted) {
      const r = breaker.admitRequest();
      if (typeof r === 'string') return { status: 503, grpcStatus: GRPC.UNAVAILABLE, code: 'KEDGE_CIRCUIT_OPEN', message: refusalMessage(backend.service.key, r, limits), flag: 'UO' };
      a.releases.push(r);
      admitted = true;
    }
    const r = await connectAttempts(
      { entry, servicePort: backend.port, request: a.request, tried, fields, gone: a.gone, allowRepeat: true, ...(backend.preferred !== undefined && tried.size === 0 ? { preferred: backend.preferred } : {}) },
      deps,
      a.log,
      session,
    );
    if (r instanceof KedgeError) {
      const flag = r.code === 'KEDGE_NO_ENDPOINTS' ? 'UH' : r.code === 'KEDGE_CIRCUIT_OPEN' ? 'UO' : r.code === 'KEDGE_CLIENT_CLOSED' ? 'DC' : 'UF';
      return { status: 503, grpcStatus: GRPC.UNAVAILABLE, code: r.code, message: r.message, flag };
    }
    const { pick, conn } = r;
    const ep = pick.endpoint;
    a.onEndpoint?.(ep);
    let opened = false;
    return {
      request: (h, o) => {
        opened = true;
        return conn.request(h, o);
      },
      host: ep.key,
      done: (outcome) => {
        if (!opened) conn.unreserve();
        logOutlier(deps.logger, pick.onEnd(outcome), ep, fields, outcome ?? '');
      },
    };
  };
}

/** A retry admission for forwardStream: the backend's maxRetries and retry budget; a refusal is logged. */
export function retryAdmission(deps: MeshDeps, service: ServiceView, fields: Record<string, unknown>, releases: Array<() => void>): () => boolean {
  return () => {
    const { policy, breaker } = breakerOf(deps, service);
    const r = breaker.admitRetry(performance.now());
    if (typeof r === 'string') {
      deps.logger.warn({ ...fields, code: 'KEDGE_RETRY_REFUSED', err: refusalMessage(service.key, r, policy.circuitBreaker) }, 'retry not made');
      return false;
    }
    releases.push(r);
    return true;
  };
}
