// The plain data the proxy reads. The agent builds a new ProxySnapshot on
// every accepted update and swaps it in one step; listeners never see a
// half-applied update.

/** One endpoint of a service as the client proxy dials it. */
export interface EndpointView {
  /** Address of the endpoint's proxy. */
  address: string;
  /** Inbound mTLS port of the endpoint's proxy. */
  mtlsPort: number;
  /** SPIFFE ID the endpoint's proxy must present; a mismatch fails the connection. */
  identity: string;
  workload: string;
  healthy: boolean;
  /** Ports the endpoint serves: service port name and the port the app listens on (behind the proxy). */
  ports: readonly { name: string; port: number }[];
  /** Where it runs, for locality-aware balancing (region/zone/subzone may be ''). */
  locality?: { region: string; zone: string; subzone: string };
  network?: string;
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
  policy?: import('./balancer/policy').TrafficPolicy;
}

/** Immutable view of the mesh for the proxy, swapped atomically. */
export interface ProxySnapshot {
  /** Nonce of the federation update this snapshot came from ('' before the first). */
  version: string;
  services: ReadonlyMap<string, ServiceView>;
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
