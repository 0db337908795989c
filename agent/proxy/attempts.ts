// Reaching one endpoint of a service for a connection or a request: the
// balancer's per-request pick, connect attempts on distinct endpoints
// (another priority first), each failure fed to outlier detection through
// the pick's onEnd and written into the record. Shared by every stack of
// the engine (opaque TCP, TLS passthrough, the HTTP pools) and the gateway;
// only the way an endpoint is connected differs.
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import type { RecordResult } from './balancer/outlier';
import type { EndpointPick, RequestInfo } from './balancer/request-picker';
import type { Random } from './balancer/types';
import type { MeshEndpoint, ServiceEntry } from './balancers';
import { failureCode } from './stats';

/**
 * Connect attempts per client connection or request: the first pick plus
 * two retries on other endpoints. Retries prefer priorities not yet tried,
 * so one locality dying, or two one after the other, costs no client.
 */
export const MAX_ATTEMPTS = 3;

/** What attempts need from the engine. */
export interface AttemptDeps {
  logger: Logger;
  random: Random;
  /** Attempts per connection or request; 1 turns connect retries off. */
  maxAttempts: number;
}

/** Where failed attempts are written (the connection's or request's record). */
export interface AttemptLog {
  attemptFailed(endpoint: string, code: string): void;
}

/** One way to reach an endpoint: a fresh socket, a pooled connection, ... Rejects with a KedgeError. */
export type Connector<C> = (ep: MeshEndpoint) => Promise<C>;

/** A connected attempt: the pick (started: call onEnd when done) and what the connector gave. */
export interface Connected<C> {
  pick: EndpointPick<MeshEndpoint>;
  conn: C;
  attempts: number;
}

/** Logs what outlier detection did with an outcome. */
export function logOutlier(logger: Logger, r: RecordResult | undefined, ep: MeshEndpoint, fields: Record<string, unknown>, outcome: string): void {
  if (r === undefined) return;
  if (r.type === 'ejected') {
    logger.warn({ ...fields, endpoint: ep.key, outcome, workload: ep.view.workload, ejectedForMs: Math.round(r.ejection.until - r.ejection.since), multiplier: r.ejection.multiplier }, 'endpoint ejected by outlier detection');
  } else if (r.type === 'ejection-refused') {
    logger.warn({ ...fields, endpoint: ep.key, workload: ep.view.workload, ejected: r.ejected, endpoints: r.total }, 'endpoint kept in service: ejecting it would exceed maxEjectionPercent');
  }
}

/** What one call to connectAttempts is for. */
export interface AttemptTarget {
  entry: ServiceEntry;
  servicePort: number;
  preferred?: MeshEndpoint | undefined;
  request?: RequestInfo;
  /** Endpoints already tried by this request (a retry after a response); extended in place. */
  tried?: Set<string>;
  /** Log fields for warnings. */
  fields: Record<string, unknown>;
  /** True when the client is gone, so no further attempt is worth making. */
  gone: () => boolean;
  /**
   * When every endpoint was already tried by earlier attempts of this
   * request (retried statuses), start over rather than give up, as Envoy
   * retries may land on a host again. Connect failures within this call
   * still never redial the same endpoint.
   */
  allowRepeat?: boolean;
}

/**
 * Picks and connects, up to `maxAttempts` distinct endpoints. Resolves with
 * the connected attempt, or a KedgeError: KEDGE_NO_ENDPOINTS when there was
 * nothing to pick, KEDGE_UPSTREAM_UNAVAILABLE when every attempt failed,
 * KEDGE_CLIENT_CLOSED when the client left meanwhile.
 */
export async function connectAttempts<C>(t: AttemptTarget, deps: AttemptDeps, log: AttemptLog, connect: Connector<C>, extraFields?: (ep: MeshEndpoint) => Record<string, unknown>): Promise<Connected<C> | KedgeError> {
  const tried = t.tried ?? new Set<string>();
  const picker = t.entry.picker(t.servicePort);
  let attempts = 0;
  while (attempts < deps.maxAttempts) {
    const pick = picker.pick({ tried, random: deps.random, ...(attempts === 0 && tried.size === 0 ? { preferred: t.preferred } : {}), ...(t.request ? { request: t.request } : {}) });
    if (pick.type === 'exhausted') {
      if (attempts === 0 && t.allowRepeat === true && tried.size > 0) {
        tried.clear();
        continue;
      }
      break;
    }
    if (pick.type === 'none') {
      if (attempts > 0 || tried.size > 0) break;
      const service = t.entry.view?.key ?? String(t.fields.service ?? '');
      return new KedgeError('KEDGE_NO_ENDPOINTS', `service ${service} has no endpoints for port ${t.servicePort} to send to (${pick.message}); check that its workloads are registered and its traffic policy`);
    }
    const ep = pick.endpoint;
    attempts++;
    tried.add(ep.key);
    pick.onStart();
    try {
      const conn = await connect(ep);
      return { pick, conn, attempts };
    } catch (err) {
      const code = failureCode(err, 'KEDGE_UPSTREAM_CONNECT_FAILED');
      // A circuit breaker refused the connection: nothing about the endpoint, nothing to retry.
      if (code === 'KEDGE_CIRCUIT_OPEN') {
        pick.onEnd();
        return err as KedgeError;
      }
      log.attemptFailed(ep.key, code);
      deps.logger.warn({ ...t.fields, ...extraFields?.(ep), endpoint: ep.key, workload: ep.view.workload, attempt: attempts, code, err: errorMessage(err) }, 'outbound connect attempt failed');
      logOutlier(deps.logger, pick.onEnd('connect-failure'), ep, t.fields, 'connect-failure');
      if (t.gone()) return new KedgeError('KEDGE_CLIENT_CLOSED', 'the client went away while the proxy was connecting');
    }
  }
  if (t.gone()) return new KedgeError('KEDGE_CLIENT_CLOSED', 'the client went away while the proxy was connecting');
  const service = t.entry.view?.key ?? String(t.fields.service ?? '');
  return new KedgeError('KEDGE_UPSTREAM_UNAVAILABLE', `no endpoint of ${service} accepted the connection after ${attempts} attempt(s); see the attempt warnings above`);
}
