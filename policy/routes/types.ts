// The compiled form of Gateway API routes, as the forwarding engine reads it
// per request. Everything here is built once per push (compileServiceRoutes)
// and frozen: regexes compiled, header names lowercased, candidates sorted in
// the Gateway API's precedence order, so a lookup allocates nothing.
//
// Engine's use, per request on a service port:
//
//     const table = view.routes?.forPort(port);      // undefined: no route attaches, send to the service itself
//     const target = table.match(req);               // undefined: no rule matches, answer 404
//     if (target.redirect) answer redirectLocation(...)
//     const backend = pickBackend(target, Math.random());  // undefined only for a redirect
//
// The engine owns how headers are stored; it passes a `get(lowerName)` view.

/** How the matcher reads a request's headers: by lowercase name. A Map<string, string> fits. */
export interface HeaderLookup {
  /** The header's value, repeated headers joined with ", " (RFC 9110); undefined when absent. */
  get(lowerName: string): string | undefined;
}

/** The parts of a request routing reads. */
export interface RouteRequest {
  /** Uppercase method (HTTP/2 `:method`). */
  method: string;
  /** The request target's path, without the query: `/a/b` (HTTP/2 `:path` up to `?`). gRPC: `/pkg.Service/Method`. */
  path: string;
  /** The query string without `?`; '' when none. Parsed only when a candidate matches on query parameters. */
  query: string;
  headers: HeaderLookup;
}

/** Which route and rule a target came from, for records, logs and `kedge get routes`. */
export interface RouteRef {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  name: string;
  /** Rule index in the route's spec.rules. */
  rule: number;
  /** The rule's `name`, '' when unnamed. */
  ruleName: string;
  /** `<kind>/<namespace>/<name>/<rule>`: precomputed for records and metrics. */
  id: string;
}

/** Header changes of a RequestHeaderModifier or ResponseHeaderModifier filter. Names are lowercase. */
export interface HeaderModifier {
  /** Replace any value with this one. */
  set: readonly { name: string; value: string }[];
  /** Append this value (a new header line, or `, value` when joined). */
  add: readonly { name: string; value: string }[];
  /** Remove these headers. */
  remove: readonly string[];
}

/** A path change of URLRewrite or RequestRedirect. */
export type PathModifier =
  | { type: 'ReplaceFullPath'; replaceFullPath: string }
  /** Replace the rule's matched PathPrefix (`prefix`, trailing slash removed) with `replacePrefixMatch`. */
  | { type: 'ReplacePrefixMatch'; replacePrefixMatch: string; prefix: string };

/** RequestRedirect: the proxy answers with `statusCode` and a Location header, the request goes nowhere. */
export interface RedirectFilter {
  /** undefined: the request's scheme. */
  scheme: 'http' | 'https' | undefined;
  /** undefined: the request's Host, without its port. */
  hostname: string | undefined;
  path: PathModifier | undefined;
  /** undefined: derived as the Gateway API says (80/443 for a given scheme, else the request's port). */
  port: number | undefined;
  statusCode: 301 | 302 | 303 | 307 | 308;
}

/** URLRewrite: the request is forwarded with a new Host and/or path. */
export interface RewriteFilter {
  hostname: string | undefined;
  path: PathModifier | undefined;
}

/** RequestMirror: a copy of the request goes to `service:port`, its answer is dropped. */
export interface MirrorFilter {
  /** name.namespace */
  service: string;
  port: number;
  /** Share of requests mirrored, 0–1. */
  fraction: number;
}

/** A Kedge FaultInjection resource reached through an ExtensionRef filter. */
export interface FaultFilter {
  /** namespace/name of the FaultInjection. */
  name: string;
  /** Hold the request this long before forwarding, for `fraction` of requests (0–1). */
  delay: { ms: number; fraction: number } | undefined;
  /**
   * Answer without forwarding, for `fraction` of requests. `httpStatus` for
   * HTTP requests; `grpcStatus` (a gRPC status code number) for gRPC ones,
   * derived from httpStatus as the gRPC HTTP mapping does when not given.
   */
  abort: { httpStatus: number; grpcStatus: number; fraction: number } | undefined;
}

/** Filters of a rule (or of one backend: only the header modifiers). */
export interface RouteFilters {
  requestHeaders: HeaderModifier | undefined;
  responseHeaders: HeaderModifier | undefined;
  rewrite: RewriteFilter | undefined;
  mirrors: readonly MirrorFilter[];
  fault: FaultFilter | undefined;
}

/** One weighted backend of a rule. */
export interface RouteBackend {
  /** name.namespace: a service in the proxy snapshot (it may be missing there: then answer 500 for its share). */
  service: string;
  /** Service port. */
  port: number;
  /** Relative weight; 0 takes no traffic. */
  weight: number;
  /** Backend-level filters (RequestHeaderModifier, ResponseHeaderModifier only); undefined: none. */
  filters: { requestHeaders: HeaderModifier | undefined; responseHeaders: HeaderModifier | undefined } | undefined;
}

/**
 * Retry of a rule (GEP-1731 for HTTPRoute; the same shape as a Kedge
 * extension on GRPCRoute). Connect failures and refused streams are retried
 * whether or not a rule has this.
 */
export interface RouteRetry {
  /** HTTP statuses that are retried. */
  httpCodes: ReadonlySet<number>;
  /** gRPC status codes (numbers) that are retried (GRPCRoute). */
  grpcCodes: ReadonlySet<number>;
  /** Retries after the first attempt. */
  attempts: number;
  /** Minimum wait before a retry. */
  backoffMs: number;
}

/** Timeouts of a rule; 0 disables one, undefined leaves it to the engine's default. */
export interface RouteTimeouts {
  /** Whole request, retries included. */
  requestMs: number | undefined;
  /** One attempt to a backend. */
  backendRequestMs: number | undefined;
}

/** What a matched request is routed by: one (route, rule) pair. Shared by all requests it matches; never modified. */
export interface RouteTarget {
  ref: RouteRef;
  backends: readonly RouteBackend[];
  /** Sum of backend weights (> 0 unless this is a redirect). */
  totalWeight: number;
  filters: RouteFilters;
  /** Set when the rule redirects instead of forwarding. */
  redirect: RedirectFilter | undefined;
  timeouts: RouteTimeouts;
  retry: RouteRetry | undefined;
}

/** The routes attached to one port of a service, in precedence order. */
export interface PortRouteTable {
  /** GRPCRoute wins over HTTPRoute on the same service port (GEP-1294); a table holds one kind. */
  readonly kind: 'HTTPRoute' | 'GRPCRoute';
  /** The target of the highest-precedence rule matching the request; undefined when none does (answer 404). */
  match(req: RouteRequest): RouteTarget | undefined;
}

/** Compiled routes of one service, for one client namespace (producer and consumer routes resolved). */
export interface ServiceRoutes {
  /** The table for a service port; undefined when no route attaches to it. */
  forPort(port: number): PortRouteTable | undefined;
  /** Every (route, rule) target, for the admin endpoint and tests. */
  readonly targets: readonly RouteTarget[];
  /** Why routes that arrived were not used (a GRPCRoute took the port, a consumer route of another namespace). */
  readonly notes: readonly string[];
}
