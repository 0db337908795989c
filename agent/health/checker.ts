// Runs each service's probe on its period and reports health transitions.
//
// The decision is the pure `nextHealth`; `HealthChecker` is the thin loop
// around it (timers, the probe runner and the listener are passed in).
//
// Start state: a probed service is *not ready until proven*, as Kubernetes
// readiness starts not-ready. Its state is `unknown` until the first
// decision, and `snapshot()` reports it unhealthy ("waiting for the first
// probe result"), so an agent that sends the snapshot when it registers
// never lets traffic reach an app that has not answered yet (the federation
// treats a service with no report as healthy). The first decision comes
// after `healthyThreshold` consecutive successes, or at the first failure:
// unhealthyThreshold protects a proven endpoint from one bad probe; an
// unproven one has nothing to protect.
import type { Logger } from '../../proto/model/log';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { HealthCheckConfig, HealthThresholds } from './config';
import { runProbe as defaultRunProbe, type ProbeResult, type ProbeRunner } from './probes';

/** Where a service stands: `unknown` until the first decision. */
export type HealthStatus = 'unknown' | 'healthy' | 'unhealthy';

/** The state machine's state: the status and the current run of equal results. */
export interface HealthState {
  readonly status: HealthStatus;
  /** Consecutive successes (0 after a failure). */
  readonly successes: number;
  /** Consecutive failures (0 after a success). */
  readonly failures: number;
}

/** The state of a service that has not been probed yet. */
export const INITIAL_HEALTH: HealthState = Object.freeze({ status: 'unknown', successes: 0, failures: 0 });

/** The next state after one probe result. Pure. */
export function nextHealth(state: HealthState, result: { ok: boolean }, t: HealthThresholds): HealthState {
  if (result.ok) {
    const successes = state.successes + 1;
    const status = state.status !== 'healthy' && successes >= t.healthyThreshold ? 'healthy' : state.status;
    return { status, successes, failures: 0 };
  }
  const failures = state.failures + 1;
  const status = state.status === 'unknown' || (state.status === 'healthy' && failures >= t.unhealthyThreshold) ? 'unhealthy' : state.status;
  return { status, successes: 0, failures };
}

/** A service's reported health, in the shape of kedge.v1.ServiceHealth. */
export interface ServiceHealth {
  service: string;
  healthy: boolean;
  detail: string;
}

/** Called on each transition, and once for the first decision. */
export type HealthChangeListener = (service: string, healthy: boolean, detail: string) => void;

/** The clock the checker runs on; tests pass a fake one. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

/** Node's timers, unref'd: health probes never keep a process alive on their own. */
export const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  now: () => Date.now(),
};

/** One probed service. */
export interface HealthTarget {
  service: string;
  check: HealthCheckConfig;
}

/** What a HealthChecker needs. */
export interface HealthCheckerOptions {
  targets: readonly HealthTarget[];
  onChange: HealthChangeListener;
  log: Logger;
  /** Defaults to the real probes. */
  runProbe?: ProbeRunner;
  /** Defaults to realTimers. */
  timers?: Timers;
}

/** Longest detail reported: it travels to the federation and into `kedge get` output. */
export const MAX_DETAIL = 1024;

const WAITING = 'waiting for the first probe result';

interface TargetRun {
  readonly target: HealthTarget;
  state: HealthState;
  detail: string;
  timer: unknown;
  inFlight: Promise<void> | undefined;
}

/** Probes every target on its period, one run at a time per target, and reports transitions. */
export class HealthChecker {
  private readonly runs = new Map<string, TargetRun>();
  private readonly runProbe: ProbeRunner;
  private readonly timers: Timers;
  private readonly abort = new AbortController();
  private started = false;
  private stopped = false;

  constructor(private readonly opts: HealthCheckerOptions) {
    this.runProbe = opts.runProbe ?? defaultRunProbe;
    this.timers = opts.timers ?? realTimers;
    for (const target of opts.targets) {
      if (this.runs.has(target.service)) throw new KedgeError('KEDGE_BAD_CONFIG', `health: service "${target.service}" has two health checks; a service has one`);
      this.runs.set(target.service, { target, state: INITIAL_HEALTH, detail: WAITING, timer: undefined, inFlight: undefined });
    }
  }

  /** Schedules each target's first probe after its initialDelay. Idempotent. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    for (const run of this.runs.values()) this.schedule(run, run.target.check.initialDelayMs);
  }

  /** Cancels timers and in-flight probes (killing exec'd commands); resolves when they have settled. No report follows. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    const pending: Promise<void>[] = [];
    for (const run of this.runs.values()) {
      if (run.timer !== undefined) this.timers.clearTimeout(run.timer);
      run.timer = undefined;
      if (run.inFlight) pending.push(run.inFlight);
    }
    await Promise.all(pending);
  }

  /**
   * Every target's current health; undecided ones are unhealthy ("waiting
   * for the first probe result"). Send it whole when a federation stream
   * (re)connects: a new stream starts with no health on the federation side.
   */
  snapshot(): ServiceHealth[] {
    return [...this.runs.values()].map((r) => ({ service: r.target.service, healthy: r.state.status === 'healthy', detail: r.detail }));
  }

  /** One target's state machine state, for the admin endpoint and tests. */
  state(service: string): HealthState | undefined {
    return this.runs.get(service)?.state;
  }

  private schedule(run: TargetRun, delayMs: number): void {
    run.timer = this.timers.setTimeout(() => {
      run.timer = undefined;
      run.inFlight = this.probeOnce(run).finally(() => (run.inFlight = undefined));
    }, delayMs);
  }

  // The next run is scheduled only after this one settles, so runs of one
  // probe never overlap; the period counts from this run's start, so a slow
  // probe does not stretch it (a probe slower than its period runs back to back).
  private async probeOnce(run: TargetRun): Promise<void> {
    if (this.stopped) return;
    const { check } = run.target;
    const started = this.timers.now();
    let result: ProbeResult;
    try {
      result = await this.runProbe(check.probe, check.timeoutMs, this.abort.signal);
    } catch (err) {
      result = { ok: false, detail: `probe failed: ${errorMessage(err)}` };
    }
    if (this.stopped) return;
    this.apply(run, result);
    this.schedule(run, Math.max(0, check.periodMs - (this.timers.now() - started)));
  }

  private apply(run: TargetRun, result: ProbeResult): void {
    const before = run.state.status;
    run.state = nextHealth(run.state, result, run.target.check);
    const after = run.state.status;
    if (after === 'unknown') return;
    const detail = bound(after === 'unhealthy' && run.state.failures > 1 ? `${run.state.failures} consecutive failures, last: ${result.detail}` : result.detail);
    // The detail of a standing decision follows the latest result of the
    // same kind, so a snapshot explains the current state.
    if ((after === 'healthy') === result.ok) run.detail = detail;
    if (after === before) return;
    const healthy = after === 'healthy';
    const log = this.opts.log.child({ service: run.target.service, probe: run.target.check.probe.kind });
    if (healthy) log.info({ detail }, 'service is healthy');
    else log.warn({ detail }, 'service is unhealthy: the federation marks its endpoints here UNHEALTHY');
    try {
      this.opts.onChange(run.target.service, healthy, detail);
    } catch (err) {
      log.error({ err: errorMessage(err) }, 'health change listener failed');
    }
  }
}

function bound(s: string): string {
  return s.length <= MAX_DETAIL ? s : `${s.slice(0, MAX_DETAIL - 1)}…`;
}
