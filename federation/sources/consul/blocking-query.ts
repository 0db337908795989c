// One Consul blocking query kept running: ask with the last X-Consul-Index
// and a wait, hand on the answer when the index moved, ask again. Follows
// Consul's client rules for blocking queries: an index that is 0 is treated
// as 1, an index that went backwards is taken as a reset (the answer is new
// data), and the loop is rate-limited so an index that moves constantly
// cannot make it spin. Errors retry with jittered backoff, and the first
// request after an error is non-blocking so a recovered Consul is noticed at
// once rather than after a whole wait.
import { EventEmitter } from 'node:events';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff';

/** One answer: the data, its X-Consul-Index, and whether ACLs hid results. */
export interface BlockingAnswer<T> {
  index: bigint;
  body: T;
  filteredByAcl: boolean;
}

/** How the loop asks, and where answers and errors go. */
export interface BlockingQueryOptions<T> {
  /** One request: blocking when `index` is set. `ctx` emits 'cancel' to abort it. */
  fetch(index: bigint | undefined, ctx: EventEmitter): Promise<BlockingAnswer<T>>;
  /** The first answer, every answer whose index moved, and the first after an error. */
  onData(answer: BlockingAnswer<T>): void;
  onError(err: unknown): void;
  backoff?: BackoffOptions;
  /** Minimum time between the starts of two requests (Consul recommends rate-limiting). */
  minIntervalMs?: number;
  now?: () => number;
}

/** A blocking query loop: start once, stop at close. */
export class BlockingQuery<T> {
  /** Resolves after the first answer or the first error. */
  readonly first: Promise<void>;
  /** True from an error until the next answer. */
  failing = false;
  /** When the last answer arrived (ms), undefined before the first. */
  lastOk: number | undefined;
  /**
   * When the current run of errors began (ms), undefined while answering.
   * Not lastOk: an idle blocking query answers only once per wait, yet the
   * view was current until the moment the connection failed.
   */
  failingSince: number | undefined;
  filteredByAcl = false;
  private index: bigint | undefined;
  private attempt = 0;
  private stopped = false;
  private readonly ctx: EventEmitter & { includeResponse?: boolean; canceled?: boolean };
  private wake: (() => void) | undefined;
  private resolveFirst!: () => void;
  private readonly now: () => number;

  constructor(private readonly opts: BlockingQueryOptions<T>) {
    this.now = opts.now ?? Date.now;
    // The consul client aborts a request when its ctx emits 'cancel', and
    // returns [response, body] when ctx.includeResponse is set.
    this.ctx = Object.assign(new EventEmitter(), { includeResponse: true });
    this.first = new Promise((r) => (this.resolveFirst = r));
    void this.run();
  }

  /** Cuts a backoff sleep short, e.g. when another query saw Consul come back. */
  retryNow(): void {
    this.wake?.();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.ctx.canceled = true;
    this.ctx.emit('cancel');
    this.wake?.();
    this.resolveFirst();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const started = this.now();
      let pause = 0;
      try {
        const answer = await this.opts.fetch(this.index, this.ctx);
        if (this.stopped) break;
        // Consul: an index of 0 is a server bug that would make every
        // request return at once; treat it as 1.
        const next = answer.index > 0n ? answer.index : 1n;
        const changed = this.index === undefined || next !== this.index;
        this.index = next;
        this.attempt = 0;
        this.failing = false;
        this.failingSince = undefined;
        this.lastOk = this.now();
        this.filteredByAcl = answer.filteredByAcl;
        if (changed) this.opts.onData(answer);
        pause = Math.max(0, (this.opts.minIntervalMs ?? 50) - (this.now() - started));
      } catch (err) {
        if (this.stopped) break;
        this.failing = true;
        this.failingSince ??= this.now();
        this.index = undefined;
        this.attempt += 1;
        this.opts.onError(err);
        pause = backoffDelay(this.attempt, this.opts.backoff ?? DEFAULT_BACKOFF);
      }
      this.resolveFirst();
      if (pause > 0) await this.sleep(pause);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(), ms);
      const done = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
    });
  }
}
