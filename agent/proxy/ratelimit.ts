// The server proxy's rate-limit hook: local token buckets
// (HTTPLocalRateLimitPolicy, policy/ratelimit/local.ts) and mesh-wide quota
// admission (MeshQuota, policy/ratelimit/quota.ts), evaluated once per HTTP
// request or gRPC call and once per opaque TCP connection on the inbound
// path, after authorization. A refusal answers as Envoy's rate-limit
// filters do: HTTP 429 with `retry-after`, gRPC RESOURCE_EXHAUSTED
// (trailers-only), a TCP connection closed; the record carries the response
// flag RL, and each refusal is logged (at debug: under a flood the counters
// say it, one warn line per second at most says which policy).
import type * as http2 from 'node:http2';
import type { Logger } from '../../proto/model/log';
import { LocalLimiter, type LimitRequest } from '../../policy/ratelimit/local';
import type { LocalRateLimitPolicy, MeshQuotaPolicy } from '../../policy/ratelimit/model';
import { QuotaAdmission } from '../../policy/ratelimit/quota';
import type { HeaderLine } from './http1/parse';
import type { LocalAnswer } from './http1/session';
import { GRPC, type H2Answer } from './http2/stream';

/** gRPC's RESOURCE_EXHAUSTED, which a refused gRPC call gets. */
const GRPC_RESOURCE_EXHAUSTED = GRPC.RESOURCE_EXHAUSTED;
/** The record's response flag for a request or connection refused by a rate limit (Envoy's RL). */
export const RL_FLAG = 'RL';
/** The codes of the record and log line. */
export const RATE_LIMITED = 'KEDGE_RATE_LIMITED';
export const QUOTA_EXHAUSTED = 'KEDGE_QUOTA_EXHAUSTED';
/** Envoy's local rate-limit body; clients and tests match it. */
export const RL_BODY = 'local_rate_limited';
export const QUOTA_BODY = 'mesh quota exhausted';

/** The connection facts a limit may key on. */
export interface RateLimitConnection {
  /** The peer's SPIFFE ID (`spiffe://...`). */
  principal: string;
  /** The local target's hostname (name.namespace.svc.<domain>). */
  hostname: string;
}

/** A refusal as the three protocols answer it. */
interface Refusal {
  code: string;
  message: string;
  retryAfterSeconds: number;
  log: Record<string, unknown>;
}

/** The proxy's rate-limit state: replaced policies keep their buckets and quota counts. */
export class InboundRateLimits {
  private local = new LocalLimiter([]);
  readonly quotas = new QuotaAdmission();
  private lastWarn = -Infinity;

  constructor(private readonly logger: Logger, private readonly now: () => number = Date.now) {}

  /** Takes the policies of a push. */
  set(local: readonly LocalRateLimitPolicy[], quotas: readonly MeshQuotaPolicy[]): void {
    this.local = new LocalLimiter(local, this.local);
    this.quotas.setPolicies(quotas);
  }

  get empty(): boolean {
    return this.local.empty && this.quotas.empty;
  }

  private check(c: RateLimitConnection, http: LimitRequest['http'], extra: Record<string, unknown>): Refusal | undefined {
    if (this.empty) return undefined;
    const principal = c.principal.startsWith('spiffe://') ? c.principal.slice('spiffe://'.length) : c.principal;
    const service = c.hostname.split('.').slice(0, 2).join('.');
    const now = this.now();
    const req: LimitRequest = http ? { principal, service, http } : { principal, service };
    const l = this.local.admit(req, now);
    const refusal: Refusal | undefined = l
      ? { code: RATE_LIMITED, message: RL_BODY, retryAfterSeconds: l.retryAfterSeconds, log: { policy: l.policy, limit: l.limit } }
      : (() => {
          // TCP connections are not counted by quotas (they count requests).
          const q = http ? this.quotas.admit(principal, service, now) : undefined;
          return q ? { code: QUOTA_EXHAUSTED, message: QUOTA_BODY, retryAfterSeconds: q.retryAfterSeconds, log: { policy: q.policy, reason: q.reason } } : undefined;
        })();
    if (refusal) {
      const fields = { peer: c.principal || '(no mesh identity)', service, code: refusal.code, retryAfter: refusal.retryAfterSeconds, ...refusal.log, ...extra };
      if (now - this.lastWarn >= 1_000) {
        this.lastWarn = now;
        this.logger.warn(fields, 'refused by rate limit');
      } else this.logger.debug(fields, 'refused by rate limit');
    }
    return refusal;
  }

  /** One HTTP/1.1 request; undefined to forward it, or the 429 to answer. */
  http1(c: RateLimitConnection, method: string, target: string, headers: readonly HeaderLine[]): LocalAnswer | undefined {
    const header = (name: string): string | undefined => {
      let v: string | undefined;
      for (const h of headers) if (h.name === name) v = v === undefined ? h.value : `${v},${h.value}`;
      return v;
    };
    const r = this.check(c, { method, path: target, header }, { method, path: target });
    if (!r) return undefined;
    return { status: 429, code: r.code, message: r.message, flag: RL_FLAG, headers: [['content-type', 'text/plain'], ['retry-after', String(r.retryAfterSeconds)]], body: r.message };
  }

  /** One HTTP/2 stream (gRPC or not); undefined to forward it, or the answer (429, or RESOURCE_EXHAUSTED). */
  http2(c: RateLimitConnection, headers: http2.IncomingHttpHeaders): H2Answer | undefined {
    const method = String(headers[':method'] ?? '');
    const path = String(headers[':path'] ?? '');
    const header = (name: string): string | undefined => {
      const v = headers[name === 'host' ? ':authority' : name];
      return v === undefined ? undefined : Array.isArray(v) ? v.join(',') : String(v);
    };
    const r = this.check(c, { method, path, header }, { method, path });
    if (!r) return undefined;
    return { status: 429, grpcStatus: GRPC_RESOURCE_EXHAUSTED, code: r.code, message: r.message, flag: RL_FLAG, headers: { 'retry-after': String(r.retryAfterSeconds) } };
  }

  /** One opaque TCP connection; true when it may go to the app (the caller closes it otherwise). */
  tcp(c: RateLimitConnection): boolean {
    return this.check(c, undefined, {}) === undefined;
  }
}
