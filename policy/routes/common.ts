// Field checks shared by HTTPRoute, GRPCRoute and FaultInjection: the
// Gateway API's own validation (its OpenAPI patterns and CEL rules, read from
// apis/v1/*_types.go), plus Kedge's refusals of what it does not implement.
// Every check reports through the Checker, naming the path.
import { Checker, DNS_LABEL } from '../checker';
import type { HeaderModifier, PathModifier, RedirectFilter, RewriteFilter } from './types';
import type { MirrorSpec, NamedMatch, ParentRefSpec } from './model';
import { KEDGE_API_GROUP } from './model';

/** GEP-2257 Duration: 1–4 components of 1–5 digits with h, m, s or ms. */
const GEP_2257 = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const DURATION_PART = /([0-9]{1,5})(h|ms|m|s)/g;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/** A Gateway API Duration (GEP-2257) in milliseconds; undefined when absent or invalid. */
export function gatewayDuration(c: Checker, v: unknown, path: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number') {
    c.fail(path, `a bare number has no unit; write "${v}s" or "${v}ms" (a Gateway API duration, GEP-2257)`);
    return undefined;
  }
  if (typeof v !== 'string' || !GEP_2257.test(v)) {
    c.fail(path, 'must be a Gateway API duration (GEP-2257): 1 to 4 parts of up to 5 digits with h, m, s or ms, such as 500ms, 10s or 1m30s');
    return undefined;
  }
  let ms = 0;
  for (const m of v.matchAll(DURATION_PART)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms;
}

// Constructs RE2 (Envoy, Istio) has no equivalent for, refused so a route
// means the same on every mesh and cannot backtrack on a lookaround.
const NON_RE2 = /\(\?<?[=!]|\\[1-9]|\\k</;

/**
 * A regular expression, compiled to match the whole value (as Envoy's
 * safe_regex does): ECMAScript syntax without lookarounds or backreferences.
 */
export function regex(c: Checker, v: string, path: string): RegExp | undefined {
  if (NON_RE2.test(v)) {
    c.fail(path, `"${v}" uses a lookaround or backreference; Kedge takes the RE2-compatible subset of ECMAScript regular expressions`);
    return undefined;
  }
  try {
    return new RegExp(`^(?:${v})$`);
  } catch (err) {
    c.fail(path, `is not a valid regular expression: ${(err as Error).message}`);
    return undefined;
  }
}

/** metadata of a route document: name and namespace (default "default"); labels, annotations and creationTimestamp are accepted. */
export function metadata(c: Checker, v: unknown): { name: string; namespace: string; createdAt: string } {
  const m = c.object(v, 'metadata', ['name', 'namespace', 'labels', 'annotations', 'creationTimestamp']);
  let name = '';
  let namespace = 'default';
  let createdAt = '';
  if (m === undefined) return { name, namespace, createdAt };
  if (typeof m.name !== 'string' || !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(m.name)) c.fail('metadata.name', 'is required: a lowercase DNS name such as reviews-canary');
  else name = m.name;
  if (m.namespace !== undefined) {
    if (typeof m.namespace !== 'string' || !DNS_LABEL.test(m.namespace)) c.fail('metadata.namespace', 'must be a Kubernetes namespace name (lowercase DNS label)');
    else namespace = m.namespace;
  }
  if (m.creationTimestamp !== undefined) {
    if (typeof m.creationTimestamp !== 'string' || Number.isNaN(Date.parse(m.creationTimestamp))) c.fail('metadata.creationTimestamp', 'must be an RFC 3339 time');
    else createdAt = new Date(m.creationTimestamp).toISOString();
  }
  return { name, namespace, createdAt };
}

const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const HEADER_VALUE = /^[!-~]+([\t ]?[!-~]+)*$/;

export function headerName(c: Checker, v: unknown, path: string): string | undefined {
  if (typeof v !== 'string' || v.length > 256 || !HEADER_NAME.test(v)) {
    c.fail(path, v === undefined ? 'is required: a header name such as x-canary' : 'must be an HTTP header name (RFC 9110 token characters, no pseudo-headers such as :path)');
    return undefined;
  }
  return v;
}

function headerValue(c: Checker, v: unknown, path: string): string | undefined {
  if (typeof v !== 'string' || v.length < 1 || v.length > 4096 || !HEADER_VALUE.test(v)) {
    c.fail(path, v === undefined ? 'is required' : 'must be 1 to 4096 printable ASCII characters, separated by single spaces or tabs');
    return undefined;
  }
  return v;
}

/**
 * Header (or query parameter) matches: names unique (case-insensitively for
 * headers: the API says later repeats are ignored, Kedge refuses them so
 * nothing written is ignored), at most 16.
 */
export function namedMatches(c: Checker, v: unknown, path: string, what: 'header' | 'query parameter'): NamedMatch[] {
  const list = c.list(v, path, `a list of {name, value} ${what} matches`);
  if (list.length > 16) c.fail(path, `has ${list.length} entries; at most 16 are allowed`);
  const seen = new Set<string>();
  const out: NamedMatch[] = [];
  list.forEach((raw, i) => {
    const p = `${path}[${i}]`;
    const o = c.object(raw, p, ['type', 'name', 'value']);
    if (o === undefined) return;
    const type = c.oneOf(o.type, `${p}.type`, ['Exact', 'RegularExpression'] as const, 'Exact');
    let name = headerName(c, o.name, `${p}.name`);
    if (name !== undefined && what === 'header') name = name.toLowerCase();
    if (name !== undefined) {
      if (seen.has(name)) c.fail(`${p}.name`, `repeats ${what} "${name}"; the Gateway API would ignore this entry, so remove it or merge it into the first`);
      seen.add(name);
    }
    let value: string | undefined;
    if (type === 'RegularExpression') {
      value = c.string(o.value, `${p}.value`, 'a regular expression');
      if (value !== undefined && regex(c, value, `${p}.value`) === undefined) value = undefined;
    } else value = what === 'header' ? headerValue(c, o.value, `${p}.value`) : c.string(o.value, `${p}.value`);
    if (value !== undefined && value.length > (what === 'header' ? 4096 : 1024)) c.fail(`${p}.value`, 'is too long');
    if (name !== undefined && value !== undefined) out.push({ type, name, value });
  });
  return out;
}

/** RequestHeaderModifier / ResponseHeaderModifier: set, add, remove; one action per header name. */
export function headerModifier(c: Checker, v: unknown, path: string): HeaderModifier | undefined {
  const o = c.object(v, path, ['set', 'add', 'remove']);
  if (o === undefined) return undefined;
  const seen = new Set<string>();
  const claim = (name: string, p: string): boolean => {
    const lower = name.toLowerCase();
    if (seen.has(lower)) {
      c.fail(p, `header "${lower}" already has an action in this filter; the Gateway API allows one action per header name`);
      return false;
    }
    seen.add(lower);
    return true;
  };
  const pairs = (key: 'set' | 'add'): { name: string; value: string }[] => {
    const out: { name: string; value: string }[] = [];
    const list = c.list(o[key], `${path}.${key}`, 'a list of {name, value}');
    if (list.length > 16) c.fail(`${path}.${key}`, 'has more than 16 entries');
    list.forEach((raw, i) => {
      const p = `${path}.${key}[${i}]`;
      const h = c.object(raw, p, ['name', 'value']);
      if (h === undefined) return;
      const name = headerName(c, h.name, `${p}.name`);
      const value = headerValue(c, h.value, `${p}.value`);
      if (name !== undefined && claim(name, `${p}.name`) && value !== undefined) out.push({ name: name.toLowerCase(), value });
    });
    return out;
  };
  const set = pairs('set');
  const add = pairs('add');
  const remove: string[] = [];
  const list = c.list(o.remove, `${path}.remove`, 'a list of header names');
  if (list.length > 16) c.fail(`${path}.remove`, 'has more than 16 entries');
  list.forEach((raw, i) => {
    const name = headerName(c, raw, `${path}.remove[${i}]`);
    if (name !== undefined && claim(name, `${path}.remove[${i}]`)) remove.push(name.toLowerCase());
  });
  if (set.length + add.length + remove.length === 0 && c.errors.length === 0) c.fail(path, 'changes nothing; give set, add or remove, or drop the filter');
  return { set, add, remove };
}

const PRECISE_HOSTNAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function preciseHostname(c: Checker, v: unknown, path: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length > 253 || !PRECISE_HOSTNAME.test(v)) {
    c.fail(path, 'must be a lowercase DNS hostname without a wildcard or port, such as reviews.default.svc.cluster.local');
    return undefined;
  }
  return v;
}

const PATH_CHARS = /^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$/;

/** Why an Exact/PathPrefix path value (or a rewrite target) is invalid, or undefined (the API's CEL rules). */
export function badPath(v: string): string | undefined {
  if (!v.startsWith('/')) return 'must be an absolute path starting with /';
  if (v.length > 1024) return 'must be at most 1024 characters';
  for (const bad of ['//', '/./', '/../', '%2f', '%2F', '#']) if (v.includes(bad)) return `must not contain "${bad}"`;
  if (v.endsWith('/..') || v.endsWith('/.')) return 'must not end with /. or /..';
  if (!PATH_CHARS.test(v)) return "must only contain the characters A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , ; = : @ / and %XX escapes";
  return undefined;
}

/** A path modifier; ReplacePrefixMatch needs the rule's single PathPrefix match (passed as `prefix`). */
function pathModifier(c: Checker, v: unknown, path: string, prefix: string | undefined): PathModifier | undefined {
  const o = c.optionalObject(v, path, ['type', 'replaceFullPath', 'replacePrefixMatch']);
  if (o === undefined) return undefined;
  if (o.type === 'ReplaceFullPath') {
    if (o.replacePrefixMatch !== undefined) c.fail(`${path}.replacePrefixMatch`, 'is only for type ReplacePrefixMatch');
    const full = c.string(o.replaceFullPath, `${path}.replaceFullPath`, 'the new path, such as /v2/reviews');
    const why = full === undefined ? undefined : badPath(full);
    if (why) c.fail(`${path}.replaceFullPath`, why);
    return full === undefined || why ? undefined : { type: 'ReplaceFullPath', replaceFullPath: full };
  }
  if (o.type === 'ReplacePrefixMatch') {
    if (o.replaceFullPath !== undefined) c.fail(`${path}.replaceFullPath`, 'is only for type ReplaceFullPath');
    const repl = o.replacePrefixMatch ?? '';
    if (typeof repl !== 'string' || (repl !== '' && badPath(repl))) {
      c.fail(`${path}.replacePrefixMatch`, `must be a path starting with / (or empty): ${typeof repl === 'string' ? badPath(repl) : 'not a string'}`);
      return undefined;
    }
    if (prefix === undefined) {
      c.fail(`${path}.type`, 'ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix (the prefix it replaces)');
      return undefined;
    }
    return { type: 'ReplacePrefixMatch', replacePrefixMatch: repl, prefix: prefix.endsWith('/') ? prefix.slice(0, -1) : prefix };
  }
  c.fail(`${path}.type`, 'must be ReplaceFullPath or ReplacePrefixMatch');
  return undefined;
}

export function redirectFilter(c: Checker, v: unknown, path: string, prefix: string | undefined): RedirectFilter | undefined {
  const o = c.object(v, path, ['scheme', 'hostname', 'path', 'port', 'statusCode']);
  if (o === undefined) return undefined;
  const scheme = o.scheme === undefined ? undefined : c.oneOf(o.scheme, `${path}.scheme`, ['http', 'https'] as const, 'http');
  const statusCode = c.int(o.statusCode, `${path}.statusCode`, 302, 301, 308);
  if (![301, 302, 303, 307, 308].includes(statusCode)) c.fail(`${path}.statusCode`, 'must be one of 301, 302, 303, 307, 308');
  return {
    scheme,
    hostname: preciseHostname(c, o.hostname, `${path}.hostname`),
    path: pathModifier(c, o.path, `${path}.path`, prefix),
    port: o.port === undefined ? undefined : c.int(o.port, `${path}.port`, undefined, 1, 65535),
    statusCode: statusCode as RedirectFilter['statusCode'],
  };
}

export function rewriteFilter(c: Checker, v: unknown, path: string, prefix: string | undefined): RewriteFilter | undefined {
  const o = c.object(v, path, ['hostname', 'path']);
  if (o === undefined) return undefined;
  const r = { hostname: preciseHostname(c, o.hostname, `${path}.hostname`), path: pathModifier(c, o.path, `${path}.path`, prefix) };
  if (o.hostname === undefined && o.path === undefined) c.fail(path, 'changes nothing; give hostname or path');
  return r;
}

/**
 * A reference to a Service port (backendRef, RequestMirror backendRef):
 * group "" and kind Service (the defaults), name, namespace (default: the
 * route's), port (required, as the API's CEL rule says for Services).
 */
export function serviceRef(c: Checker, o: Record<string, unknown>, path: string, routeNamespace: string): { service: string; port: number } | undefined {
  if (o.group !== undefined && o.group !== '') c.fail(`${path}.group`, `must be "" (the core group of Service), not ${JSON.stringify(o.group)}; Kedge routes to Services only`);
  if (o.kind !== undefined && o.kind !== 'Service') c.fail(`${path}.kind`, `must be Service, not ${JSON.stringify(o.kind)}; Kedge routes to Services only (ServiceImport is not supported: a Kedge service already spans clusters)`);
  const name = typeof o.name === 'string' && DNS_LABEL.test(o.name) ? o.name : undefined;
  if (name === undefined) c.fail(`${path}.name`, 'is required: the name of a Service (lowercase DNS label)');
  let namespace = routeNamespace;
  if (o.namespace !== undefined) {
    if (typeof o.namespace !== 'string' || !DNS_LABEL.test(o.namespace)) c.fail(`${path}.namespace`, 'must be a Kubernetes namespace name');
    else namespace = o.namespace;
  }
  if (o.port === undefined) {
    c.fail(`${path}.port`, 'is required for a Service: the service port (not the target port), such as 8080');
    return undefined;
  }
  const port = c.int(o.port, `${path}.port`, undefined, 1, 65535);
  return name === undefined ? undefined : { service: `${name}.${namespace}`, port };
}

export function mirrorFilter(c: Checker, v: unknown, path: string, routeNamespace: string): MirrorSpec | undefined {
  const o = c.object(v, path, ['backendRef', 'percent', 'fraction']);
  if (o === undefined) return undefined;
  const ref = c.object(o.backendRef, `${path}.backendRef`, ['group', 'kind', 'name', 'namespace', 'port']);
  const target = ref === undefined ? undefined : serviceRef(c, ref, `${path}.backendRef`, routeNamespace);
  let fraction = 1;
  if (o.percent !== undefined && o.fraction !== undefined) c.fail(path, 'give percent or fraction, not both');
  else if (o.percent !== undefined) fraction = c.int(o.percent, `${path}.percent`, 100, 0, 100) / 100;
  else if (o.fraction !== undefined) {
    const f = c.object(o.fraction, `${path}.fraction`, ['numerator', 'denominator']);
    if (f !== undefined) {
      const den = c.int(f.denominator, `${path}.fraction.denominator`, 100, 1, 2_147_483_647);
      const num = c.int(f.numerator, `${path}.fraction.numerator`, undefined, 0, 2_147_483_647);
      if (num > den) c.fail(`${path}.fraction`, 'numerator must not be greater than denominator');
      fraction = Math.min(1, num / den);
    }
  }
  return target === undefined ? undefined : { ...target, fraction };
}

/** An ExtensionRef: Kedge knows one extension, FaultInjection in group kedge.io, in the route's namespace. */
export function extensionRef(c: Checker, v: unknown, path: string, routeNamespace: string): string | undefined {
  const o = c.object(v, path, ['group', 'kind', 'name']);
  if (o === undefined) return undefined;
  if (o.group !== KEDGE_API_GROUP || o.kind !== 'FaultInjection') {
    c.fail(path, `refers to ${JSON.stringify(o.group ?? '')}/${JSON.stringify(o.kind ?? '')}; the only extension Kedge knows is group: ${KEDGE_API_GROUP}, kind: FaultInjection`);
    return undefined;
  }
  if (typeof o.name !== 'string' || !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(o.name)) {
    c.fail(`${path}.name`, 'is required: the name of a FaultInjection in the route\'s namespace');
    return undefined;
  }
  return `${routeNamespace}/${o.name}`;
}

/**
 * parentRefs: each a Service (group "", kind Service) with name, optional
 * namespace (the route's by default), port and sectionName (the port's name).
 */
export function parentRefs(c: Checker, v: unknown, routeNamespace: string): ParentRefSpec[] {
  if (v === undefined || v === null || (Array.isArray(v) && v.length === 0)) {
    c.fail('spec.parentRefs', 'is required: the Service the route applies to, as [{ group: "", kind: Service, name: reviews, port: 9080 }]');
    return [];
  }
  const list = c.list(v, 'spec.parentRefs', 'a list of Service references');
  if (list.length > 32) c.fail('spec.parentRefs', 'has more than 32 entries');
  const out: ParentRefSpec[] = [];
  const seen = new Set<string>();
  list.forEach((raw, i) => {
    const p = `spec.parentRefs[${i}]`;
    const o = c.object(raw, p, ['group', 'kind', 'name', 'namespace', 'port', 'sectionName']);
    if (o === undefined) return;
    if (o.kind !== 'Service') {
      c.fail(`${p}.kind`, `${o.kind === undefined ? 'is Gateway when omitted' : `is ${JSON.stringify(o.kind)}`}; Kedge routes attach to Services (the Gateway API mesh profile): write kind: Service and group: ""`);
      return;
    }
    if (o.group !== undefined && o.group !== '') c.fail(`${p}.group`, `must be "" (the core group of Service), not ${JSON.stringify(o.group)}`);
    const name = typeof o.name === 'string' && DNS_LABEL.test(o.name) ? o.name : undefined;
    if (name === undefined) c.fail(`${p}.name`, 'is required: the name of a Service (lowercase DNS label)');
    let namespace = routeNamespace;
    if (o.namespace !== undefined) {
      if (typeof o.namespace !== 'string' || !DNS_LABEL.test(o.namespace)) c.fail(`${p}.namespace`, 'must be a Kubernetes namespace name');
      else namespace = o.namespace;
    }
    const port = o.port === undefined ? undefined : c.int(o.port, `${p}.port`, undefined, 1, 65535);
    let sectionName: string | undefined;
    if (o.sectionName !== undefined) {
      if (typeof o.sectionName !== 'string' || !PRECISE_HOSTNAME.test(o.sectionName)) c.fail(`${p}.sectionName`, 'must be the name of a service port (lowercase DNS label)');
      else sectionName = o.sectionName;
    }
    if (name === undefined) return;
    const key = `${name}.${namespace}|${port ?? ''}|${sectionName ?? ''}`;
    if (seen.has(key)) c.fail(p, 'repeats an earlier parentRef; give each a different port or sectionName');
    seen.add(key);
    out.push({ service: `${name}.${namespace}`, port, sectionName });
  });
  return out;
}

/** gRPC status codes by name, as grpc-js and the gRPC spec name them. */
export const GRPC_STATUS: Readonly<Record<string, number>> = Object.freeze({
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14,
  DATA_LOSS: 15, UNAUTHENTICATED: 16,
});

/** A gRPC status written by name (UNAVAILABLE); `allowOk` for places where OK makes sense. */
export function grpcStatus(c: Checker, v: unknown, path: string, allowOk = false): number | undefined {
  const code = typeof v === 'string' ? GRPC_STATUS[v] : undefined;
  if (code === undefined || (code === 0 && !allowOk)) {
    c.fail(path, `must be a gRPC status name such as UNAVAILABLE or RESOURCE_EXHAUSTED (one of: ${Object.keys(GRPC_STATUS).filter((k) => allowOk || k !== 'OK').join(', ')})`);
    return undefined;
  }
  return code;
}

/** The gRPC status an HTTP status becomes (gRPC's HTTP-to-gRPC status mapping). */
export function grpcStatusOfHttp(status: number): number {
  switch (status) {
    case 400: return GRPC_STATUS.INTERNAL!;
    case 401: return GRPC_STATUS.UNAUTHENTICATED!;
    case 403: return GRPC_STATUS.PERMISSION_DENIED!;
    case 404: return GRPC_STATUS.UNIMPLEMENTED!;
    case 429: case 502: case 503: case 504: return GRPC_STATUS.UNAVAILABLE!;
    default: return GRPC_STATUS.UNKNOWN!;
  }
}
