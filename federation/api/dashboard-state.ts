// Builds the dashboard's state (federation/ui/model/state.ts) from what
// the HTTP API reads: the same rows /api/v1/* answers, plus each workload's
// connection and push state, so the page needs one feed and no polling.
import type { AgentRecord, AgentStatus, MeshView } from '../mesh/types';
import type { SourceStatus } from '../sources/types';
import type { RouteRow as MeshRouteRow } from '../mesh/routes';
import type { PushStatus } from '../push/session';
import { formatLocality } from '../../proto/model/locality';
import { KEYED_SECTIONS, sortRows, type AuthzPolicyRow, type DashboardState, type PeerAuthPolicyRow, type RateLimitPolicyRow, type EndpointRow, type Role, type ServiceRow, type WorkloadRow } from '../ui/model/state';
import type { EdgeAggregate } from '../stats';
import { trafficEdges } from '../mesh/traffic-graph';

/** What the state is built from (a subset of HttpDeps, so tests can pass plain data). */
export interface StateInputs {
  replica: string;
  trustDomain: string;
  view: () => MeshView;
  agents: () => AgentRecord[];
  statuses: () => Promise<Map<string, AgentStatus>>;
  /** This replica's streams: id, last contact, certificate expiry and push state. */
  connected: () => { id: string; lastContact: string; certNotAfter: string; push: PushStatus }[];
  sources: () => SourceStatus[];
  routeRows: () => readonly MeshRouteRow[];
  policies: () => { name: string; service: string; document: unknown }[];
  authorization: () => readonly AuthzPolicyRow[];
  peerAuthentication: () => readonly PeerAuthPolicyRow[];
  rateLimits: () => readonly RateLimitPolicyRow[];
  /** Traffic aggregates reported within the window (this replica's agents). */
  traffic: (windowMs: number) => readonly EdgeAggregate[];
}

/** The window the service graph's rates cover. */
export const TRAFFIC_WINDOW_MS = 60_000;

/** The whole state as `role` sees it (both roles see the same data; the role decides what the page offers). */
export async function dashboardState(inp: StateInputs, role: Role, nowMs: number): Promise<DashboardState> {
  const view = inp.view();
  const services: ServiceRow[] = [];
  const endpoints: EndpointRow[] = [];
  for (const svc of view.services.values()) {
    services.push({
      key: svc.key,
      name: svc.name,
      namespace: svc.namespace,
      hostname: svc.hostname,
      vip: svc.vip,
      ports: svc.ports.map((p) => ({ name: p.name, port: p.port, protocol: p.protocol })),
      endpoints: svc.endpoints.length,
      healthy: svc.endpoints.filter((e) => e.health === 'HEALTHY').length,
      warnings: svc.warnings,
    });
    for (const e of svc.endpoints) {
      endpoints.push({ service: svc.key, address: e.address, workload: e.workload, identity: e.identity, health: e.health, locality: formatLocality(e.locality), cluster: e.cluster, network: e.network, meshed: e.meshed });
    }
  }
  const stored = await inp.statuses();
  const local = new Map(inp.connected().map((c) => [c.id, c]));
  const workloads: WorkloadRow[] = inp.agents().map((a) => {
    const conn = local.get(a.id);
    const st = stored.get(a.id);
    // An agent held here is connected while its stream is; one held by
    // another replica while that replica still writes its status.
    const connected = a.replica === inp.replica ? conn !== undefined : st !== undefined;
    const h = a.host;
    return {
      id: a.id,
      name: a.workload.name,
      namespace: a.workload.namespace,
      identity: a.identity,
      address: a.workload.address,
      locality: formatLocality(a.workload.locality),
      network: a.workload.network,
      cluster: a.cluster ?? '',
      services: a.services.map((s) => s.name),
      replica: a.replica,
      agentVersion: a.agentVersion,
      gateway: a.gateway ? `${a.gateway.address}:${a.gateway.port}` : '',
      connected,
      connectedAt: a.connectedAt,
      lastContact: conn?.lastContact ?? st?.lastContact ?? a.connectedAt,
      certNotAfter: conn?.certNotAfter ?? st?.certNotAfter ?? '',
      ackedVersion: conn?.push.ackedNonce ?? st?.ackedNonce ?? '',
      latestVersion: conn?.push.sentNonce ?? '',
      lastNack: conn?.push.lastNack ?? '',
      host: h ? { hostname: h.hostname, os: h.os, osRelease: h.osRelease, kernel: h.kernel, arch: h.arch, cpus: h.cpus, memoryBytes: String(h.memoryBytes), addresses: h.addresses } : null,
    };
  });
  const known = (key: string) => view.services.has(key);
  const traffic = inp.traffic(TRAFFIC_WINDOW_MS);
  return {
    meta: { replica: inp.replica, trustDomain: inp.trustDomain, role, now: new Date(nowMs).toISOString() },
    // Keyed sections in key order: the order the page keeps when rows arrive one by one.
    services: sortRows(services, KEYED_SECTIONS.services),
    endpoints: sortRows(endpoints, KEYED_SECTIONS.endpoints),
    workloads: sortRows(workloads, KEYED_SECTIONS.workloads),
    sources: inp.sources().map((s) => ({ name: s.name, kind: s.kind, connected: s.connected, stale: s.stale, lastSync: s.lastSync, error: s.error, services: s.services, endpoints: s.endpoints })),
    routes: inp.routeRows().map((r) => ({ kind: r.kind, namespace: r.namespace, name: r.name, source: r.source, parents: r.parents, backends: r.backends, rules: r.rules, warnings: r.warnings, ...(r.error ? { error: r.error } : {}) })),
    policies: inp.policies().map((p) => ({ ...p, warnings: known(p.service) ? [] : [`no service ${p.service} in the mesh yet: the policy waits for it`] })),
    authorization: inp.authorization().map((a) => ({ namespace: a.namespace, name: a.name, action: a.action, selector: a.selector, rules: a.rules, workloads: a.workloads, source: a.source, warnings: a.warnings, ...(a.error ? { error: a.error } : {}) })),
    peerAuthentication: inp.peerAuthentication().map((p) => ({ namespace: p.namespace, name: p.name, selector: p.selector, mode: p.mode, ports: p.ports, workloads: p.workloads, source: p.source, warnings: p.warnings, ...(p.error ? { error: p.error } : {}) })),
    rateLimits: inp.rateLimits().map((r) => ({ kind: r.kind, namespace: r.namespace, name: r.name, service: r.service, limit: r.limit, workloads: r.workloads, ...(r.error ? { error: r.error } : {}) })),
    traffic: {
      windowSeconds: TRAFFIC_WINDOW_MS / 1000,
      reportingAgents: new Set(traffic.map((t) => (t.reporter === 'source' ? t.sourceWorkload : t.destinationWorkload))).size,
      edges: trafficEdges(traffic, workloads.map((w) => ({ id: w.id, namespace: w.namespace, services: w.services })), endpoints, TRAFFIC_WINDOW_MS),
    },
  };
}
