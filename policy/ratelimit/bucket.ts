// A token bucket with the clock passed in: `rate` tokens per second refill
// it continuously up to `burst`; each admission takes one. Pure, no timers.
import type { BucketSpec } from './model';

/** One bucket's state. */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(readonly spec: BucketSpec, now: number) {
    this.tokens = spec.burst;
    this.at = now;
  }

  private refill(now: number): void {
    if (now > this.at) {
      this.tokens = Math.min(this.spec.burst, this.tokens + ((now - this.at) * this.spec.rate) / 1000);
      this.at = now;
    }
  }

  /** Whether a token is there at `now` (without taking it). */
  available(now: number): boolean {
    this.refill(now);
    return this.tokens >= 1;
  }

  /** Takes a token; call after available() said yes. */
  take(): void {
    this.tokens -= 1;
  }

  /** Whole seconds until a token is back (at least 1): the retry-after value. */
  retryAfterSeconds(now: number): number {
    this.refill(now);
    return Math.max(1, Math.ceil((1 - this.tokens) / this.spec.rate));
  }

  /** Whether the bucket is full at `now`, so a keyed table may forget it. */
  full(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.spec.burst;
  }
}
