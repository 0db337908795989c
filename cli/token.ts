// `kedge token create --namespace NS --service-account SA [--ttl 1h] [--uses 1]`.
import { KedgeError } from '../proto/model/errors';
import { parseDuration } from '../proto/model/duration';
import { isValidName } from '../proto/model/spiffe';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';

const USAGE = 'kedge token create --namespace NS --service-account SA [--ttl 1h] [--uses 1] [--federation http://HOST:PORT] [--admin-token-file FILE]';

/** Runs `kedge token create`; returns the join token followed by a newline (only the token goes to stdout). */
export async function runToken(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(
    argv,
    { ...ADMIN_FLAGS, namespace: { type: 'string', short: 'n' }, 'service-account': { type: 'string' }, ttl: { type: 'string', default: '1h' }, uses: { type: 'string', default: '1' } },
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
  const target = resolveAdminTarget(values);
  const res = await apiRequest<{ token: string }>(target, 'POST', '/api/v1/tokens', { namespace: ns, serviceAccount: sa, ttl: values.ttl, uses });
  return `${res.token}\n`;
}
