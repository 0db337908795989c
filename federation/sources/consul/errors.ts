// Turns what the consul client throws (papi response, timeout, codec and
// socket errors) into KedgeErrors with stable codes and messages that say
// what the operator should check.
import { KedgeError, errorMessage } from '../../../proto/model/errors';

/** Where a failed query went, for the message. */
export interface ConsulQueryContext {
  address: string;
  datacenter: string;
  /** The query, e.g. "catalog services" or "health of reviews". */
  what: string;
  tokenFile?: string | undefined;
}

interface ClientError {
  code?: string;
  statusCode?: number;
  isTimeout?: boolean;
  isCodec?: boolean;
  isResponse?: boolean;
  response?: { body?: unknown };
}

/** Codes: KEDGE_CONSUL_{UNREACHABLE,TIMEOUT,ACL,DATACENTER,NO_LEADER,BAD_RESPONSE,TOKEN,ERROR}. */
export function describeConsulError(err: unknown, ctx: ConsulQueryContext): KedgeError {
  const at = `Consul ${ctx.datacenter} at ${ctx.address}`;
  if (err instanceof KedgeError) {
    // Already phrased (bad response shape, unreadable token file): add where.
    return new KedgeError(err.code, `${at}: ${ctx.what}: ${err.message}`, { cause: err });
  }
  const e = (typeof err === 'object' && err !== null ? err : {}) as ClientError;
  const body = typeof e.response?.body === 'string' ? e.response.body.trim().slice(0, 200) : '';
  const detail = body || stripClientPrefix(errorMessage(err));
  if (e.isResponse && e.statusCode === 403) {
    const token = ctx.tokenFile ? `the token in ${ctx.tokenFile}` : 'the request (no token configured)';
    return new KedgeError('KEDGE_CONSUL_ACL', `${at} refused ${token} for ${ctx.what} (403 ${detail}): check the token exists and its policy grants service:read and node:read`, { cause: err });
  }
  if (e.isResponse && /No path to datacenter/i.test(detail)) {
    return new KedgeError('KEDGE_CONSUL_DATACENTER', `${at} cannot reach datacenter "${ctx.datacenter}" (${detail}): check the cluster's datacenter name against \`consul catalog datacenters\``, { cause: err });
  }
  if (e.isResponse && /No cluster leader/i.test(detail)) {
    return new KedgeError('KEDGE_CONSUL_NO_LEADER', `${at} has no cluster leader (${ctx.what}): the Consul servers are electing one or lost quorum; check \`consul operator raft list-peers\``, { cause: err });
  }
  if (e.isResponse) {
    return new KedgeError('KEDGE_CONSUL_ERROR', `${at} answered ${e.statusCode} to ${ctx.what}: ${detail}`, { cause: err });
  }
  if (e.isTimeout) {
    return new KedgeError('KEDGE_CONSUL_TIMEOUT', `${at} did not answer ${ctx.what} in time: check the Consul agent is responsive and nothing between (proxy, firewall) holds the connection`, { cause: err });
  }
  if (e.isCodec) {
    return new KedgeError('KEDGE_CONSUL_BAD_RESPONSE', `${at} sent an unreadable answer to ${ctx.what} (${detail}): check that the address points at a Consul HTTP API`, { cause: err });
  }
  if (e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' || e.code === 'EHOSTUNREACH' || e.code === 'ENETUNREACH' || e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN' || e.code === 'EPIPE') {
    return new KedgeError('KEDGE_CONSUL_UNREACHABLE', `cannot reach ${at} (${e.code}) for ${ctx.what}: check the address and that the Consul agent is running`, { cause: err });
  }
  return new KedgeError('KEDGE_CONSUL_ERROR', `${at}: ${ctx.what} failed: ${detail}`, { cause: err });
}

/** The consul client prefixes "consul: health.service: "; the context already says that. */
function stripClientPrefix(msg: string): string {
  return msg.replace(/^consul: [\w.]+: /, '');
}
