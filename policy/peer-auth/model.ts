// Validated PeerAuthentication documents (security.istio.io/v1) as plain
// data, and what resolving them for one workload yields: a mode per port.

/** Istio's mTLS modes. UNSET inherits from the next less specific policy. */
export type PeerAuthMode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';
/** A resolved mode: never UNSET. */
export type EffectiveMode = Exclude<PeerAuthMode, 'UNSET'>;

/** A validated PeerAuthentication. */
export interface PeerAuthObject {
  kind: 'PeerAuthentication';
  name: string;
  namespace: string;
  /** RFC 3339 (ISO) creation time, '' when unknown; the oldest of several equally specific policies wins. */
  createdAt: string;
  /** selector.matchLabels; undefined or empty: namespace-wide (mesh-wide in the root namespace). */
  selector: Readonly<Record<string, string>> | undefined;
  /** spec.mtls.mode; UNSET when absent. */
  mode: PeerAuthMode;
  /** portLevelMtls: workload (target) port to mode; only with a selector. */
  ports: Readonly<Record<number, PeerAuthMode>>;
}

/** The modes in force for one workload: a default and the ports that differ. */
export interface PeerAuthResolution {
  /** The workload-level mode (PERMISSIVE when no policy sets one, as in Istio). */
  mode: EffectiveMode;
  /** Ports whose portLevelMtls gives another mode. */
  ports: ReadonlyMap<number, EffectiveMode>;
  /** The policies that decided, most specific last, as `namespace/name`. */
  from: readonly string[];
}
