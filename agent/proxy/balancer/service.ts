// One service's balancer state as the proxy holds it: the endpoints of the
// current snapshot, the outlier detector, and the picker built from both.
// Still no clock and no timers: every call takes `now`, and picker(now)
// rebuilds the picker when an ejection has ended, so nothing needs to be
// scheduled. Not shared between worker processes: each keeps its own.
//
// When some endpoint carries only some service ports (plaintext endpoints,
// see BalancerEndpoint.servicePorts), each service port gets its own picker
// over the endpoints that carry it; the outlier detector stays one per
// service, so a meshed endpoint keeps one outlier state for all its ports,
// as before, and maxEjectionPercent counts every endpoint of the service.
import { OutlierDetector, type OutlierConfig, type Outcome, type RecordResult } from './outlier';
import { RateLimitBackoff } from './backoff';
import { type BalancerDescription, type EndpointDescription, type Picker, buildPicker } from './picker';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../../policy/traffic-policy';
import type { BalancerEndpoint, Topology } from './types';

/** An endpoint's description with the outlier detector's running count. */
export interface ServiceEndpointDescription extends EndpointDescription {
  consecutiveFailures: number;
}

/** What the admin endpoint shows for one service. */
export interface ServiceDescription extends Omit<BalancerDescription, 'endpoints'> {
  endpoints: ServiceEndpointDescription[];
}

// The pickers' key when every endpoint carries every port: one picker.
const ALL_PORTS = -1;

/** Endpoints, outlier detection and the current picker(s) of one service. */
export class ServiceBalancer<E extends BalancerEndpoint> {
  private endpoints: readonly E[] = [];
  private detector: OutlierDetector;
  /** Endpoints paused after a 429 / RESOURCE_EXHAUSTED. */
  private readonly backoff = new RateLimitBackoff();
  /** By service port, or ALL_PORTS; emptied whenever endpoints, policy or ejections change. */
  private readonly pickers = new Map<number, Picker<E>>();
  private perPort = false;
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
    this.perPort = endpoints.some((e) => e.servicePorts !== undefined);
    this.detector.sync(endpoints, now);
    this.backoff.sync(endpoints);
    this.pickers.clear();
  }

  /** True when pickers differ by service port (some endpoint carries only some ports). */
  get portSpecific(): boolean {
    return this.perPort;
  }

  /**
   * The picker for `servicePort` at `now`: over the endpoints that carry
   * that port (all of them when every endpoint carries every port, or when
   * no port is given). The same object until something changes.
   */
  picker(now: number, servicePort?: number): Picker<E> {
    if (this.nextReturn !== undefined && now >= this.nextReturn) this.pickers.clear();
    const slot = this.perPort && servicePort !== undefined ? servicePort : ALL_PORTS;
    let picker = this.pickers.get(slot);
    if (picker === undefined) {
      const endpoints = slot === ALL_PORTS ? this.endpoints : this.endpoints.filter((e) => e.servicePorts === undefined || e.servicePorts.has(slot));
      const ejections = new Map([...this.detector.ejections(now), ...this.backoff.active(now)]);
      picker = buildPicker({ endpoints, client: this.client, policy: this.policy, ejections });
      this.pickers.set(slot, picker);
      const a = this.detector.nextReturnAt();
      const b = this.backoff.nextEndAt(now);
      this.nextReturn = a === undefined ? b : b === undefined ? a : Math.min(a, b);
    }
    return picker;
  }

  /** Reports how a connection attempt went; an ejection takes effect on the next picker(now). */
  record(key: string, outcome: Outcome, now: number): RecordResult {
    if (outcome === 'rate-limited') {
      const b = this.backoff.limited(key, now);
      this.pickers.clear();
      return { type: 'backed-off', key, ...b };
    }
    if (outcome === 'success') this.backoff.succeeded(key);
    const r = this.detector.record(key, outcome, now);
    if (r.type === 'ejected') this.pickers.clear();
    return r;
  }

  /** Per-attempt connect timeout from the policy, if it sets one. */
  connectTimeoutMs(): number | undefined {
    return this.policy.connectTimeoutMs;
  }

  /** Priorities, health, ejections and shares (of `servicePort`'s picker, see picker()), for the admin endpoint. */
  describe(now: number, servicePort?: number): ServiceDescription {
    const d = this.picker(now, servicePort).describe();
    return { ...d, endpoints: d.endpoints.map((e) => ({ ...e, consecutiveFailures: this.detector.consecutiveFailures(e.key) })) };
  }
}

function sameOutlier(a: OutlierConfig, b: OutlierConfig): boolean {
  return (
    a.consecutiveErrors === b.consecutiveErrors &&
    a.consecutive5xxErrors === b.consecutive5xxErrors &&
    a.consecutiveGatewayErrors === b.consecutiveGatewayErrors &&
    a.intervalMs === b.intervalMs &&
    a.baseEjectionTimeMs === b.baseEjectionTimeMs &&
    a.maxEjectionTimeMs === b.maxEjectionTimeMs &&
    a.maxEjectionPercent === b.maxEjectionPercent
  );
}
