// The agent's side of HTTPLocalRateLimitPolicy and MeshQuota: the documents
// the federation pushed for this workload's services are validated again (a
// document this agent cannot use is rejected alone, named in the Ack's
// error_detail) and the good ones handed to the proxy's limiter.
import type { LocalRateLimitPolicy, MeshQuotaPolicy } from '../../policy/ratelimit/model';
import { validateRateLimitDocument } from '../../policy/ratelimit/validate';

/** The outcome of one RateLimits message. */
export interface AppliedRateLimits {
  local: LocalRateLimitPolicy[];
  quotas: MeshQuotaPolicy[];
  /** One line per rejected document, naming it and what is wrong. */
  rejected: string[];
}

/** Validates pushed rate-limit documents (JSON). */
export function applyRateLimits(docs: readonly string[]): AppliedRateLimits {
  const out: AppliedRateLimits = { local: [], quotas: [], rejected: [] };
  docs.forEach((json, i) => {
    let doc: unknown;
    try {
      doc = JSON.parse(json);
    } catch (err) {
      out.rejected.push(`rate-limit document ${i + 1}: not JSON: ${(err as Error).message}`);
      return;
    }
    const r = validateRateLimitDocument(doc);
    if (!r.ok) out.rejected.push(`rejected, not enforced: ${r.errors.join('; ')}`);
    else if (r.value.kind === 'MeshQuota') out.quotas.push(r.value);
    else out.local.push(r.value);
  });
  return out;
}
