// `kedge stat services|workloads [NAME] [--from WORKLOAD] [--window 1m] [-o table|json]`:
// success rate, requests per second, latency percentiles and TCP
// connections per service or workload, as `linkerd viz stat` shows them,
// from the traffic summaries agents report to the federation (no
// Prometheus needed).
import { KedgeError } from '../proto/model/errors';
import { parseDuration } from '../proto/model/duration';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';
import { renderTable } from './table';
import type { StatRow } from '../federation/stats';

const USAGE = 'kedge stat services|workloads [NAME] [--from NAMESPACE/WORKLOAD] [--window 1m] [-o table|json] [--federation https://HOST:PORT] [--admin-token-file FILE]';

const pct = (v: number | null) => (v === null ? '-' : `${(v * 100).toFixed(2)}%`);
const ms = (v: number | null) => (v === null ? '-' : `${v < 10 ? v.toFixed(1) : Math.round(v)}ms`);

/** Renders stat rows; golden-tested. */
export function statTable(kind: 'services' | 'workloads', rows: readonly StatRow[]): string {
  return renderTable(
    [kind === 'services' ? 'service' : 'workload', 'success', 'rps', 'latency_p50', 'latency_p95', 'latency_p99', 'tcp_conn'],
    rows.map((r) => [r.name, pct(r.success), `${r.rps.toFixed(1)}rps`, ms(r.p50Ms), ms(r.p95Ms), ms(r.p99Ms), String(r.tcpConnections)]),
  );
}

/** Runs `kedge stat`; returns the text to print. */
export async function runStat(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, output: { type: 'string', short: 'o', default: 'table' }, from: { type: 'string' }, window: { type: 'string', default: '1m' } }, USAGE);
  const [kind, name, ...rest] = positionals;
  if ((kind !== 'services' && kind !== 'workloads') || rest.length > 0) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  if (values.output !== 'table' && values.output !== 'json') throw new KedgeError('KEDGE_USAGE', `-o ${values.output}: use table or json`);
  const windowMs = parseDuration(values.window, '--window');
  if (values.from !== undefined && !/^[^/]+\/[^/]+$/.test(values.from)) throw new KedgeError('KEDGE_USAGE', `--from ${values.from}: name the client workload as NAMESPACE/NAME (see kedge get workloads)`);
  if (kind === 'workloads' && name !== undefined && !name.includes('/')) throw new KedgeError('KEDGE_USAGE', `workload ${name}: write NAMESPACE/NAME`);
  const q = new URLSearchParams({ window: `${windowMs}ms` });
  if (name !== undefined) q.set('name', name);
  if (values.from !== undefined) q.set('from', values.from);
  const rows = await apiRequest<StatRow[]>(resolveAdminTarget(values), 'GET', `/api/v1/stats/${kind}?${q.toString()}`);
  return values.output === 'json' ? `${JSON.stringify(rows, null, 2)}\n` : statTable(kind, rows);
}
