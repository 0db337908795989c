// The policies view: routes and traffic policies with their warnings.
import type { AuthzPolicyRow, DashboardState, PolicyRow, RouteRow } from './state';
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

function authzBadge(a: AuthzPolicyRow): Badge {
  if (a.error) return { level: 'bad', text: `invalid, not pushed: ${a.error}` };
  if (a.workloads.length === 0) return { level: 'warn', text: 'selects no registered workload' };
  return { level: 'ok', text: `in force on ${a.workloads.length} workload${a.workloads.length === 1 ? '' : 's'}` };
}

/** The tables, filtered by `query`, sorted by name. */
export function policyView(state: Pick<DashboardState, 'routes' | 'policies' | 'authorization'>, query: string): { routes: RouteLine[]; policies: PolicyLine[]; authorization: AuthzLine[] } {
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
    .map((a): AuthzLine => ({ id: `${a.namespace}/${a.name}`, row: a, badge: authzBadge(a) }))
    .sort((a, b) => a.id.localeCompare(b.id));
  return { routes, policies, authorization };
}
