// Retry timing for Consul queries. Pure: the random source is passed in.

/** Exponential backoff bounds. */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

/** Default: 250 ms doubling to 15 s. */
export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({ initialMs: 250, maxMs: 15_000 });

/**
 * Delay before retry number `attempt` (1 = first retry): the exponential
 * step clamped to maxMs, then "equal jitter" (half fixed, half random) so a
 * federation with one query per Consul service does not send them all back
 * in the same millisecond after an outage, yet never retries in a tight loop.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const step = Math.min(opts.maxMs, opts.initialMs * 2 ** Math.max(0, Math.min(attempt - 1, 30)));
  return Math.round(step / 2 + random() * (step / 2));
}
