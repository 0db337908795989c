// Compiles validated routes into the per-port tables the engine matches
// requests against. Precedence is the Gateway API's, decided here once by
// sorting every (route, rule, match) candidate, so a lookup is a scan that
// stops at the first candidate that matches:
//
// HTTPRoute (httproute_types.go, HTTPRouteRule.Matches): an Exact path
// before a PathPrefix with more characters, then a method match, then more
// header matches, then more query parameter matches. RegularExpression
// paths are implementation-specific: Kedge puts them after Exact and before
// every PathPrefix. Ties: the oldest route (creationTimestamp), then
// "{namespace}/{name}" alphabetically, then the first rule in list order.
//
// GRPCRoute (grpcroute_types.go, GRPCRouteRule.Matches): more characters in
// a matching service, then in a matching method, then more header matches;
// the same ties. A regular expression counts no characters.
//
// Mesh attachment (GEP-1294): a route whose parentRef names a Service in its
// own namespace is a producer route and applies to every client; one naming
// a Service in another namespace is a consumer route and applies only to
// clients in the route's namespace, which then use their consumer routes
// instead of the producer's. On one service port a GRPCRoute wins over
// HTTPRoutes (the others are noted, GEP-1294's RouteReasonConflicted).
import { grpcStatusOfHttp, regex as compileRegex, GRPC_STATUS } from './common';
import { Checker } from '../checker';
import type { FaultObject, GrpcMatchSpec, HttpMatchSpec, RouteObject, RuleSpec } from './model';
import type { FaultFilter, PortRouteTable, RouteRequest, RouteTarget, ServiceRoutes } from './types';

/** The service the routes are compiled for. */
export interface RouteService {
  /** name.namespace */
  key: string;
  namespace: string;
  ports: readonly { name: string; port: number }[];
}

/**
 * Compiles the routes attached to `service` for a client in
 * `clientNamespace`. `faults` holds FaultInjections by namespace/name; a
 * reference to a missing one aborts the rule's requests with 500, as the
 * Gateway API says of an unresolved ExtensionRef. Routes not attached to the
 * service are skipped. Undefined when no route attaches to any port.
 */
export function compileServiceRoutes(
  service: RouteService,
  routes: readonly RouteObject[],
  faults: ReadonlyMap<string, FaultObject>,
  clientNamespace: string,
): ServiceRoutes | undefined {
  const notes: string[] = [];
  const targets = new Map<RuleSpec, RouteTarget>();
  const target = (route: RouteObject, ruleIndex: number): RouteTarget => {
    const rule = route.rules[ruleIndex]!;
    let t = targets.get(rule);
    if (!t) {
      t = compileTarget(route, ruleIndex, faults);
      targets.set(rule, t);
    }
    return t;
  };

  // Which routes apply to which port, producer and consumer apart.
  const perPort = new Map<number, { producer: RouteObject[]; consumer: RouteObject[] }>();
  for (const route of routes) {
    for (const parent of route.parents) {
      if (parent.service !== service.key) continue;
      const consumer = route.namespace !== service.namespace;
      if (consumer && route.namespace !== clientNamespace) continue;
      const ports = service.ports.filter((p) => (parent.port === undefined || p.port === parent.port) && (parent.sectionName === undefined || p.name === parent.sectionName));
      if (ports.length === 0) {
        notes.push(`${route.kind} ${route.namespace}/${route.name}: ${service.key} has no port ${[parent.port, parent.sectionName].filter((x) => x !== undefined).join(' named ')}; the parentRef attaches to nothing`);
      }
      for (const p of ports) {
        let slot = perPort.get(p.port);
        if (!slot) perPort.set(p.port, (slot = { producer: [], consumer: [] }));
        const list = consumer ? slot.consumer : slot.producer;
        if (!list.includes(route)) list.push(route);
      }
    }
  }
  if (perPort.size === 0) return undefined;

  const tables = new Map<number, PortRouteTable>();
  for (const [port, slot] of perPort) {
    let chosen = slot.consumer.length > 0 ? slot.consumer : slot.producer;
    if (slot.consumer.length > 0) {
      for (const r of slot.producer) notes.push(`${r.kind} ${r.namespace}/${r.name}: not used on port ${port} by clients in ${clientNamespace}: their namespace's consumer routes apply instead`);
    }
    if (chosen.some((r) => r.kind === 'GRPCRoute')) {
      for (const r of chosen) if (r.kind === 'HTTPRoute') notes.push(`HTTPRoute ${r.namespace}/${r.name}: not used on port ${port}: a GRPCRoute attaches to the same service port, and GRPCRoute wins (GEP-1294)`);
      chosen = chosen.filter((r) => r.kind === 'GRPCRoute');
    }
    const kind = chosen[0]!.kind;
    tables.set(port, kind === 'HTTPRoute' ? httpTable(chosen, target) : grpcTable(chosen, target));
  }
  return Object.freeze({
    forPort: (port: number) => tables.get(port),
    targets: Object.freeze([...targets.values()]),
    notes: Object.freeze(notes),
  });
}

// ---------------------------------------------------------------- targets

/** HTTP status of a gRPC-only abort, for HTTP requests (the inverse of gRPC's mapping where one exists). */
function httpStatusOfGrpc(code: number): number {
  switch (code) {
    case GRPC_STATUS.INVALID_ARGUMENT: return 400;
    case GRPC_STATUS.UNAUTHENTICATED: return 401;
    case GRPC_STATUS.PERMISSION_DENIED: return 403;
    case GRPC_STATUS.NOT_FOUND: return 404;
    case GRPC_STATUS.RESOURCE_EXHAUSTED: return 429;
    case GRPC_STATUS.UNIMPLEMENTED: return 501;
    case GRPC_STATUS.UNAVAILABLE: return 503;
    case GRPC_STATUS.DEADLINE_EXCEEDED: return 504;
    default: return 500;
  }
}

function compileFault(ref: string, fault: FaultObject | undefined): FaultFilter {
  // An unresolved ExtensionRef must not be skipped: its requests get an error.
  if (!fault) return { name: ref, delay: undefined, abort: { httpStatus: 500, grpcStatus: GRPC_STATUS.UNAVAILABLE!, fraction: 1 } };
  const a = fault.abort;
  return {
    name: ref,
    delay: fault.delay ? { ms: fault.delay.ms, fraction: fault.delay.percent / 100 } : undefined,
    abort: a
      ? {
          httpStatus: a.httpStatus ?? httpStatusOfGrpc(a.grpcStatus!),
          grpcStatus: a.grpcStatus ?? grpcStatusOfHttp(a.httpStatus!),
          fraction: a.percent / 100,
        }
      : undefined,
  };
}

function compileTarget(route: RouteObject, ruleIndex: number, faults: ReadonlyMap<string, FaultObject>): RouteTarget {
  const rule = route.rules[ruleIndex]!;
  const f = rule.filters;
  const backends = rule.backends.map((b) => Object.freeze({
    service: b.service,
    port: b.port,
    weight: b.weight,
    filters: b.requestHeaders || b.responseHeaders ? { requestHeaders: b.requestHeaders, responseHeaders: b.responseHeaders } : undefined,
  }));
  return Object.freeze({
    ref: Object.freeze({
      kind: route.kind, namespace: route.namespace, name: route.name, rule: ruleIndex, ruleName: rule.name,
      id: `${route.kind}/${route.namespace}/${route.name}/${ruleIndex}`,
    }),
    backends: Object.freeze(backends),
    totalWeight: backends.reduce((sum, b) => sum + b.weight, 0),
    filters: Object.freeze({
      requestHeaders: f.requestHeaders,
      responseHeaders: f.responseHeaders,
      rewrite: f.rewrite,
      mirrors: Object.freeze(f.mirrors.map((m) => Object.freeze({ ...m }))),
      fault: f.faultRef === undefined ? undefined : Object.freeze(compileFault(f.faultRef, faults.get(f.faultRef))),
    }),
    redirect: f.redirect,
    timeouts: Object.freeze({ ...rule.timeouts }),
    retry: rule.retry
      ? Object.freeze({ httpCodes: new Set(rule.retry.httpCodes), grpcCodes: new Set(rule.retry.grpcCodes), attempts: rule.retry.attempts, backoffMs: rule.retry.backoffMs })
      : undefined,
  });
}

// ---------------------------------------------------------------- matching

/** A value condition, precompiled. */
interface ValueTest {
  name: string;
  exact: string | undefined;
  re: RegExp | undefined;
}

function valueTests(list: readonly { type: string; name: string; value: string }[]): ValueTest[] {
  return list.map((m) => ({ name: m.name, exact: m.type === 'Exact' ? m.value : undefined, re: m.type === 'RegularExpression' ? mustRegex(m.value) : undefined }));
}

// Validation already compiled each pattern once; a failure here is a bug.
function mustRegex(v: string): RegExp {
  const c = new Checker();
  const re = compileRegex(c, v, 'pattern');
  if (!re) throw new Error(c.errors.join('; '));
  return re;
}

function testValue(t: ValueTest, v: string | undefined): boolean {
  if (v === undefined) return false;
  return t.exact !== undefined ? v === t.exact : t.re!.test(v);
}

/** Precedence tail shared by both kinds: oldest route, then namespace/name, then rule, then match order. */
interface Order {
  createdAt: string;
  nsName: string;
  rule: number;
  match: number;
}

function compareOrder(a: Order, b: Order): number {
  // A route with no creation time (should not happen: apply stamps one) sorts after dated ones.
  if (a.createdAt !== b.createdAt) {
    if (a.createdAt === '') return 1;
    if (b.createdAt === '') return -1;
    return a.createdAt < b.createdAt ? -1 : 1;
  }
  if (a.nsName !== b.nsName) return a.nsName < b.nsName ? -1 : 1;
  return a.rule - b.rule || a.match - b.match;
}

const EXACT = 0;
const REGEX = 1;
const PREFIX = 2;

/**
 * The literal text every match of a path regex starts with ('' when
 * unknown), checked with startsWith before the regex runs: most path
 * regexes start with a fixed prefix (/api/v1/users/[0-9]+), and a failed
 * startsWith is far cheaper than a failed regex. Conservative: a pattern
 * with an alternation, or a literal followed by a quantifier, yields less.
 */
export function literalPrefix(pattern: string): string {
  if (pattern.includes('|')) return '';
  const m = /^[A-Za-z0-9/_~%=&,;:@!-]*/.exec(pattern)![0];
  const next = pattern.charAt(m.length);
  // "ab?" or "ab*" or "ab{0,1}": the last literal is optional.
  return next === '?' || next === '*' || next === '{' ? m.slice(0, -1) : m;
}

interface HttpCandidate extends Order {
  pathKind: number;
  /** Exact: the path; PathPrefix: the prefix without its trailing slash ('' for "/"); RegularExpression: its literal prefix. */
  path: string;
  pathRe: RegExp | undefined;
  method: string | undefined;
  headers: ValueTest[];
  query: ValueTest[];
  target: RouteTarget;
}

function httpTable(routes: readonly RouteObject[], target: (r: RouteObject, i: number) => RouteTarget): PortRouteTable {
  const cands: HttpCandidate[] = [];
  for (const route of routes) {
    route.rules.forEach((rule, ri) => {
      rule.matches.forEach((raw, mi) => {
        const m = raw as HttpMatchSpec;
        const kind = m.path.type === 'Exact' ? EXACT : m.path.type === 'RegularExpression' ? REGEX : PREFIX;
        cands.push({
          pathKind: kind,
          path: kind === PREFIX && m.path.value.endsWith('/') ? m.path.value.slice(0, -1) : kind === REGEX ? literalPrefix(m.path.value) : m.path.value,
          pathRe: kind === REGEX ? mustRegex(m.path.value) : undefined,
          method: m.method,
          headers: valueTests(m.headers),
          query: valueTests(m.queryParams),
          target: target(route, ri),
          createdAt: route.createdAt, nsName: `${route.namespace}/${route.name}`, rule: ri, match: mi,
        });
      });
    });
  }
  cands.sort((a, b) =>
    a.pathKind - b.pathKind ||
    (a.pathKind === PREFIX ? b.path.length - a.path.length : 0) ||
    Number(b.method !== undefined) - Number(a.method !== undefined) ||
    b.headers.length - a.headers.length ||
    b.query.length - a.query.length ||
    compareOrder(a, b));
  return Object.freeze({ kind: 'HTTPRoute' as const, match: (req: RouteRequest) => matchHttp(cands, req) });
}

function matchHttp(cands: readonly HttpCandidate[], req: RouteRequest): RouteTarget | undefined {
  const path = req.path;
  outer: for (let i = 0; i < cands.length; i++) {
    const c = cands[i]!;
    if (c.pathKind === EXACT) {
      if (path !== c.path) continue;
    } else if (c.pathKind === PREFIX) {
      // Element-wise: /abc matches /abc, /abc/ and /abc/def, not /abcd.
      const p = c.path;
      if (p !== '' && !(path.startsWith(p) && (path.length === p.length || path.charCodeAt(p.length) === 47))) continue;
    } else if (!path.startsWith(c.path) || !c.pathRe!.test(path)) continue;
    if (c.method !== undefined && req.method !== c.method) continue;
    for (const h of c.headers) if (!testValue(h, req.headers.get(h.name))) continue outer;
    for (const q of c.query) if (!testValue(q, queryValue(req.query, q.name))) continue outer;
    return c.target;
  }
  return undefined;
}

/**
 * The first value of query parameter `name` (exact, case-sensitive name, as
 * the API says), percent-decoded; undefined when absent. `+` is left as is:
 * it means a space only in HTML forms.
 */
export function queryValue(query: string, name: string): string | undefined {
  let start = 0;
  while (start <= query.length) {
    let end = query.indexOf('&', start);
    if (end === -1) end = query.length;
    if (query.startsWith(name, start)) {
      const after = start + name.length;
      if (after === end) return '';
      if (query.charCodeAt(after) === 61 /* = */) {
        const raw = query.slice(after + 1, end);
        if (!raw.includes('%')) return raw;
        try {
          return decodeURIComponent(raw);
        } catch {
          return raw;
        }
      }
    }
    start = end + 1;
  }
  return undefined;
}

interface GrpcCandidate extends Order {
  serviceExact: string | undefined;
  serviceRe: RegExp | undefined;
  methodExact: string | undefined;
  methodRe: RegExp | undefined;
  /** Characters of exact service and method, for precedence. */
  serviceChars: number;
  methodChars: number;
  headers: ValueTest[];
  target: RouteTarget;
}

function grpcTable(routes: readonly RouteObject[], target: (r: RouteObject, i: number) => RouteTarget): PortRouteTable {
  const cands: GrpcCandidate[] = [];
  for (const route of routes) {
    route.rules.forEach((rule, ri) => {
      rule.matches.forEach((raw, mi) => {
        const m = (raw as GrpcMatchSpec).method;
        const exact = m?.type !== 'RegularExpression';
        cands.push({
          serviceExact: exact ? m?.service : undefined,
          serviceRe: !exact && m?.service !== undefined ? mustRegex(m.service) : undefined,
          methodExact: exact ? m?.method : undefined,
          methodRe: !exact && m?.method !== undefined ? mustRegex(m.method) : undefined,
          serviceChars: exact ? (m?.service?.length ?? 0) : 0,
          methodChars: exact ? (m?.method?.length ?? 0) : 0,
          headers: valueTests((raw as GrpcMatchSpec).headers),
          target: target(route, ri),
          createdAt: route.createdAt, nsName: `${route.namespace}/${route.name}`, rule: ri, match: mi,
        });
      });
    });
  }
  cands.sort((a, b) => b.serviceChars - a.serviceChars || b.methodChars - a.methodChars || b.headers.length - a.headers.length || compareOrder(a, b));
  return Object.freeze({ kind: 'GRPCRoute' as const, match: (req: RouteRequest) => matchGrpc(cands, req) });
}

function matchGrpc(cands: readonly GrpcCandidate[], req: RouteRequest): RouteTarget | undefined {
  // A gRPC path is /<service>/<method>; anything else matches only rules without a method match.
  const path = req.path;
  const slash = path.charCodeAt(0) === 47 ? path.indexOf('/', 1) : -1;
  const grpcPath = slash > 1 && slash < path.length - 1 && path.indexOf('/', slash + 1) === -1;
  outer: for (let i = 0; i < cands.length; i++) {
    const c = cands[i]!;
    if (c.serviceExact !== undefined || c.serviceRe !== undefined || c.methodExact !== undefined || c.methodRe !== undefined) {
      if (!grpcPath) continue;
      if (c.serviceExact !== undefined && !(slash - 1 === c.serviceExact.length && path.startsWith(c.serviceExact, 1))) continue;
      if (c.methodExact !== undefined && !(path.length - slash - 1 === c.methodExact.length && path.startsWith(c.methodExact, slash + 1))) continue;
      if (c.serviceRe !== undefined && !c.serviceRe.test(path.slice(1, slash))) continue;
      if (c.methodRe !== undefined && !c.methodRe.test(path.slice(slash + 1))) continue;
    }
    for (const h of c.headers) if (!testValue(h, req.headers.get(h.name))) continue outer;
    return c.target;
  }
  return undefined;
}
