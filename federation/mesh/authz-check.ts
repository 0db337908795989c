// `kedge authz check`: what the server proxies of a service would decide for
// a request from a registered workload, computed with the same compiled
// matcher the proxies run, for each endpoint of the service (endpoints differ
// by labels, so different policies may select them).
import { KedgeError } from '../../proto/model/errors';
import { buildSni } from '../../proto/model/sni';
import type { AuthzRequest } from '../../policy/authz/compile';
import type { AuthzTable } from './authz';
import type { AgentRecord, MeshView } from './types';

/** What to check. */
export interface AuthzCheckQuery {
  /** `namespace/workload` of a registered workload. */
  from: string;
  /** `service[.namespace][:port]` (port number or name; the namespace defaults to the client's). */
  to: string;
  method?: string;
  path?: string;
  /** Host header; default `<service hostname>:<port>`. */
  host?: string;
  headers?: Record<string, string>;
}

/** The decision at one endpoint. */
export interface AuthzCheckResult {
  endpoint: string;
  workload: string;
  allowed: boolean;
  /** `namespace/name` and rule index of the deciding policy, when one decided. */
  policy?: string;
  rule?: number;
  reason: string;
  audit?: string;
}

/** The answer of `POST /api/v1/authz/check`. */
export interface AuthzCheckAnswer {
  from: string;
  principal: string;
  to: string;
  /** `http` (the proxy evaluates each request) or `tcp` (each connection; HTTP-only fields follow Istio's TCP rules). */
  protocol: 'http' | 'tcp';
  results: AuthzCheckResult[];
}

const HTTP_PROTOCOLS = new Set(['http', 'http2', 'grpc']);

/** Evaluates a query; KEDGE_NOT_FOUND or KEDGE_BAD_REQUEST name what is wrong. */
export function authzCheck(table: AuthzTable, agents: readonly AgentRecord[], view: MeshView, q: AuthzCheckQuery): AuthzCheckAnswer {
  const src = agents.find((a) => a.id === q.from);
  if (!src) throw new KedgeError('KEDGE_NOT_FOUND', `no workload ${q.from} is registered; give --from NAMESPACE/WORKLOAD as kedge get workloads lists it`);
  const m = /^([^:]+?)(?::([^:]+))?$/.exec(q.to);
  if (!m) throw new KedgeError('KEDGE_BAD_REQUEST', `--to ${q.to}: write SERVICE[.NAMESPACE][:PORT]`);
  const key = m[1]!.includes('.') ? m[1]! : `${m[1]}.${src.workload.namespace}`;
  const svc = view.services.get(key);
  if (!svc) throw new KedgeError('KEDGE_NOT_FOUND', `no service ${key} is known to the federation (kedge get services lists them)`);
  const ports = svc.ports.map((p) => `${p.name} ${p.port}`).join(', ');
  const port = m[2] === undefined ? (svc.ports.length === 1 ? svc.ports[0] : undefined) : svc.ports.find((p) => String(p.port) === m[2] || p.name === m[2]);
  if (!port) throw new KedgeError('KEDGE_BAD_REQUEST', `${m[2] === undefined ? `${key} has several ports; give one` : `${key} has no port ${m[2]}`} (its ports: ${ports || 'none'})`);
  const protocol = HTTP_PROTOCOLS.has(port.protocol) ? 'http' : 'tcp';
  const principal = src.identity.replace(/^spiffe:\/\//, '');
  const headers = Object.fromEntries(Object.entries(q.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const host = q.host ?? `${svc.hostname}:${port.port}`;
  const results: AuthzCheckResult[] = svc.endpoints.map((ep) => {
    const endpoint = `${ep.address}:${ep.mtlsPort || ep.ports.find((p) => p.name === port.name)?.port || port.targetPort}`;
    const namespace = /\/ns\/([^/]+)\//.exec(ep.identity)?.[1] ?? svc.namespace;
    const workload = ep.workload || `${namespace}/${ep.address}`;
    if (!ep.meshed || ep.identity === '') return { endpoint, workload, allowed: true, reason: 'not enforced: no Kedge proxy in front of this endpoint' };
    const matcher = table.matcherFor({ namespace, labels: ep.labels });
    const req: AuthzRequest = {
      principal,
      sourceIp: src.workload.address,
      destinationIp: ep.address,
      destinationPort: ep.ports.find((p) => p.name === port.name)?.port ?? port.targetPort,
      sni: buildSni(port.port, svc.hostname),
      http: protocol === 'http' ? { host, method: q.method ?? 'GET', path: q.path ?? '/', header: (n) => (n === 'host' ? host : headers[n]) } : undefined,
    };
    const d = matcher.evaluate(req);
    const r: AuthzCheckResult = { endpoint, workload, allowed: d.allowed, reason: d.reason };
    if (d.match) Object.assign(r, { policy: d.match.policy, rule: d.match.rule });
    if (d.audit) r.audit = `${d.audit.policy}, rule ${d.audit.rule}`;
    return r;
  });
  return { from: q.from, principal, to: `${key}:${port.port}`, protocol, results };
}
