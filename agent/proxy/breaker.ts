// Circuit breaking and the retry budget of one destination service, as
// Envoy's cluster circuit breakers: requests in flight (maxRequests),
// requests waiting for a connection (maxPendingRequests), connections
// (maxConnections, checked by the caller against its pools) and retries in
// flight (maxRetries); and Envoy's retry budget: retries in flight may be
// `percent` of the requests in flight, and at least `minRetriesPerSecond`
// per second whatever the share, so retries cannot multiply an outage.
// A tripped limit answers 503 with the UO flag. Plain counters; the clock
// is passed in.
import type { CircuitBreakerConfig, RetryBudgetConfig } from '../../policy/traffic-policy';

/** Why a request or retry was refused. */
export type BreakerRefusal = 'max-requests' | 'max-pending' | 'max-retries' | 'retry-budget';

/** One service's breaker state. */
export class ServiceBreaker {
  requests = 0;
  pending = 0;
  retries = 0;
  private windowStart = 0;
  private windowRetries = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(
    public limits: CircuitBreakerConfig,
    public budget: RetryBudgetConfig,
  ) {}

  /** A request starts; undefined when admitted (call the returned release once), the refusal otherwise. */
  admitRequest(): BreakerRefusal | (() => void) {
    if (this.requests >= this.limits.maxRequests) return 'max-requests';
    this.requests++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.requests--;
    };
  }

  /**
   * A retry of a request in flight; `now` in ms. Admitted while under
   * maxRetries and within the budget (percent of requests in flight, or the
   * per-second minimum).
   */
  admitRetry(now: number): BreakerRefusal | (() => void) {
    if (this.retries >= this.limits.maxRetries) return 'max-retries';
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.windowRetries = 0;
    }
    const byShare = this.retries < (this.budget.percent / 100) * this.requests;
    const byMinimum = this.windowRetries < this.budget.minRetriesPerSecond;
    if (!byShare && !byMinimum) return 'retry-budget';
    this.retries++;
    this.windowRetries++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.retries--;
    };
  }

  /**
   * Waits for a connection: resolves with a release (call it once the
   * request has its connection, or gave up), or the refusal when
   * maxPendingRequests are already waiting. `wait` says whether the request
   * must queue for a free connection (maxConnections reached) rather than
   * just dial.
   */
  async pend(wait: boolean): Promise<BreakerRefusal | (() => void)> {
    if (this.pending >= this.limits.maxPendingRequests) return 'max-pending';
    this.pending++;
    let done = false;
    const release = (): void => {
      if (done) return;
      done = true;
      this.pending--;
    };
    if (wait) await new Promise<void>((r) => this.waiters.push(r));
    return release;
  }

  /** Queues `wake` for the next free connection. */
  waitOnce(wake: () => void): void {
    this.waiters.push(wake);
  }

  /** A connection of the service became free (or closed): the oldest waiter tries again. */
  wake(): void {
    this.waiters.shift()?.();
  }

  /** Every waiter tries again (an HTTP/2 session opened or closed: it may serve all of them). */
  wakeAll(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Requests queued for a free connection now. */
  get waiting(): number {
    return this.waiters.length;
  }
}

/** The breakers of every destination service, by name.namespace. */
export class Breakers {
  private readonly byService = new Map<string, ServiceBreaker>();

  /** The breaker of `service`, created on first use and given the current limits. */
  get(service: string, limits: CircuitBreakerConfig, budget: RetryBudgetConfig): ServiceBreaker {
    let b = this.byService.get(service);
    if (b === undefined) this.byService.set(service, (b = new ServiceBreaker(limits, budget)));
    else {
      b.limits = limits;
      b.budget = budget;
    }
    return b;
  }

  /** Forgets services that left the view and have nothing in flight. */
  prune(keep: (service: string) => boolean): void {
    for (const [k, b] of this.byService) if (!keep(k) && b.requests === 0 && b.pending === 0 && b.waiting === 0) this.byService.delete(k);
  }
}

/** The message a refused request gets. */
export function refusalMessage(service: string, r: BreakerRefusal, limits: CircuitBreakerConfig): string {
  switch (r) {
    case 'max-requests':
      return `circuit breaker: ${service} already has maxRequests (${limits.maxRequests}) requests in flight; raise spec.circuitBreaker.maxRequests in its TrafficPolicy if the service can take more`;
    case 'max-pending':
      return `circuit breaker: ${service} already has maxPendingRequests (${limits.maxPendingRequests}) requests waiting for a connection; raise spec.circuitBreaker.maxPendingRequests or maxConnections`;
    case 'max-retries':
      return `circuit breaker: ${service} already has maxRetries (${limits.maxRetries}) retries in flight`;
    case 'retry-budget':
      return `retry budget of ${service} exhausted`;
  }
}
