// Validated rate-limit documents as plain data: what validate.ts returns,
// what the federation stores and pushes, and what the server proxy's limiter
// (local.ts) and quota admission (quota.ts) compile. Two kinds:
// - HTTPLocalRateLimitPolicy: Linkerd's resource (policy.linkerd.io
//   v1alpha1: total, identity, overrides per client), extended under
//   Kedge's own API group with keyed limits and TCP connection rates;
// - MeshQuota: a budget per client principal per window for a service,
//   held across every endpoint of it (federation leases, see
//   federation/quota).

/** Kedge's API version for both kinds. */
export const RATELIMIT_API_VERSION = 'policy.kedge.dev/v1alpha1';
/** Linkerd's API version: accepted for HTTPLocalRateLimitPolicy with Linkerd's fields only. */
export const LINKERD_POLICY_API_VERSION = 'policy.linkerd.io/v1alpha1';

/** What one bucket key is built from (any combination, in the order written). */
export type LimitKeyPart =
  | { kind: 'sourcePrincipal' | 'sourceNamespace' | 'destinationService' | 'route' | 'method' }
  | { kind: 'header'; name: string };

/** A route of a keyed limit: requests matching none of a limit's routes are not counted by it. */
export interface LimitRoute {
  name: string;
  path?: { type: 'Exact' | 'PathPrefix'; value: string };
  method?: string;
}

/** A token bucket: `rate` tokens per second, at most `burst` held. */
export interface BucketSpec {
  rate: number;
  burst: number;
}

/** One keyed limit (Kedge extension): one bucket per distinct key. */
export interface KeyedLimit {
  name: string;
  /** 'requests' for HTTP/gRPC requests, 'connections' for opaque TCP connections. */
  unit: 'requests' | 'connections';
  bucket: BucketSpec;
  key: readonly LimitKeyPart[];
  /** Empty: every request. */
  routes: readonly LimitRoute[];
}

/** A client identity an override or a quota names (Linkerd's clientRefs). */
export interface ClientRef {
  /** The principal <trust-domain>/ns/<namespace>/sa/<name>. */
  kind: 'ServiceAccount';
  namespace: string;
  name: string;
}

/** A validated HTTPLocalRateLimitPolicy. */
export interface LocalRateLimitPolicy {
  kind: 'HTTPLocalRateLimitPolicy';
  name: string;
  namespace: string;
  /** The Service (in `namespace`) whose server proxies enforce it. */
  service: string;
  total: BucketSpec | undefined;
  identity: BucketSpec | undefined;
  overrides: readonly { bucket: BucketSpec; clients: readonly ClientRef[] }[];
  limits: readonly KeyedLimit[];
}

/** What a quota does when its lease is gone (the federation unreachable for longer than leaseTimeout). */
export type QuotaFailureMode = 'Open' | 'Closed';

/** A validated MeshQuota. */
export interface MeshQuotaPolicy {
  kind: 'MeshQuota';
  name: string;
  namespace: string;
  service: string;
  /** Which principals the quota counts; empty: every principal (each its own budget). */
  clients: readonly ClientRef[];
  /** Requests per window per principal, across every endpoint. */
  requests: number;
  windowMs: number;
  failureMode: QuotaFailureMode;
  /** How long a proxy keeps admitting at its last lease without hearing from the federation. */
  leaseTimeoutMs: number;
}

/** Either kind. */
export type RateLimitDocument = LocalRateLimitPolicy | MeshQuotaPolicy;

/** Whether a principal (`td/ns/x/sa/y`, no spiffe://) is one of `clients`; an empty list matches every principal. */
export function clientMatches(clients: readonly ClientRef[], principal: string): boolean {
  if (clients.length === 0) return true;
  const m = /^[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(principal);
  if (!m) return false;
  return clients.some((c) => c.namespace === m[1] && c.name === m[2]);
}
