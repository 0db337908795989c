// The agent's side of the security policies: the AuthorizationPolicy and
// PeerAuthentication documents the federation pushed for this workload are
// validated again (a policy this agent cannot use is rejected alone, named
// in the Ack's error_detail, and the others stay in force), the
// AuthorizationPolicies compiled once into the matcher the inbound proxy
// evaluates per request, and the PeerAuthentications resolved per port into
// the modes the inbound capture front applies.
import { compileAuthorization, type AuthzMatcher } from '../../policy/authz/compile';
import type { AuthzPolicyObject, AuthzWorkload } from '../../policy/authz/model';
import { validateAuthorizationPolicy } from '../../policy/authz/validate';
import type { EffectiveMode, PeerAuthObject, PeerAuthResolution } from '../../policy/peer-auth/model';
import { resolvePeerAuth } from '../../policy/peer-auth/resolve';
import { validatePeerAuthentication } from '../../policy/peer-auth/validate';

/** The outcome of one Authorization message. */
export interface AppliedAuthorization {
  matcher: AuthzMatcher;
  /** The mTLS modes in force; `fallback` where no policy sets one. */
  peerAuthentication: PeerAuthResolution;
  /** One line per rejected policy, naming it and what is wrong. */
  rejected: string[];
  /** How many documents of each kind are in force. */
  counts: { authorizationPolicies: number; peerAuthentications: number };
}

/**
 * Validates, compiles and resolves pushed policy documents (JSON) for
 * `workload`; `fallback` is the agent's configured inboundMode, in force
 * wherever no PeerAuthentication sets a mode.
 */
export function applyAuthorization(docs: readonly string[], workload: AuthzWorkload, opts: { rootNamespace?: string; fallback?: EffectiveMode } = {}): AppliedAuthorization {
  const good: AuthzPolicyObject[] = [];
  const peers: PeerAuthObject[] = [];
  const rejected: string[] = [];
  docs.forEach((json, i) => {
    let doc: unknown;
    try {
      doc = JSON.parse(json);
    } catch (err) {
      rejected.push(`policy ${i + 1}: not JSON: ${(err as Error).message}`);
      return;
    }
    const kind = (doc as { kind?: unknown } | null)?.kind;
    if (kind === 'PeerAuthentication') {
      const r = validatePeerAuthentication(doc);
      if (r.ok) peers.push(r.value);
      else rejected.push(`rejected, not enforced: ${r.errors.join('; ')}`);
      return;
    }
    const r = validateAuthorizationPolicy(doc);
    if (r.ok) good.push(r.value);
    else rejected.push(`rejected, not enforced: ${r.errors.join('; ')}`);
  });
  const root = opts.rootNamespace === undefined ? {} : { rootNamespace: opts.rootNamespace };
  return {
    matcher: compileAuthorization(good, workload, root),
    peerAuthentication: resolvePeerAuth(peers, workload, { ...root, ...(opts.fallback ? { fallback: opts.fallback } : {}) }),
    rejected,
    counts: { authorizationPolicies: good.length, peerAuthentications: peers.length },
  };
}

/**
 * What is in force when the saved policies cannot be trusted: a DENY whose
 * one empty rule matches every request (so each denial names it in the log)
 * and STRICT everywhere.
 */
export function failClosed(workload: AuthzWorkload): AppliedAuthorization {
  const denyAll: AuthzPolicyObject = { kind: 'AuthorizationPolicy', name: 'kedge-fail-closed', namespace: workload.namespace, selector: undefined, action: 'DENY', rules: [{ from: [], to: [], when: [] }] };
  return {
    matcher: compileAuthorization([denyAll], workload),
    peerAuthentication: { mode: 'STRICT', ports: new Map(), from: ['(fail-closed: the saved policies could not be read)'] },
    rejected: [],
    counts: { authorizationPolicies: 0, peerAuthentications: 0 },
  };
}
