// `kedge authz check --from NS/WORKLOAD --to SERVICE[.NS][:PORT] [--method M]
// [--path P] [--header k=v]...`: what the server proxies of the service would
// decide, computed by the federation with the same compiled matcher the
// proxies run, one line per endpoint.
import { KedgeError } from '../proto/model/errors';
import type { AuthzCheckAnswer } from '../federation/mesh/authz-check';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';
import { renderTable } from './table';

const USAGE = 'kedge authz check --from NAMESPACE/WORKLOAD --to SERVICE[.NAMESPACE][:PORT] [--method M] [--path P] [--host H] [--header k=v]... [-o table|json] [--federation https://HOST:PORT] [--admin-token-file FILE]';

/** Renders a check's answer; golden-tested. */
export function checkTable(a: AuthzCheckAnswer): string {
  const head = `${a.from} (${a.principal}) -> ${a.to} [${a.protocol}]\n`;
  return head + renderTable(
    ['decision', 'endpoint', 'workload', 'policy', 'rule', 'reason'],
    a.results.map((r) => [r.allowed ? 'ALLOW' : 'DENY', r.endpoint, r.workload, r.policy ?? '-', r.rule === undefined ? '-' : String(r.rule), r.reason + (r.audit ? ` (audited by ${r.audit})` : '')]),
  );
}

/** Runs `kedge authz`; returns the text to print. */
export async function runAuthz(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(
    argv,
    {
      ...ADMIN_FLAGS,
      from: { type: 'string' },
      to: { type: 'string' },
      method: { type: 'string' },
      path: { type: 'string' },
      host: { type: 'string' },
      header: { type: 'string', multiple: true },
      output: { type: 'string', short: 'o', default: 'table' },
    },
    USAGE,
  );
  if (positionals[0] !== 'check' || positionals.length !== 1 || !values.from || !values.to) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  if (!values.from.includes('/')) throw new KedgeError('KEDGE_USAGE', `--from ${values.from}: write NAMESPACE/WORKLOAD as kedge get workloads lists it`);
  if (values.output !== 'table' && values.output !== 'json') throw new KedgeError('KEDGE_USAGE', `-o ${values.output}: use table or json`);
  const headers: Record<string, string> = {};
  for (const h of values.header ?? []) {
    const eq = h.indexOf('=');
    if (eq < 1) throw new KedgeError('KEDGE_USAGE', `--header ${h}: write NAME=VALUE`);
    headers[h.slice(0, eq)] = h.slice(eq + 1);
  }
  const body = { from: values.from, to: values.to, method: values.method, path: values.path, host: values.host, headers };
  const answer = await apiRequest<AuthzCheckAnswer>(resolveAdminTarget(values), 'POST', '/api/v1/authz/check', body);
  return values.output === 'json' ? `${JSON.stringify(answer, null, 2)}\n` : checkTable(answer);
}
