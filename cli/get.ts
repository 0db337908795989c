// `kedge get services|workloads|endpoints [NAME] [-o table|json|yaml]`.
import YAML from 'yaml';
import { KedgeError } from '../proto/model/errors';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';
import { renderTable } from './table';
import type { SourceStatus } from '../federation/sources/types';
import type { RouteRow } from '../federation/mesh/routes';
import type { AuthzRow, PeerAuthRow } from '../federation/mesh/authz';
import type { RateLimitRow } from '../federation/mesh/ratelimits';

const USAGE = 'kedge get services|workloads|endpoints|clusters|policies|routes|authorizationpolicies|peerauthentications|ratelimits|tokens [NAME] [-o table|json|yaml] [--federation https://HOST:PORT] [--admin-token-file FILE]';

/** A service row as the API returns it. */
export interface ServiceRow {
  key: string;
  hostname: string;
  vip: string;
  ports: { name: string; port: number; protocol: string }[];
  endpoints: number;
  healthy: number;
  warnings: string[];
}

/** An endpoint row as the API returns it. */
export interface EndpointRow {
  service: string;
  address: string;
  mtlsPort: number;
  ports: { name: string; port: number }[];
  workload: string;
  identity: string;
  health: string;
  locality: string;
  cluster: string;
  network: string;
  /** false: no Kedge proxy in front; agents dial it in plain TCP at `ports` (auto mTLS). */
  meshed?: boolean;
}

/** A workload row as the API returns it. */
export interface WorkloadRow {
  name: string;
  namespace: string;
  identity: string;
  address: string;
  locality: string;
  network: string;
  services: string[];
  replica: string;
  connectedAt: string;
  ackedVersion?: string;
}

/** Table renderers per resource kind; golden-tested. */
export const TABLES = {
  services: (rows: ServiceRow[]) =>
    renderTable(
      ['name', 'hostname', 'ports', 'endpoints', 'warnings'],
      rows.map((s) => [s.key, s.hostname, s.ports.map((p) => `${p.port}/${p.protocol}`).join(','), `${s.healthy}/${s.endpoints}`, String(s.warnings.length)]),
    ),
  endpoints: (rows: EndpointRow[]) =>
    renderTable(
      ['service', 'endpoint', 'health', 'workload', 'locality', 'network', 'cluster', 'identity'],
      rows.map((e) => [e.service, endpointAddress(e), e.health, e.workload, e.locality || '-', e.network || '-', e.cluster || '-', e.meshed === false ? 'plaintext' : e.identity || '-']),
    ),
  workloads: (rows: WorkloadRow[]) =>
    renderTable(
      ['namespace', 'name', 'address', 'services', 'locality', 'network', 'replica', 'identity'],
      rows.map((w) => [w.namespace, w.name, w.address, w.services.join(',') || '-', w.locality || '-', w.network || '-', w.replica, w.identity]),
    ),
  policies: (rows: { name: string; service: string; document: { spec?: { loadBalancer?: string; locality?: { failoverPriority?: string[] }; outlierDetection?: { consecutiveErrors?: number } } } }[]) =>
    renderTable(
      ['name', 'service', 'load balancer', 'failover priority', 'outlier errors'],
      rows.map((p) => [p.name, p.service, p.document.spec?.loadBalancer ?? 'default', p.document.spec?.locality?.failoverPriority?.join(',') ?? '-', String(p.document.spec?.outlierDetection?.consecutiveErrors ?? 'default')]),
    ),
  routes: (rows: RouteRow[]) =>
    renderTable(
      ['kind', 'namespace', 'name', 'parents', 'backends', 'source', 'status'],
      rows.map((r) => [r.kind, r.namespace, r.name, r.parents.join(',') || '-', r.backends.join(',') || '-', r.source, r.error ? `invalid: ${r.error}` : r.warnings.length ? r.warnings.join('; ') : 'ok']),
    ),
  authorizationpolicies: (rows: AuthzRow[]) =>
    renderTable(
      ['namespace', 'name', 'action', 'selector', 'rules', 'selects'],
      rows.map((r) => [r.namespace, r.name, r.action, r.selector, String(r.rules), r.error ? `invalid: ${r.error}` : [r.workloads.length ? r.workloads.join(',') : '(no registered workload)', ...(r.warnings ?? [])].join('; ')]),
    ),
  peerauthentications: (rows: PeerAuthRow[]) =>
    renderTable(
      ['namespace', 'name', 'selector', 'mode', 'ports', 'source', 'applies to'],
      rows.map((r) => [r.namespace, r.name, r.selector, r.mode, r.ports.join(',') || '-', r.source, r.error ? `invalid: ${r.error}` : [r.workloads.length ? r.workloads.join(',') : '(matches no registered workload)', ...r.warnings].join('; ')]),
    ),
  ratelimits: (rows: RateLimitRow[]) =>
    renderTable(
      ['kind', 'namespace', 'name', 'service', 'limit', 'enforced at'],
      rows.map((r) => [r.kind, r.namespace, r.name, r.service, r.limit, r.error ? `invalid: ${r.error}` : r.workloads.length ? r.workloads.join(',') : '(no registered workload)']),
    ),
  tokens: (rows: { id: string; namespace: string; serviceAccount: string; grant: { services: string[]; workload: string; labels: Record<string, string>; gateway: string }; usesLeft: number; uses: number; expiresAt: string }[]) =>
    renderTable(
      ['id', 'identity', 'services', 'workload', 'labels', 'gateway', 'uses left', 'expires'],
      rows.map((t) => [
        t.id,
        `${t.namespace}/${t.serviceAccount}`,
        t.grant.services.join(',') || '-',
        t.grant.workload || '(first registered)',
        Object.entries(t.grant.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-',
        t.grant.gateway || '-',
        `${t.usesLeft}/${t.uses}`,
        t.expiresAt,
      ]),
    ),
  clusters: (rows: SourceStatus[]) =>
    renderTable(
      ['name', 'kind', 'connected', 'stale', 'last sync', 'services', 'endpoints', 'error'],
      rows.map((c) => [c.name, c.kind, c.connected ? 'yes' : 'no', c.stale ? 'yes' : 'no', c.lastSync ?? '-', String(c.services), String(c.endpoints), c.error ?? '']),
    ),
} as const;

// What agents dial: a meshed endpoint's proxy at its mTLS port, a plaintext
// endpoint at its own ports.
function endpointAddress(e: Pick<EndpointRow, 'address' | 'mtlsPort' | 'meshed' | 'ports'>): string {
  if (e.meshed !== false) return `${e.address}:${e.mtlsPort}`;
  return `${e.address}:${[...new Set(e.ports.map((p) => p.port))].join(',') || '-'}`;
}

/** `kedge get endpoints SERVICE --from WORKLOAD` as the API returns it. */
export interface FromResult {
  service: string;
  from: string;
  panic: boolean;
  endpoints: { address: string; mtlsPort: number; meshed?: boolean; ports: { name: string; port: number }[]; workload: string; locality: string; network: string; health: string; priority: number | null; share: number }[];
}

/** Renders the balancer's view of a service from one workload; golden-tested. */
export function fromTable(r: FromResult): string {
  const head = `${r.service} as seen from ${r.from}${r.panic ? ' (PANIC: every endpoint unhealthy, traffic goes to all)' : ''}\n`;
  return head + renderTable(
    ['endpoint', 'workload', 'locality', 'network', 'health', 'priority', 'share'],
    r.endpoints.map((e) => [endpointAddress(e), e.workload, e.locality || '-', e.network || '-', e.health, e.priority === null ? '-' : String(e.priority), `${e.share.toFixed(1)}%`]),
  );
}

/** Runs `kedge get`; returns the text to print. */
export async function runGet(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, output: { type: 'string', short: 'o', default: 'table' }, from: { type: 'string' } }, USAGE);
  const [kindArg, name, ...extra] = positionals;
  const kind = kindArg === 'authorizationpolicy' || kindArg === 'authz' ? 'authorizationpolicies' : kindArg === 'peerauthentication' || kindArg === 'pa' ? 'peerauthentications' : kindArg === 'ratelimit' || kindArg === 'meshquotas' || kindArg === 'httplocalratelimitpolicies' ? 'ratelimits' : kindArg;
  if (!kind || !(kind in TABLES) || extra.length > 0) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  if (values.output !== 'table' && values.output !== 'json' && values.output !== 'yaml') throw new KedgeError('KEDGE_USAGE', `-o ${values.output}: use table, json or yaml`);
  const target = resolveAdminTarget(values);
  let route = `/api/v1/${kind}`;
  if (name) route += kind === 'workloads' ? `/${name.includes('/') ? name.split('/').map(encodeURIComponent).join('/') : `default/${encodeURIComponent(name)}`}` : `/${encodeURIComponent(name)}`;
  if (values.from) {
    if (kind !== 'endpoints' || !name) throw new KedgeError('KEDGE_USAGE', '--from goes with: kedge get endpoints SERVICE --from NAMESPACE/WORKLOAD');
    route += `?from=${encodeURIComponent(values.from)}`;
  }
  const result = await apiRequest<unknown>(target, 'GET', route);
  if (values.output === 'json') return `${JSON.stringify(result, null, 2)}\n`;
  if (values.output === 'yaml') return YAML.stringify(result);
  if (values.from) return fromTable(result as FromResult);
  const rows = (Array.isArray(result) ? result : [result]) as never[];
  return TABLES[kind as keyof typeof TABLES](rows);
}
