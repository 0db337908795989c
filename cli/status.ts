// `kedge status`: every agent with its replica, acked version, certificate
// expiry and last contact.
import YAML from 'yaml';
import { KedgeError } from '../proto/model/errors';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';
import { renderTable } from './table';

const USAGE = 'kedge status [-o table|json|yaml] [--federation https://HOST:PORT] [--admin-token-file FILE]';

/** A status row as the API returns it. */
export interface StatusRow {
  agent: string;
  replica: string;
  ackedVersion: string;
  lastContact: string;
  certNotAfter: string | undefined;
  subscriptions: string[];
}

/** "12s ago" / "in 23h" style ages relative to `now`. */
export function age(iso: string | undefined, now: number): string {
  if (!iso) return '-';
  const ms = Date.parse(iso) - now;
  const abs = Math.abs(ms);
  const text = abs < 120_000 ? `${Math.round(abs / 1000)}s` : abs < 7_200_000 ? `${Math.round(abs / 60_000)}m` : abs < 172_800_000 ? `${Math.round(abs / 3_600_000)}h` : `${Math.round(abs / 86_400_000)}d`;
  return ms < 0 ? `${text} ago` : `in ${text}`;
}

/** Renders status rows; golden-tested with a fixed `now`. */
export function statusTable(rows: StatusRow[], now: number): string {
  return renderTable(
    ['agent', 'replica', 'acked', 'last contact', 'cert expires', 'subscriptions'],
    rows.map((r) => [r.agent, r.replica, r.ackedVersion || '-', age(r.lastContact, now), age(r.certNotAfter, now), String(r.subscriptions.length)]),
  );
}

/** Runs `kedge status`; returns the text to print. */
export async function runStatus(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, output: { type: 'string', short: 'o', default: 'table' } }, USAGE);
  if (positionals.length) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  const rows = await apiRequest<StatusRow[]>(resolveAdminTarget(values), 'GET', '/api/v1/status');
  if (values.output !== 'table' && values.output !== 'json' && values.output !== 'yaml') throw new KedgeError('KEDGE_USAGE', `-o ${values.output}: use table, json or yaml`);
  if (values.output === 'yaml') return YAML.stringify(rows);
  return values.output === 'json' ? `${JSON.stringify(rows, null, 2)}\n` : statusTable(rows, Date.now());
}
