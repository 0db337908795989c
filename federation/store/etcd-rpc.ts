// The etcd connection under the etcd store: one etcd3 client, requests with a
// deadline per operation and retries the store decides on, and the highest
// store revision any response has shown (watches without a start revision
// begin after it).
import type { CallOptions, ChannelOptions } from '@grpc/grpc-js';
import { Etcd3, type IOptions, type IResponseHeader } from 'etcd3';
import { KedgeError } from '../../proto/model/errors';
import { backoffMs, int } from './etcd-keys';
import { classifyEtcdError, etcdFailure } from './etcd-errors';

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

// etcd3's default fault handling retries three times and opens a 5 s circuit
// breaker per host after three failures, and it counts etcd's own refusals
// (RESOURCE_EXHAUSTED for the NOSPACE alarm) as failures: one full database
// then fails every read too, and a restarted etcd stays unusable for 5 s
// after it is back. EtcdRpc retries by itself, within a deadline per
// operation, so both policies are replaced by one that just runs the call.
const passThrough = {
  async execute<T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> {
    return fn({ signal: new AbortController().signal });
  },
} as unknown as Policy;

const GRPC_OPTIONS: ChannelOptions = {
  // grpc-js backs off reconnecting up to 120 s; a restarted etcd should be used within a second or two.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2000,
  // Finds a silently dead connection under a watch. etcd refuses pings more
  // often than its --grpc-keepalive-min-time (5 s by default).
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  // list() reads in pages; this only bounds one page of large values.
  'grpc.max_receive_message_length': 256 << 20,
  // Two stores in one process (tests, or two replicas) keep separate connections.
  'grpc.use_local_subchannel_pool': 1,
};

const RETRY_BASE_MS = 50;
const RETRY_MAX_MS = 500;
// The last retry still gets this long before the deadline, so the error
// reported is etcd's (say, connection refused), not a deadline that expired
// while the request was being sent.
const LAST_ATTEMPT_MS = 25;

/** How to run one request. */
export interface CallSpec {
  /** For messages, e.g. `put "/agents/a"`. */
  what: string;
  /** Changes data: retried only when it surely never reached etcd. */
  mutation: boolean;
  /** Overrides the store's request timeout. */
  timeoutMs?: number;
  /** The lease the request names, for the lease-not-found message. */
  lease?: string;
}

/** How to connect to a secured etcd: TLS (with a client certificate for --client-cert-auth) and RBAC user. */
export interface EtcdSecurity {
  /** Verify etcd's serving certificate against this CA (PEM); turns TLS on. */
  tls?: { caPem: string; certPem?: string; keyPem?: string };
  /** etcd user (`etcdctl user add`); the client authenticates and renews its token by itself. */
  auth?: { username: string; password: string };
}

/** One etcd3 client with the store's retry, deadline and revision bookkeeping. */
export class EtcdRpc {
  readonly client: Etcd3;
  readonly endpointList: string;
  /** The etcd user, for error messages; undefined without auth. */
  readonly username: string | undefined;
  private seen = 0;
  private closed = false;

  constructor(endpoints: string[], readonly requestTimeoutMs: number, private readonly closedError: () => KedgeError, security: EtcdSecurity = {}) {
    this.endpointList = endpoints.join(',');
    this.username = security.auth?.username;
    const { tls, auth } = security;
    this.client = new Etcd3({
      hosts: endpoints,
      grpcOptions: GRPC_OPTIONS,
      faultHandling: { host: () => passThrough, global: passThrough },
      ...(tls ? { credentials: { rootCertificate: Buffer.from(tls.caPem), ...(tls.certPem && tls.keyPem ? { certChain: Buffer.from(tls.certPem), privateKey: Buffer.from(tls.keyPem) } : {}) } } : {}),
      ...(auth ? { auth: { username: auth.username, password: auth.password } } : {}),
    });
  }

  /**
   * Forgets the auth token, so the next request authenticates again. etcd3
   * does this itself for unary requests; a watch that etcd cancels for an
   * expired token (simple tokens expire after --auth-token-ttl and die with
   * an etcd restart) needs it before it is opened again. Uses etcd3's
   * connection pool (internal, pinned version; the watch test across an etcd
   * restart with auth fails if it stops working).
   */
  refreshAuth(): void {
    const pool = (this.client as unknown as { pool?: { authenticator?: { invalidateMetadata?: () => void } } }).pool;
    pool?.authenticator?.invalidateMetadata?.();
  }

  /** The highest store revision seen in any response. */
  get revision(): number {
    return this.seen;
  }

  observe(header: IResponseHeader | undefined): void {
    const rev = int(header?.revision);
    if (rev > this.seen) this.seen = rev;
  }

  /**
   * Runs `fn` until it succeeds, a failure is final, or the operation's
   * deadline passes (every attempt shares one deadline, so an unreachable
   * etcd costs `timeoutMs`, not a multiple). Reads and lease calls are
   * idempotent and retried on any transient failure; mutations only when
   * the request never left this process. Rejects with a KedgeError.
   */
  async call<T>(spec: CallSpec, fn: (opts: CallOptions) => Promise<T>): Promise<T> {
    const timeoutMs = spec.timeoutMs ?? this.requestTimeoutMs;
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw this.closedError();
      try {
        const res = await fn({ deadline });
        this.observe((res as { header?: IResponseHeader } | undefined)?.header);
        return res;
      } catch (err) {
        if (this.closed) throw this.closedError();
        const kind = classifyEtcdError(err);
        const retry = kind === 'not-sent' || (kind === 'transient' && !spec.mutation);
        const remaining = deadline - Date.now();
        if (!retry || remaining < LAST_ATTEMPT_MS * 2) {
          throw etcdFailure(err, { endpoints: this.endpointList, what: spec.what, mutation: spec.mutation, timeoutMs, ...(spec.lease === undefined ? {} : { lease: spec.lease }), ...(this.username === undefined ? {} : { user: this.username }) });
        }
        const wait = Math.min(backoffMs(attempt, RETRY_BASE_MS, RETRY_MAX_MS), remaining - LAST_ATTEMPT_MS);
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  close(): void {
    this.closed = true;
    this.client.close();
  }
}
