// The picker as the forwarding engine calls it, once per request (HTTP,
// gRPC) or per connection (opaque TCP): grpc-js's PickArgs/PickResult
// shape. A pick takes what it is for (the request, the endpoints this
// request already tried, an endpoint the client addressed directly) and
// returns the endpoint with two callbacks: onStart when the attempt is
// under way, onEnd when it is over, with what it taught us. Least-request
// compares what onStart/onEnd count, so it sees requests, not connections;
// outlier detection is a wrapper that feeds onEnd's outcome to the
// detector, as grpc-js's outlier-detection picker wraps its child's.
// Pure: the load counter and the detector are passed in.
import type { Outcome, RecordResult } from './outlier';
import type { Picker } from './picker';
import type { BalancerEndpoint, Random } from './types';

/** What an L7 pick may look at: the request as received (before route rewrites). */
export interface RequestInfo {
  method: string;
  path: string;
  authority: string;
}

/** The argument of one pick. */
export interface PickArgs<E> {
  /** Endpoint keys this request or connection already tried and failed on. */
  tried: ReadonlySet<string>;
  /** Tried first: the endpoint the client addressed directly (captured traffic to an endpoint address). */
  preferred?: E | undefined;
  random: Random;
  /** The request, for L7 picks; absent for an opaque connection. */
  request?: RequestInfo;
}

/** A successful pick and its callbacks. */
export interface EndpointPick<E> {
  type: 'pick';
  endpoint: E;
  /** Priority it came from; -1 for the preferred endpoint. */
  priority: number;
  panic: boolean;
  /** The attempt is under way: least-request counts it from now. */
  onStart(): void;
  /** The attempt is over; `outcome` (when it says something about the endpoint) goes to outlier detection. Call once, after onStart. */
  onEnd(outcome?: Outcome): RecordResult | undefined;
  /** Reports an outcome without ending the attempt (an opaque connection's first byte). */
  report(outcome: Outcome): RecordResult;
}

/** The result of a pick: an endpoint, nothing to pick from, or every endpoint already tried. */
export type RequestPickResult<E> = EndpointPick<E> | { type: 'none'; message: string } | { type: 'exhausted' };

/** How the engine keeps each endpoint's in-flight count (least-request reads it). */
export interface LoadTracker<E> {
  active(e: E): number;
  started(e: E): void;
  ended(e: E): void;
}

/** Where outcomes go: the service's outlier detector. */
export type OutcomeRecorder = (key: string, outcome: Outcome) => RecordResult;

/** A picker per request: see the file comment. */
export interface RequestPicker<E> {
  pick(args: PickArgs<E>): RequestPickResult<E>;
}

const IGNORED: RecordResult = { type: 'ignored' };

/**
 * Wraps `picker`: the endpoint the client addressed first (even when
 * unhealthy: it asked for that machine, and retries cover its failure),
 * then pick() for a first attempt and pickRetry() after failures, never
 * the same endpoint twice for one request ('exhausted' instead); the
 * result carries load callbacks, and outcomes go to `outliers` when given.
 */
export function requestPicker<E extends BalancerEndpoint>(picker: Picker<E>, load: LoadTracker<E>, outliers?: OutcomeRecorder): RequestPicker<E> {
  const active = (e: E): number => load.active(e);
  return {
    pick(args) {
      const { tried, random, preferred } = args;
      let endpoint: E;
      let priority = -1;
      let panic = false;
      if (tried.size === 0 && preferred !== undefined) endpoint = preferred;
      else {
        const r = tried.size === 0 ? picker.pick(random, active) : picker.pickRetry(tried, random, active);
        if (r.type === 'none') return tried.size === 0 ? { type: 'none', message: r.message } : { type: 'exhausted' };
        if (tried.has(r.endpoint.key)) return { type: 'exhausted' };
        ({ endpoint, priority, panic } = r);
      }
      let started = false;
      let ended = false;
      const report = (outcome: Outcome): RecordResult => (outliers ? outliers(endpoint.key, outcome) : IGNORED);
      return {
        type: 'pick',
        endpoint,
        priority,
        panic,
        report,
        onStart() {
          if (started) return;
          started = true;
          load.started(endpoint);
        },
        onEnd(outcome) {
          if (ended) return undefined;
          ended = true;
          if (started) load.ended(endpoint);
          return outcome === undefined ? undefined : report(outcome);
        },
      };
    },
  };
}
