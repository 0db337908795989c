// HTTPRoute and GRPCRoute (gateway.networking.k8s.io/v1) as mesh users
// write them (GAMMA: parentRefs to a Service). Validation follows the API's
// own schema and CEL rules; what Kedge does not implement is refused with
// the reason and what to write instead, never ignored.
import type { Checker } from '../checker';
import {
  badPath, extensionRef, gatewayDuration, grpcStatus, headerModifier, mirrorFilter, namedMatches, parentRefs, redirectFilter, regex,
  rewriteFilter, serviceRef,
} from './common';
import type { BackendRefSpec, GrpcMatchSpec, HttpMatchSpec, MirrorSpec, RouteObject, RuleFiltersSpec, RuleSpec } from './model';
import type { HeaderModifier } from './types';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] as const;
const HTTP_FILTERS = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror', 'ExtensionRef'] as const;
const GRPC_FILTERS = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror', 'ExtensionRef'] as const;
/** Gateway API filter types Kedge refuses, with why. */
const REFUSED_FILTERS: Record<string, string> = {
  CORS: 'Kedge does not implement the CORS filter; answer CORS in the application',
  ExternalAuth: 'Kedge does not implement ExternalAuth; authorization comes with AuthorizationPolicy',
};
const SECTION_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Validates the spec of an HTTPRoute or GRPCRoute whose metadata is already read. */
export function routeSpec(c: Checker, kind: 'HTTPRoute' | 'GRPCRoute', spec: Record<string, unknown>, meta: { name: string; namespace: string; createdAt: string }): RouteObject {
  if (spec.hostnames !== undefined) {
    c.fail('spec.hostnames', 'has no meaning on a mesh route (GEP-1294 says mesh implementations must not infer anything from it); to match the Host header, use matches[].headers with name: host');
  }
  const parents = parentRefs(c, spec.parentRefs, meta.namespace);
  const rawRules = c.list(spec.rules, 'spec.rules', 'a list of rules');
  if (rawRules.length === 0) c.fail('spec.rules', 'is required: at least one rule with backendRefs');
  if (rawRules.length > 16) c.fail('spec.rules', `has ${rawRules.length} rules; at most 16 are allowed`);
  const names = new Set<string>();
  let totalMatches = 0;
  const rules: RuleSpec[] = [];
  rawRules.forEach((raw, i) => {
    const r = rule(c, kind, raw, `spec.rules[${i}]`, meta.namespace);
    if (r === undefined) return;
    if (r.name !== '') {
      if (names.has(r.name)) c.fail(`spec.rules[${i}].name`, `repeats rule name "${r.name}"; rule names are unique within a route`);
      names.add(r.name);
    }
    totalMatches += r.matches.length;
    rules.push(r);
  });
  if (totalMatches > 128) c.fail('spec.rules', `has ${totalMatches} matches in all; at most 128 are allowed in one route`);
  return { kind, namespace: meta.namespace, name: meta.name, createdAt: meta.createdAt, parents, rules };
}

function rule(c: Checker, kind: 'HTTPRoute' | 'GRPCRoute', raw: unknown, path: string, ns: string): RuleSpec | undefined {
  const http = kind === 'HTTPRoute';
  // timeouts and retry are HTTPRoute fields (retry from GEP-1731); on GRPCRoute they are a Kedge extension of the same shape.
  const o = c.object(raw, path, ['name', 'matches', 'filters', 'backendRefs', 'timeouts', 'retry', 'sessionPersistence']);
  if (o === undefined) return undefined;
  if (o.sessionPersistence !== undefined) c.fail(`${path}.sessionPersistence`, 'is not supported by Kedge; remove it (requests are balanced per request)');
  let name = '';
  if (o.name !== undefined) {
    if (typeof o.name !== 'string' || o.name.length > 253 || !SECTION_NAME.test(o.name)) c.fail(`${path}.name`, 'must be a lowercase DNS name such as canary');
    else name = o.name;
  }
  const matches = http ? httpMatches(c, o.matches, `${path}.matches`) : grpcMatches(c, o.matches, `${path}.matches`);
  // ReplacePrefixMatch needs exactly one PathPrefix match (the API's CEL rule).
  const only = http && matches.length === 1 ? (matches[0] as HttpMatchSpec).path : undefined;
  const prefix = only?.type === 'PathPrefix' ? only.value : undefined;
  const filters = ruleFilters(c, kind, o.filters, `${path}.filters`, ns, prefix);
  const backends = backendRefs(c, kind, o.backendRefs, `${path}.backendRefs`, ns);
  if (filters.redirect) {
    if (backends.length > 0) c.fail(`${path}.backendRefs`, 'must be empty with a RequestRedirect filter: a redirected request goes nowhere');
  } else if (o.backendRefs === undefined || (Array.isArray(o.backendRefs) && o.backendRefs.length === 0)) {
    c.fail(`${path}.backendRefs`, `is empty, so every request this rule matches would fail (the Gateway API answers ${http ? '500' : 'UNAVAILABLE'}); add backendRefs${http ? ', or a RequestRedirect filter' : ''}`);
  } else if (Array.isArray(o.backendRefs) && backends.length === o.backendRefs.length && backends.every((b) => b.weight === 0)) {
    c.fail(`${path}.backendRefs`, 'has every weight 0, so no request could be sent anywhere; give at least one backend a weight above 0');
  }
  return { name, matches, filters, backends, timeouts: timeouts(c, o.timeouts, `${path}.timeouts`), retry: retry(c, http, o.retry, `${path}.retry`) };
}

function httpMatches(c: Checker, v: unknown, path: string): HttpMatchSpec[] {
  const list = c.list(v, path, 'a list of matches');
  if (list.length > 64) c.fail(path, `has ${list.length} matches; at most 64 are allowed in a rule`);
  // The API's default: one PathPrefix match on "/".
  if (list.length === 0) return [{ path: { type: 'PathPrefix', value: '/' }, method: undefined, headers: [], queryParams: [] }];
  const out: HttpMatchSpec[] = [];
  list.forEach((raw, i) => {
    const p = `${path}[${i}]`;
    const o = c.object(raw, p, ['path', 'headers', 'queryParams', 'method']);
    if (o === undefined) return;
    let pm: HttpMatchSpec['path'] = { type: 'PathPrefix', value: '/' };
    const po = c.optionalObject(o.path, `${p}.path`, ['type', 'value']);
    if (po !== undefined) {
      const type = c.oneOf(po.type, `${p}.path.type`, ['Exact', 'PathPrefix', 'RegularExpression'] as const, 'PathPrefix');
      const value = po.value === undefined ? '/' : c.string(po.value, `${p}.path.value`);
      if (value !== undefined) {
        if (type === 'RegularExpression') {
          if (value.length > 1024) c.fail(`${p}.path.value`, 'must be at most 1024 characters');
          regex(c, value, `${p}.path.value`);
        } else {
          const why = badPath(value);
          if (why) c.fail(`${p}.path.value`, why);
        }
        pm = { type, value };
      }
    }
    let method: string | undefined;
    if (o.method !== undefined) {
      if (typeof o.method !== 'string' || !(METHODS as readonly string[]).includes(o.method)) c.fail(`${p}.method`, `must be one of: ${METHODS.join(', ')} (uppercase)`);
      else method = o.method;
    }
    out.push({ path: pm, method, headers: namedMatches(c, o.headers, `${p}.headers`, 'header'), queryParams: namedMatches(c, o.queryParams, `${p}.queryParams`, 'query parameter') });
  });
  return out;
}

const GRPC_SERVICE = /^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$/i;
const GRPC_METHOD = /^[A-Za-z_][A-Za-z_0-9]*$/;

function grpcMatches(c: Checker, v: unknown, path: string): GrpcMatchSpec[] {
  const list = c.list(v, path, 'a list of matches');
  if (list.length > 64) c.fail(path, `has ${list.length} matches; at most 64 are allowed in a rule`);
  // No matches: every gRPC request.
  if (list.length === 0) return [{ method: undefined, headers: [] }];
  const out: GrpcMatchSpec[] = [];
  list.forEach((raw, i) => {
    const p = `${path}[${i}]`;
    const o = c.object(raw, p, ['method', 'headers']);
    if (o === undefined) return;
    let method: GrpcMatchSpec['method'];
    const mo = c.optionalObject(o.method, `${p}.method`, ['type', 'service', 'method']);
    if (mo !== undefined) {
      const type = c.oneOf(mo.type, `${p}.method.type`, ['Exact', 'RegularExpression'] as const, 'Exact');
      const part = (key: 'service' | 'method', exact: RegExp, example: string): string | undefined => {
        const val = mo[key];
        if (val === undefined || val === '') return undefined;
        if (typeof val !== 'string' || val.length > 1024) {
          c.fail(`${p}.method.${key}`, 'must be a string of at most 1024 characters');
          return undefined;
        }
        if (type === 'Exact' && !exact.test(val)) c.fail(`${p}.method.${key}`, `must be a gRPC ${key} name such as ${example} (no "/")`);
        if (type === 'RegularExpression') regex(c, val, `${p}.method.${key}`);
        return val;
      };
      const service = part('service', GRPC_SERVICE, 'helloworld.Greeter');
      const m = part('method', GRPC_METHOD, 'SayHello');
      if (service === undefined && m === undefined) c.fail(`${p}.method`, 'needs service, method or both (the API requires one)');
      method = { type, service, method: m };
    }
    out.push({ method, headers: namedMatches(c, o.headers, `${p}.headers`, 'header') });
  });
  return out;
}

function ruleFilters(c: Checker, kind: 'HTTPRoute' | 'GRPCRoute', v: unknown, path: string, ns: string, prefix: string | undefined): RuleFiltersSpec {
  const allowed: readonly string[] = kind === 'HTTPRoute' ? HTTP_FILTERS : GRPC_FILTERS;
  const out: { -readonly [K in keyof RuleFiltersSpec]: RuleFiltersSpec[K] } = { requestHeaders: undefined, responseHeaders: undefined, redirect: undefined, rewrite: undefined, mirrors: [], faultRef: undefined };
  const mirrors: MirrorSpec[] = [];
  const list = c.list(v, path, 'a list of filters');
  if (list.length > 16) c.fail(path, 'has more than 16 filters');
  list.forEach((raw, i) => {
    const p = `${path}[${i}]`;
    const f = c.object(raw, p);
    if (f === undefined) return;
    const type = f.type;
    if (typeof type !== 'string' || !allowed.includes(type)) {
      const why = typeof type === 'string' ? REFUSED_FILTERS[type] : undefined;
      c.fail(`${p}.type`, why ?? `${type === undefined ? 'is required' : `${JSON.stringify(type)} is not a ${kind} filter Kedge supports`}; use one of: ${allowed.join(', ')}`);
      return;
    }
    const field = type.charAt(0).toLowerCase() + type.slice(1);
    const key = type === 'URLRewrite' ? 'urlRewrite' : field;
    for (const k of Object.keys(f)) {
      if (k !== 'type' && k !== key) c.fail(`${p}.${k}`, `does not belong to a filter of type ${type} (which takes ${key})`);
    }
    if (f[key] === undefined) {
      c.fail(`${p}.${key}`, `is required for type ${type}`);
      return;
    }
    const once = (what: string, taken: unknown): boolean => {
      if (taken !== undefined) c.fail(`${p}.type`, `repeats ${what}; the Gateway API allows one per rule`);
      return taken === undefined;
    };
    switch (type) {
      case 'RequestHeaderModifier':
        if (once(type, out.requestHeaders)) out.requestHeaders = headerModifier(c, f[key], `${p}.${key}`);
        break;
      case 'ResponseHeaderModifier':
        if (once(type, out.responseHeaders)) out.responseHeaders = headerModifier(c, f[key], `${p}.${key}`);
        break;
      case 'RequestRedirect':
        if (once(type, out.redirect)) out.redirect = redirectFilter(c, f[key], `${p}.${key}`, prefix);
        break;
      case 'URLRewrite':
        if (once(type, out.rewrite)) out.rewrite = rewriteFilter(c, f[key], `${p}.${key}`, prefix);
        break;
      case 'RequestMirror': {
        const m = mirrorFilter(c, f[key], `${p}.${key}`, ns);
        if (m) mirrors.push(m);
        break;
      }
      case 'ExtensionRef':
        if (out.faultRef !== undefined) c.fail(`${p}.type`, 'a rule takes one FaultInjection; put delay and abort in one resource');
        else out.faultRef = extensionRef(c, f[key], `${p}.${key}`, ns);
        break;
    }
  });
  if (out.redirect && out.rewrite) c.fail(path, 'has both RequestRedirect and URLRewrite; the Gateway API does not allow them together');
  out.mirrors = mirrors;
  return out;
}

function backendRefs(c: Checker, kind: 'HTTPRoute' | 'GRPCRoute', v: unknown, path: string, ns: string): BackendRefSpec[] {
  const list = c.list(v, path, 'a list of Service backends');
  if (list.length > 16) c.fail(path, 'has more than 16 backends');
  const out: BackendRefSpec[] = [];
  list.forEach((raw, i) => {
    const p = `${path}[${i}]`;
    const o = c.object(raw, p, ['group', 'kind', 'name', 'namespace', 'port', 'weight', 'filters']);
    if (o === undefined) return;
    const ref = serviceRef(c, o, p, ns);
    const weight = c.int(o.weight, `${p}.weight`, 1, 0, 1_000_000);
    let requestHeaders: HeaderModifier | undefined;
    let responseHeaders: HeaderModifier | undefined;
    c.list(o.filters, `${p}.filters`, 'a list of filters').forEach((rawF, j) => {
      const fp = `${p}.filters[${j}]`;
      const f = c.object(rawF, fp, ['type', 'requestHeaderModifier', 'responseHeaderModifier']);
      if (f === undefined) return;
      if (f.type === 'RequestHeaderModifier' && f.responseHeaderModifier === undefined) {
        if (requestHeaders) c.fail(`${fp}.type`, 'repeats RequestHeaderModifier');
        requestHeaders = headerModifier(c, f.requestHeaderModifier, `${fp}.requestHeaderModifier`);
      } else if (f.type === 'ResponseHeaderModifier' && f.requestHeaderModifier === undefined) {
        if (responseHeaders) c.fail(`${fp}.type`, 'repeats ResponseHeaderModifier');
        responseHeaders = headerModifier(c, f.responseHeaderModifier, `${fp}.responseHeaderModifier`);
      } else {
        c.fail(`${fp}.type`, `on a backend Kedge supports RequestHeaderModifier and ResponseHeaderModifier (each with its own field); put other filters on the rule (${kind} rule filters)`);
      }
    });
    if (ref) out.push({ ...ref, weight, requestHeaders, responseHeaders });
  });
  return out;
}

function timeouts(c: Checker, v: unknown, path: string): RuleSpec['timeouts'] {
  const o = c.optionalObject(v, path, ['request', 'backendRequest']);
  if (o === undefined) return { requestMs: undefined, backendRequestMs: undefined };
  const requestMs = gatewayDuration(c, o.request, `${path}.request`);
  const backendRequestMs = gatewayDuration(c, o.backendRequest, `${path}.backendRequest`);
  if (requestMs !== undefined && requestMs !== 0 && backendRequestMs !== undefined && backendRequestMs > requestMs) {
    c.fail(`${path}.backendRequest`, 'must not be longer than request (the request timeout covers every backend attempt)');
  }
  return { requestMs, backendRequestMs };
}

/** Envoy's base retry interval, used when a retry gives no backoff. */
const DEFAULT_BACKOFF_MS = 25;

function retry(c: Checker, http: boolean, v: unknown, path: string): RuleSpec['retry'] {
  const o = c.optionalObject(v, path, ['codes', 'attempts', 'backoff']);
  if (o === undefined) return undefined;
  const httpCodes: number[] = [];
  const grpcCodes: number[] = [];
  c.list(o.codes, `${path}.codes`, http ? 'a list of HTTP statuses such as [500, 503]' : 'a list of gRPC status names such as [UNAVAILABLE]').forEach((code, i) => {
    const p = `${path}.codes[${i}]`;
    if (http) {
      const n = c.int(code, p, undefined, 400, 599);
      if (typeof code === 'number' && Number.isInteger(code) && code >= 400 && code <= 599) {
        if (httpCodes.includes(n)) c.fail(p, `repeats ${n}`);
        httpCodes.push(n);
      }
    } else {
      const n = grpcStatus(c, code, p);
      if (n !== undefined) {
        if (grpcCodes.includes(n)) c.fail(p, `repeats ${String(code)}`);
        grpcCodes.push(n);
      }
    }
  });
  // Envoy's default num_retries when a retry is configured.
  const attempts = c.int(o.attempts, `${path}.attempts`, 1, 1, 10);
  const backoffMs = gatewayDuration(c, o.backoff, `${path}.backoff`) ?? DEFAULT_BACKOFF_MS;
  return { httpCodes, grpcCodes, attempts, backoffMs };
}
