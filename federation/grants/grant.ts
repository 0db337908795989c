// What a join token grants, and the check of a registration against it.
// Registration is authorized, not asserted: a token names the services the
// workload may serve, the workload name (or a glob for a group of VMs), the
// labels it may set and whether it may be its network's east-west gateway.
// The grant is bound to the certificate the token yields (see bindings.ts)
// and checked on every Register. Pure.
import { KedgeError } from '../../proto/model/errors';
import { isDnsLabel, isLabelKey, isLabelValue } from '../../proto/model/service';
import { FEDERATION_NAMESPACE, isValidName } from '../../proto/model/spiffe';

/** What a workload may register, as `kedge token create` grants it. */
export interface Grant {
  /** Service names (in the identity's namespace) it may serve; each may be a glob (`*` matches any run of characters). Empty: none. */
  services: string[];
  /**
   * Workload name or glob (`vm-*`): the certificate may register any name it
   * matches that no other certificate owns. '' means the first name the
   * workload registers with, which is then the only one it may use.
   */
  workload: string;
  /** Labels it may set: key -> value, or key -> '*' for any value. Others are refused. */
  labels: Record<string, string>;
  /** The network it may be east-west gateway of; '' for none. */
  gateway: string;
}

/** A grant of nothing: no services, no labels, no gateway role, any first name. */
export const EMPTY_GRANT: Grant = Object.freeze({ services: [], workload: '', labels: {}, gateway: '' }) as Grant;

/** The namespace of the mesh's own components; no token, pod or renewal may obtain an identity in it. */
export const RESERVED_NAMESPACE = FEDERATION_NAMESPACE;

const GLOB = /^[a-z0-9*]([-a-z0-9.*]*[a-z0-9*])?$/;

/** True when `name` matches `pattern`, where `*` stands for any run of characters (possibly empty). */
export function globMatch(pattern: string, name: string): boolean {
  if (!pattern.includes('*')) return pattern === name;
  const parts = pattern.split('*');
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  if (!name.startsWith(first) || name.length < first.length + last.length || !name.endsWith(last)) return false;
  let at = first.length;
  const end = name.length - last.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const idx = name.indexOf(parts[i]!, at);
    if (idx < 0 || idx + parts[i]!.length > end) return false;
    at = idx + parts[i]!.length;
  }
  return true;
}

function invalid(msg: string): KedgeError {
  return new KedgeError('KEDGE_TOKEN_INVALID_REQUEST', msg);
}

/** Checks a grant as the token API receives it; returns it normalised (sorted, deduplicated, frozen). */
export function validateGrant(raw: Partial<Grant> | undefined): Grant {
  const g = raw ?? {};
  const services = [...new Set(g.services ?? [])];
  for (const s of services) {
    if (typeof s !== 'string' || s.length > 63 || !GLOB.test(s) || (!s.includes('*') && !isDnsLabel(s))) {
      throw invalid(`--service "${String(s)}" is not a service name (a DNS label such as reviews) or a glob of one (reviews-*)`);
    }
  }
  const workload = g.workload ?? '';
  if (typeof workload !== 'string' || (workload !== '' && (workload.length > 253 || !GLOB.test(workload) || (!workload.includes('*') && !isValidName(workload))))) {
    throw invalid(`--workload "${String(workload)}" is not a workload name (lowercase letters, digits, '-' and '.') or a glob of one (vm-*)`);
  }
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(g.labels ?? {})) {
    if (!isLabelKey(k) || typeof v !== 'string' || (v !== '*' && !isLabelValue(v))) {
      throw invalid(`--labels ${k}=${String(v)} is not a valid label (keys and values up to 63 characters of letters, digits, '-', '_', '.'; a value of * allows any value)`);
    }
    labels[k] = v;
  }
  const gateway = g.gateway ?? '';
  if (typeof gateway !== 'string' || (gateway !== '' && !isValidName(gateway))) {
    throw invalid(`--gateway "${String(gateway)}" is not a network name (lowercase letters, digits, '-' and '.')`);
  }
  return Object.freeze({ services: services.sort(), workload, labels, gateway }) as Grant;
}

/** The part of a registration a grant governs. */
export interface RegistrationClaim {
  name: string;
  labels: Readonly<Record<string, string>>;
  services: readonly string[];
  network: string;
  gateway: boolean;
}

/**
 * Every way `claim` exceeds `grant`, each naming what is not allowed and the
 * token flag that grants it; empty when the registration is within it.
 * `boundName` is the name this certificate's binding registered first (the
 * only one it may use), if any.
 */
export function grantViolations(grant: Grant, claim: RegistrationClaim, boundName?: string): string[] {
  const out: string[] = [];
  if (boundName !== undefined && boundName !== claim.name) {
    out.push(`this certificate is bound to workload "${boundName}" and cannot register as "${claim.name}"; join with a new token for a second workload`);
  } else if (grant.workload && !globMatch(grant.workload, claim.name)) {
    out.push(`workload name "${claim.name}" is not granted (the token allows ${grant.workload}); create the token with --workload ${claim.name}`);
  }
  for (const s of claim.services) {
    if (!grant.services.some((p) => globMatch(p, s))) {
      const granted = grant.services.length ? grant.services.join(', ') : 'none';
      out.push(`service "${s}" is not granted (granted: ${granted}); create the token with --service ${s}`);
    }
  }
  for (const [k, v] of Object.entries(claim.labels)) {
    const allowed = grant.labels[k];
    if (allowed === undefined || (allowed !== '*' && allowed !== v)) {
      out.push(`label ${k}=${v} is not granted${allowed === undefined ? '' : ` (the token allows ${k}=${allowed})`}; create the token with --labels ${k}=${v}`);
    }
  }
  if (claim.gateway && grant.gateway !== claim.network) {
    out.push(`acting as the east-west gateway of network "${claim.network || '(none)'}" is not granted${grant.gateway ? ` (the token allows network ${grant.gateway})` : ''}; create the token with --gateway ${claim.network || 'NETWORK'}`);
  }
  return out;
}
