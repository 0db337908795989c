// Rate-limit back-off: an endpoint that answered 429 or gRPC
// RESOURCE_EXHAUSTED is taken out of balancing for a short while, as Linkerd
// 2.20's rate-limit-aware balancing penalizes it, instead of being retried
// into. The pause doubles with each rate-limited answer in a row (1 s, 2 s,
// 4 s, up to 10 s) and the streak ends at the endpoint's next success. It is
// not an outlier ejection: the endpoint is healthy, just busy, so it counts
// toward neither the consecutive-error counters nor maxEjectionPercent; the
// picker treats it as ejected (and, if every endpoint is paused, panics and
// uses them all, as with ejections). Pure: every call takes `now`.
import type { Ejection } from './outlier';

/** The first pause, and the longest. */
export const BACKOFF_BASE_MS = 1_000;
export const BACKOFF_MAX_MS = 10_000;

interface State {
  streak: number;
  since: number;
  until: number;
}

/** The back-offs of one service's endpoints. */
export class RateLimitBackoff {
  private readonly states = new Map<string, State>();

  /** An endpoint answered "rate limited": pause it; returns until when. */
  limited(key: string, now: number): { until: number; streak: number } {
    const s = this.states.get(key);
    const streak = (s?.streak ?? 0) + 1;
    const until = now + Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (streak - 1));
    this.states.set(key, { streak, since: now, until });
    return { until, streak };
  }

  /** An endpoint answered normally: its streak ends (a pause under way runs out). */
  succeeded(key: string): void {
    const s = this.states.get(key);
    if (s) s.streak = 0;
  }

  /** Forgets endpoints no longer in the service. */
  sync(keys: Iterable<{ key: string }>): void {
    const live = new Set<string>();
    for (const { key } of keys) live.add(key);
    for (const k of this.states.keys()) if (!live.has(k)) this.states.delete(k);
  }

  /** The pauses under way at `now`, as ejections for the picker. */
  active(now: number): Map<string, Ejection> {
    const out = new Map<string, Ejection>();
    for (const [k, s] of this.states) {
      if (s.until > now) out.set(k, { since: s.since, until: s.until, multiplier: s.streak });
      else if (s.streak === 0) this.states.delete(k);
    }
    return out;
  }

  /** When the next pause ends (to rebuild the picker then); undefined when none is under way. */
  nextEndAt(now: number): number | undefined {
    let next: number | undefined;
    for (const s of this.states.values()) if (s.until > now && (next === undefined || s.until < next)) next = s.until;
    return next;
  }
}
