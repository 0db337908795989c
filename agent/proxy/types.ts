// The plain data the proxy reads. The agent builds a new ProxySnapshot on
// every accepted update and swaps it in one step; listeners never see a
// half-applied update.

/**
 * One endpoint of a service as the client proxy dials it. A meshed endpoint
 * (a Kedge proxy in front) is dialled over mTLS at `mtlsPort`; a plaintext
 * one (an unmeshed pod, a Consul instance, a service entry) in plain TCP at
 * its own port for the service port, from `ports` (auto mTLS).
 */
export interface EndpointView {
  /** Address of the endpoint's proxy, or of the plaintext endpoint itself. */
  address: string;
  /** Inbound mTLS port of the endpoint's proxy; 0 for a plaintext endpoint. */
  mtlsPort: number;
  /** SPIFFE ID the endpoint's proxy must present; a mismatch fails the connection. '' for a plaintext endpoint. */
  identity: string;
  workload: string;
  healthy: boolean;
  /**
   * Ports the endpoint serves, by service port name: the port the app
   * listens on behind the proxy, or for a plaintext endpoint the port dialled.
   */
  ports: readonly { name: string; port: number }[];
  /**
   * True when no Kedge proxy is in front of the endpoint: the client proxy
   * dials it in plain TCP, with no TLS and so no check of who answers.
   * Absent or false: meshed.
   */
  plaintext?: boolean;
  /** Where it runs, for locality-aware balancing (region/zone/subzone may be ''). */
  locality?: { region: string; zone: string; subzone: string };
  network?: string;
  /** The cluster the federation says it runs in (`vms` for VM agents); telemetry's destination_cluster. */
  cluster?: string;
  labels?: Readonly<Record<string, string>>;
  /** Relative weight within its priority (default 1). */
  weight?: number;
}

/** A port of a service. */
export interface ServicePortView {
  name: string;
  port: number;
  protocol: string;
}

/** A service as the client proxy sees it. */
export interface ServiceView {
  /** name.namespace */
  key: string;
  hostname: string;
  vip: string;
  ports: readonly ServicePortView[];
  endpoints: readonly EndpointView[];
  version: string;
  /** The service's traffic policy, validated; undefined means the defaults. */
  policy?: import('../../policy/traffic-policy').TrafficPolicy;
  /**
   * HTTPRoutes/GRPCRoutes attached to the service, compiled for this agent's
   * namespace (policy/routes). Undefined: none, every port goes to the
   * service itself.
   */
  routes?: import('../../policy/routes/types').ServiceRoutes;
}

/** Immutable view of the mesh for the proxy, swapped atomically. */
export interface ProxySnapshot {
  /** Nonce of the federation update this snapshot came from ('' before the first). */
  version: string;
  services: ReadonlyMap<string, ServiceView>;
  /**
   * Serial numbers (uppercase hex, as X509Certificate reports them) of mesh
   * certificates the federation has revoked. Inbound listeners and gateways
   * refuse a peer presenting one on a new handshake and close open
   * connections from one when a snapshot adds it. Absent: none.
   */
  revokedSerials?: ReadonlySet<string>;
  /**
   * The AuthorizationPolicies selecting this workload, compiled once per
   * push (policy/authz). The inbound listener evaluates it per HTTP request
   * and per opaque connection. Absent: none, everything is allowed.
   */
  authorization?: import('../../policy/authz/compile').AuthzMatcher;
  /**
   * The PeerAuthentications in force for this workload, resolved per port
   * (policy/peer-auth). The inbound capture front accepts or refuses
   * captured plaintext by it. Absent: no policy arrived, the agent's
   * configured inboundMode decides.
   */
  peerAuthentication?: import('../../policy/peer-auth/model').PeerAuthResolution;
}

/** The workload's mesh identity, as the proxy needs it for TLS. */
export interface TlsIdentity {
  spiffeId: string;
  /** Leaf first, then intermediates. */
  certChainPem: string;
  keyPem: string;
  /** Concatenated roots the mesh trusts. */
  trustBundlePem: string;
  serial: string;
  notAfter: Date;
}

/** A local application port behind the inbound listener, keyed by service port. */
export interface LocalTarget {
  /** Service hostname (name.namespace.svc.<domain>) this target serves. */
  hostname: string;
  servicePort: number;
  /** Where the app listens, normally 127.0.0.1. */
  host: string;
  targetPort: number;
}

/** An explicit upstream: a local listener forwarding to a mesh service. */
export interface UpstreamSpec {
  /** name.namespace */
  service: string;
  port: number;
  listen: { host: string; port: number };
}
