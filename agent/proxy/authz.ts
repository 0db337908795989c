// The server proxy's authorization hook: the snapshot's compiled matcher
// (policy/authz, compiled once per push) evaluated once per HTTP request and
// once per opaque TCP connection on the inbound path. Denials answer as
// Envoy's RBAC filter does (HTTP 403 `RBAC: access denied`; a TCP
// connection is closed), are logged with the policy and rule, and carry the
// response flag RBAC in the record.
import type { Logger } from '../../proto/model/log';
import type { AuthzDecision, AuthzMatcher, AuthzRequest } from '../../policy/authz/compile';
import type * as http2 from 'node:http2';
import type { HeaderLine } from './http1/parse';
import type { LocalAnswer } from './http1/session';
import type { H2Answer } from './http2/stream';

/** gRPC's PERMISSION_DENIED, which a denied gRPC call gets (trailers-only). */
const GRPC_PERMISSION_DENIED = 7;

/** The record's response flag for a request or connection denied by an AuthorizationPolicy. */
export const RBAC_FLAG = 'RBAC';
/** The code of the record and log line. */
export const RBAC_DENIED = 'KEDGE_RBAC_DENIED';
/** Envoy's body for a request its RBAC filter denies; clients and tests match it. */
export const RBAC_BODY = 'RBAC: access denied';

/** The connection facts every evaluation needs. */
export interface AuthzConnection {
  /** The peer's SPIFFE ID (`spiffe://...`), '' without mesh mTLS. */
  principal: string;
  remoteAddress: string | undefined;
  localAddress: string | undefined;
  /** The app port the connection is for. */
  targetPort: number;
  sni: string;
}

function baseRequest(c: AuthzConnection): AuthzRequest {
  return {
    principal: c.principal.startsWith('spiffe://') ? c.principal.slice('spiffe://'.length) : c.principal,
    sourceIp: c.remoteAddress ?? '',
    destinationIp: c.localAddress ?? '',
    destinationPort: c.targetPort,
    sni: c.sni,
  };
}

function logDenial(logger: Logger, d: AuthzDecision, c: AuthzConnection, extra: Record<string, unknown>): void {
  logger.warn(
    { peer: c.principal || '(no mesh identity)', remote: c.remoteAddress, port: c.targetPort, policy: d.match?.policy ?? '(none matched)', rule: d.match?.rule, reason: d.reason, code: RBAC_DENIED, ...extra },
    'denied by authorization policy',
  );
}

/** Evaluates one HTTP/1.1 request; undefined to forward it, or the 403 to answer. */
export function authorizeHttp1(m: AuthzMatcher | undefined, logger: Logger, c: AuthzConnection, method: string, target: string, headers: readonly HeaderLine[]): LocalAnswer | undefined {
  if (m === undefined || m.empty) return undefined;
  const header = (name: string): string | undefined => {
    let v: string | undefined;
    for (const h of headers) if (h.name === name) v = v === undefined ? h.value : `${v},${h.value}`;
    return v;
  };
  const d = m.evaluate({ ...baseRequest(c), http: { host: header('host') ?? '', method, path: target, header } });
  if (d.audit) logger.info({ peer: c.principal, method, path: target, audit: d.audit.policy, rule: d.audit.rule, allowed: d.allowed }, 'audited by authorization policy');
  if (d.allowed) return undefined;
  logDenial(logger, d, c, { method, path: target });
  return { status: 403, code: RBAC_DENIED, message: RBAC_BODY, flag: RBAC_FLAG, headers: [['content-type', 'text/plain']], body: RBAC_BODY };
}

/** Evaluates one HTTP/2 stream (gRPC or not); undefined to forward it, or the answer (403, or gRPC PERMISSION_DENIED). */
export function authorizeHttp2(m: AuthzMatcher | undefined, logger: Logger, c: AuthzConnection, headers: http2.IncomingHttpHeaders): H2Answer | undefined {
  if (m === undefined || m.empty) return undefined;
  const method = String(headers[':method'] ?? '');
  const path = String(headers[':path'] ?? '');
  const header = (name: string): string | undefined => {
    const v = headers[name === 'host' ? ':authority' : name];
    return v === undefined ? undefined : Array.isArray(v) ? v.join(',') : String(v);
  };
  const d = m.evaluate({ ...baseRequest(c), http: { host: header('host') ?? '', method, path, header } });
  if (d.audit) logger.info({ peer: c.principal, method, path, audit: d.audit.policy, rule: d.audit.rule, allowed: d.allowed }, 'audited by authorization policy');
  if (d.allowed) return undefined;
  logDenial(logger, d, c, { method, path });
  return { status: 403, grpcStatus: GRPC_PERMISSION_DENIED, code: RBAC_DENIED, message: RBAC_BODY, flag: RBAC_FLAG };
}

/** Evaluates an opaque TCP connection; true when it may go to the app (the caller closes it otherwise). */
export function authorizeTcp(m: AuthzMatcher | undefined, logger: Logger, c: AuthzConnection): boolean {
  if (m === undefined || m.empty) return true;
  const d = m.evaluate(baseRequest(c));
  if (d.audit) logger.info({ peer: c.principal, port: c.targetPort, audit: d.audit.policy, rule: d.audit.rule, allowed: d.allowed }, 'audited by authorization policy');
  if (d.allowed) return true;
  logDenial(logger, d, c, {});
  return false;
}
