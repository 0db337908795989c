// The federation's merged view of the mesh, in the wire shapes agents receive.
import type { Service__Output, Endpoint__Output, ServicePort__Output, HostFacts__Output } from '../../proto/loader';
import type { LocalityParts } from '../../proto/model/locality';

/** A service with every field set, as pushed to agents. */
export type MeshService = Service__Output;
/** An endpoint with every field set. */
export type MeshEndpoint = Endpoint__Output;
/** A service port with every field set. */
export type MeshServicePort = ServicePort__Output;

/** The merged mesh: services by key (name.namespace), built by a pure function. */
export interface MeshView {
  services: ReadonlyMap<string, MeshService>;
  /**
   * Service key -> the services its routes send traffic to (backendRefs and
   * mirrors). An agent subscribed to a service is pushed these too, so a
   * canary backend needs no subscription of its own. Absent: no routes.
   */
  routeBackends?: ReadonlyMap<string, readonly string[]>;
  /**
   * Set while the replica has just started (push/startup-hold.ts): pushes
   * carry new and changed services but no removals yet.
   */
  holdRemovals?: boolean;
}

/** A registered agent as stored under /kedge/agents/<namespace>/<name> (leased). */
export interface AgentRecord {
  /** <namespace>/<name> */
  id: string;
  /** SPIFFE ID of the certificate the agent connected with. */
  identity: string;
  workload: {
    name: string;
    namespace: string;
    serviceAccount: string;
    address: string;
    locality: LocalityParts;
    network: string;
    labels: Record<string, string>;
    inboundPort: number;
    /** The agent's Prometheus port at `address`; absent or 0 when it serves none. */
    metricsPort?: number;
  };
  services: { name: string; ports: { name: string; port: number; targetPort: number; protocol: string }[] }[];
  /** Health per service name; absent means healthy (no probe configured). */
  health: Record<string, { healthy: boolean; detail: string }>;
  host: HostFacts__Output | null;
  replica: string;
  /** Set for east-west gateway agents: where other networks reach them. */
  gateway?: { address: string; port: number };
  /** Set for agents in a Kubernetes pod: the cluster whose TokenReview admitted them. */
  cluster?: string;
  /** The binding (federation/grants) of the certificate it registered with: what it was granted, and who owns it. */
  binding?: string;
  connectedAt: string;
  agentVersion: string;
}

/** Push and contact state of an agent, as its replica last recorded it (kept apart from the record, see sources/agents.ts). */
export interface AgentStatus {
  ackedNonce: string;
  ackedAt: string | undefined;
  lastContact: string;
  certNotAfter: string;
  subscriptions: string[];
  /** The trust bundle sequence the agent reported installing (CA rotation). */
  bundleSequence?: number | undefined;
  /** Fingerprint of the root its current certificate chains to (CA rotation). */
  certRoot?: string | undefined;
}
