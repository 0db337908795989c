// Validated route documents: plain data, every default applied, names
// normalised (header names lowercase, services as name.namespace). What
// validateRouteDocument returns and compileServiceRoutes reads.
import type { HeaderModifier, PathModifier, RedirectFilter, RewriteFilter } from './types';

/** The API version routes are written in. */
export const GATEWAY_API_VERSION = 'gateway.networking.k8s.io/v1';
/** The API group and version of Kedge's own route resources (FaultInjection). */
export const KEDGE_API_GROUP = 'kedge.io';
export const KEDGE_API_VERSION = 'kedge.io/v1alpha1';

/** The kinds `kedge apply` reads besides TrafficPolicy. */
export type RouteKind = 'HTTPRoute' | 'GRPCRoute' | 'FaultInjection';
export const ROUTE_KINDS: readonly RouteKind[] = ['HTTPRoute', 'GRPCRoute', 'FaultInjection'];

/** A parentRef to a Service (GAMMA): the route applies to requests for that service. */
export interface ParentRefSpec {
  /** name.namespace */
  service: string;
  /** Only this service port; undefined: every port (unless sectionName). */
  port: number | undefined;
  /** Only the service port of this name. */
  sectionName: string | undefined;
}

/** A string comparison: Exact or RegularExpression (ECMAScript, whole-value match). */
export interface ValueMatch {
  type: 'Exact' | 'RegularExpression';
  value: string;
}

/** One header (lowercase name) or query parameter condition. */
export interface NamedMatch extends ValueMatch {
  name: string;
}

/** One HTTPRoute match: every condition must hold. */
export interface HttpMatchSpec {
  path: { type: 'Exact' | 'PathPrefix' | 'RegularExpression'; value: string };
  method: string | undefined;
  headers: readonly NamedMatch[];
  queryParams: readonly NamedMatch[];
}

/** One GRPCRoute match: every condition must hold. */
export interface GrpcMatchSpec {
  /** undefined: any service and method. */
  method: { type: 'Exact' | 'RegularExpression'; service: string | undefined; method: string | undefined } | undefined;
  headers: readonly NamedMatch[];
}

/** A weighted backendRef to a Service port. */
export interface BackendRefSpec {
  /** name.namespace */
  service: string;
  port: number;
  weight: number;
  requestHeaders: HeaderModifier | undefined;
  responseHeaders: HeaderModifier | undefined;
}

/** RequestMirror as validated. */
export interface MirrorSpec {
  service: string;
  port: number;
  fraction: number;
}

/** A rule's filters as validated; the FaultInjection is still a reference. */
export interface RuleFiltersSpec {
  requestHeaders: HeaderModifier | undefined;
  responseHeaders: HeaderModifier | undefined;
  redirect: RedirectFilter | undefined;
  rewrite: RewriteFilter | undefined;
  mirrors: readonly MirrorSpec[];
  /** namespace/name of a FaultInjection (ExtensionRef). */
  faultRef: string | undefined;
}

/** One rule of a route. */
export interface RuleSpec {
  name: string;
  /** HttpMatchSpec for HTTPRoute, GrpcMatchSpec for GRPCRoute; never empty (the API's default applied). */
  matches: readonly (HttpMatchSpec | GrpcMatchSpec)[];
  filters: RuleFiltersSpec;
  backends: readonly BackendRefSpec[];
  timeouts: { requestMs: number | undefined; backendRequestMs: number | undefined };
  retry: { httpCodes: readonly number[]; grpcCodes: readonly number[]; attempts: number; backoffMs: number } | undefined;
}

/** A validated HTTPRoute or GRPCRoute. */
export interface RouteObject {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  name: string;
  /** metadata.creationTimestamp (RFC 3339), '' when unknown: orders routes of equal precedence. */
  createdAt: string;
  parents: readonly ParentRefSpec[];
  rules: readonly RuleSpec[];
}

/** A validated FaultInjection. */
export interface FaultObject {
  kind: 'FaultInjection';
  namespace: string;
  name: string;
  createdAt: string;
  delay: { ms: number; percent: number } | undefined;
  abort: { httpStatus: number | undefined; grpcStatus: number | undefined; percent: number } | undefined;
}

/** Anything validateRouteDocument accepts. */
export type RouteDocumentObject = RouteObject | FaultObject;

export type { PathModifier };
