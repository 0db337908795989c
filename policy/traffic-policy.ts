// Traffic policy: how one destination service's connections and requests
// are balanced, limited and ejected. Both the federation (on `kedge apply`)
// and the agent (on every push) validate it, so it lives here, outside both.
// Defaults live in one table; a policy document is checked field by field,
// and every problem is reported at once with its path in the document, e.g.
// `spec.outlierDetection.maxEjectionPercent: must be between 0 and 100`.
import { KedgeError } from '../proto/model/errors';
import { parseServiceKey, serviceKey } from '../proto/model/service';
import { deepFreeze } from '../proto/model/validate';
import { Checker, DNS_SUBDOMAIN } from './checker';

/** Envoy's default healthy panic threshold, in percent. */
export const DEFAULT_PANIC_THRESHOLD = 50;

/** Outlier detection settings; times in milliseconds. Each count of 0 disables that trigger. */
export interface OutlierConfig {
  /** Consecutive connect failures and resets that eject an endpoint; 0 disables this trigger. */
  consecutiveErrors: number;
  /** Consecutive 5xx responses (and gateway errors) that eject an endpoint; 0 disables it. */
  consecutive5xxErrors: number;
  /** Consecutive 502, 503, 504 responses or gRPC UNAVAILABLE that eject an endpoint; 0 disables it. */
  consecutiveGatewayErrors: number;
  /** How long an endpoint must stay in service to lower its ejection multiplier by one. */
  intervalMs: number;
  baseEjectionTimeMs: number;
  maxEjectionTimeMs: number;
  /** Largest share of endpoints ejected at once, 0–100; 0 disables ejection. */
  maxEjectionPercent: number;
}

/** One `distribute` rule: from the client's locality pattern, weights per destination locality pattern (in order). */
export interface DistributeRule {
  from: string;
  to: readonly { locality: string; weight: number }[];
}

/**
 * Circuit breaking per destination service, per client proxy (Envoy's
 * cluster circuit breakers). A request over a limit gets 503 at once with
 * response flag UO; 0 means no limit only for maxRequestsPerConnection.
 */
export interface CircuitBreakerConfig {
  /** Connections to all endpoints of the service together. */
  maxConnections: number;
  /** Requests waiting for a pooled connection. */
  maxPendingRequests: number;
  /** Requests in flight to the service. */
  maxRequests: number;
  /** Requests one pooled connection carries before it is closed; 0: unlimited. */
  maxRequestsPerConnection: number;
  /** Retries in flight to the service. */
  maxRetries: number;
}

/** Retries as a share of active requests (Linkerd's and Envoy's retry budget). */
export interface RetryBudgetConfig {
  /** Retries allowed as a percentage of requests in flight, 0–100. */
  percent: number;
  /** Retries per second allowed whatever the share, so a quiet service can still retry. */
  minRetriesPerSecond: number;
}

/** How an endpoint is chosen within a priority. */
export type LoadBalancerKind = 'least-request' | 'round-robin';

/** Locality-aware routing settings. */
export interface LocalityPolicy {
  /** Off: every endpoint is priority 0, locality plays no part. */
  enabled: boolean;
  /** Explicit failover order (Istio's failoverPriority); empty means the default region/zone/subzone match. */
  failoverPriority: readonly string[];
  /** Locality weights (Istio's distribute); replaces failover priorities for clients a rule matches. */
  distribute: readonly DistributeRule[];
}

/** The balancing policy of one service, fully resolved. */
export interface TrafficPolicy {
  loadBalancer: LoadBalancerKind;
  locality: LocalityPolicy;
  outlierDetection: OutlierConfig;
  /** Per-attempt TCP + TLS setup limit; undefined means the agent's `proxy.connectTimeout`. */
  connectTimeoutMs: number | undefined;
  /** Envoy's healthy panic threshold, percent. */
  panicThreshold: number;
  circuitBreaker: CircuitBreakerConfig;
  retryBudget: RetryBudgetConfig;
  /** A pooled connection between proxies idle this long is closed. */
  poolIdleTimeoutMs: number;
}

/**
 * The defaults, in one place. Why these numbers (docs/load-balancing.md has
 * the long form):
 * - consecutiveErrors 3: the proxy sees only connect failures and resets,
 *   which say far more about an endpoint than an HTTP 5xx does (Istio's 5
 *   counts 5xx), and every failed connect is retried at once elsewhere, so a
 *   low count costs nothing visible while a dead endpoint stops costing
 *   retries after three attempts;
 * - baseEjectionTime 10s (Envoy and Istio: 30s): a wrongly ejected endpoint
 *   is back sooner, a really dead one is re-ejected for 20 s, 30 s, ... up to
 *   maxEjectionTime 300 s (Envoy's cap);
 * - maxEjectionPercent 100 (Envoy and Istio: 10): with 10% a dead zone can
 *   never be ejected as a whole, so locality failover would never happen on
 *   passive detection alone; the panic threshold is the safety net instead;
 * - interval 10s: Envoy's; here it only paces the multiplier's decay;
 * - consecutive5xxErrors 5 (Envoy's and Istio's); consecutiveGatewayErrors
 *   0, off (Istio's default; Envoy counts them but does not enforce): a 5xx
 *   run already includes gateway errors;
 * - circuit breaker limits 1024 (Envoy's maxConnections, maxPendingRequests
 *   and maxRequests). maxRetries is 1024 too, not Envoy's 3: the retry
 *   budget is what limits retries here, as when Envoy has a retry budget;
 *   maxRequestsPerConnection 0, unlimited (Envoy's);
 * - retry budget 20% with 10 retries per second minimum (Linkerd's
 *   retryRatio 0.2 and minRetriesPerSecond 10; Envoy's budget_percent 20);
 * - poolIdleTimeout 60s: long enough that a steady client keeps warm mTLS
 *   connections between bursts, short enough that idle pools to endpoints
 *   no longer used are gone within a minute.
 */
export const TRAFFIC_POLICY_DEFAULTS: TrafficPolicy = deepFreeze({
  loadBalancer: 'least-request',
  locality: { enabled: true, failoverPriority: [], distribute: [] },
  outlierDetection: {
    consecutiveErrors: 3,
    consecutive5xxErrors: 5,
    consecutiveGatewayErrors: 0,
    intervalMs: 10_000,
    baseEjectionTimeMs: 10_000,
    maxEjectionTimeMs: 300_000,
    maxEjectionPercent: 100,
  },
  connectTimeoutMs: undefined,
  panicThreshold: DEFAULT_PANIC_THRESHOLD,
  circuitBreaker: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRequestsPerConnection: 0, maxRetries: 1024 },
  retryBudget: { percent: 20, minRetriesPerSecond: 10 },
  poolIdleTimeoutMs: 60_000,
} satisfies TrafficPolicy);

/** A validated policy document: the service it applies to and its resolved policy. */
export interface TrafficPolicyObject {
  name: string;
  /** name.namespace */
  service: string;
  policy: TrafficPolicy;
}

/** The outcome of validateTrafficPolicy: the object, or every error found. */
export type TrafficPolicyValidation = { ok: true; value: TrafficPolicyObject } | { ok: false; errors: string[] };

/** Checks beyond the document itself. */
export interface ValidateOptions {
  /** Whether a service (name.namespace) exists; unknown services are an error when given. */
  serviceExists?: (key: string) => boolean;
}

const LB_KINDS: readonly LoadBalancerKind[] = ['least-request', 'round-robin'];

/**
 * Validates a parsed policy document:
 *
 *     kind: TrafficPolicy
 *     metadata: { name: reviews }          # optional, defaults to the service
 *     spec:
 *       service: reviews.default
 *       loadBalancer: least-request        # or round-robin
 *       connectTimeout: 1s
 *       panicThreshold: 50
 *       locality: { enabled: true, failoverPriority: [network, region, zone], distribute: [...] }
 *       outlierDetection: { consecutiveErrors: 3, consecutive5xxErrors: 5, consecutiveGatewayErrors: 0,
 *                           interval: 10s, baseEjectionTime: 10s, maxEjectionTime: 300s, maxEjectionPercent: 100 }
 *       circuitBreaker: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024,
 *                         maxRequestsPerConnection: 0, maxRetries: 1024 }
 *       retryBudget: { percent: 20, minRetriesPerSecond: 10 }
 *       poolIdleTimeout: 60s
 *
 * Every duration needs a unit; a bare number is an error.
 * Returns every error, each naming its path.
 */
export function validateTrafficPolicy(doc: unknown, opts: ValidateOptions = {}): TrafficPolicyValidation {
  const c = new Checker();
  const top = c.object(doc, '', ['kind', 'metadata', 'spec']);
  if (top === undefined) return { ok: false, errors: c.errors };
  if (top.kind !== 'TrafficPolicy') c.fail('kind', top.kind === undefined ? 'is required; write kind: TrafficPolicy' : `must be TrafficPolicy, not ${JSON.stringify(top.kind)}`);
  const meta = top.metadata === undefined ? {} : c.object(top.metadata, 'metadata', ['name']);
  const spec = c.object(top.spec, 'spec', ['service', 'loadBalancer', 'connectTimeout', 'panicThreshold', 'locality', 'outlierDetection', 'circuitBreaker', 'retryBudget', 'poolIdleTimeout']);
  if (spec === undefined) return { ok: false, errors: c.errors };

  let service = '';
  if (typeof spec.service !== 'string' || spec.service === '') c.fail('spec.service', 'is required: the service as name.namespace, for example reviews.default');
  else {
    try {
      service = serviceKey(parseServiceKey(spec.service));
      if (opts.serviceExists && !opts.serviceExists(service)) c.fail('spec.service', `no service ${service} is known to the federation; check its name and namespace`);
    } catch (err) {
      c.fail('spec.service', err instanceof KedgeError ? err.message : String(err));
    }
  }
  let name = service;
  if (meta?.name !== undefined) {
    if (typeof meta.name !== 'string' || !DNS_SUBDOMAIN.test(meta.name)) c.fail('metadata.name', 'must be a lowercase DNS name');
    else name = meta.name;
  }

  const d = TRAFFIC_POLICY_DEFAULTS;
  const loadBalancer = c.oneOf(spec.loadBalancer, 'spec.loadBalancer', LB_KINDS, d.loadBalancer);
  const connectTimeoutMs = spec.connectTimeout === undefined ? d.connectTimeoutMs : c.duration(spec.connectTimeout, 'spec.connectTimeout', 1, 0);
  const panicThreshold = c.int(spec.panicThreshold, 'spec.panicThreshold', d.panicThreshold, 0, 100);
  const locality = localityPolicy(c, spec.locality, 'spec.locality');
  const outlierDetection = outlierPolicy(c, spec.outlierDetection, 'spec.outlierDetection');
  const circuitBreaker = circuitBreakerPolicy(c, spec.circuitBreaker, 'spec.circuitBreaker');
  const retryBudget = retryBudgetPolicy(c, spec.retryBudget, 'spec.retryBudget');
  const poolIdleTimeoutMs = c.duration(spec.poolIdleTimeout, 'spec.poolIdleTimeout', 1, d.poolIdleTimeoutMs);

  if (c.errors.length > 0) return { ok: false, errors: c.errors };
  const policy: TrafficPolicy = { loadBalancer, locality, outlierDetection, connectTimeoutMs, panicThreshold, circuitBreaker, retryBudget, poolIdleTimeoutMs };
  return { ok: true, value: deepFreeze({ name, service, policy }) };
}

/** validateTrafficPolicy for callers that want an exception: KEDGE_BAD_POLICY listing every error, prefixed with `file`. */
export function parseTrafficPolicy(doc: unknown, file: string, opts: ValidateOptions = {}): TrafficPolicyObject {
  const r = validateTrafficPolicy(doc, opts);
  if (r.ok) return r.value;
  throw new KedgeError('KEDGE_BAD_POLICY', r.errors.map((e) => `${file}: ${e}`).join('\n'));
}

function localityPolicy(c: Checker, v: unknown, path: string): LocalityPolicy {
  const d = TRAFFIC_POLICY_DEFAULTS.locality;
  if (v === undefined || v === null) return d;
  const o = c.object(v, path, ['enabled', 'failoverPriority', 'distribute']);
  if (o === undefined) return d;
  const enabled = c.bool(o.enabled, `${path}.enabled`, d.enabled);
  const failoverPriority = failoverOrder(c, o.failoverPriority, `${path}.failoverPriority`);
  const distribute = distributeRules(c, o.distribute, `${path}.distribute`);
  if (!enabled && (failoverPriority.length > 0 || distribute.length > 0)) {
    c.fail(`${path}.enabled`, 'is false, so failoverPriority and distribute would be ignored; remove them or enable locality');
  }
  if (failoverPriority.length > 0 && distribute.length > 0) {
    c.fail(`${path}.distribute`, 'cannot be combined with failoverPriority: distribute replaces failover priorities for the clients it matches (as in Istio); keep one');
  }
  return { enabled, failoverPriority, distribute };
}

function failoverOrder(c: Checker, v: unknown, path: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    c.fail(path, 'must be a list of keys such as [network, region, zone] or label names');
    return [];
  }
  const keys = new Set<string>();
  const out: string[] = [];
  v.forEach((entry: unknown, i) => {
    const p = `${path}[${i}]`;
    if (typeof entry !== 'string' || entry === '' || /\s/.test(entry)) return c.fail(p, 'must be a key (network, region, zone, subzone or a label name), optionally key=value');
    const [key = '', value, extra] = entry.split('=');
    if (key === '' || value === '' || extra !== undefined) return c.fail(p, `"${entry}" is not key or key=value`);
    if (keys.has(key)) return c.fail(p, `repeats key "${key}"; each key can appear once`);
    keys.add(key);
    out.push(entry);
  });
  return out;
}

// region[/zone[/subzone]]; `*` may stand for a whole part, the last one only.
function isLocalityPattern(s: string): boolean {
  const parts = s.split('/');
  if (parts.length > 3) return false;
  return parts.every((p, i) => p !== '' && !/\s/.test(p) && (p === '*' ? i === parts.length - 1 : !p.includes('*')));
}

function distributeRules(c: Checker, v: unknown, path: string): DistributeRule[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    c.fail(path, 'must be a list of {from, to} rules');
    return [];
  }
  const froms = new Set<string>();
  const out: DistributeRule[] = [];
  v.forEach((raw: unknown, i) => {
    const p = `${path}[${i}]`;
    const r = c.object(raw, p, ['from', 'to']);
    if (r === undefined) return;
    const from = localityPattern(c, r.from, `${p}.from`);
    if (from !== undefined) {
      if (froms.has(from)) c.fail(`${p}.from`, `repeats "${from}"; only the first rule for a locality is used`);
      froms.add(from);
    }
    const to = c.object(r.to, `${p}.to`);
    if (to === undefined) return;
    const weights: { locality: string; weight: number }[] = [];
    const before = c.errors.length;
    for (const [pattern, w] of Object.entries(to)) {
      const pp = `${p}.to["${pattern}"]`;
      if (localityPattern(c, pattern, pp) === undefined) continue;
      weights.push({ locality: pattern, weight: c.int(w, pp, undefined, 1, 100) });
    }
    const sum = weights.reduce((a, w) => a + w.weight, 0);
    if (Object.keys(to).length === 0) c.fail(`${p}.to`, 'must name at least one locality');
    // A sum over entries already reported would only repeat the error.
    else if (c.errors.length === before && sum !== 100) c.fail(`${p}.to`, `weights must add up to 100, not ${sum}`);
    if (from !== undefined) out.push({ from, to: weights });
  });
  return out;
}

function outlierPolicy(c: Checker, v: unknown, path: string): OutlierConfig {
  const d = TRAFFIC_POLICY_DEFAULTS.outlierDetection;
  if (v === undefined || v === null) return d;
  const o = c.object(v, path, ['consecutiveErrors', 'consecutive5xxErrors', 'consecutiveGatewayErrors', 'interval', 'baseEjectionTime', 'maxEjectionTime', 'maxEjectionPercent']);
  if (o === undefined) return d;
  const base = c.duration(o.baseEjectionTime, `${path}.baseEjectionTime`, 1, d.baseEjectionTimeMs);
  const max = c.duration(o.maxEjectionTime, `${path}.maxEjectionTime`, 1, Math.max(d.maxEjectionTimeMs, base));
  if (max < base) c.fail(`${path}.maxEjectionTime`, `must not be shorter than baseEjectionTime (${base} ms)`);
  return {
    consecutiveErrors: c.int(o.consecutiveErrors, `${path}.consecutiveErrors`, d.consecutiveErrors, 0, 1000),
    consecutive5xxErrors: c.int(o.consecutive5xxErrors, `${path}.consecutive5xxErrors`, d.consecutive5xxErrors, 0, 1000),
    consecutiveGatewayErrors: c.int(o.consecutiveGatewayErrors, `${path}.consecutiveGatewayErrors`, d.consecutiveGatewayErrors, 0, 1000),
    intervalMs: c.duration(o.interval, `${path}.interval`, 1, d.intervalMs),
    baseEjectionTimeMs: base,
    maxEjectionTimeMs: max,
    maxEjectionPercent: c.int(o.maxEjectionPercent, `${path}.maxEjectionPercent`, d.maxEjectionPercent, 0, 100),
  };
}

function circuitBreakerPolicy(c: Checker, v: unknown, path: string): CircuitBreakerConfig {
  const d = TRAFFIC_POLICY_DEFAULTS.circuitBreaker;
  const o = c.optionalObject(v, path, ['maxConnections', 'maxPendingRequests', 'maxRequests', 'maxRequestsPerConnection', 'maxRetries']);
  if (o === undefined) return d;
  const limit = (k: keyof CircuitBreakerConfig, min: number): number => c.int(o[k], `${path}.${k}`, d[k], min, 1_000_000);
  return {
    maxConnections: limit('maxConnections', 1),
    maxPendingRequests: limit('maxPendingRequests', 1),
    maxRequests: limit('maxRequests', 1),
    maxRequestsPerConnection: limit('maxRequestsPerConnection', 0),
    // 0 turns retries off for the service.
    maxRetries: limit('maxRetries', 0),
  };
}

function retryBudgetPolicy(c: Checker, v: unknown, path: string): RetryBudgetConfig {
  const d = TRAFFIC_POLICY_DEFAULTS.retryBudget;
  const o = c.optionalObject(v, path, ['percent', 'minRetriesPerSecond']);
  if (o === undefined) return d;
  return {
    percent: c.int(o.percent, `${path}.percent`, d.percent, 0, 100),
    minRetriesPerSecond: c.int(o.minRetriesPerSecond, `${path}.minRetriesPerSecond`, d.minRetriesPerSecond, 0, 1_000_000),
  };
}

function localityPattern(c: Checker, v: unknown, path: string): string | undefined {
  if (typeof v !== 'string' || !isLocalityPattern(v)) {
    c.fail(path, 'must be a locality region[/zone[/subzone]], where the last part may be *, for example us-east/* or us-east/us-east-1a');
    return undefined;
  }
  return v;
}
