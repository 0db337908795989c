// `kedge delete -f FILE` and `kedge delete KIND NAME`: removes what
// `kedge apply` stored (TrafficPolicy, HTTPRoute, GRPCRoute,
// FaultInjection). Routes read from a Kubernetes cluster are deleted there.
// Also `kedge delete workload NAMESPACE/NAME` (deregisters it and revokes
// its certificates) and `kedge delete token ID`.
import * as fs from 'node:fs';
import YAML from 'yaml';
import { KedgeError } from '../proto/model/errors';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget, type AdminTarget } from './admin-client';
import { parseFlags } from './args';

const USAGE = 'kedge delete -f FILE | kedge delete httproute|grpcroute|faultinjection|trafficpolicy|authorizationpolicy|peerauthentication|httplocalratelimitpolicy|meshquota|workload [NAMESPACE/]NAME | kedge delete token ID [--federation https://HOST:PORT] [--admin-token-file FILE]';

/** Kinds by what users type: the kind, lowercase, singular or plural. */
const KINDS: Record<string, string> = {};
for (const k of ['HTTPRoute', 'GRPCRoute', 'FaultInjection', 'TrafficPolicy', 'AuthorizationPolicy', 'PeerAuthentication', 'HTTPLocalRateLimitPolicy', 'MeshQuota']) {
  KINDS[k.toLowerCase()] = k;
  KINDS[`${k.toLowerCase()}s`] = k;
}

async function deleteOne(target: AdminTarget, kind: string, name: string, namespace: string): Promise<string> {
  if (kind === 'TrafficPolicy') {
    const r = await apiRequest<{ name: string; service: string }>(target, 'DELETE', `/api/v1/policies/${encodeURIComponent(name)}`);
    return `trafficpolicy/${r.name} (${r.service}) deleted\n`;
  }
  if (kind === 'AuthorizationPolicy') {
    await apiRequest(target, 'DELETE', `/api/v1/authorizationpolicies/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`);
    return `authorizationpolicy/${name} (${namespace}) deleted\n`;
  }
  if (kind === 'PeerAuthentication') {
    await apiRequest(target, 'DELETE', `/api/v1/peerauthentications/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`);
    return `peerauthentication/${name} (${namespace}) deleted\n`;
  }
  if (kind === 'HTTPLocalRateLimitPolicy' || kind === 'MeshQuota') {
    await apiRequest(target, 'DELETE', `/api/v1/ratelimits/${kind}/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`);
    return `${kind.toLowerCase()}/${name} (${namespace}) deleted\n`;
  }
  await apiRequest(target, 'DELETE', `/api/v1/routes/${kind}/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`);
  return `${kind.toLowerCase()}/${name} (${namespace}) deleted\n`;
}

/** Runs `kedge delete`; returns what to print. */
export async function runDelete(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, filename: { type: 'string', short: 'f' } }, USAGE);
  const target = resolveAdminTarget(values);
  if (values.filename) {
    if (positionals.length) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
    let text: string;
    try {
      text = fs.readFileSync(values.filename, 'utf8');
    } catch (err) {
      throw new KedgeError('KEDGE_USAGE', `cannot read ${values.filename}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
    let out = '';
    const errors: string[] = [];
    for (const d of YAML.parseAllDocuments(text)) {
      if (d.errors.length) throw new KedgeError('KEDGE_BAD_POLICY', `${values.filename}: not valid YAML: ${d.errors[0]!.message}`);
      const doc = d.toJS() as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown }; spec?: { service?: unknown } } | null;
      if (!doc) continue;
      const kind = typeof doc.kind === 'string' ? KINDS[doc.kind.toLowerCase()] : undefined;
      // A TrafficPolicy without a name is named after its service.
      const name = doc.metadata?.name ?? (kind === 'TrafficPolicy' ? doc.spec?.service : undefined);
      if (!kind || typeof name !== 'string') {
        errors.push(`${values.filename}: a document without a known kind and a metadata.name cannot be deleted`);
        continue;
      }
      try {
        out += await deleteOne(target, kind, name, typeof doc.metadata?.namespace === 'string' ? doc.metadata.namespace : 'default');
      } catch (err) {
        errors.push(err instanceof Error ? err.message : String(err));
      }
    }
    if (errors.length) {
      process.stdout.write(out);
      throw new KedgeError('KEDGE_NOT_FOUND', errors.join('\n'));
    }
    return out;
  }
  const [kindArg, nameArg, ...extra] = positionals;
  if (nameArg && extra.length === 0 && (kindArg === 'workload' || kindArg === 'workloads')) return deleteWorkload(target, nameArg);
  if (nameArg && extra.length === 0 && (kindArg === 'token' || kindArg === 'tokens')) {
    await apiRequest<unknown>(target, 'DELETE', `/api/v1/tokens/${encodeURIComponent(nameArg)}`);
    return `token ${nameArg} deleted\n`;
  }
  const kind = kindArg ? KINDS[kindArg.toLowerCase()] : undefined;
  if (!kind || !nameArg || extra.length) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  const [namespace, name] = nameArg.includes('/') ? nameArg.split('/', 2) as [string, string] : ['default', nameArg];
  return deleteOne(target, kind, kind === 'TrafficPolicy' ? nameArg : name, namespace);
}

/** Deregisters a workload and revokes every unexpired certificate of its binding. */
async function deleteWorkload(target: AdminTarget, nameArg: string): Promise<string> {
  const [ns, wl] = nameArg.includes('/') ? (nameArg.split('/', 2) as [string, string]) : ['default', nameArg];
  const r = await apiRequest<{ workload: string; revokedSerials: string[]; deregistered: boolean }>(target, 'DELETE', `/api/v1/workloads/${encodeURIComponent(ns)}/${encodeURIComponent(wl)}`);
  const serials = r.revokedSerials.length ? `revoked certificate(s) ${r.revokedSerials.join(', ')}` : 'no live certificate to revoke';
  return `workload ${r.workload} deleted: ${serials}${r.deregistered ? '; registration removed' : ''}\n`;
}
