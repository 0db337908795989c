// The compiled authorization matcher: the policies that select one workload,
// turned once into predicates and evaluated in Istio's order for each request
// or connection. Pure: no clock, no I/O; the proxy and `kedge authz check`
// call the same evaluate().
//
// Istio's order (security concepts, "Authorization policy precedence"):
//   1. CUSTOM (not supported by Kedge: refused at validation);
//   2. any DENY policy that matches denies;
//   3. if no ALLOW policy selects the workload, allow;
//   4. any ALLOW policy that matches allows;
//   5. otherwise deny.
// AUDIT policies never change the decision; the first that matches is
// reported beside it.
//
// TCP (a port the proxy does not serve as HTTP): Istio drops an ALLOW rule
// that uses an HTTP-only field (hosts, methods, paths, their not-forms,
// request.headers) so it matches nothing, and drops only the HTTP-only fields
// of a DENY or AUDIT rule so the rest still matches (authz-tcp task; the
// policy builder's checkError). Both make TCP traffic less likely to pass.
import type {
  AuthzAction,
  AuthzPolicyObject,
  AuthzWorkload,
  CidrBlock,
  ConditionSpec,
  FieldSpec,
  OperationSpec,
  RuleSpec,
  SourceSpec,
  StringPattern,
} from './model';
import { DEFAULT_ROOT_NAMESPACE } from './model';
import { ipBytes } from './validate';
import { isIP } from 'node:net';

/** The attributes of one request (HTTP) or connection (TCP) that policies test. */
export interface AuthzRequest {
  /** The peer's SPIFFE ID without `spiffe://` (`cluster.local/ns/default/sa/sleep`); '' when the peer is not mesh mTLS. */
  principal: string;
  /** The downstream peer's address (IPv4-mapped IPv6 is read as IPv4). */
  sourceIp: string;
  /** The original client (remote.ip, remoteIpBlocks); Kedge trusts no X-Forwarded-For, so it defaults to sourceIp. */
  remoteIp?: string;
  destinationIp?: string;
  /** The workload port the request is for (the app's port behind the proxy). */
  destinationPort: number;
  /** The TLS SNI the peer sent; '' or undefined without TLS. */
  sni?: string;
  /** Present for HTTP; undefined for opaque TCP, where HTTP-only fields follow Istio's TCP rules. */
  http?: {
    /** Host or :authority as sent. */
    host: string;
    method: string;
    /** The request target as sent (query included; it is stripped and the path normalised here). */
    path: string;
    /** A header's value by lowercase name; repeated headers joined with `,`. */
    header(name: string): string | undefined;
  };
}

/** Which policy and rule decided. */
export interface AuthzMatch {
  /** `namespace/name` of the AuthorizationPolicy. */
  policy: string;
  action: AuthzAction;
  /** Index into spec.rules. */
  rule: number;
}

/** The outcome of evaluate(). */
export interface AuthzDecision {
  allowed: boolean;
  /** The policy and rule that decided; undefined when no policy applies (allowed) or no ALLOW matched (denied). */
  match: AuthzMatch | undefined;
  /** One line for logs and `kedge authz check`. */
  reason: string;
  /** The first AUDIT rule that matched, if any (does not change the decision). */
  audit: AuthzMatch | undefined;
}

/** The compiled policies of one workload. */
export interface AuthzMatcher {
  /** `namespace/name` of every policy that selects the workload, by action. */
  readonly policies: Readonly<Record<AuthzAction, readonly string[]>>;
  /** True when no policy selects the workload (every request is allowed). */
  readonly empty: boolean;
  evaluate(req: AuthzRequest): AuthzDecision;
}

/** Whether a policy selects a workload: its namespace (or the root namespace, mesh-wide) and every selector label. */
export function policySelects(p: Pick<AuthzPolicyObject, 'namespace' | 'selector'>, w: AuthzWorkload, rootNamespace = DEFAULT_ROOT_NAMESPACE): boolean {
  if (p.namespace !== w.namespace && p.namespace !== rootNamespace) return false;
  for (const [k, v] of Object.entries(p.selector ?? {})) if (w.labels[k] !== v) return false;
  return true;
}

interface Prepared {
  principal: string;
  namespace: string;
  sourceIp: number[] | undefined;
  remoteIp: number[] | undefined;
  destinationIp: number[] | undefined;
  port: number;
  sni: string;
  host: string;
  hostNoPort: string;
  method: string;
  path: string;
  header: (name: string) => string | undefined;
  tcp: boolean;
}

type Test = (r: Prepared) => boolean;
/** One condition of a rule; `http` marks Istio's HTTP-only fields. */
interface Cond {
  http: boolean;
  test: Test;
}

interface CompiledRule {
  from: Cond[][];
  to: Cond[][];
  when: Cond[];
  hasHttp: boolean;
}

interface CompiledPolicy {
  id: string;
  action: AuthzAction;
  rules: CompiledRule[];
}

/** Compiles the policies that select `workload` (others are skipped) into a matcher. */
export function compileAuthorization(policies: readonly AuthzPolicyObject[], workload: AuthzWorkload, opts: { rootNamespace?: string } = {}): AuthzMatcher {
  const root = opts.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const selected = policies
    .filter((p) => policySelects(p, workload, root))
    .map((p) => ({ id: `${p.namespace}/${p.name}`, action: p.action, rules: p.rules.map(compileRule) }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const by = (a: AuthzAction): CompiledPolicy[] => selected.filter((p) => p.action === a);
  const deny = by('DENY');
  const allow = by('ALLOW');
  const audit = by('AUDIT');
  const ids = (list: CompiledPolicy[]) => Object.freeze(list.map((p) => p.id));
  return Object.freeze({
    policies: Object.freeze({ ALLOW: ids(allow), DENY: ids(deny), AUDIT: ids(audit) }),
    empty: selected.length === 0,
    evaluate(req: AuthzRequest): AuthzDecision {
      const r = prepare(req);
      const auditMatch = first(audit, r);
      const denied = first(deny, r);
      if (denied) return { allowed: false, match: denied, reason: `denied by DENY policy ${denied.policy}, rule ${denied.rule}`, audit: auditMatch };
      if (allow.length === 0) return { allowed: true, match: undefined, reason: 'allowed: no ALLOW policy selects this workload', audit: auditMatch };
      const allowed = first(allow, r);
      if (allowed) return { allowed: true, match: allowed, reason: `allowed by ALLOW policy ${allowed.policy}, rule ${allowed.rule}`, audit: auditMatch };
      return { allowed: false, match: undefined, reason: `denied: no rule of the ALLOW policies (${allow.map((p) => p.id).join(', ')}) matches`, audit: auditMatch };
    },
  });
}

function first(list: CompiledPolicy[], r: Prepared): AuthzMatch | undefined {
  for (const p of list) {
    for (let i = 0; i < p.rules.length; i++) if (ruleMatches(p.rules[i]!, p.action, r)) return { policy: p.id, action: p.action, rule: i };
  }
  return undefined;
}

function ruleMatches(rule: CompiledRule, action: AuthzAction, r: Prepared): boolean {
  // On TCP an ALLOW rule with an HTTP-only field matches nothing; a DENY or
  // AUDIT rule is evaluated without its HTTP-only fields.
  if (r.tcp && rule.hasHttp && action === 'ALLOW') return false;
  const all = (conds: Cond[]) => conds.every((c) => (r.tcp && c.http) || c.test(r));
  if (rule.from.length > 0 && !rule.from.some(all)) return false;
  if (rule.to.length > 0 && !rule.to.some(all)) return false;
  return all(rule.when);
}

function compileRule(rule: RuleSpec): CompiledRule {
  const from = rule.from.map(sourceConds);
  const to = rule.to.map(operationConds);
  const when = rule.when.map(conditionCond);
  const hasHttp = [...from.flat(), ...to.flat(), ...when].some((c) => c.http);
  return { from, to, when, hasHttp };
}

function sourceConds(s: SourceSpec): Cond[] {
  const out: Cond[] = [];
  if (s.principals) out.push({ http: false, test: fieldTest(s.principals, (p) => (r) => strMatch(p, r.principal)) });
  if (s.namespaces) out.push({ http: false, test: fieldTest(s.namespaces, (p) => (r) => strMatch(p, r.namespace)) });
  if (s.ipBlocks) out.push({ http: false, test: fieldTest(s.ipBlocks, (b) => (r) => inBlock(b, r.sourceIp)) });
  if (s.remoteIpBlocks) out.push({ http: false, test: fieldTest(s.remoteIpBlocks, (b) => (r) => inBlock(b, r.remoteIp)) });
  return out;
}

function operationConds(o: OperationSpec): Cond[] {
  const out: Cond[] = [];
  if (o.hosts) out.push({ http: true, test: fieldTest(o.hosts, (p) => (r) => strMatch(p, r.host) || (r.hostNoPort !== r.host && strMatch(p, r.hostNoPort))) });
  if (o.ports) out.push({ http: false, test: fieldTest(o.ports, (n) => (r) => r.port === n) });
  if (o.methods) out.push({ http: true, test: fieldTest(o.methods, (p) => (r) => strMatch(p, r.method)) });
  if (o.paths) out.push({ http: true, test: fieldTest(o.paths, (p) => (r) => strMatch(p, r.path)) });
  return out;
}

function conditionCond(c: ConditionSpec): Cond {
  const k = c.parsed;
  switch (k.kind) {
    case 'header': {
      const name = k.name;
      return { http: true, test: fieldTest(c.values as FieldSpec<StringPattern>, (p) => (r) => strMatch(p, r.header(name))) };
    }
    case 'source.principal':
      return { http: false, test: fieldTest(c.values as FieldSpec<StringPattern>, (p) => (r) => strMatch(p, r.principal)) };
    case 'source.namespace':
      return { http: false, test: fieldTest(c.values as FieldSpec<StringPattern>, (p) => (r) => strMatch(p, r.namespace)) };
    case 'connection.sni':
      return { http: false, test: fieldTest(c.values as FieldSpec<StringPattern>, (p) => (r) => strMatch(p, r.sni)) };
    case 'destination.port':
      return { http: false, test: fieldTest(c.values as FieldSpec<number>, (n) => (r) => r.port === n) };
    case 'source.ip':
      return { http: false, test: fieldTest(c.values as FieldSpec<CidrBlock>, (b) => (r) => inBlock(b, r.sourceIp)) };
    case 'remote.ip':
      return { http: false, test: fieldTest(c.values as FieldSpec<CidrBlock>, (b) => (r) => inBlock(b, r.remoteIp)) };
    case 'destination.ip':
      return { http: false, test: fieldTest(c.values as FieldSpec<CidrBlock>, (b) => (r) => inBlock(b, r.destinationIp)) };
  }
}

/** (values empty or any value matches) and no notValue matches. */
function fieldTest<T>(f: FieldSpec<T>, one: (v: T) => Test): Test {
  const yes = f.values.map(one);
  const no = f.notValues.map(one);
  return (r) => (yes.length === 0 || yes.some((t) => t(r))) && !no.some((t) => t(r));
}

/** Istio's string forms; a missing or empty value matches nothing (so a not-form matches it). */
export function strMatch(p: StringPattern, v: string | undefined): boolean {
  if (v === undefined || v === '') return false;
  switch (p.kind) {
    case 'any':
      return true;
    case 'exact':
      return v === p.value;
    case 'prefix':
      return v.startsWith(p.value);
    case 'suffix':
      return v.endsWith(p.value);
  }
}

function inBlock(b: CidrBlock, ip: number[] | undefined): boolean {
  if (ip === undefined || ip.length !== b.bytes.length) return false;
  let bits = b.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((ip[i]! & mask) !== (b.bytes[i]! & mask)) return false;
  }
  return true;
}

function addressBytes(a: string | undefined): number[] | undefined {
  if (!a) return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  const addr = mapped ? mapped[1]! : a;
  return isIP(addr) === 0 ? undefined : ipBytes(addr);
}

const NAMESPACE_OF = /\/ns\/([^/]+)\/sa\//;
const UNRESERVED_ESCAPE = /%(4[1-9A-Fa-f]|5[0-9Aa]|6[1-9A-Fa-f]|7[0-9Aa]|3[0-9]|2[DdEe]|5[Ff]|7[Ee])/g;

/**
 * The path policies see: the query and fragment removed, escaped unreserved
 * characters decoded and dot segments removed (RFC 3986 5.2.4), as Envoy's
 * normalize_path (Istio's default BASE normalisation) does before RBAC.
 */
export function authzPath(target: string): string {
  let p = target;
  const q = p.search(/[?#]/);
  if (q >= 0) p = p.slice(0, q);
  p = p.replace(UNRESERVED_ESCAPE, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  if (!p.includes('.')) return p || '/';
  const out: string[] = [];
  const segs = p.split('/');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    if (s === '.') {
      if (i === segs.length - 1) out.push('');
    } else if (s === '..') {
      out.pop();
      if (i === segs.length - 1) out.push('');
    } else out.push(s);
  }
  return `/${out.join('/')}`;
}

function prepare(req: AuthzRequest): Prepared {
  const ns = NAMESPACE_OF.exec(req.principal);
  const host = (req.http?.host ?? '').toLowerCase();
  const colon = host.lastIndexOf(':');
  const hostNoPort = colon > 0 && host.indexOf(']') < colon && /^[0-9]+$/.test(host.slice(colon + 1)) ? host.slice(0, colon) : host;
  const src = addressBytes(req.sourceIp);
  return {
    principal: req.principal,
    namespace: ns ? ns[1]! : '',
    sourceIp: src,
    remoteIp: req.remoteIp === undefined ? src : addressBytes(req.remoteIp),
    destinationIp: addressBytes(req.destinationIp),
    port: req.destinationPort,
    sni: req.sni ?? '',
    host,
    hostNoPort,
    method: req.http?.method ?? '',
    path: req.http ? authzPath(req.http.path) : '',
    header: req.http ? (n) => req.http!.header(n) : () => undefined,
    tcp: req.http === undefined,
  };
}
