// What the dashboard receives from the federation over its WebSocket feed:
// plain JSON sections, each replaced whole when it changes. These types are
// the contract between federation/api/feed.ts and the page; the view models
// beside this file are pure functions over them.

/** Who the page is logged in as: the admin token may write, a viewer token only reads. */
export type Role = 'admin' | 'viewer';

/** A service as /api/v1/services lists it. */
export interface ServiceRow {
  key: string;
  name: string;
  namespace: string;
  hostname: string;
  vip: string;
  ports: { name: string; port: number; protocol: string }[];
  endpoints: number;
  healthy: number;
  warnings: string[];
}

/** An endpoint as /api/v1/endpoints lists it. */
export interface EndpointRow {
  service: string;
  address: string;
  workload: string;
  identity: string;
  health: string;
  /** region/zone/subzone, '' when unknown. */
  locality: string;
  cluster: string;
  network: string;
  meshed: boolean;
}

/** Host facts an agent reports (systeminformation). */
export interface HostRow {
  hostname: string;
  os: string;
  osRelease: string;
  kernel: string;
  arch: string;
  cpus: number;
  memoryBytes: number | string;
  addresses: string[];
}

/** A registered workload (agent) with its connection, certificate and push state. */
export interface WorkloadRow {
  id: string;
  name: string;
  namespace: string;
  identity: string;
  address: string;
  locality: string;
  network: string;
  cluster: string;
  services: string[];
  replica: string;
  agentVersion: string;
  /** Gateway agents: where other networks reach them. */
  gateway: string;
  /** False once the federation lost the agent's stream (it is kept for the grace period). */
  connected: boolean;
  connectedAt: string;
  lastContact: string;
  /** ISO time the agent's certificate expires; '' when unknown. */
  certNotAfter: string;
  ackedVersion: string;
  /** The config version last sent to the agent; '' when not known on this replica. */
  latestVersion: string;
  lastNack: string;
  host: HostRow | null;
}

/** An endpoint source (Kubernetes cluster, Consul datacenter, static entries) as /api/v1/clusters lists it. */
export interface SourceRow {
  name: string;
  kind: string;
  connected: boolean;
  stale: boolean;
  lastSync: string | undefined;
  error: string | undefined;
  services: number;
  endpoints: number;
}

/** A route as /api/v1/routes lists it. */
export interface RouteRow {
  kind: string;
  namespace: string;
  name: string;
  source: string;
  parents: string[];
  backends: string[];
  rules: number;
  warnings: string[];
  /** Set when the document is invalid: it is not pushed. */
  error?: string;
}

/** A traffic policy as /api/v1/policies lists it. */
export interface PolicyRow {
  name: string;
  service: string;
  warnings: string[];
  /** The policy document, for the detail view. */
  document: unknown;
}

/** A recent failure on a service-graph edge. */
export interface EdgeError {
  /** ISO start time. */
  at: string;
  /** `503 UF`, `grpc 14`, `reset`, ...: the outcome in a few words. */
  outcome: string;
  /** `GET /api/x`, or '' for a TCP connection. */
  request: string;
  upstream: string;
  errorCode: string;
}

/**
 * A service-graph edge over the traffic window: from a service (or a
 * workload that serves none, or `unknown` for plaintext traffic from outside
 * the mesh) to a service, from the agents' traffic reports.
 */
export interface TrafficEdgeRow {
  /** `FROM->TO` of the node ids. */
  id: string;
  /** Node ids: `svc:NAME.NAMESPACE`, `wl:NAMESPACE/NAME`, or `unknown`. */
  from: string;
  to: string;
  fromNamespace: string;
  toNamespace: string;
  /** The destination service's key (name.namespace), '' when the edge ends at a workload. */
  service: string;
  /** Which proxy's counts the edge shows: the client's (`source`) or, for traffic from outside the mesh, the server's. */
  reporter: 'source' | 'destination';
  requests: number;
  rps: number;
  /** Share of requests that succeeded; null without requests. */
  success: number | null;
  p99Ms: number | null;
  tcpConnections: number;
  tcpBytes: number;
  /** `mutual_tls` (every hop), `none` (plaintext), `partial` (some endpoints are not meshed). */
  mtls: 'mutual_tls' | 'none' | 'partial';
  mtlsNote: string;
  /** Newest first. */
  errors: EdgeError[];
}

/** The traffic figures: the edges and the window they cover. */
export interface TrafficSection {
  windowSeconds: number;
  /** How many agents' reports the edges come from (this replica's connected agents). */
  reportingAgents: number;
  edges: TrafficEdgeRow[];
}

/** An AuthorizationPolicy as /api/v1/authorizationpolicies lists it. */
export interface AuthzPolicyRow {
  namespace: string;
  name: string;
  action: string;
  /** `app=x,version=v1`, `(namespace)`, or `(mesh)`. */
  selector: string;
  rules: number;
  /** Registered workloads it selects now (`namespace/name`). */
  workloads: string[];
  /** `kedge apply`, or `cluster <name>`. */
  source: string;
  /** A cluster's document shadowed by an applied one, and the like. */
  warnings: string[];
  error?: string;
}

/** A PeerAuthentication as /api/v1/peerauthentications lists it. */
export interface PeerAuthPolicyRow {
  namespace: string;
  name: string;
  /** `(mesh)`, `(namespace)` or the selector's labels. */
  selector: string;
  mode: string;
  /** portLevelMtls as `8080=DISABLE`. */
  ports: string[];
  /** Registered workloads it applies to now (`namespace/name`), whether or not a more specific policy overrides it. */
  workloads: string[];
  source: string;
  warnings: string[];
  error?: string;
}

/** An HTTPLocalRateLimitPolicy or MeshQuota as /api/v1/ratelimits lists it. */
export interface RateLimitPolicyRow {
  kind: string;
  namespace: string;
  name: string;
  /** name.namespace of the service it targets. */
  service: string;
  /** `10/s per identity, 100/s total`, `100 per 1m per principal`. */
  limit: string;
  /** Registered workloads serving the service (`namespace/name`): where it is enforced. */
  workloads: string[];
  /** Set when the stored document no longer validates. */
  error?: string;
}

/** Everything the page shows; each key is one feed section. */
export interface DashboardState {
  meta: { replica: string; trustDomain: string; role: Role; now: string };
  services: ServiceRow[];
  endpoints: EndpointRow[];
  workloads: WorkloadRow[];
  sources: SourceRow[];
  routes: RouteRow[];
  policies: PolicyRow[];
  authorization: AuthzPolicyRow[];
  peerAuthentication: PeerAuthPolicyRow[];
  rateLimits: RateLimitPolicyRow[];
  traffic: TrafficSection;
}

/** The feed's section names, in the order they are sent. */
export const SECTIONS = ['meta', 'services', 'endpoints', 'workloads', 'sources', 'routes', 'policies', 'authorization', 'peerAuthentication', 'rateLimits', 'traffic'] as const satisfies readonly (keyof DashboardState)[];

/**
 * The sections the feed sends row by row once the page has them: a change
 * to one of 5,000 workloads sends that row, not the 5,000. Each row's key.
 */
export const KEYED_SECTIONS = {
  services: (r: ServiceRow) => r.key,
  endpoints: (r: EndpointRow) => `${r.service}|${r.address}|${r.workload}`,
  workloads: (r: WorkloadRow) => r.id,
} as const;

export type KeyedSection = keyof typeof KEYED_SECTIONS;

/** Rows of a keyed section that changed (added or replaced) and the keys of those that went. */
export interface RowChanges<T> {
  upsert: T[];
  remove: string[];
}

/** Row changes per keyed section. */
export type RowsMessage = { [K in KeyedSection]?: RowChanges<DashboardState[K][number]> };

/** What the server sends on the feed. */
export type FeedMessage =
  | { type: 'hello'; role: Role }
  | { type: 'sections'; sections: Partial<DashboardState>; rows?: RowsMessage }
  | { type: 'error'; code: string; message: string };

/** An empty state, before the first sections arrive. */
export function emptyState(): DashboardState {
  return { meta: { replica: '', trustDomain: '', role: 'viewer', now: '' }, services: [], endpoints: [], workloads: [], sources: [], routes: [], policies: [], authorization: [], peerAuthentication: [], rateLimits: [], traffic: { windowSeconds: 60, reportingAgents: 0, edges: [] } };
}

function applyRowChanges<T>(rows: readonly T[], changes: RowChanges<T>, key: (r: T) => string): T[] {
  const byKey = new Map(rows.map((r) => [key(r), r]));
  for (const k of changes.remove) byKey.delete(k);
  for (const r of changes.upsert) byKey.set(key(r), r);
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r);
}

/** Rows of a keyed section in the order the server sends them (by key). */
export function sortRows<T>(rows: readonly T[], key: (r: T) => string): T[] {
  return rows.map((r) => [key(r), r] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r);
}

/** Applies one feed message's sections and row changes to a state (returns a new object). */
export function applySections(state: DashboardState, sections: Partial<DashboardState>, rows: RowsMessage = {}): DashboardState {
  const next = { ...state, ...sections };
  if (rows.services) next.services = applyRowChanges(next.services, rows.services, KEYED_SECTIONS.services);
  if (rows.endpoints) next.endpoints = applyRowChanges(next.endpoints, rows.endpoints, KEYED_SECTIONS.endpoints);
  if (rows.workloads) next.workloads = applyRowChanges(next.workloads, rows.workloads, KEYED_SECTIONS.workloads);
  return next;
}
