// The plain data the load balancer reads. Nothing here knows about sockets:
// the proxy maps its snapshot onto these shapes, and the balancer hands the
// same endpoint objects back from pick().
import type { LocalityParts } from '../../../proto/model/locality';

/** Where a workload runs: region/zone/subzone, any of which may be empty (unknown). */
export type Locality = LocalityParts;

/** What the balancer compares between a client and an endpoint: locality, network and labels. */
export interface Topology {
  locality: Locality;
  /** Network name; '' when the mesh has a single network. */
  network: string;
  labels: Readonly<Record<string, string>>;
}

/** One endpoint as the balancer sees it; the proxy passes its own objects that extend this. */
export interface BalancerEndpoint extends Topology {
  /** Stable identity of the endpoint, `address:port`; outlier state and retries are keyed by it. */
  key: string;
  /** Relative weight, a positive number (a gateway carries the count of healthy endpoints behind it). */
  weight: number;
  /** Health as the federation reports it (readiness, agent probes, stale sources). */
  healthy: boolean;
  /**
   * The service ports this endpoint carries; absent: all of them (a meshed
   * endpoint's proxy routes every port). A plaintext endpoint is one
   * endpoint per app port, each carrying only the service ports it serves.
   */
  servicePorts?: ReadonlySet<number>;
}

/** A source of uniform random numbers in [0, 1); Math.random in the proxy, a seeded PRNG in tests. */
export type Random = () => number;

/** Connections the proxy currently has open to an endpoint; what least-request compares. */
export type ActiveRequests<E> = (endpoint: E) => number;
