// One service's balancer state as the proxy holds it: the endpoints of the
// current snapshot, the outlier detector, and the picker built from both.
// Still no clock and no timers: every call takes `now`, and picker(now)
// rebuilds the picker when an ejection has ended, so nothing needs to be
// scheduled. Not shared between worker processes: each keeps its own.
import { OutlierDetector, type OutlierConfig, type Outcome, type RecordResult } from './outlier';
import { type BalancerDescription, type EndpointDescription, type Picker, buildPicker } from './picker';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from './policy';
import type { BalancerEndpoint, Topology } from './types';

/** An endpoint's description with the outlier detector's running count. */
export interface ServiceEndpointDescription extends EndpointDescription {
  consecutiveFailures: number;
}

/** What the admin endpoint shows for one service. */
export interface ServiceDescription extends Omit<BalancerDescription, 'endpoints'> {
  endpoints: ServiceEndpointDescription[];
}

/** Endpoints, outlier detection and the current picker of one service. */
export class ServiceBalancer<E extends BalancerEndpoint> {
  private endpoints: readonly E[] = [];
  private detector: OutlierDetector;
  private current: Picker<E> | undefined;
  private nextReturn: number | undefined;

  constructor(
    private readonly client: Topology,
    private policy: TrafficPolicy = TRAFFIC_POLICY_DEFAULTS,
  ) {
    this.detector = new OutlierDetector(policy.outlierDetection);
  }

  /**
   * Takes the endpoints of a new snapshot, and a new policy when it changed.
   * Outlier state survives for endpoints that remain; a change of the
   * outlier settings starts detection afresh.
   */
  update(endpoints: readonly E[], now: number, policy?: TrafficPolicy): void {
    if (policy !== undefined && policy !== this.policy) {
      if (!sameOutlier(policy.outlierDetection, this.policy.outlierDetection)) this.detector = new OutlierDetector(policy.outlierDetection);
      this.policy = policy;
    }
    this.endpoints = endpoints;
    this.detector.sync(endpoints, now);
    this.current = undefined;
  }

  /** The picker to use at `now`; the same object until something changes. */
  picker(now: number): Picker<E> {
    if (this.nextReturn !== undefined && now >= this.nextReturn) this.current = undefined;
    if (this.current === undefined) {
      this.current = buildPicker({ endpoints: this.endpoints, client: this.client, policy: this.policy, ejections: this.detector.ejections(now) });
      this.nextReturn = this.detector.nextReturnAt();
    }
    return this.current;
  }

  /** Reports how a connection attempt went; an ejection takes effect on the next picker(now). */
  record(key: string, outcome: Outcome, now: number): RecordResult {
    const r = this.detector.record(key, outcome, now);
    if (r.type === 'ejected') this.current = undefined;
    return r;
  }

  /** Per-attempt connect timeout from the policy, if it sets one. */
  connectTimeoutMs(): number | undefined {
    return this.policy.connectTimeoutMs;
  }

  /** Priorities, health, ejections and shares, for the admin endpoint. */
  describe(now: number): ServiceDescription {
    const d = this.picker(now).describe();
    return { ...d, endpoints: d.endpoints.map((e) => ({ ...e, consecutiveFailures: this.detector.consecutiveFailures(e.key) })) };
  }
}

function sameOutlier(a: OutlierConfig, b: OutlierConfig): boolean {
  return (
    a.consecutiveErrors === b.consecutiveErrors &&
    a.intervalMs === b.intervalMs &&
    a.baseEjectionTimeMs === b.baseEjectionTimeMs &&
    a.maxEjectionTimeMs === b.maxEjectionTimeMs &&
    a.maxEjectionPercent === b.maxEjectionPercent
  );
}
