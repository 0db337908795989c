// What every endpoint source (kubernetes, consul, static, agents) hands the
// mesh merge: plain data, rebuilt by the source on change. A source that
// loses its backend keeps its last services, with endpoints marked STALE,
// rather than emptying the mesh.
import type { MeshEndpoint, MeshServicePort } from '../mesh/types';

/** One service as one source sees it; merged with other sources by name.namespace. */
export interface SourceService {
  name: string;
  namespace: string;
  ports: MeshServicePort[];
  /** Endpoints with cluster, network, locality, health and labels set. */
  endpoints: MeshEndpoint[];
}

/** The kinds of source the federation knows. */
export type SourceKind = 'agents' | 'kubernetes' | 'consul' | 'static';

/** Health of a source, for `kedge get clusters` and readiness. */
export interface SourceStatus {
  name: string;
  kind: SourceKind;
  /** True while the backend answers (watch established, last query succeeded). */
  connected: boolean;
  /** When the source last had a complete, current view of its backend (ISO time). */
  lastSync: string | undefined;
  /** True when the endpoints served are the last known ones of an unreachable backend. */
  stale: boolean;
  /** The last error, phrased for an operator. */
  error: string | undefined;
  services: number;
  endpoints: number;
}

/** An endpoint source, started once and closed at shutdown. */
export interface Source {
  readonly name: string;
  readonly kind: SourceKind;
  /**
   * Starts watching; `onChange` is called whenever services() changed.
   * Resolves once the first sync finished or failed: an unreachable backend
   * never blocks federation start-up, it retries with backoff in the background.
   */
  start(onChange: () => void): Promise<void>;
  /** The current (or last known) services; must not be mutated by callers. */
  services(): readonly SourceService[];
  /**
   * Route documents (HTTPRoute, GRPCRoute) the source read, as the backend
   * returned them; the same array until they change. Absent: the source has none.
   */
  routes?(): readonly unknown[];
  /**
   * AuthorizationPolicy and PeerAuthentication documents (Kubernetes
   * sources), as the API server returned them; the same array until they
   * change. Absent: the source has none.
   */
  securityPolicies?(): readonly unknown[];
  status(): SourceStatus;
  close(): Promise<void>;
}
