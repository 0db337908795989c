// Consul's HTTP API responses, as far as Kedge reads them, and the checks
// that turn an untrusted body into typed data. A whole body of the wrong
// shape is an error (the address is probably not Consul); one malformed
// entry in a good body rejects only itself.
import { KedgeError } from '../../../proto/model/errors';

/** One element of `GET /v1/health/service/<name>`. */
export interface ConsulHealthEntry {
  Node: { Node: string; Address: string; Datacenter?: string; Meta: Record<string, string> | null };
  Service: {
    ID: string;
    Service: string;
    Kind?: string;
    Tags: string[] | null;
    /** Empty means "the node's address" (Consul's own rule). */
    Address: string;
    Port: number;
    Meta: Record<string, string> | null;
    Weights?: { Passing: number; Warning: number } | null;
  };
  Checks: { CheckID: string; Status: string; ServiceID?: string }[] | null;
}

/** Service names from `GET /v1/catalog/services` (a map of name to tags). */
export function readCatalogServices(body: unknown): string[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body) || Buffer.isBuffer(body)) {
    throw badResponse('/v1/catalog/services', 'expected a JSON object of service names to tags', body);
  }
  return Object.keys(body).sort();
}

/** Entries of `GET /v1/health/service/<name>`; malformed ones come back as problems. */
export function readHealthEntries(service: string, body: unknown): { entries: ConsulHealthEntry[]; problems: string[] } {
  if (!Array.isArray(body)) throw badResponse(`/v1/health/service/${service}`, 'expected a JSON array of entries', body);
  const entries: ConsulHealthEntry[] = [];
  const problems: string[] = [];
  body.forEach((raw, i) => {
    const why = entryProblem(raw);
    if (why) problems.push(`consul service "${service}": entry ${i} ignored: ${why}`);
    else entries.push(raw as ConsulHealthEntry);
  });
  return { entries, problems };
}

function entryProblem(raw: unknown): string | undefined {
  if (!isObject(raw)) return 'not an object';
  const { Node: node, Service: svc, Checks: checks } = raw;
  if (!isObject(node) || typeof node.Node !== 'string' || typeof node.Address !== 'string') return 'Node.Node and Node.Address must be strings';
  if (!isStringMapOrNull(node.Meta)) return 'Node.Meta must be a map of strings';
  if (!isObject(svc) || typeof svc.ID !== 'string' || typeof svc.Service !== 'string') return 'Service.ID and Service.Service must be strings';
  if (typeof svc.Address !== 'string' && svc.Address !== undefined) return 'Service.Address must be a string';
  if (typeof svc.Port !== 'number') return 'Service.Port must be a number';
  if (svc.Tags != null && !(Array.isArray(svc.Tags) && svc.Tags.every((t) => typeof t === 'string'))) return 'Service.Tags must be a list of strings';
  if (!isStringMapOrNull(svc.Meta)) return 'Service.Meta must be a map of strings';
  if (checks != null && !(Array.isArray(checks) && checks.every((c) => isObject(c) && typeof c.Status === 'string'))) return 'Checks must be a list of checks with a Status';
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isStringMapOrNull(v: unknown): boolean {
  return v == null || (isObject(v) && Object.values(v).every((x) => typeof x === 'string'));
}

function badResponse(path: string, expected: string, body: unknown): KedgeError {
  const seen = Buffer.isBuffer(body) ? `${body.length} bytes of non-JSON` : typeof body === 'string' ? `text ${JSON.stringify(body.slice(0, 60))}` : Array.isArray(body) ? 'an array' : typeof body;
  return new KedgeError('KEDGE_CONSUL_BAD_RESPONSE', `unexpected answer from ${path}: ${expected}, got ${seen}: check that the address points at a Consul HTTP API (port 8500 by default)`);
}
