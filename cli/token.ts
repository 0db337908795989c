// `kedge token create --namespace NS --service-account SA [grants] [--ttl 1h] [--uses 1]`.
// A token grants an identity and what the workload holding it may register:
// --service (repeatable), --workload (name or glob), --labels, --gateway.
// `kedge token create --viewer [--ttl 24h]` makes a read-only token for the
// dashboard and the API instead.
import { KedgeError } from '../proto/model/errors';
import { parseDuration } from '../proto/model/duration';
import { isValidName } from '../proto/model/spiffe';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';
import { joinCommand } from './join';

const USAGE =
  'kedge token create --namespace NS --service-account SA [--service NAME]... [--workload NAME|GLOB] [--labels k=v,...] [--gateway NETWORK [--new-network]] [--ttl 1h] [--uses 1] [--join [--advertise HOST[:PORT]] [--locality R/Z] [--network NET] [--serve NAME:PORT[:TARGET[:PROTO]]]...] [--federation https://HOST:PORT] [--admin-token-file FILE]\n       kedge token create --viewer [--ttl 24h] [--federation https://HOST:PORT] [--admin-token-file FILE]';

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
      'new-network': { type: 'boolean' },
      ttl: { type: 'string' },
      uses: { type: 'string', default: '1' },
      // --join: print the command a bare host runs instead of the bare token.
      join: { type: 'boolean', default: false },
      advertise: { type: 'string' },
      locality: { type: 'string' },
      network: { type: 'string' },
      serve: { type: 'string', multiple: true },
      viewer: { type: 'boolean' },
    },
    USAGE,
  );
  if (positionals.length !== 1 || positionals[0] !== 'create') throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  if (values.viewer) {
    const grantFlags = (['namespace', 'service-account', 'service', 'workload', 'labels', 'gateway'] as const).filter((f) => values[f] !== undefined);
    if (grantFlags.length > 0) throw new KedgeError('KEDGE_USAGE', `--viewer makes a read-only dashboard/API token, which grants no identity: drop --${grantFlags.join(', --')}`);
    const ttl = values.ttl ?? '24h';
    parseDuration(ttl, '--ttl');
    const res = await apiRequest<{ token: string; expiresAt: string }>(resolveAdminTarget(values), 'POST', '/api/v1/viewer-tokens', { ttl });
    process.stderr.write(`viewer token (read-only) expires ${res.expiresAt}\n`);
    return `${res.token}\n`;
  }
  values.ttl ??= '1h';
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
  if (!values.join && (values.advertise || values.locality || values.network || values.serve)) {
    throw new KedgeError('KEDGE_USAGE', `--advertise, --locality, --network and --serve go into a join command: add --join\n\nusage: ${USAGE}`);
  }
  for (const s of values.serve ?? []) {
    if (!/^[a-z0-9-]+:\d{1,5}(:\d{1,5}(:[a-z0-9]+)?)?$/.test(s)) throw new KedgeError('KEDGE_USAGE', `--serve ${s}: use NAME:PORT[:TARGET_PORT[:PROTOCOL]], e.g. payments:9080:18080:http`);
  }
  // A service the joined host serves is one its token must grant.
  for (const s of values.serve ?? []) if (!services.includes(s.split(':')[0]!)) services.push(s.split(':')[0]!);
  const labels = values.labels ? parseLabelGrant(values.labels) : undefined;
  const res = await apiRequest<{ token: string; warnings?: string[]; expiresAt?: string | number }>(target, 'POST', '/api/v1/tokens', {
    namespace: ns,
    serviceAccount: sa,
    ttl: values.ttl,
    uses,
    services,
    ...(values.workload ? { workload: values.workload } : {}),
    ...(labels ? { labels } : {}),
    ...(values.gateway ? { gateway: values.gateway } : {}),
    ...(values['new-network'] ? { newNetwork: true } : {}),
  });
  for (const w of res.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
  if (!values.join) return `${res.token}\n`;
  const { command } = await joinCommand(
    {
      token: res.token,
      expiresAt: res.expiresAt === undefined ? undefined : new Date(res.expiresAt).toISOString(),
      federationUrl: target.baseUrl,
      advertise: values.advertise,
      namespace: ns,
      serviceAccount: sa,
      // An exact workload name and concrete labels configure the host; globs only grant.
      workload: values.workload && !/[*?[]/.test(values.workload) ? values.workload : undefined,
      labels: labels ? Object.fromEntries(Object.entries(labels).filter(([, v]) => !/[*?[]/.test(v))) : undefined,
      locality: values.locality,
      network: values.network,
      services: values.serve,
    },
    () => apiRequest(target, 'GET', '/join/info'),
  );
  return `${command}\n`;
}
