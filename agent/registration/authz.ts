// The agent's side of AuthorizationPolicy: the documents the federation
// pushed for this workload are validated again (a policy this agent cannot
// use is rejected alone, named in the Ack's error_detail) and the good ones
// compiled once into the matcher the inbound proxy evaluates per request.
import { compileAuthorization, type AuthzMatcher } from '../../policy/authz/compile';
import type { AuthzPolicyObject, AuthzWorkload } from '../../policy/authz/model';
import { validateAuthorizationPolicy } from '../../policy/authz/validate';

/** The outcome of one Authorization message. */
export interface AppliedAuthorization {
  matcher: AuthzMatcher;
  /** One line per rejected policy, naming it and what is wrong. */
  rejected: string[];
}

/** Validates and compiles pushed policy documents (JSON) for `workload`. */
export function applyAuthorization(docs: readonly string[], workload: AuthzWorkload, rootNamespace?: string): AppliedAuthorization {
  const good: AuthzPolicyObject[] = [];
  const rejected: string[] = [];
  docs.forEach((json, i) => {
    let doc: unknown;
    try {
      doc = JSON.parse(json);
    } catch (err) {
      rejected.push(`policy ${i + 1}: not JSON: ${(err as Error).message}`);
      return;
    }
    const r = validateAuthorizationPolicy(doc);
    if (r.ok) good.push(r.value);
    else rejected.push(`rejected, not enforced: ${r.errors.join('; ')}`);
  });
  return { matcher: compileAuthorization(good, workload, rootNamespace === undefined ? {} : { rootNamespace }), rejected };
}
