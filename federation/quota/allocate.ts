// The pure arithmetic of quota leases: how much more each server proxy
// needs for the next stretch of its window, and how a limited budget is
// split among them in proportion to that need (largest remainder, so the
// split adds up exactly). No clock, no store.

/** What one proxy told us about one key. */
export interface ProxyDemand {
  /** Admitted so far in the window. */
  admitted: number;
  /** Requests seen per millisecond lately (admitted or refused). */
  rate: number;
  /** Granted so far in the window. */
  grant: number;
}

/**
 * The increment a proxy needs so its grant covers what it admitted plus
 * `horizonMs` of its recent demand, never more than `cap` in all.
 */
export function needOf(d: ProxyDemand, horizonMs: number, cap: number): number {
  const target = Math.min(cap, d.admitted + Math.ceil(d.rate * horizonMs));
  return Math.max(0, target - d.grant);
}

/** Splits `pool` (whole requests) over `needs` in proportion to them; each gets at most its need. */
export function split(needs: readonly number[], pool: number): number[] {
  const total = needs.reduce((a, b) => a + b, 0);
  if (total <= pool) return [...needs];
  if (pool <= 0 || total === 0) return needs.map(() => 0);
  const exact = needs.map((n) => (n * pool) / total);
  const out = exact.map(Math.floor);
  let left = pool - out.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => ({ i, r: x - Math.floor(x) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of order) {
    if (left <= 0) break;
    if (out[i]! < needs[i]!) {
      out[i]! += 1;
      left -= 1;
    }
  }
  return out;
}
