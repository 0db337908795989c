// A warning that an untrusted client can trigger at will (a wrong-token Sign,
// a refused connection) is written at most `linesPerWindow` times per
// window; the rest are counted, and the count goes out on the next line
// written or, when the flood stopped, in one summary line when the window
// ends. Without this, wrong-token Sign calls at ~2,000/s wrote about 600 KB
// of log per second from one client.
import type { Logger } from './log';
import type { LogRateLimits } from './limits';

type Level = 'warn' | 'info' | 'error';

/** Rate-bounded log lines of one kind. */
export class BoundedLog {
  private windowStart = 0;
  private written = 0;
  private suppressed = 0;
  private suppressedTotal = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Logger,
    private readonly msg: string,
    private readonly limits: LogRateLimits,
    private readonly level: Level = 'warn',
    private readonly clock: () => number = Date.now,
  ) {}

  /** Writes the line, or counts it when this window's lines are used up. */
  log(fields: Record<string, unknown>): void {
    const now = this.clock();
    if (now - this.windowStart >= this.limits.windowMs) this.roll(now);
    if (this.written >= this.limits.linesPerWindow) {
      this.suppressed++;
      this.suppressedTotal++;
      this.armSummary();
      return;
    }
    this.written++;
    this.logger[this.level](fields, this.msg);
  }

  /** How many lines were counted instead of written since this log was made. */
  suppressedCount(): number {
    return this.suppressedTotal;
  }

  /** Writes the pending summary now (at shutdown) and stops the timer. */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
  }

  private roll(now: number): void {
    // The summary timer belongs to the window that ends here; the new window arms its own.
    clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
    this.windowStart = now;
    this.written = 0;
  }

  private flush(): void {
    if (this.suppressed === 0) return;
    this.logger[this.level]({ suppressed: this.suppressed, windowMs: this.limits.windowMs }, `${this.msg} (${this.suppressed} more like this not logged in the last window)`);
    this.suppressed = 0;
  }

  private armSummary(): void {
    if (this.timer) return;
    const wait = Math.max(1, this.windowStart + this.limits.windowMs - this.clock());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // The clock decides when the window ends (a timer may fire early).
      if (this.clock() - this.windowStart >= this.limits.windowMs) this.roll(this.clock());
      else this.armSummary();
    }, wait);
    this.timer.unref();
  }
}
