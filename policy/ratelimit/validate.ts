// Validation of HTTPLocalRateLimitPolicy and MeshQuota documents. Every error
// names the document and the path in it; unknown fields are refused, never
// ignored; a zero or negative limit is refused (it would refuse every
// request: delete the policy, or use an AuthorizationPolicy to deny). Under
// Linkerd's API version only Linkerd's fields are accepted, so a document
// written for Linkerd means the same here.
import { KedgeError } from '../../proto/model/errors';
import { deepFreeze } from '../../proto/model/validate';
import { Checker, DNS_LABEL } from '../checker';
import { headerName, metadata } from '../routes/common';
import { documentLabel } from '../routes/documents';
import {
  LINKERD_POLICY_API_VERSION,
  RATELIMIT_API_VERSION,
  type BucketSpec,
  type ClientRef,
  type KeyedLimit,
  type LimitKeyPart,
  type LimitRoute,
  type LocalRateLimitPolicy,
  type MeshQuotaPolicy,
  type RateLimitDocument,
} from './model';

/** The outcome of validateRateLimitDocument. */
export type RateLimitValidation = { ok: true; value: RateLimitDocument } | { ok: false; errors: string[] };

/** The kinds this module reads. */
export const RATELIMIT_KINDS: readonly string[] = ['HTTPLocalRateLimitPolicy', 'MeshQuota'];

/** Whether a parsed document is a rate-limit document (by its `kind`). */
export function isRateLimitDocument(doc: unknown): boolean {
  const k = (doc as { kind?: unknown } | null)?.kind;
  return typeof k === 'string' && RATELIMIT_KINDS.includes(k);
}

/** Largest rate a bucket takes (per second) and the largest quota; far above what one proxy serves. */
export const MAX_RATE = 1_000_000;
export const MAX_QUOTA = 1_000_000_000;
/** Quota windows: from 1 s (tests, bursty clients) to 1 h. */
export const MIN_WINDOW_MS = 1_000;
export const MAX_WINDOW_MS = 3_600_000;
/** Keyed limits per policy and routes per limit. */
const MAX_LIMITS = 32;
const MAX_ROUTES = 32;

const KEY_PARTS = ['sourcePrincipal', 'sourceNamespace', 'destinationService', 'route', 'method'] as const;
const HEADER_KEY = /^request\.headers\[([^\]]+)\]$/;
const METHOD = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;

/** Validates one parsed rate-limit document; every error is prefixed with the document's label. */
export function validateRateLimitDocument(doc: unknown): RateLimitValidation {
  const c = new Checker();
  const label = documentLabel(doc);
  const done = (): RateLimitValidation => ({ ok: false, errors: c.errors.map((e) => `${label}: ${e}`) });
  const top = c.object(doc, '', ['apiVersion', 'kind', 'metadata', 'spec']);
  if (top === undefined) return done();
  const kind = top.kind;
  if (kind !== 'HTTPLocalRateLimitPolicy' && kind !== 'MeshQuota') {
    c.fail('kind', `must be one of: ${RATELIMIT_KINDS.join(', ')}`);
    return done();
  }
  const versions = kind === 'HTTPLocalRateLimitPolicy' ? [RATELIMIT_API_VERSION, LINKERD_POLICY_API_VERSION] : [RATELIMIT_API_VERSION];
  if (typeof top.apiVersion !== 'string' || !versions.includes(top.apiVersion)) {
    c.fail('apiVersion', `${top.apiVersion === undefined ? 'is required' : `is ${JSON.stringify(top.apiVersion)}`}; write apiVersion: ${RATELIMIT_API_VERSION}`);
  }
  const linkerd = top.apiVersion === LINKERD_POLICY_API_VERSION;
  const m = metadata(c, top.metadata);
  const value = kind === 'MeshQuota' ? quota(c, top.spec, m) : local(c, top.spec, m, linkerd);
  if (c.errors.length > 0 || value === undefined) return done();
  return { ok: true, value: deepFreeze(value) };
}

/** validateRateLimitDocument for callers that want an exception: KEDGE_BAD_POLICY listing every error. */
export function parseRateLimitDocument(doc: unknown): RateLimitDocument {
  const r = validateRateLimitDocument(doc);
  if (r.ok) return r.value;
  throw new KedgeError('KEDGE_BAD_POLICY', r.errors.join('\n'));
}

/** A whole number ≥ 1: zero and negative limits are refused with what to do instead. */
function positive(c: Checker, v: unknown, path: string, max: number): number | undefined {
  if (v === undefined || v === null) {
    c.fail(path, 'is required');
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    c.fail(path, 'must be a whole number');
    return undefined;
  }
  if (v <= 0) {
    c.fail(path, `is ${v}; a limit must be at least 1 (a limit of ${v} would refuse everything: delete the policy, or deny with an AuthorizationPolicy)`);
    return undefined;
  }
  if (v > max) {
    c.fail(path, `must be at most ${max}`);
    return undefined;
  }
  return v;
}

/** targetRef: a Service in the policy's namespace (Linkerd's targetRef names a Server; see docs/rate-limits.md). */
function target(c: Checker, v: unknown, linkerd: boolean): string | undefined {
  const o = c.object(v, 'spec.targetRef', ['group', 'kind', 'name']);
  if (o === undefined) return undefined;
  if (o.group !== undefined && o.group !== '' && o.group !== 'core') c.fail('spec.targetRef.group', 'must be "" (the core group of Service)');
  if (o.kind !== 'Service') {
    c.fail('spec.targetRef.kind', `${linkerd && o.kind === 'Server' ? 'Server is a Linkerd resource Kedge does not have; ' : ''}must be Service: the limit applies at the server proxies of that service`);
  }
  if (typeof o.name !== 'string' || !DNS_LABEL.test(o.name)) {
    c.fail('spec.targetRef.name', 'must be the name of a Service in the policy\'s namespace (a lowercase DNS label)');
    return undefined;
  }
  return o.name;
}

function bucket(c: Checker, v: unknown, path: string, rateField: 'requestsPerSecond' | 'connectionsPerSecond', linkerd: boolean, extra: readonly string[] = []): BucketSpec | undefined {
  const o = c.object(v, path, [rateField, ...(linkerd ? [] : ['burst']), ...extra]);
  if (o === undefined) return undefined;
  const rate = positive(c, o[rateField], `${path}.${rateField}`, MAX_RATE);
  if (rate === undefined) return undefined;
  // Linkerd's bucket holds one second of requests; a larger burst is a Kedge extension.
  const burst = o.burst === undefined ? rate : positive(c, o.burst, `${path}.burst`, MAX_RATE);
  return burst === undefined ? undefined : { rate, burst };
}

function clientRefs(c: Checker, v: unknown, path: string): ClientRef[] {
  return c.list(v, path, 'a list of {kind: ServiceAccount, namespace, name}').flatMap((r, i) => {
    const p = `${path}[${i}]`;
    const o = c.object(r, p, ['group', 'kind', 'namespace', 'name']);
    if (o === undefined) return [];
    if (o.group !== undefined && o.group !== '' && o.group !== 'core') c.fail(`${p}.group`, 'must be "" (the core group of ServiceAccount)');
    if (o.kind !== 'ServiceAccount') c.fail(`${p}.kind`, 'must be ServiceAccount (Linkerd\'s only client kind); to key by namespace use a limit keyed by sourceNamespace');
    const ns = o.namespace;
    if (typeof ns !== 'string' || !DNS_LABEL.test(ns)) c.fail(`${p}.namespace`, 'is required: the namespace of the service account');
    const name = c.string(o.name, `${p}.name`, 'the service account');
    if (o.kind !== 'ServiceAccount' || typeof ns !== 'string' || name === undefined) return [];
    return [{ kind: 'ServiceAccount' as const, namespace: ns, name }];
  });
}

function local(c: Checker, v: unknown, m: { name: string; namespace: string }, linkerd: boolean): LocalRateLimitPolicy | undefined {
  const spec = c.object(v, 'spec', ['targetRef', 'total', 'identity', 'overrides', ...(linkerd ? [] : ['limits'])]);
  if (spec === undefined) return undefined;
  const service = target(c, spec.targetRef, linkerd);
  const total = spec.total === undefined ? undefined : bucket(c, spec.total, 'spec.total', 'requestsPerSecond', linkerd);
  const identity = spec.identity === undefined ? undefined : bucket(c, spec.identity, 'spec.identity', 'requestsPerSecond', linkerd);
  const overrides = c.list(spec.overrides, 'spec.overrides', 'a list of {requestsPerSecond, clientRefs}').flatMap((o, i) => {
    const p = `spec.overrides[${i}]`;
    const b = bucket(c, o, p, 'requestsPerSecond', linkerd, ['clientRefs']);
    const clients = clientRefs(c, (o as { clientRefs?: unknown } | null)?.clientRefs, `${p}.clientRefs`);
    if (clients.length === 0 && c.errors.length === 0) c.fail(`${p}.clientRefs`, 'is required: the service accounts this override is for');
    return b ? [{ bucket: b, clients }] : [];
  });
  const rawLimits = c.list(spec.limits, 'spec.limits', 'a list of keyed limits');
  if (rawLimits.length > MAX_LIMITS) c.fail('spec.limits', `has ${rawLimits.length} limits; at most ${MAX_LIMITS}`);
  const limits = rawLimits.slice(0, MAX_LIMITS).flatMap((l, i) => {
    const k = keyed(c, l, `spec.limits[${i}]`);
    return k ? [k] : [];
  });
  const names = new Set<string>();
  limits.forEach((l, i) => {
    if (names.has(l.name)) c.fail(`spec.limits[${i}].name`, `"${l.name}" is used twice; each limit needs its own name`);
    names.add(l.name);
  });
  if (total === undefined && identity === undefined && overrides.length === 0 && limits.length === 0 && c.errors.length === 0) {
    c.fail('spec', `limits nothing; give total, identity or overrides${linkerd ? '' : ', or limits'}`);
  }
  if (service === undefined) return undefined;
  return { kind: 'HTTPLocalRateLimitPolicy', name: m.name, namespace: m.namespace, service, total, identity, overrides, limits };
}

function keyed(c: Checker, v: unknown, path: string): KeyedLimit | undefined {
  const o = c.object(v, path, ['name', 'requestsPerSecond', 'connectionsPerSecond', 'burst', 'key', 'routes']);
  if (o === undefined) return undefined;
  const name = c.string(o.name, `${path}.name`, 'a name for the limit, shown in logs and records');
  if (o.requestsPerSecond !== undefined && o.connectionsPerSecond !== undefined) c.fail(path, 'give requestsPerSecond (HTTP and gRPC requests) or connectionsPerSecond (TCP connections), not both');
  const unit = o.connectionsPerSecond !== undefined ? 'connections' : 'requests';
  const rateField = unit === 'connections' ? 'connectionsPerSecond' : 'requestsPerSecond';
  const rate = positive(c, o[rateField], `${path}.${rateField}`, MAX_RATE);
  const burst = o.burst === undefined ? rate : positive(c, o.burst, `${path}.burst`, MAX_RATE);
  const key = c.list(o.key, `${path}.key`, 'a list of key parts').flatMap((k, i): LimitKeyPart[] => {
    const p = `${path}.key[${i}]`;
    if (typeof k === 'string' && (KEY_PARTS as readonly string[]).includes(k)) return [{ kind: k as (typeof KEY_PARTS)[number] }];
    const h = typeof k === 'string' ? HEADER_KEY.exec(k) : null;
    if (h) {
      const n = headerName(c, h[1], p);
      return n ? [{ kind: 'header', name: n.toLowerCase() }] : [];
    }
    c.fail(p, `must be one of: ${KEY_PARTS.join(', ')}, or request.headers[NAME]`);
    return [];
  });
  if (unit === 'connections') {
    key.forEach((k, i) => {
      if (k.kind === 'route' || k.kind === 'method' || k.kind === 'header') c.fail(`${path}.key[${i}]`, `${k.kind === 'header' ? 'a request header' : k.kind} is not known for a TCP connection; a connectionsPerSecond limit keys by sourcePrincipal, sourceNamespace and destinationService`);
    });
    if (o.routes !== undefined) c.fail(`${path}.routes`, 'routes are HTTP; a connectionsPerSecond limit counts every TCP connection');
  }
  const rawRoutes = c.list(o.routes, `${path}.routes`, 'a list of {name, path, method}');
  if (rawRoutes.length > MAX_ROUTES) c.fail(`${path}.routes`, `has ${rawRoutes.length} routes; at most ${MAX_ROUTES}`);
  const routes = rawRoutes.slice(0, MAX_ROUTES).flatMap((r, i) => {
    const x = route(c, r, `${path}.routes[${i}]`);
    return x ? [x] : [];
  });
  if (key.some((k) => k.kind === 'route') && routes.length === 0) c.fail(`${path}.key`, 'keys by route but the limit has no routes; name the routes in routes: [{name, path: {type, value}, method}]');
  if (name === undefined || rate === undefined || burst === undefined) return undefined;
  return { name, unit, bucket: { rate, burst }, key, routes };
}

function route(c: Checker, v: unknown, path: string): LimitRoute | undefined {
  const o = c.object(v, path, ['name', 'path', 'method']);
  if (o === undefined) return undefined;
  const name = c.string(o.name, `${path}.name`);
  const out: LimitRoute = { name: name ?? '' };
  const p = c.optionalObject(o.path, `${path}.path`, ['type', 'value']);
  if (p) {
    const type = c.oneOf(p.type, `${path}.path.type`, ['Exact', 'PathPrefix'] as const, 'PathPrefix');
    if (typeof p.value !== 'string' || !p.value.startsWith('/')) c.fail(`${path}.path.value`, 'must be a path starting with /');
    else out.path = { type, value: p.value };
  }
  if (o.method !== undefined) {
    if (typeof o.method !== 'string' || !METHOD.test(o.method)) c.fail(`${path}.method`, 'must be an HTTP method such as GET (gRPC calls are POST)');
    else out.method = o.method.toUpperCase();
  }
  if (o.path === undefined && o.method === undefined) c.fail(path, 'matches every request; give path or method (or drop routes to count every request)');
  return name === undefined ? undefined : out;
}

function quota(c: Checker, v: unknown, m: { name: string; namespace: string }): MeshQuotaPolicy | undefined {
  const spec = c.object(v, 'spec', ['targetRef', 'clientRefs', 'requests', 'window', 'failureMode', 'leaseTimeout']);
  if (spec === undefined) return undefined;
  const service = target(c, spec.targetRef, false);
  const clients = clientRefs(c, spec.clientRefs, 'spec.clientRefs');
  const requests = positive(c, spec.requests, 'spec.requests', MAX_QUOTA);
  let windowMs = c.duration(spec.window, 'spec.window', MIN_WINDOW_MS, 60_000);
  if (windowMs > MAX_WINDOW_MS) {
    c.fail('spec.window', 'must be at most 1h');
    windowMs = 60_000;
  }
  if (windowMs % 1000 !== 0) c.fail('spec.window', 'must be a whole number of seconds (windows are aligned to the second)');
  const failureMode = c.oneOf(spec.failureMode, 'spec.failureMode', ['Closed', 'Open'] as const, 'Closed');
  const leaseTimeoutMs = c.duration(spec.leaseTimeout, 'spec.leaseTimeout', windowMs, 3 * windowMs);
  if (service === undefined || requests === undefined) return undefined;
  return { kind: 'MeshQuota', name: m.name, namespace: m.namespace, service, clients, requests, windowMs, failureMode, leaseTimeoutMs };
}
