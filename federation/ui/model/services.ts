// The services view: a filtered, paged list, and one service's endpoints
// grouped by locality and health.
import type { DashboardState, EndpointRow, ServiceRow } from './state';
import { type Badge, countBadge } from './health';
import { matchesQuery, paginate, type Page } from './lists';

/** One line of the services list. */
export interface ServiceLine {
  key: string;
  name: string;
  namespace: string;
  vip: string;
  ports: string;
  badge: Badge;
  warnings: string[];
}

/** The list: services matching `query`, sorted by key, one page of them. */
export function serviceList(state: Pick<DashboardState, 'services'>, query: string, page: number, size?: number): Page<ServiceLine> {
  const lines = state.services
    .filter((s) => matchesQuery(query, [s.key, s.hostname, s.vip]))
    .sort((a, b) => a.key.localeCompare(b.key))
    .map(serviceLine);
  return paginate(lines, page, size);
}

function serviceLine(s: ServiceRow): ServiceLine {
  return {
    key: s.key,
    name: s.name,
    namespace: s.namespace,
    vip: s.vip,
    ports: s.ports.map((p) => `${p.name || p.protocol || 'tcp'}:${p.port}`).join(', '),
    badge: countBadge(s.healthy, s.endpoints),
    warnings: s.warnings,
  };
}

/** Endpoints of one locality, unhealthy ones listed first (those need looking at). */
export interface LocalityGroup {
  locality: string;
  badge: Badge;
  endpoints: (EndpointRow & { healthText: string })[];
}

/** One service with its endpoints grouped by locality. */
export interface ServiceDetail {
  service: ServiceRow;
  badge: Badge;
  localities: LocalityGroup[];
  /** Workloads (namespace/name) that could be a client for the failover order. */
  clients: string[];
}

/** The detail of service `key`, or undefined when the mesh has no such service. */
export function serviceDetail(state: Pick<DashboardState, 'services' | 'endpoints' | 'workloads'>, key: string): ServiceDetail | undefined {
  const service = state.services.find((s) => s.key === key);
  if (!service) return undefined;
  const groups = new Map<string, EndpointRow[]>();
  for (const e of state.endpoints) {
    if (e.service !== key) continue;
    const loc = e.locality || '(no locality)';
    let list = groups.get(loc);
    if (!list) groups.set(loc, (list = []));
    list.push(e);
  }
  const localities = [...groups]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([locality, eps]) => ({
      locality,
      badge: countBadge(eps.filter((e) => e.health === 'HEALTHY').length, eps.length),
      endpoints: [...eps]
        .sort((a, b) => Number(a.health === 'HEALTHY') - Number(b.health === 'HEALTHY') || a.address.localeCompare(b.address))
        .map((e) => ({ ...e, healthText: e.health === 'HEALTHY' ? 'healthy' : 'unhealthy' })),
    }));
  return {
    service,
    badge: countBadge(service.healthy, service.endpoints),
    localities,
    clients: state.workloads.map((w) => w.id).sort(),
  };
}

/** What /api/v1/endpoints/SVC?from=CLIENT answers (the picker's description). */
export interface FailoverAnswer {
  service: string;
  from: string;
  panic: boolean;
  /** priority null: excluded (another network without a gateway, or a failover rule); share in percent of new connections. */
  endpoints: { address: string; workload: string; cluster: string; network: string; locality: string; health: string; priority: number | null; share: number }[];
}

/** One priority level of the failover order: who gets traffic first, then next. */
export interface FailoverStep {
  /** null: the endpoints this client never uses. */
  priority: number | null;
  label: string;
  endpoints: { address: string; workload: string; where: string; health: string; share: string }[];
}

/**
 * The failover order a client would use, by priority: the endpoints of
 * priority 0 take the traffic while healthy enough, then priority 1, ...
 */
export function failoverOrder(answer: FailoverAnswer): FailoverStep[] {
  const byPriority = new Map<number | null, FailoverAnswer['endpoints']>();
  for (const e of answer.endpoints) {
    let list = byPriority.get(e.priority);
    if (!list) byPriority.set(e.priority, (list = []));
    list.push(e);
  }
  return [...byPriority]
    .sort(([a], [b]) => (a ?? Infinity) - (b ?? Infinity))
    .map(([priority, eps], i) => ({
      priority,
      label: priority === null ? 'not used by this client' : i === 0 ? `priority ${priority} (first choice)` : `priority ${priority} (when the ones above fail)`,
      endpoints: eps
        .sort((a, b) => b.share - a.share || a.address.localeCompare(b.address))
        .map((e) => ({
          address: e.address,
          workload: e.workload,
          where: [e.network, e.cluster, e.locality].filter(Boolean).join(' · '),
          health: e.health === 'HEALTHY' ? 'healthy' : 'unhealthy',
          share: `${e.share.toFixed(1)}%`,
        })),
    }));
}
