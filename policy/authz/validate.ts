// Validation of AuthorizationPolicy documents (security.istio.io/v1), following
// Istio's own checks (pkg/config/validation: a from without source fields, a
// to without operation fields, a when without values are errors; IPs must be
// addresses or CIDRs) plus Kedge's refusals of what it does not implement
// (CUSTOM, JWT request principals, targetRefs). Every error names the
// document and the path in it; unknown fields are refused, never ignored.
import { isIP } from 'node:net';
import { KedgeError } from '../../proto/model/errors';
import { deepFreeze } from '../../proto/model/validate';
import { Checker } from '../checker';
import { metadata } from '../routes/common';
import { documentLabel } from '../routes/documents';
import {
  SECURITY_API_VERSION,
  SECURITY_API_VERSIONS,
  type AuthzAction,
  type AuthzPolicyObject,
  type CidrBlock,
  type ConditionKey,
  type ConditionSpec,
  type FieldSpec,
  type OperationSpec,
  type RuleSpec,
  type SourceSpec,
  type StringPattern,
} from './model';

/** The outcome of validateAuthorizationPolicy. */
export type AuthzValidation = { ok: true; value: AuthzPolicyObject } | { ok: false; errors: string[] };

/** Whether a parsed document is an AuthorizationPolicy (by its `kind`). */
export function isAuthzDocument(doc: unknown): boolean {
  return (doc as { kind?: unknown } | null)?.kind === 'AuthorizationPolicy';
}

/** Metadata fields the API server writes; dropped from documents read from a cluster. */
export const SERVER_METADATA = ['uid', 'resourceVersion', 'generation', 'managedFields', 'selfLink', 'ownerReferences', 'finalizers', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generateName'];
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const TOKEN = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;

/** Validates one parsed AuthorizationPolicy; every error is prefixed with the document's label. */
export function validateAuthorizationPolicy(doc: unknown, opts: { fromCluster?: boolean } = {}): AuthzValidation {
  const c = new Checker();
  const label = documentLabel(doc);
  const done = (): AuthzValidation => ({ ok: false, errors: c.errors.map((e) => `${label}: ${e}`) });
  const head = securityHeader(c, doc, 'AuthorizationPolicy', opts);
  if (head === undefined) return done();
  const { top, meta, m } = head;
  const annotations = (meta as { annotations?: Record<string, unknown> } | undefined)?.annotations;
  if (annotations && annotations['istio.io/dry-run'] !== undefined && annotations['istio.io/dry-run'] !== 'false') {
    c.fail('metadata.annotations.istio.io/dry-run', 'Kedge does not implement dry-run policies; use action: AUDIT to see what a rule matches, or remove the annotation');
  }
  // An absent spec is Istio's allow-nothing policy (`spec: {}`).
  const spec = top.spec === undefined || top.spec === null ? {} : c.object(top.spec, 'spec', ['selector', 'targetRef', 'targetRefs', 'action', 'provider', 'rules']);
  if (spec === undefined) return done();
  for (const k of ['targetRef', 'targetRefs'] as const) {
    if (spec[k] !== undefined) c.fail(`spec.${k}`, 'Kedge attaches policies to workloads only; use selector.matchLabels (targetRefs to Gateways and Services are not implemented)');
  }
  let action: AuthzAction = 'ALLOW';
  if (spec.action === 'CUSTOM') {
    c.fail('spec.action', 'CUSTOM (an external authorizer) is not supported by Kedge; use ALLOW, DENY or AUDIT');
  } else action = c.oneOf(spec.action, 'spec.action', ['ALLOW', 'DENY', 'AUDIT'] as const, 'ALLOW');
  if (spec.provider !== undefined) c.fail('spec.provider', 'is only for action CUSTOM, which Kedge does not support');
  const selector = selectorOf(c, spec.selector);
  const rules = c.list(spec.rules, 'spec.rules', 'a list of rules').map((r, i) => rule(c, r, `spec.rules[${i}]`));
  if (c.errors.length > 0) return done();
  return { ok: true, value: deepFreeze({ kind: 'AuthorizationPolicy', name: m.name, namespace: m.namespace, selector, action, rules }) };
}

/**
 * The top level every security.istio.io document shares: kind, apiVersion,
 * no status from users, metadata (the API server's own fields dropped from
 * a cluster's copy). Undefined when the document is not a mapping.
 */
export function securityHeader(c: Checker, doc: unknown, kind: string, opts: { fromCluster?: boolean }): { top: Record<string, unknown>; meta: unknown; m: ReturnType<typeof metadata> } | undefined {
  const top = c.object(doc, '', ['apiVersion', 'kind', 'metadata', 'spec', 'status']);
  if (top === undefined) return undefined;
  if (top.kind !== kind) c.fail('kind', `must be ${kind}`);
  if (typeof top.apiVersion !== 'string' || !SECURITY_API_VERSIONS.includes(top.apiVersion)) {
    c.fail('apiVersion', `${top.apiVersion === undefined ? 'is required' : `is ${JSON.stringify(top.apiVersion)}`}; write apiVersion: ${SECURITY_API_VERSION}`);
  }
  if (top.status !== undefined && !opts.fromCluster) c.fail('status', 'is written by controllers, not by users; remove it');
  let meta = top.metadata;
  if (opts.fromCluster && meta && typeof meta === 'object') meta = Object.fromEntries(Object.entries(meta).filter(([k]) => !SERVER_METADATA.includes(k)));
  return { top, meta, m: metadata(c, meta) };
}

/** validateAuthorizationPolicy for callers that want an exception: KEDGE_BAD_POLICY listing every error. */
export function parseAuthorizationPolicy(doc: unknown, opts: { fromCluster?: boolean } = {}): AuthzPolicyObject {
  const r = validateAuthorizationPolicy(doc, opts);
  if (r.ok) return r.value;
  throw new KedgeError('KEDGE_BAD_POLICY', r.errors.join('\n'));
}

/** `spec.selector` (matchLabels only), shared with PeerAuthentication. */
export function selectorOf(c: Checker, v: unknown): Record<string, string> | undefined {
  const o = c.optionalObject(v, 'spec.selector', ['matchLabels']);
  if (o === undefined) return undefined;
  const labels = c.optionalObject(o.matchLabels, 'spec.selector.matchLabels');
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(labels ?? {})) {
    const p = `spec.selector.matchLabels.${k}`;
    if (!LABEL_KEY.test(k) || k.length > 317) c.fail(p, 'is not a Kubernetes label key');
    if (typeof val !== 'string' || !LABEL_VALUE.test(val)) c.fail(p, 'must be a Kubernetes label value (a string of up to 63 letters, digits, -, _ and .)');
    else out[k] = val;
  }
  return out;
}

function rule(c: Checker, v: unknown, path: string): RuleSpec {
  const o = c.object(v, path, ['from', 'to', 'when']);
  if (o === undefined) return { from: [], to: [], when: [] };
  const from = c.list(o.from, `${path}.from`, 'a list of {source: ...}').map((f, i) => {
    const p = `${path}.from[${i}]`;
    const fo = c.object(f, p, ['source']);
    return fo ? source(c, fo.source, `${p}.source`) : {};
  });
  const to = c.list(o.to, `${path}.to`, 'a list of {operation: ...}').map((t, i) => {
    const p = `${path}.to[${i}]`;
    const to = c.object(t, p, ['operation']);
    return to ? operation(c, to.operation, `${p}.operation`) : {};
  });
  const when = c
    .list(o.when, `${path}.when`, 'a list of {key, values, notValues}')
    .map((w, i) => condition(c, w, `${path}.when[${i}]`))
    .filter((x): x is ConditionSpec => x !== undefined);
  return { from, to, when };
}

const SOURCE_FIELDS = ['principals', 'notPrincipals', 'requestPrincipals', 'notRequestPrincipals', 'namespaces', 'notNamespaces', 'serviceAccounts', 'notServiceAccounts', 'ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks'];

function source(c: Checker, v: unknown, path: string): SourceSpec {
  const o = c.object(v, path, SOURCE_FIELDS);
  if (o === undefined) return {};
  const given = SOURCE_FIELDS.filter((k) => o[k] !== undefined && !(Array.isArray(o[k]) && (o[k] as unknown[]).length === 0));
  if (given.length === 0) c.fail(path, 'has no fields, so it could never be told apart from any other source; give principals, notPrincipals, namespaces, notNamespaces, ipBlocks, notIpBlocks, remoteIpBlocks or notRemoteIpBlocks (or drop from to match every source)');
  for (const k of ['requestPrincipals', 'notRequestPrincipals']) {
    if (o[k] !== undefined) c.fail(`${path}.${k}`, 'needs RequestAuthentication (JWT), which Kedge does not implement; match the peer identity with principals instead');
  }
  for (const k of ['serviceAccounts', 'notServiceAccounts']) {
    if (o[k] !== undefined) c.fail(`${path}.${k}`, `is not implemented by Kedge; write ${k === 'serviceAccounts' ? 'principals' : 'notPrincipals'}: ["<trust-domain>/ns/<namespace>/sa/<name>"] instead`);
  }
  const out: SourceSpec = {};
  const principals = field(c, o, path, 'principals', principalPattern);
  if (principals) out.principals = principals;
  const namespaces = field(c, o, path, 'namespaces', (cc, x, p) => pattern(cc, x, p));
  if (namespaces) out.namespaces = namespaces;
  const ipBlocks = field(c, o, path, 'ipBlocks', cidr);
  if (ipBlocks) out.ipBlocks = ipBlocks;
  const remote = field(c, o, path, 'remoteIpBlocks', cidr);
  if (remote) out.remoteIpBlocks = remote;
  return out;
}

const OPERATION_FIELDS = ['hosts', 'notHosts', 'ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths'];

function operation(c: Checker, v: unknown, path: string): OperationSpec {
  const o = c.object(v, path, OPERATION_FIELDS);
  if (o === undefined) return {};
  const given = OPERATION_FIELDS.filter((k) => o[k] !== undefined && !(Array.isArray(o[k]) && (o[k] as unknown[]).length === 0));
  if (given.length === 0) c.fail(path, 'has no fields; give hosts, ports, methods or paths (or their not-forms), or drop to to match every operation');
  const out: OperationSpec = {};
  const hosts = field(c, o, path, 'hosts', (cc, x, p) => {
    const s = pattern(cc, x, p);
    return s && s.kind !== 'any' ? { ...s, value: s.value.toLowerCase() } : s;
  });
  if (hosts) out.hosts = hosts;
  const ports = field(c, o, path, 'ports', port);
  if (ports) out.ports = ports;
  const methods = field(c, o, path, 'methods', (cc, x, p) => {
    const s = pattern(cc, x, p);
    if (s && s.kind !== 'any' && !TOKEN.test(s.value)) cc.fail(p, 'must be an HTTP method such as GET (gRPC requests are always POST)');
    return s;
  });
  if (methods) out.methods = methods;
  const paths = field(c, o, path, 'paths', pathPattern);
  if (paths) out.paths = paths;
  return out;
}

/** `values`/`notValues` of a field (`principals`/`notPrincipals`); undefined when neither is given. */
function field<T>(c: Checker, o: Record<string, unknown>, path: string, name: string, parse: (c: Checker, v: unknown, p: string) => T | undefined): FieldSpec<T> | undefined {
  const notName = `not${name[0]!.toUpperCase()}${name.slice(1)}`;
  const read = (key: string): T[] =>
    c
      .list(o[key], `${path}.${key}`, 'a list of strings')
      .map((x, i) => parse(c, x, `${path}.${key}[${i}]`))
      .filter((x): x is T => x !== undefined);
  const values = read(name);
  const notValues = read(notName);
  if (values.length === 0 && notValues.length === 0) return undefined;
  return { values, notValues };
}

/** Istio's string forms: `*`, `prefix*`, `*suffix`, exact. A `*` anywhere else is refused (Istio would match it literally). */
function pattern(c: Checker, v: unknown, path: string): StringPattern | undefined {
  if (typeof v !== 'string' || v === '') {
    c.fail(path, v === '' ? 'is empty; an empty value is not allowed (Istio refuses it too)' : 'must be a string');
    return undefined;
  }
  if (v === '*') return { kind: 'any' };
  const inner = v.slice(1, -1);
  if (inner.includes('*') || (v.startsWith('*') && v.endsWith('*'))) {
    c.fail(path, `"${v}" has a * that is not only at the start or only at the end; Istio matches exact values, prefix* and *suffix (write one * at one end)`);
    return undefined;
  }
  if (v.startsWith('*')) return { kind: 'suffix', value: v.slice(1) };
  if (v.endsWith('*')) return { kind: 'prefix', value: v.slice(0, -1) };
  return { kind: 'exact', value: v };
}

function principalPattern(c: Checker, v: unknown, path: string): StringPattern | undefined {
  if (typeof v === 'string' && v.startsWith('spiffe://')) {
    c.fail(path, `write principals without the spiffe:// scheme, as Istio does: "${v.slice('spiffe://'.length)}"`);
    return undefined;
  }
  return pattern(c, v, path);
}

function pathPattern(c: Checker, v: unknown, path: string): StringPattern | undefined {
  if (typeof v === 'string' && v.includes('{')) {
    c.fail(path, `"${v}" uses a path template ({*} or {**}), which Kedge does not implement; use a prefix such as /api/* instead`);
    return undefined;
  }
  const s = pattern(c, v, path);
  if (s === undefined || s.kind === 'any') return s;
  const text = v as string;
  if (text.includes('?') || text.includes('#')) c.fail(path, `"${text}" has a query or fragment; paths are matched without the query string, so write the path alone`);
  else if (s.kind !== 'suffix' && !s.value.startsWith('/')) c.fail(path, `"${text}" must start with / (or with * for a suffix match)`);
  else return s;
  return undefined;
}

function port(c: Checker, v: unknown, path: string): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^[0-9]{1,5}$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    c.fail(path, `${JSON.stringify(v)} is not a port; write a number from 1 to 65535 such as "8080" (wildcards are not allowed in ports)`);
    return undefined;
  }
  return n;
}

/** An IP address or CIDR block, as Istio's ValidateIPs accepts. */
export function cidr(c: Checker, v: unknown, path: string): CidrBlock | undefined {
  const bad = (): undefined => {
    c.fail(path, `${JSON.stringify(v)} is not an IP address or CIDR block; write one such as 10.1.0.0/16, 192.168.1.7 or fd00::/8`);
    return undefined;
  };
  if (typeof v !== 'string') return bad();
  const [addr = '', len, extra] = v.split('/');
  const family = isIP(addr);
  if (family === 0 || extra !== undefined) return bad();
  const max = family === 4 ? 32 : 128;
  const prefix = len === undefined ? max : /^[0-9]{1,3}$/.test(len) ? Number(len) : NaN;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return bad();
  return { text: v, family: family as 4 | 6, bytes: ipBytes(addr), prefix };
}

/** The bytes of a valid IPv4 or IPv6 address (an IPv4-mapped IPv6 address stays 16 bytes). */
export function ipBytes(addr: string): number[] {
  if (isIP(addr) === 4) return addr.split('.').map(Number);
  let a = addr;
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    a = `${a.slice(0, -v4[1]!.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head = '', tail] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const out: number[] = [];
  for (const g of groups) {
    const n = parseInt(g, 16);
    out.push(n >> 8, n & 255);
  }
  return out;
}

/** The `when` keys Istio documents that Kedge evaluates, and why the others are refused. */
function conditionKey(c: Checker, v: unknown, path: string): ConditionKey | undefined {
  if (typeof v !== 'string' || v === '') {
    c.fail(path, 'is required: a key such as request.headers[x-token], source.principal or destination.port');
    return undefined;
  }
  const h = /^request\.headers\[(.+)\]$/.exec(v);
  if (h) {
    if (!TOKEN.test(h[1]!)) {
      c.fail(path, `"${h[1]}" is not a header name`);
      return undefined;
    }
    return { kind: 'header', name: h[1]!.toLowerCase() };
  }
  switch (v) {
    case 'source.ip':
    case 'remote.ip':
    case 'destination.ip':
    case 'source.principal':
    case 'source.namespace':
    case 'connection.sni':
    case 'destination.port':
      return { kind: v };
  }
  if (v.startsWith('request.auth.')) c.fail(path, `${v} needs RequestAuthentication (JWT), which Kedge does not implement`);
  else if (v.startsWith('experimental.')) c.fail(path, `${v} is an experimental Istio key that Kedge does not implement`);
  else c.fail(path, `unknown key "${v}"; Kedge evaluates request.headers[NAME], source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port and connection.sni`);
  return undefined;
}

function condition(c: Checker, v: unknown, path: string): ConditionSpec | undefined {
  const o = c.object(v, path, ['key', 'values', 'notValues']);
  if (o === undefined) return undefined;
  const key = conditionKey(c, o.key, `${path}.key`);
  if (key === undefined) return undefined;
  const parse = (cc: Checker, x: unknown, p: string): StringPattern | CidrBlock | number | undefined => {
    if (key.kind === 'source.ip' || key.kind === 'remote.ip' || key.kind === 'destination.ip') return cidr(cc, x, p);
    if (key.kind === 'destination.port') return port(cc, x, p);
    if (key.kind === 'source.principal') return principalPattern(cc, x, p);
    return pattern(cc, x, p);
  };
  const values = field(c, o, path, 'values', parse);
  if (values === undefined) {
    c.fail(path, `at least one of values or notValues must be set for key ${o.key as string}`);
    return undefined;
  }
  return { key: o.key as string, parsed: key, values };
}
