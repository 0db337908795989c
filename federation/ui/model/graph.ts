// The service graph view: nodes and edges from the traffic section,
// filtered by namespace (an edge is kept when either end is in it), each
// edge with a badge (success rate and mTLS in words), and the detail of one
// edge: the routes, traffic policy and authorization policies that apply to
// its destination, and its recent errors.
import type { AuthzPolicyRow, DashboardState, EdgeError, PeerAuthPolicyRow, PolicyRow, RateLimitPolicyRow, RouteRow, TrafficEdgeRow } from './state';
import type { Badge, Level } from './health';
import { formatBytes } from './workloads';

/** A node of the graph. */
export interface GraphNode {
  id: string;
  kind: 'service' | 'workload' | 'unknown';
  label: string;
  namespace: string;
}

/** An edge with what the page prints on it. */
export interface GraphEdge {
  row: TrafficEdgeRow;
  fromLabel: string;
  toLabel: string;
  /** `12.3 rps · 98.0% ok · p99 45 ms`, or `3 conns · 12.0 KiB` for TCP. */
  label: string;
  badge: Badge;
  mtlsBadge: Badge;
}

/** The graph as the view draws and lists it. */
export interface GraphView {
  nodes: GraphNode[];
  edges: GraphEdge[];
  namespaces: string[];
}

/** A node id's label: `reviews.default`, `workload shop/web`, `outside the mesh`. */
export function nodeLabel(id: string): string {
  if (id.startsWith('svc:')) return id.slice(4);
  if (id.startsWith('wl:')) return `workload ${id.slice(3)}`;
  return 'outside the mesh';
}

function nodeOf(id: string, namespace: string): GraphNode {
  const kind = id.startsWith('svc:') ? 'service' : id.startsWith('wl:') ? 'workload' : 'unknown';
  return { id, kind, label: nodeLabel(id), namespace };
}

function rate(rps: number): string {
  return rps >= 10 ? rps.toFixed(0) : rps >= 0.1 ? rps.toFixed(1) : rps.toFixed(2);
}

/** What an edge says: HTTP figures when it carried requests, TCP figures otherwise (both for a mixed edge). */
export function edgeLabel(e: TrafficEdgeRow): string {
  const parts: string[] = [];
  if (e.requests > 0) {
    parts.push(`${rate(e.rps)} rps`);
    if (e.success !== null) parts.push(`${(e.success * 100).toFixed(1)}% ok`);
    if (e.p99Ms !== null) parts.push(`p99 ${e.p99Ms < 10 ? e.p99Ms.toFixed(1) : e.p99Ms.toFixed(0)} ms`);
  }
  if (e.tcpConnections > 0) parts.push(`${e.tcpConnections} TCP conn${e.tcpConnections === 1 ? '' : 's'} · ${formatBytes(e.tcpBytes) || '0 B'}`);
  return parts.join(' · ') || 'no traffic in the window';
}

/** Success below 99% warns, below 95% is bad (Kiali's default thresholds are 0.1% and 20% errors; ours are stricter on the warning side). */
export function edgeBadge(e: TrafficEdgeRow): Badge {
  if (e.success === null) return e.errors.length ? { level: 'warn', text: `${e.errors.length} failed connection${e.errors.length === 1 ? '' : 's'}` } : { level: 'ok', text: 'TCP' };
  const pct = `${(e.success * 100).toFixed(1)}% success`;
  const level: Level = e.success >= 0.99 ? 'ok' : e.success >= 0.95 ? 'warn' : 'bad';
  return { level, text: pct };
}

function mtlsBadge(e: TrafficEdgeRow): Badge {
  if (e.mtls === 'mutual_tls') return { level: 'ok', text: 'mTLS' };
  if (e.mtls === 'partial') return { level: 'warn', text: 'partly plaintext' };
  return { level: 'warn', text: 'plaintext' };
}

/** The graph for `namespace` ('' for all). */
export function graphView(state: Pick<DashboardState, 'traffic'>, namespace: string): GraphView {
  const all = state.traffic.edges;
  const namespaces = [...new Set(all.flatMap((e) => [e.fromNamespace, e.toNamespace]).filter(Boolean))].sort();
  const kept = namespace === '' ? all : all.filter((e) => e.fromNamespace === namespace || e.toNamespace === namespace);
  const nodes = new Map<string, GraphNode>();
  for (const e of kept) {
    if (!nodes.has(e.from)) nodes.set(e.from, nodeOf(e.from, e.fromNamespace));
    if (!nodes.has(e.to)) nodes.set(e.to, nodeOf(e.to, e.toNamespace));
  }
  return {
    nodes: [...nodes.values()].sort((a, b) => a.id.localeCompare(b.id)),
    edges: kept.map((row) => ({ row, fromLabel: nodeLabel(row.from), toLabel: nodeLabel(row.to), label: edgeLabel(row), badge: edgeBadge(row), mtlsBadge: mtlsBadge(row) })),
    namespaces,
  };
}

/** Cytoscape elements for a graph view. */
export function graphElements(g: GraphView): { group: 'nodes' | 'edges'; data: Record<string, string> }[] {
  return [
    ...g.nodes.map((n) => ({ group: 'nodes' as const, data: { id: n.id, label: n.label, kind: n.kind } })),
    ...g.edges.map((e) => ({ group: 'edges' as const, data: { id: e.row.id, source: e.row.from, target: e.row.to, label: e.label, level: e.badge.level, mtls: e.row.mtls } })),
  ];
}

/** What applies to an edge's destination, and what went wrong on it. */
export interface EdgeDetail {
  edge: GraphEdge;
  routes: RouteRow[];
  trafficPolicy: PolicyRow | undefined;
  /** AuthorizationPolicies selecting a workload behind the destination service. */
  authorization: AuthzPolicyRow[];
  /** PeerAuthentications applying to its workloads. */
  peerAuthentication: PeerAuthPolicyRow[];
  /** Rate limits and quotas on the destination service. */
  rateLimits: RateLimitPolicyRow[];
  errors: EdgeError[];
}

/** The detail of edge `id`, or undefined when it is not in the window any more. */
export function edgeDetail(state: Pick<DashboardState, 'traffic' | 'routes' | 'policies' | 'authorization' | 'peerAuthentication' | 'rateLimits' | 'endpoints'>, id: string): EdgeDetail | undefined {
  const row = state.traffic.edges.find((e) => e.id === id);
  if (!row) return undefined;
  const edge = graphView({ traffic: { ...state.traffic, edges: [row] } }, '').edges[0]!;
  const svc = row.service;
  const workloads = new Set(state.endpoints.filter((e) => e.service === svc).map((e) => e.workload));
  return {
    edge,
    routes: svc === '' ? [] : state.routes.filter((r) => r.parents.some((p) => p === svc || p.startsWith(`${svc}:`))),
    trafficPolicy: svc === '' ? undefined : state.policies.find((p) => p.service === svc),
    authorization: state.authorization.filter((a) => a.workloads.some((w) => workloads.has(w))),
    peerAuthentication: state.peerAuthentication.filter((p) => p.workloads.some((w) => workloads.has(w))),
    rateLimits: svc === '' ? [] : state.rateLimits.filter((r) => r.service === svc),
    errors: row.errors,
  };
}
