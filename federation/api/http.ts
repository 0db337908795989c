// The federation's HTTP JSON API for the CLI and the dashboard,
// authenticated with the admin token (bearer) or, for reads only, a viewer
// token; the dashboard's assets under /ui/ and its WebSocket feed; and
// unauthenticated /healthz, /readyz and /metrics.
import * as http from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { parseDuration } from '../../proto/model/duration';
import type { TokenService } from '../tokens/tokens';
import type { Bindings } from '../grants/bindings';
import { globMatch } from '../grants/grant';
import { handleJoinRoute, type JoinDeps } from './join';
import type { AgentRecord, AgentStatus, MeshView } from '../mesh/types';
import { formatLocality } from '../../proto/model/locality';
import { parseServiceKey, serviceKey } from '../../proto/model/service';
import type { FederationService } from './grpc';
import type { SourceStatus } from '../sources/types';
import { VM_CLUSTER } from '../mesh/merge';
import type { Readiness } from '../health/readiness';
import type { PolicyTable } from '../mesh/policies';
import type { EdgeAggregate, TrafficStatsStore } from '../stats';
import type { RouteRow, RouteTable } from '../mesh/routes';
import type { AuthzTable } from '../mesh/authz';
import type { RateLimitTable } from '../mesh/ratelimits';
import { authzCheck, type AuthzCheckQuery } from '../mesh/authz-check';
import { ROUTE_KINDS, type RouteKind } from '../../policy/routes/model';
import { buildPicker } from '../../agent/proxy/balancer/picker';
import { gatewaysOfAgents, substituteGateways } from '../mesh/gateways';
import { validateTrafficPolicy, type TrafficPolicy } from '../../policy/traffic-policy';
import { ViewerTokens } from './viewer-tokens';
import { attachFeed } from './feed';
import { dashboardState } from './dashboard-state';
import { DEFAULT_UI_DIR, uiHandler } from './ui-static';
import type { Role } from '../ui/model/state';
import { LIMITS, type HttpLimits } from '../../proto/model/limits';
import { caPemBundle, caRotate, caSpiffeBundle, caStatus, PEM_BUNDLE_PATH, SPIFFE_BUNDLE_PATH, type CaApiDeps } from './ca-routes';

/** Largest request body the API reads by default (limits.http.maxBodyBytes). */
export const MAX_BODY_BYTES = LIMITS.federation.http.maxBodyBytes;

/** What the HTTP API reads from the federation. */
export interface HttpDeps {
  adminToken: string;
  /** The CA: `kedge ca` routes, the public trust bundle, signing state in /readyz. */
  ca?: CaApiDeps;
  tokens: TokenService;
  bindings: Bindings;
  /** Deletes a workload's registration from the store (kedge delete workload). */
  deregister: (id: string) => Promise<boolean>;
  view: () => MeshView;
  agents: () => AgentRecord[];
  /** Agent status as written by the replicas holding the agents (store-wide). */
  statuses: () => Promise<Map<string, AgentStatus>>;
  grpc: FederationService;
  replica: string;
  trustDomain: string;
  /** What /readyz answers: 200 with the checks when ready, 503 with them when not. */
  ready: () => Readiness;
  sources: () => SourceStatus[];
  policies: PolicyTable;
  /** Every durable store key, for `kedge federation backup`. */
  backup: () => Promise<unknown>;
  routes: RouteTable;
  /** AuthorizationPolicies applied with kedge apply. */
  authz?: AuthzTable;
  /** HTTPLocalRateLimitPolicies and MeshQuotas applied with kedge apply. */
  rateLimits?: RateLimitTable;
  /** Every route (applied and from clusters) with its warnings. */
  routeRows: () => readonly RouteRow[];
  /** Asks for a mesh rebuild and push (after a route or policy change made here). */
  rebuild: () => void;
  /** Agents' traffic summaries, for GET /api/v1/stats/{services,workloads}. */
  trafficStats?: TrafficStatsStore;
  /** The service graph's aggregates: this replica's and the other replicas' (federation/traffic-share.ts). */
  trafficEdges?: (windowMs: number) => EdgeAggregate[];
  /** The /metrics page (Prometheus text format); served without the admin token. */
  metrics?: () => Promise<string>;
  /** Read-only tokens (kedge token create --viewer). */
  viewers: ViewerTokens;
  /** Where the built dashboard is (default: dist/federation/ui/public). */
  uiDir?: string;
  logger: Logger;
  /** The unauthenticated routes joining hosts download from (join.sh, root, packages). */
  join?: JoinDeps;
  /** Sent as x-kedge-federation on every answer: how the CLI tells a federation from anything else on a port. */
  version?: string;
  /** Header and body sizes, header timeout (default: the limits table). */
  limits?: HttpLimits;
}

// GETs a viewer token may not make: the backup holds the CA key and every
// store record; the token list is the admin's business.
const ADMIN_ONLY_READS = [/^\/api\/v1\/backup$/, /^\/api\/v1\/tokens$/];

type Handler = (req: http.IncomingMessage, body: unknown, params: string[]) => Promise<unknown> | unknown;

class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

/** Creates the API server (not yet listening). */
export function createHttpApi(deps: HttpDeps): http.Server {
  const authzTable = (): AuthzTable => {
    if (!deps.authz) throw new HttpError(501, 'KEDGE_NOT_IMPLEMENTED', 'this federation was started without authorization policies');
    return deps.authz;
  };
  // Registered workloads as the policy tables match them: by labels (security policies), by the services they serve (rate limits).
  const namedWorkloads = () => deps.agents().map((a) => ({ name: a.workload.name, namespace: a.workload.namespace, labels: a.workload.labels }));
  const servingWorkloads = () => deps.agents().map((a) => ({ name: a.workload.name, namespace: a.workload.namespace, services: a.services.map((s) => `${s.name}.${a.workload.namespace}`) }));
  const rateLimitTable = (): RateLimitTable => {
    if (!deps.rateLimits) throw new HttpError(501, 'KEDGE_NOT_IMPLEMENTED', 'this federation was started without rate limits');
    return deps.rateLimits;
  };
  const tokenDigest = createHash('sha256').update(deps.adminToken).digest();
  const routes: [string, RegExp, Handler][] = [
    ['GET', /^\/api\/v1\/whoami$/, (req) => ({ role: roleOf(req), replica: deps.replica, trustDomain: deps.trustDomain })],
    ['POST', /^\/api\/v1\/viewer-tokens$/, async (_r, body) => {
      const b = (body ?? {}) as Record<string, unknown>;
      if (b.ttl !== undefined && typeof b.ttl !== 'string') throw new HttpError(400, 'KEDGE_BAD_REQUEST', 'ttl must be a duration string such as 24h');
      const created = await deps.viewers.create(parseDuration((b.ttl as string | undefined) ?? '24h', 'viewer token ttl'));
      deps.logger.info({ viewerTokenId: created.id, expiresAt: created.expiresAt }, 'viewer token created');
      return created;
    }],
    ['GET', /^\/api\/v1\/services$/, () => [...deps.view().services.values()].map(serviceSummary)],
    ['GET', /^\/api\/v1\/services\/([^/]+)$/, (_r, _b, [key]) => serviceSummary(findService(deps.view(), key!))],
    ['GET', /^\/api\/v1\/endpoints$/, () => [...deps.view().services.values()].flatMap(endpointRows)],
    ['GET', /^\/api\/v1\/endpoints\/([^/]+)$/, (req, _b, [key]) => {
      const svc = findService(deps.view(), key!);
      const from = new URL(req.url ?? '/', 'http://x').searchParams.get('from');
      return from ? endpointsFrom(svc, from, deps) : endpointRows(svc);
    }],
    ['GET', /^\/api\/v1\/workloads$/, () => workloadRows(deps)],
    ['GET', /^\/api\/v1\/workloads\/([^/]+)\/([^/]+)$/, (_r, _b, [ns, name]) => {
      const row = workloadRows(deps).find((w) => w.namespace === ns && w.name === name);
      if (!row) throw new HttpError(404, 'KEDGE_NOT_FOUND', `no workload ${ns}/${name} is registered`);
      return row;
    }],
    ['GET', /^\/api\/v1\/tokens$/, () => deps.tokens.list()],
    ['DELETE', /^\/api\/v1\/tokens\/([^/]+)$/, async (_r, _b, [id]) => {
      if (!(await deps.tokens.delete(id!))) throw new HttpError(404, 'KEDGE_NOT_FOUND', `no token ${id}; kedge get tokens lists them`);
      deps.logger.info({ tokenId: id }, 'join token deleted');
      return { deleted: id };
    }],
    ['DELETE', /^\/api\/v1\/workloads\/([^/]+)\/([^/]+)$/, (_r, _b, [ns, name]) => deleteWorkload(deps, ns!, name!)],
    ['GET', /^\/api\/v1\/clusters$/, () => [agentsSource(deps), ...deps.sources()]],
    ['GET', /^\/api\/v1\/policies$/, () => deps.policies.list()],
    ['POST', /^\/api\/v1\/policies$/, async (_r, body) => {
      if (!Array.isArray(body)) throw new HttpError(400, 'KEDGE_BAD_REQUEST', 'send a JSON list of TrafficPolicy documents');
      const rows = await deps.policies.apply(body, (key) => deps.view().services.has(key));
      deps.logger.info({ policies: rows.map((r) => r.service) }, 'traffic policies applied');
      return rows;
    }],
    ['DELETE', /^\/api\/v1\/policies\/([^/]+)$/, async (_r, _b, [name]) => {
      const row = deps.policies.list().find((p) => p.name === name || p.service === name);
      if (!row) throw new HttpError(404, 'KEDGE_NOT_FOUND', `no TrafficPolicy named ${name} (or for service ${name}); see kedge get policies`);
      await deps.policies.remove(row.service);
      deps.logger.info({ policy: row.name, service: row.service }, 'traffic policy deleted');
      deps.rebuild();
      return { kind: 'TrafficPolicy', name: row.name, service: row.service, deleted: true };
    }],
    ['GET', /^\/api\/v1\/routes$/, () => deps.routeRows()],
    ['POST', /^\/api\/v1\/routes$/, async (_r, body) => {
      if (!Array.isArray(body)) throw new HttpError(400, 'KEDGE_BAD_REQUEST', 'send a JSON list of HTTPRoute, GRPCRoute and FaultInjection documents');
      const result = await deps.routes.apply(body, (key) => deps.view().services.has(key), (key) => deps.view().services.get(key)?.ports);
      deps.logger.info({ applied: result.applied.map((r) => `${r.kind}/${r.namespace}/${r.name}`), rejected: result.errors.length }, 'routes applied');
      if (result.applied.length) deps.rebuild();
      return result;
    }],
    ['DELETE', /^\/api\/v1\/routes\/([^/]+)\/([^/]+)\/([^/]+)$/, async (_r, _b, [kind, ns, name]) => {
      if (!(ROUTE_KINDS as readonly string[]).includes(kind!)) throw new HttpError(400, 'KEDGE_BAD_REQUEST', `unknown kind ${kind}; use one of ${ROUTE_KINDS.join(', ')}`);
      const fromCluster = deps.routeRows().find((r) => r.kind === kind && r.namespace === ns && r.name === name && r.source !== 'kedge apply');
      try {
        await deps.routes.remove(kind as RouteKind, ns!, name!);
      } catch (err) {
        if (err instanceof KedgeError && err.code === 'KEDGE_NOT_FOUND') {
          throw new HttpError(404, err.code, fromCluster ? `${kind} ${ns}/${name} comes from ${fromCluster.source}, not from kedge apply; delete it there` : err.message);
        }
        if (err instanceof KedgeError && err.code === 'KEDGE_IN_USE') throw new HttpError(409, err.code, err.message);
        throw err;
      }
      deps.logger.info({ kind, namespace: ns, name }, 'route deleted');
      deps.rebuild();
      return { kind, namespace: ns, name, deleted: true };
    }],
    ['GET', /^\/api\/v1\/authorizationpolicies$/, () => authzTable().rows(namedWorkloads())],
    ['POST', /^\/api\/v1\/authorizationpolicies$/, async (_r, body) => {
      if (!Array.isArray(body)) throw new HttpError(400, 'KEDGE_BAD_REQUEST', 'send a JSON list of AuthorizationPolicy documents');
      const result = await authzTable().apply(body);
      deps.logger.info({ applied: result.applied.map((r) => `${r.namespace}/${r.name}`), rejected: result.errors.length }, 'authorization policies applied');
      return result;
    }],
    ['DELETE', /^\/api\/v1\/authorizationpolicies\/([^/]+)\/([^/]+)$/, async (_r, _b, [ns, name]) => {
      try {
        await authzTable().remove(ns!, name!);
      } catch (err) {
        if (err instanceof KedgeError && err.code === 'KEDGE_NOT_FOUND') throw new HttpError(404, err.code, err.message);
        throw err;
      }
      deps.logger.info({ namespace: ns, name }, 'authorization policy deleted');
      return { kind: 'AuthorizationPolicy', namespace: ns, name, deleted: true };
    }],
    ['GET', /^\/api\/v1\/peerauthentications$/, () => authzTable().peerAuthRows(namedWorkloads())],
    ['POST', /^\/api\/v1\/peerauthentications$/, async (_r, body) => {
      if (!Array.isArray(body)) throw new HttpError(400, 'KEDGE_BAD_REQUEST', 'send a JSON list of PeerAuthentication documents');
      const result = await authzTable().apply(body, 'PeerAuthentication');
      deps.logger.info({ applied: result.applied.map((r) => `${r.namespace}/${r.name}`), rejected: result.errors.length }, 'peer authentications applied');
      return result;
    }],
    ['DELETE', /^\/api\/v1\/peerauthentications\/([^/]+)\/([^/]+)$/, async (_r, _b, [ns, name]) => {
      try {
        await authzTable().remove(ns!, name!, 'PeerAuthentication');
      } catch (err) {
        if (err instanceof KedgeError && err.code === 'KEDGE_NOT_FOUND') throw new HttpError(404, err.code, err.message);
        throw err;
      }
      deps.logger.info({ namespace: ns, name }, 'peer authentication deleted');
      return { kind: 'PeerAuthentication', namespace: ns, name, deleted: true };
    }],
    ['GET', /^\/api\/v1\/ratelimits$/, () => rateLimitTable().rows(servingWorkloads())],
    ['POST', /^\/api\/v1\/ratelimits$/, async (_r, body) => {
      if (!Array.isArray(body)) throw new HttpError(400, 'KEDGE_BAD_REQUEST', 'send a JSON list of HTTPLocalRateLimitPolicy and MeshQuota documents');
      const result = await rateLimitTable().apply(body);
      deps.logger.info({ applied: result.applied.map((r) => `${r.kind}/${r.namespace}/${r.name}`), rejected: result.errors.length }, 'rate limits applied');
      return result;
    }],
    ['DELETE', /^\/api\/v1\/ratelimits\/(HTTPLocalRateLimitPolicy|MeshQuota)\/([^/]+)\/([^/]+)$/, async (_r, _b, [kind, ns, name]) => {
      try {
        await rateLimitTable().remove(kind!, ns!, name!);
      } catch (err) {
        if (err instanceof KedgeError && err.code === 'KEDGE_NOT_FOUND') throw new HttpError(404, err.code, err.message);
        throw err;
      }
      deps.logger.info({ kind, namespace: ns, name }, 'rate limit deleted');
      return { kind, namespace: ns, name, deleted: true };
    }],
    ['POST', /^\/api\/v1\/authz\/check$/, (_r, body) => {
      const q = body as AuthzCheckQuery;
      if (typeof q?.from !== 'string' || typeof q?.to !== 'string') throw new HttpError(400, 'KEDGE_BAD_REQUEST', 'send {"from": "NAMESPACE/WORKLOAD", "to": "SERVICE[.NAMESPACE][:PORT]", "method"?, "path"?}');
      try {
        return authzCheck(authzTable(), deps.agents(), deps.view(), q);
      } catch (err) {
        if (err instanceof KedgeError && (err.code === 'KEDGE_NOT_FOUND' || err.code === 'KEDGE_BAD_REQUEST')) throw new HttpError(err.code === 'KEDGE_NOT_FOUND' ? 404 : 400, err.code, err.message);
        throw err;
      }
    }],
    ['GET', /^\/api\/v1\/status$/, () => statusRows(deps)],
    ['GET', /^\/api\/v1\/prometheus\/targets$/, () => prometheusTargets(deps.agents())],
    ['GET', /^\/api\/v1\/stats\/(services|workloads)$/, (req, _b, [kind]) => {
      const q = new URL(req.url ?? '/', 'http://x').searchParams;
      const windowText = q.get('window') ?? '1m';
      let windowMs: number;
      try {
        windowMs = parseDuration(windowText, 'window');
      } catch (err) {
        throw new HttpError(400, 'KEDGE_BAD_REQUEST', errorMessage(err));
      }
      if (windowMs < 1_000 || windowMs > 3_600_000) throw new HttpError(400, 'KEDGE_BAD_REQUEST', `window ${windowText}: choose from 1s to 1h (agents report every 10 s; summaries are kept an hour)`);
      return (deps.trafficStats?.query({ kind: kind as 'services' | 'workloads', windowMs, ...(q.get('name') ? { name: q.get('name')! } : {}), ...(q.get('from') ? { from: q.get('from')! } : {}) }) ?? []);
    }],
    ['POST', /^\/api\/v1\/tokens$/, (_r, body) => createToken(deps, body)],
    ['GET', /^\/api\/v1\/backup$/, () => deps.backup()],
    ['GET', /^\/api\/v1\/ca$/, () => caStatus(needCa(deps))],
    ['POST', /^\/api\/v1\/ca\/rotate$/, (_r, body) => caRotate(needCa(deps), body).catch((err: unknown) => {
      if (err instanceof KedgeError && CONFLICTS.has(err.code)) throw new HttpError(409, err.code, err.message);
      throw err;
    })],
  ];

  const authenticate = (token: string): { role: Role } | { status: number; code: string; message: string } => {
    if (token === '') return { status: 401, code: 'KEDGE_UNAUTHORIZED', message: 'no token: send the admin token (DATA_DIR/admin-token, --admin-token-file) or a viewer token (kedge token create --viewer) as Authorization: Bearer TOKEN' };
    if (ViewerTokens.looksLike(token)) {
      const check = deps.viewers.check(token);
      if (check === 'valid') return { role: 'viewer' };
      if (check === 'expired') return { status: 401, code: 'KEDGE_TOKEN_EXPIRED', message: 'this viewer token has expired; make a new one with kedge token create --viewer' };
      return { status: 401, code: 'KEDGE_UNAUTHORIZED', message: 'viewer token not recognised: it was never issued by this mesh or was mistyped; make one with kedge token create --viewer' };
    }
    if (timingSafeEqual(createHash('sha256').update(token).digest(), tokenDigest)) return { role: 'admin' };
    return { status: 401, code: 'KEDGE_UNAUTHORIZED', message: 'missing or wrong admin token: pass --admin-token-file DATA_DIR/admin-token' };
  };
  const roles = new WeakMap<http.IncomingMessage, Role>();
  const roleOf = (req: http.IncomingMessage): Role => roles.get(req) ?? 'viewer';
  const serveUi = uiHandler(deps.uiDir ?? DEFAULT_UI_DIR);

  const limits = deps.limits ?? LIMITS.federation.http;
  // Node answers 431 itself to a head over maxHeaderSize.
  const server = http.createServer({ maxHeaderSize: limits.maxHeaderBytes }, (req, res) => {
    const send = (status: number, payload: unknown) => {
      const text = JSON.stringify(payload, null, 2);
      // After a 413 the rest of the body is not read: close once answered.
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...(status === 413 ? { connection: 'close' } : {}) });
      res.end(text);
    };
    res.setHeader('x-kedge-federation', deps.version ?? 'unknown');
    const url = new URL(req.url ?? '/', 'http://x');
    if (deps.join) {
      try {
        if (handleJoinRoute(req, res, url.pathname, deps.join)) return;
      } catch (err) {
        deps.logger.error({ err: errorMessage(err), path: url.pathname }, 'join route failed');
        return send(500, { code: 'KEDGE_INTERNAL', message: errorMessage(err) });
      }
    }
    if (url.pathname === '/healthz') return send(200, { status: 'ok' });
    if (url.pathname === '/readyz') {
      const r = deps.ready();
      return send(r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not ready', checks: r.checks });
    }
    if (deps.ca && req.method === 'GET' && url.pathname === SPIFFE_BUNDLE_PATH) return send(200, caSpiffeBundle(deps.ca));
    if (deps.ca && req.method === 'GET' && url.pathname === PEM_BUNDLE_PATH) {
      const pem = caPemBundle(deps.ca);
      res.writeHead(200, { 'content-type': 'application/x-pem-file', 'content-length': Buffer.byteLength(pem) });
      return res.end(pem);
    }
    // Prometheus scrapes without the admin token: metrics name no secrets.
    if (url.pathname === '/metrics' && req.method === 'GET' && deps.metrics) {
      deps.metrics()
        .then((text) => {
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
          res.end(text);
        })
        .catch((err) => send(500, { code: 'KEDGE_INTERNAL', message: `cannot render metrics: ${errorMessage(err)}` }));
      return;
    }
    if (url.pathname === '/ui' || url.pathname.startsWith('/ui/')) return serveUi(req, res, url.pathname);
    if (url.pathname === '/' && req.method === 'GET') {
      res.writeHead(302, { location: '/ui/' }).end();
      return;
    }
    const route = routes.find(([m, re]) => m === req.method && re.test(url.pathname));
    if (!route) return send(404, { code: 'KEDGE_NOT_FOUND', message: `no API route ${req.method} ${url.pathname}` });
    const auth = authenticate(/^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1]?.trim() ?? '');
    if (!('role' in auth)) return send(auth.status, { code: auth.code, message: auth.message });
    if (auth.role === 'viewer' && (req.method !== 'GET' || ADMIN_ONLY_READS.some((re) => re.test(url.pathname)))) {
      return send(403, { code: 'KEDGE_FORBIDDEN', message: `a viewer token is read-only: ${req.method} ${url.pathname} needs the admin token` });
    }
    roles.set(req, auth.role);
    readBody(req, limits.maxBodyBytes)
      .then((body) => route[2](req, body, (route[1].exec(url.pathname) ?? []).slice(1).map(decodePathPart)))
      .then((result) => send(200, result))
      .catch((err) => {
        if (err instanceof HttpError) return send(err.status, { code: err.code, message: err.message });
        // A store that cannot write now is the server's trouble, not the request's.
        if (err instanceof KedgeError && (err.code === 'KEDGE_STORE_IO' || err.code === 'KEDGE_STORE_UNAVAILABLE')) return send(503, { code: err.code, message: err.message });
        if (err instanceof KedgeError) return send(400, { code: err.code, message: err.message });
        deps.logger.error({ err: errorMessage(err), path: url.pathname }, 'API request failed');
        send(500, { code: 'KEDGE_INTERNAL', message: errorMessage(err) });
      });
  });

  const closeFeed = attachFeed(server, {
    authenticate: (token) => {
      const a = authenticate(token);
      return 'role' in a ? a : { code: a.code, message: a.message };
    },
    state: (role) =>
      dashboardState({
        replica: deps.replica,
        trustDomain: deps.trustDomain,
        view: deps.view,
        agents: deps.agents,
        statuses: deps.statuses,
        connected: () => deps.grpc.statuses(),
        sources: deps.sources,
        routeRows: deps.routeRows,
        policies: () => deps.policies.list(),
        authorization: () => (deps.authz ? deps.authz.rows(namedWorkloads()) : []),
        peerAuthentication: () => (deps.authz ? deps.authz.peerAuthRows(namedWorkloads()) : []),
        rateLimits: () => (deps.rateLimits ? deps.rateLimits.rows(servingWorkloads()) : []),
        traffic: (windowMs) => deps.trafficEdges?.(windowMs) ?? deps.trafficStats?.edges(windowMs) ?? [],
      }, role, Date.now()),
    logger: deps.logger,
  });
  // Upgraded sockets are no longer the HTTP server's: closing the server
  // closes the feed's sockets too, so shutdown does not wait on open pages.
  server.once('close', closeFeed);
  // A head must arrive within headersTimeout (Node answers 408 and closes),
  // and a kept-alive connection idles at most 5 s between requests.
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = Math.max(limits.headersTimeoutMs, 60_000);
  server.keepAliveTimeout = Math.min(5_000, limits.idleTimeoutMs);
  return server;
}

// How much of an oversized body is read and dropped before the connection is cut.
const MAX_DISCARD_BYTES = 1024 * 1024;

/** A path parameter, percent-decoded; malformed escapes (%ff) are the client's error. */
function decodePathPart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new HttpError(400, 'KEDGE_BAD_REQUEST', `path part "${part}" is not valid percent-encoding; encode it with encodeURIComponent`);
  }
}

// Rotation requests that clash with the CA's state answer 409.
const CONFLICTS = new Set(['KEDGE_CA_ROTATION_IN_PROGRESS', 'KEDGE_CA_NO_ROTATION', 'KEDGE_CA_PLUGGED']);

function needCa(deps: HttpDeps): CaApiDeps {
  if (!deps.ca) throw new HttpError(404, 'KEDGE_NOT_FOUND', 'this API has no CA attached');
  return deps.ca;
}

function readBody(req: http.IncomingMessage, maxBytes: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        // Answer 413 and close, instead of a reset: the rest of the body is
        // read and dropped (up to a bound) so the client gets the answer.
        if (chunks.length > 0 || size - c.length <= maxBytes) {
          chunks.length = 0;
          reject(new HttpError(413, 'KEDGE_TOO_LARGE', `request body over ${maxBytes} bytes (limits.http.maxBodyBytes); send less`));
        }
        if (size > Math.max(MAX_DISCARD_BYTES, maxBytes * 2)) req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('error', reject);
    req.on('end', () => {
      if (size === 0) return resolve(undefined);
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new HttpError(400, 'KEDGE_BAD_JSON', 'request body is not valid JSON'));
      }
    });
  });
}

function findService(view: MeshView, key: string) {
  let k: string;
  try {
    k = serviceKey(parseServiceKey(key));
  } catch (err) {
    throw new HttpError(400, 'KEDGE_BAD_SERVICE', errorMessage(err));
  }
  const svc = view.services.get(k);
  if (!svc) throw new HttpError(404, 'KEDGE_NOT_FOUND', `no service ${k} in the mesh`);
  return svc;
}

function serviceSummary(svc: ReturnType<typeof findService>) {
  return {
    key: svc.key,
    name: svc.name,
    namespace: svc.namespace,
    hostname: svc.hostname,
    vip: svc.vip,
    ports: svc.ports,
    endpoints: svc.endpoints.length,
    healthy: svc.endpoints.filter((e) => e.health === 'HEALTHY').length,
    version: svc.version,
    warnings: svc.warnings,
  };
}

/**
 * The agents' own endpoint source (cluster "vms" in endpoint rows) as a
 * cluster row, so `kedge get clusters` lists where every endpoint comes
 * from. Always connected: it is this federation's own Connect streams.
 */
function agentsSource(deps: HttpDeps): SourceStatus {
  let services = 0;
  let endpoints = 0;
  for (const svc of deps.view().services.values()) {
    const n = svc.endpoints.filter((e) => e.cluster === VM_CLUSTER).length;
    if (n > 0) services++;
    endpoints += n;
  }
  return { name: VM_CLUSTER, kind: 'agents', connected: true, stale: false, lastSync: new Date().toISOString(), error: undefined, services, endpoints };
}

function endpointRows(svc: ReturnType<typeof findService>) {
  return svc.endpoints.map((e) => ({
    service: svc.key,
    address: e.address,
    ports: e.ports,
    mtlsPort: e.mtlsPort,
    workload: e.workload,
    identity: e.identity,
    health: e.health,
    locality: formatLocality(e.locality),
    cluster: e.cluster,
    network: e.network,
    meshed: e.meshed,
    labels: e.labels,
  }));
}

/**
 * The endpoints of a service as `from` (a registered workload, ns/name)
 * would balance over them: priority, health and expected share, computed
 * with the same picker the agent's proxy uses.
 */
function endpointsFrom(meshSvc: ReturnType<typeof findService>, from: string, deps: HttpDeps) {
  const id = from.includes('/') ? from : `default/${from}`;
  const agents = deps.agents();
  const client = agents.find((a) => a.id === id);
  if (!client) throw new HttpError(404, 'KEDGE_NOT_FOUND', `no workload ${id} is registered; --from takes namespace/name`);
  // What that workload receives: other networks' endpoints behind their gateways.
  const svc = substituteGateways(meshSvc, client.workload.network, gatewaysOfAgents(agents));
  let policy: TrafficPolicy | undefined;
  if (svc.trafficPolicy) {
    const r = validateTrafficPolicy(JSON.parse(svc.trafficPolicy));
    if (r.ok) policy = r.value.policy;
  }
  // Meshed endpoints are dialled at their proxy's mTLS port, the others in
  // plain TCP at their own ports (auto mTLS), as the agent's balancer keys them.
  const eps = svc.endpoints.map((e) => ({
    key: e.meshed ? `${e.address}:${e.mtlsPort}` : `${e.address}:${e.ports.map((p) => p.port).join(',')}`,
    weight: e.weight || 1,
    healthy: e.health !== 'UNHEALTHY',
    locality: { region: e.locality?.region ?? '', zone: e.locality?.zone ?? '', subzone: e.locality?.subzone ?? '' },
    network: e.network,
    labels: e.labels,
    row: e,
  }));
  const wl = client.workload;
  const description = buildPicker({ endpoints: eps, client: { locality: wl.locality, network: wl.network, labels: wl.labels }, ...(policy ? { policy } : {}) }).describe();
  const byKey = new Map(description.endpoints.map((d) => [d.key, d]));
  return {
    service: svc.key,
    from: id,
    panic: description.panic,
    priorities: description.priorities,
    endpoints: eps.map((e) => {
      const d = byKey.get(e.key)!;
      return { address: e.row.address, mtlsPort: e.row.mtlsPort, meshed: e.row.meshed, ports: e.row.ports.map((p) => ({ name: p.name, port: p.port })), workload: e.row.workload, cluster: e.row.cluster, network: e.row.network, locality: d.locality, health: e.row.health, priority: d.priority, share: d.share };
    }),
  };
}

function workloadRows(deps: HttpDeps) {
  const local = new Map(deps.grpc.statuses().map((s) => [s.id, s]));
  return deps.agents().map((a) => {
    const conn = local.get(a.id);
    return {
      name: a.workload.name,
      namespace: a.workload.namespace,
      identity: a.identity,
      address: a.workload.address,
      locality: formatLocality(a.workload.locality),
      network: a.workload.network,
      labels: a.workload.labels,
      services: a.services.map((s) => s.name),
      replica: a.replica,
      connectedAt: a.connectedAt,
      lastContact: conn?.lastContact,
      ackedVersion: conn?.push.ackedNonce,
      subscriptions: conn?.push.subscriptions,
      host: a.host,
      conflicts: deps.grpc.conflicts.filter((c) => c.victim === a.id).map((c) => `${c.at}: ${c.claimant} (${c.identity}) claimed ${c.address}; refused`),
    };
  });
}

/**
 * kedge delete workload: revokes the certificates of the workload's binding
 * (every replica closes its stream and every proxy refuses them within the
 * push latency), releases its name and deletes its registration.
 */
async function deleteWorkload(deps: HttpDeps, ns: string, name: string) {
  const id = `${ns}/${name}`;
  const rec = deps.agents().find((a) => a.id === id);
  const binding = (rec?.binding ? await deps.bindings.get(rec.binding) : undefined) ?? (await deps.bindings.ownerOf(ns, name));
  if (!binding && !rec) throw new HttpError(404, 'KEDGE_NOT_FOUND', `no workload ${id} is registered or bound; kedge get workloads lists them`);
  const revoked = binding ? await deps.bindings.revoke(binding.id, `kedge delete workload ${id}`) : [];
  const deregistered = await deps.deregister(id);
  deps.logger.warn({ workload: id, binding: binding?.id, identity: binding?.identity, serials: revoked.map((r) => r.serial), deregistered }, 'workload deleted and its certificates revoked');
  return { workload: id, identity: binding?.identity ?? rec?.identity, revokedSerials: revoked.map((r) => r.serial), deregistered };
}

/**
 * Every agent of the mesh: the live push state for agents on this replica,
 * what their replica last wrote (every few seconds) for the others.
 */
async function statusRows(deps: HttpDeps) {
  const stored = await deps.statuses();
  const local = new Map(deps.grpc.statuses().map((s) => [s.id, s]));
  return deps.agents().map((a) => {
    const conn = local.get(a.id);
    const st = stored.get(a.id);
    return {
      agent: a.id,
      identity: a.identity,
      replica: a.replica,
      connectedAt: a.connectedAt,
      ackedVersion: conn?.push.ackedNonce ?? st?.ackedNonce ?? '',
      ackedAt: conn?.push.ackedAt ?? st?.ackedAt,
      lastContact: conn?.lastContact ?? st?.lastContact ?? a.connectedAt,
      certNotAfter: conn?.certNotAfter ?? st?.certNotAfter,
      subscriptions: conn?.push.subscriptions ?? st?.subscriptions ?? [],
    };
  }).sort((x, y) => x.agent.localeCompare(y.agent));
}

async function createToken(deps: HttpDeps, body: unknown) {
  const b = (body ?? {}) as Record<string, unknown>;
  if (typeof b.namespace !== 'string' || typeof b.serviceAccount !== 'string') {
    throw new HttpError(400, 'KEDGE_BAD_REQUEST', 'namespace and serviceAccount are required strings');
  }
  const ttlMs = parseDuration((b.ttl as string | undefined) ?? '1h', 'token ttl');
  const uses = b.uses === undefined ? 1 : Number(b.uses);
  const strings = (v: unknown, field: string): string[] | undefined => {
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new HttpError(400, 'KEDGE_BAD_REQUEST', `${field} must be a list of strings`);
    return v as string[];
  };
  const str = (v: unknown, field: string): string | undefined => {
    if (v !== undefined && typeof v !== 'string') throw new HttpError(400, 'KEDGE_BAD_REQUEST', `${field} must be a string`);
    return v as string | undefined;
  };
  if (b.labels !== undefined && (typeof b.labels !== 'object' || b.labels === null || Array.isArray(b.labels))) throw new HttpError(400, 'KEDGE_BAD_REQUEST', 'labels must be a mapping of label to value');
  const grant = {
    services: strings(b.services, 'services') ?? [],
    workload: str(b.workload, 'workload') ?? '',
    labels: (b.labels as Record<string, string> | undefined) ?? {},
    gateway: str(b.gateway, 'gateway') ?? '',
  };
  if (grant.gateway && b.newNetwork !== true) {
    const known = meshNetworks(deps);
    if (!known.has(grant.gateway)) {
      throw new HttpError(
        400,
        'KEDGE_TOKEN_INVALID_REQUEST',
        `--gateway ${grant.gateway}: no endpoint or workload of the mesh is on network ${grant.gateway} (known: ${[...known].filter(Boolean).sort().join(', ') || 'none'}); check the name, or add --new-network if this gateway is the first member of a new network`,
      );
    }
  }
  const { token, info } = await deps.tokens.create({ namespace: b.namespace, serviceAccount: b.serviceAccount, grant }, { ttlMs, uses });
  deps.logger.info({ tokenId: info.id, namespace: info.namespace, serviceAccount: info.serviceAccount, grant: info.grant, uses, expiresAt: info.expiresAt }, 'join token created');
  return { token, ...info, spiffeId: `spiffe://${deps.trustDomain}/ns/${info.namespace}/sa/${info.serviceAccount}`, warnings: grantWarnings(deps, info.namespace, info.grant) };
}

/** Networks the mesh knows: those of its endpoints and of its registered workloads. */
function meshNetworks(deps: HttpDeps): Set<string> {
  const networks = new Set<string>();
  for (const s of deps.view().services.values()) for (const e of s.endpoints) networks.add(e.network);
  for (const a of deps.agents()) networks.add(a.workload.network);
  return networks;
}

/** What looks wrong with a grant but may be right (the workload may be the first of its service or network). */
function grantWarnings(deps: HttpDeps, namespace: string, grant: { services: string[]; gateway: string }): string[] {
  const out: string[] = [];
  const view = deps.view();
  for (const p of grant.services) {
    const any = [...view.services.values()].some((s) => s.namespace === namespace && globMatch(p, s.name));
    if (!any) out.push(`--service ${p}: no service in namespace ${namespace} matches it yet; the workload will be its first endpoint`);
  }
  if (grant.gateway && !meshNetworks(deps).has(grant.gateway)) {
    out.push(`--gateway ${grant.gateway}: the network has no endpoint or workload yet (--new-network); this gateway will be its first member`);
  }
  return out;
}

/**
 * Prometheus HTTP service discovery (http_sd_configs): one target group per
 * agent serving metrics, at its workload address and metrics port, with
 * __meta_kedge_* labels for relabelling. Agents on every replica are listed
 * (the registry is store-wide).
 */
export function prometheusTargets(agents: readonly AgentRecord[]): { targets: string[]; labels: Record<string, string> }[] {
  return agents
    .filter((a) => (a.workload.metricsPort ?? 0) > 0)
    .map((a) => ({
      targets: [a.workload.address.includes(':') ? `[${a.workload.address}]:${a.workload.metricsPort}` : `${a.workload.address}:${a.workload.metricsPort}`],
      labels: {
        __meta_kedge_workload: a.workload.name,
        __meta_kedge_namespace: a.workload.namespace,
        __meta_kedge_service_account: a.workload.serviceAccount,
        __meta_kedge_network: a.workload.network,
        __meta_kedge_cluster: a.cluster ?? '',
        __meta_kedge_mode: a.gateway ? 'gateway' : 'sidecar',
        __meta_kedge_replica: a.replica,
      },
    }))
    .sort((x, y) => x.targets[0]!.localeCompare(y.targets[0]!));
}
