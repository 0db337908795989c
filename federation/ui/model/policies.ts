// The policies view: routes, traffic policies, authorization, peer
// authentication and rate-limit policies, with their warnings.
import type { AuthzPolicyRow, DashboardState, PeerAuthPolicyRow, PolicyRow, RateLimitPolicyRow, RouteRow } from './state';
import type { Badge } from './health';
import { matchesQuery } from './lists';

/** A route line with a badge: invalid (not pushed), warned, or fine. */
export interface RouteLine {
  id: string;
  row: RouteRow;
  badge: Badge;
  notes: string[];
}

/** A traffic policy line. */
export interface PolicyLine {
  id: string;
  row: PolicyRow;
  badge: Badge;
}

/** An AuthorizationPolicy line: invalid, selecting nothing (accepted, as Istio does), or in force on N workloads. */
export interface AuthzLine {
  id: string;
  row: AuthzPolicyRow;
  badge: Badge;
}

/** A PeerAuthentication or rate-limit line. */
export interface SecurityLine<T> {
  id: string;
  row: T;
  badge: Badge;
}

/** Invalid (not pushed), applying to no registered workload (accepted, as Istio does), or in force on N; warnings say so too. */
function policyBadge(p: { error?: string; workloads: readonly string[]; warnings?: readonly string[] }, none = 'selects no registered workload'): Badge {
  if (p.error) return { level: 'bad', text: `invalid, not pushed: ${p.error}` };
  if (p.workloads.length === 0) return { level: 'warn', text: none };
  const inForce = `in force on ${p.workloads.length} workload${p.workloads.length === 1 ? '' : 's'}`;
  if (p.warnings?.length) return { level: 'warn', text: `${inForce}; ${p.warnings.join('; ')}` };
  return { level: 'ok', text: inForce };
}

/** The tables, filtered by `query`, sorted by name. */
export function policyView(
  state: Pick<DashboardState, 'routes' | 'policies' | 'authorization' | 'peerAuthentication' | 'rateLimits'>,
  query: string,
): { routes: RouteLine[]; policies: PolicyLine[]; authorization: AuthzLine[]; peerAuthentication: SecurityLine<PeerAuthPolicyRow>[]; rateLimits: SecurityLine<RateLimitPolicyRow>[] } {
  const routes = state.routes
    .filter((r) => matchesQuery(query, [r.kind, r.namespace, r.name, r.source, ...r.parents, ...r.backends]))
    .map((r): RouteLine => ({
      id: `${r.kind}/${r.namespace}/${r.name}`,
      row: r,
      badge: r.error ? { level: 'bad', text: 'invalid, not pushed' } : r.warnings.length ? { level: 'warn', text: `${r.warnings.length} warning${r.warnings.length === 1 ? '' : 's'}` } : { level: 'ok', text: 'applied' },
      notes: [...(r.error ? [r.error] : []), ...r.warnings],
    }))
    .sort((a, b) => a.id.localeCompare(b.id));
  const policies = state.policies
    .filter((p) => matchesQuery(query, [p.name, p.service]))
    .map((p): PolicyLine => ({
      id: `${p.service}/${p.name}`,
      row: p,
      badge: p.warnings.length ? { level: 'warn', text: p.warnings.join('; ') } : { level: 'ok', text: 'applied' },
    }))
    .sort((a, b) => a.id.localeCompare(b.id));
  const authorization = state.authorization
    .filter((a) => matchesQuery(query, [a.namespace, a.name, a.action, a.selector, ...a.workloads]))
    .map((a): AuthzLine => ({ id: `${a.namespace}/${a.name}`, row: a, badge: policyBadge(a) }))
    .sort((a, b) => a.id.localeCompare(b.id));
  const peerAuthentication = state.peerAuthentication
    .filter((p) => matchesQuery(query, [p.namespace, p.name, p.mode, p.selector, ...p.ports, ...p.workloads]))
    .map((p) => ({ id: `${p.namespace}/${p.name}`, row: p, badge: policyBadge(p) }))
    .sort((a, b) => a.id.localeCompare(b.id));
  const rateLimits = state.rateLimits
    .filter((r) => matchesQuery(query, [r.kind, r.namespace, r.name, r.service, r.limit, ...r.workloads]))
    .map((r) => ({ id: `${r.kind}/${r.namespace}/${r.name}`, row: r, badge: policyBadge(r, 'no registered workload serves the service') }))
    .sort((a, b) => a.id.localeCompare(b.id));
  return { routes, policies, authorization, peerAuthentication, rateLimits };
}
