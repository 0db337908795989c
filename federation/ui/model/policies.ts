// The policies view: routes and traffic policies with their warnings.
import type { DashboardState, PolicyRow, RouteRow } from './state';
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

/** Both tables, filtered by `query`, sorted by name. */
export function policyView(state: Pick<DashboardState, 'routes' | 'policies'>, query: string): { routes: RouteLine[]; policies: PolicyLine[] } {
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
  return { routes, policies };
}
