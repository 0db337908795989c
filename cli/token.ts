// `kedge token create --namespace NS --service-account SA [grants] [--ttl 1h] [--uses 1]`.
// A token grants an identity and what the workload holding it may register:
// --service (repeatable), --workload (name or glob), --labels, --gateway.
import { KedgeError } from '../proto/model/errors';
import { parseDuration } from '../proto/model/duration';
import { isValidName } from '../proto/model/spiffe';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';

const USAGE =
  'kedge token create --namespace NS --service-account SA [--service NAME]... [--workload NAME|GLOB] [--labels k=v,...] [--gateway NETWORK] [--ttl 1h] [--uses 1] [--federation http://HOST:PORT] [--admin-token-file FILE]';

/** Parses `k=v,k2=v2` (a value of * allows any value). */
export function parseLabelGrant(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new KedgeError('KEDGE_USAGE', `--labels ${part}: write key=value (or key=* for any value), comma-separated`);
    out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

/** Runs `kedge token create`; returns the join token followed by a newline (only the token goes to stdout; warnings go to stderr). */
export async function runToken(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(
    argv,
    {
      ...ADMIN_FLAGS,
      namespace: { type: 'string', short: 'n' },
      'service-account': { type: 'string' },
      service: { type: 'string', multiple: true },
      workload: { type: 'string' },
      labels: { type: 'string' },
      gateway: { type: 'string' },
      ttl: { type: 'string', default: '1h' },
      uses: { type: 'string', default: '1' },
    },
    USAGE,
  );
  if (positionals.length !== 1 || positionals[0] !== 'create') throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  const ns = values.namespace;
  const sa = values['service-account'];
  if (!ns || !sa) throw new KedgeError('KEDGE_USAGE', `--namespace and --service-account are required\n\nusage: ${USAGE}`);
  for (const [flag, v] of [['--namespace', ns], ['--service-account', sa]] as const) {
    if (!isValidName(v)) throw new KedgeError('KEDGE_USAGE', `${flag} "${v}" is not a valid name (lowercase letters, digits, '-' and '.')`);
  }
  parseDuration(values.ttl, '--ttl');
  const uses = Number(values.uses);
  if (!Number.isInteger(uses) || uses < 1 || uses > 1_000_000) throw new KedgeError('KEDGE_USAGE', `--uses ${values.uses}: give a whole number from 1 to 1000000`);
  const services = (values.service ?? []).flatMap((s) => s.split(',').map((x) => x.trim()).filter(Boolean));
  const target = resolveAdminTarget(values);
  const res = await apiRequest<{ token: string; warnings?: string[] }>(target, 'POST', '/api/v1/tokens', {
    namespace: ns,
    serviceAccount: sa,
    ttl: values.ttl,
    uses,
    services,
    ...(values.workload ? { workload: values.workload } : {}),
    ...(values.labels ? { labels: parseLabelGrant(values.labels) } : {}),
    ...(values.gateway ? { gateway: values.gateway } : {}),
  });
  for (const w of res.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
  return `${res.token}\n`;
}
