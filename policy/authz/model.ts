// Validated AuthorizationPolicy documents (security.istio.io/v1) as plain
// data: what validateAuthorizationPolicy returns, what the federation stores
// and pushes, and what compileAuthorization reads. Istio's field names are
// kept; string patterns are parsed once into StringPattern.

/** The API version Kedge reads AuthorizationPolicy in (v1beta1 has the same fields). */
export const SECURITY_API_VERSION = 'security.istio.io/v1';
export const SECURITY_API_VERSIONS: readonly string[] = ['security.istio.io/v1', 'security.istio.io/v1beta1'];
/** The namespace whose policies apply mesh-wide (Istio's root namespace; istio-system there). */
export const DEFAULT_ROOT_NAMESPACE = 'kedge-system';

/** Istio's actions; CUSTOM (external authorizers) is refused at validation. */
export type AuthzAction = 'ALLOW' | 'DENY' | 'AUDIT';

/**
 * One of Istio's string forms: `*` (any non-empty value), `abc*` (prefix),
 * `*abc` (suffix) or an exact value.
 */
export type StringPattern = { kind: 'any' } | { kind: 'prefix' | 'suffix' | 'exact'; value: string };

/** An IPv4/IPv6 address block (a bare address is a /32 or /128). */
export interface CidrBlock {
  /** As written, for error messages and `kedge get`. */
  text: string;
  family: 4 | 6;
  /** The network address as a big-endian bit string's bytes. */
  bytes: readonly number[];
  prefix: number;
}

/** A field and its not-form: matches when (values is empty or one matches) and no notValue matches. */
export interface FieldSpec<T> {
  values: readonly T[];
  notValues: readonly T[];
}

/** `from.source`: every field given must hold. */
export interface SourceSpec {
  principals?: FieldSpec<StringPattern>;
  namespaces?: FieldSpec<StringPattern>;
  ipBlocks?: FieldSpec<CidrBlock>;
  remoteIpBlocks?: FieldSpec<CidrBlock>;
}

/** `to.operation`: every field given must hold. hosts, methods and paths are HTTP-only. */
export interface OperationSpec {
  hosts?: FieldSpec<StringPattern>;
  ports?: FieldSpec<number>;
  methods?: FieldSpec<StringPattern>;
  paths?: FieldSpec<StringPattern>;
}

/** The `when` keys Kedge evaluates. */
export type ConditionKey =
  | { kind: 'header'; name: string }
  | { kind: 'source.ip' | 'remote.ip' | 'destination.ip' }
  | { kind: 'source.principal' | 'source.namespace' | 'connection.sni' }
  | { kind: 'destination.port' };

/** One `when` condition. */
export interface ConditionSpec {
  /** As written (`request.headers[x-token]`). */
  key: string;
  parsed: ConditionKey;
  values: FieldSpec<StringPattern | CidrBlock | number>;
}

/** One rule: any from and any to and every when. A rule without from/to/when matches every request. */
export interface RuleSpec {
  from: readonly SourceSpec[];
  to: readonly OperationSpec[];
  when: readonly ConditionSpec[];
}

/** A validated AuthorizationPolicy. */
export interface AuthzPolicyObject {
  kind: 'AuthorizationPolicy';
  name: string;
  namespace: string;
  /** selector.matchLabels; undefined: every workload of the namespace (or of the mesh in the root namespace). */
  selector: Readonly<Record<string, string>> | undefined;
  action: AuthzAction;
  /** No rules: the policy matches nothing (an ALLOW without rules allows nothing). */
  rules: readonly RuleSpec[];
}

/** A workload as policies select it. */
export interface AuthzWorkload {
  namespace: string;
  labels: Readonly<Record<string, string>>;
}
