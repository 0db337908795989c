// Retry delays for list/watch: exponential with jitter, so that many
// federation replicas (or many clusters' sources) that lost an API server
// together do not come back in lockstep.

/** Backoff bounds. */
export interface BackoffPolicy {
  /** Delay of the first retry (before jitter). */
  initialMs: number;
  /** Cap of the exponential growth. */
  maxMs: number;
}

/** client-go's reflector backs off from 800 ms to 30 s; Kedge starts a little quicker. */
export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 250, maxMs: 30_000 };

/**
 * Delay before retry number `attempt` (0-based): min(max, initial * 2^attempt),
 * scaled by a jitter factor in [0.5, 1) from `random`.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const base = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(base * (0.5 + random() / 2));
}
