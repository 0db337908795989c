// `kedge apply -f FILE`: reads TrafficPolicy, HTTPRoute, GRPCRoute,
// FaultInjection, AuthorizationPolicy, PeerAuthentication, HTTPLocalRateLimitPolicy and MeshQuota documents (YAML, several per file with ---), validates them
// locally, then sends them to the federation, which checks them again
// against the services it knows. Policies are applied all or nothing; a bad
// route rejects only itself: the good ones are applied, every error is
// reported, and the command exits non-zero.
import * as fs from 'node:fs';
import YAML from 'yaml';
import { KedgeError } from '../proto/model/errors';
import { validateTrafficPolicy } from '../policy/traffic-policy';
import { isRouteDocument, validateRouteDocument } from '../policy/routes/documents';
import { isAuthzDocument, validateAuthorizationPolicy } from '../policy/authz/validate';
import { isPeerAuthDocument, validatePeerAuthentication } from '../policy/peer-auth/validate';
import { isRateLimitDocument, validateRateLimitDocument } from '../policy/ratelimit/validate';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';

const USAGE = 'kedge apply -f FILE [--federation https://HOST:PORT] [--admin-token-file FILE]';

/** The documents of a file, split by kind, with what is wrong with each. */
export interface PolicyFile {
  policies: unknown[];
  routes: unknown[];
  /** AuthorizationPolicy documents (security.istio.io/v1). */
  authz: unknown[];
  /** PeerAuthentication documents (security.istio.io/v1). */
  peerAuth: unknown[];
  /** HTTPLocalRateLimitPolicy and MeshQuota documents. */
  rateLimits: unknown[];
  /** Errors naming the file, the document and the path in it. */
  errors: string[];
}

/** Reads the documents of a file and validates each locally. */
export function readPolicyFile(file: string): PolicyFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new KedgeError('KEDGE_USAGE', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  const docs = YAML.parseAllDocuments(text);
  const out: PolicyFile = { policies: [], routes: [], authz: [], peerAuth: [], rateLimits: [], errors: [] };
  docs.forEach((d, i) => {
    const where = docs.length > 1 ? `${file} (document ${i + 1})` : file;
    if (d.errors.length) {
      out.errors.push(`${where}: not valid YAML: ${d.errors[0]!.message}`);
      return;
    }
    const value: unknown = d.toJS();
    if (value === null || value === undefined) return;
    if (isAuthzDocument(value)) {
      const r = validateAuthorizationPolicy(value);
      if (r.ok) out.authz.push(value);
      else out.errors.push(...r.errors.map((e) => `${where}: ${e}`));
      return;
    }
    if (isPeerAuthDocument(value)) {
      const r = validatePeerAuthentication(value);
      if (r.ok) out.peerAuth.push(value);
      else out.errors.push(...r.errors.map((e) => `${where}: ${e}`));
      return;
    }
    if (isRateLimitDocument(value)) {
      const r = validateRateLimitDocument(value);
      if (r.ok) out.rateLimits.push(value);
      else out.errors.push(...r.errors.map((e) => `${where}: ${e}`));
      return;
    }
    if (isRouteDocument(value)) {
      const r = validateRouteDocument(value);
      if (r.ok) out.routes.push(value);
      else out.errors.push(...r.errors.map((e) => `${where}: ${e}`));
      return;
    }
    const r = validateTrafficPolicy(value);
    if (r.ok) out.policies.push(value);
    else {
      const kind = (value as { kind?: unknown }).kind;
      const hint = typeof kind === 'string' && kind !== 'TrafficPolicy' ? ` (kedge apply reads TrafficPolicy, HTTPRoute, GRPCRoute, FaultInjection, AuthorizationPolicy, PeerAuthentication, HTTPLocalRateLimitPolicy and MeshQuota; not ${kind})` : '';
      out.errors.push(...r.errors.map((e) => `${where}: ${e}${hint}`));
    }
  });
  if (out.errors.length === 0 && out.policies.length + out.routes.length + out.authz.length + out.peerAuth.length + out.rateLimits.length === 0) throw new KedgeError('KEDGE_BAD_POLICY', `${file} holds no document`);
  return out;
}

/** Below the federation API's 64 KiB request limit, with room for the JSON list around the documents. */
const BATCH_BYTES = 60_000;

/**
 * Route documents in requests the API accepts: FaultInjections first, so a
 * route in a later request finds the FaultInjection its ExtensionRef names
 * already stored.
 */
export function routeBatches(docs: readonly unknown[], maxBytes = BATCH_BYTES): unknown[][] {
  const isFault = (d: unknown) => (d as { kind?: unknown }).kind === 'FaultInjection';
  const ordered = [...docs.filter(isFault), ...docs.filter((d) => !isFault(d))];
  const batches: unknown[][] = [];
  let current: unknown[] = [];
  let size = 0;
  for (const d of ordered) {
    const n = JSON.stringify(d).length + 1;
    if (current.length > 0 && size + n > maxBytes) {
      batches.push(current);
      current = [];
      size = 0;
    }
    current.push(d);
    size += n;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/** Runs `kedge apply`; returns what to print, or throws listing what was refused (after printing what was applied). */
export async function runApply(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, filename: { type: 'string', short: 'f' } }, USAGE);
  if (!values.filename || positionals.length) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  const file = readPolicyFile(values.filename);
  const target = resolveAdminTarget(values);
  const errors = [...file.errors];
  let out = '';
  if (file.policies.length > 0) {
    // A bad TrafficPolicy in the file keeps every policy of it back (policies are all or nothing).
    if (file.errors.some((e) => !/: (HTTPRoute|GRPCRoute|FaultInjection|AuthorizationPolicy|PeerAuthentication|HTTPLocalRateLimitPolicy|MeshQuota) /.test(e))) errors.push(`${values.filename}: no TrafficPolicy applied: policies are applied all or nothing`);
    else {
      try {
        const rows = await apiRequest<{ name: string; service: string }[]>(target, 'POST', '/api/v1/policies', file.policies);
        out += rows.map((r) => `trafficpolicy/${r.name} (${r.service}) applied\n`).join('');
      } catch (err) {
        // The federation refused the policies (all or nothing); the routes of the file are still applied.
        if (!(err instanceof KedgeError) || err.code === 'KEDGE_FEDERATION_UNREACHABLE') throw err;
        errors.push(...err.message.split('\n').map((e) => `${values.filename}: ${e}`));
      }
    }
  }
  for (const batch of routeBatches(file.routes)) {
    const r = await apiRequest<{ applied: { kind: string; namespace: string; name: string }[]; errors: string[] }>(target, 'POST', '/api/v1/routes', batch);
    out += r.applied.map((a) => `${a.kind.toLowerCase()}/${a.name} (${a.namespace}) applied\n`).join('');
    errors.push(...r.errors.map((e) => `${values.filename}: ${e}`));
  }
  for (const batch of routeBatches(file.authz)) {
    // A bad AuthorizationPolicy rejects only itself, as routes do.
    const r = await apiRequest<{ applied: { kind: string; namespace: string; name: string }[]; errors: string[] }>(target, 'POST', '/api/v1/authorizationpolicies', batch);
    out += r.applied.map((a) => `authorizationpolicy/${a.name} (${a.namespace}) applied\n`).join('');
    errors.push(...r.errors.map((e) => `${values.filename}: ${e}`));
  }
  for (const batch of routeBatches(file.peerAuth)) {
    const r = await apiRequest<{ applied: { kind: string; namespace: string; name: string }[]; errors: string[] }>(target, 'POST', '/api/v1/peerauthentications', batch);
    out += r.applied.map((a) => `peerauthentication/${a.name} (${a.namespace}) applied\n`).join('');
    errors.push(...r.errors.map((e) => `${values.filename}: ${e}`));
  }
  for (const batch of routeBatches(file.rateLimits)) {
    const r = await apiRequest<{ applied: { kind: string; namespace: string; name: string }[]; errors: string[] }>(target, 'POST', '/api/v1/ratelimits', batch);
    out += r.applied.map((a) => `${a.kind.toLowerCase()}/${a.name} (${a.namespace}) applied\n`).join('');
    errors.push(...r.errors.map((e) => `${values.filename}: ${e}`));
  }
  if (errors.length) {
    process.stdout.write(out);
    throw new KedgeError('KEDGE_BAD_POLICY', errors.join('\n'));
  }
  return out;
}
