// What went wrong talking to etcd, and what to tell the operator. The etcd3
// client reports failures as gRPC errors (sometimes re-typed, losing the
// numeric code but keeping the "14 UNAVAILABLE: ..." message), so they are
// classified by etcd's error text first and the gRPC status code second.
import { errorMessage, KedgeError } from '../../proto/model/errors';

/** A failed etcd request, by what the store should do about it. */
export type EtcdFailure =
  | 'lease-not-found' // the lease expired or was revoked
  | 'no-space' // etcd raised its NOSPACE alarm and refuses writes
  | 'too-large' // the request exceeds etcd's --max-request-bytes
  | 'compacted' // the revision asked for was compacted away
  | 'auth-failed' // etcd refused the configured user name or password
  | 'permission-denied' // etcd has auth enabled and the user (or no user) may not do this
  | 'not-sent' // no connection: the request never reached etcd, so any request may be retried
  | 'transient' // lost mid-request, timed out, or etcd is between leaders: only idempotent requests are retried
  | 'rejected'; // anything else etcd refused

const TRANSIENT_CODES = new Set([1 /* CANCELLED */, 4 /* DEADLINE_EXCEEDED */, 10 /* ABORTED */, 14 /* UNAVAILABLE */]);
const TRANSIENT_ETCD = ['etcdserver: leader changed', 'etcdserver: no leader', 'etcdserver: request timed out', 'etcdserver: too many requests', 'etcdserver: server stopped', 'etcdserver: not capable'];

/** The gRPC status code of an error from grpc-js or etcd3, if it carries one. */
export function grpcCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'number') return code;
  const m = /^(?:\w+: )?(\d{1,2}) [A-Z_]+:/.exec(errorMessage(err));
  return m ? Number(m[1]) : undefined;
}

/** Classifies an error from an etcd request. */
export function classifyEtcdError(err: unknown): EtcdFailure {
  const msg = errorMessage(err);
  if (msg.includes('requested lease not found') || (err instanceof Error && err.constructor.name === 'EtcdLeaseInvalidError')) return 'lease-not-found';
  if (msg.includes('database space exceeded')) return 'no-space';
  // etcd refuses requests over --max-request-bytes itself, and over that plus
  // 512 KiB already in gRPC (server side, hence the lower-case "grpc:").
  if (msg.includes('request is too large') || msg.includes('grpc: received message larger than max')) return 'too-large';
  if (msg.includes('required revision has been compacted')) return 'compacted';
  if (msg.includes('authentication failed, invalid user ID or password')) return 'auth-failed';
  if (msg.includes('etcdserver: permission denied') || msg.includes('etcdserver: user name is empty')) return 'permission-denied';
  const code = grpcCode(err);
  // grpc-js fails a call with this text when no connection was up to send it on.
  if (code === 14 && msg.includes('No connection established')) return 'not-sent';
  if (TRANSIENT_ETCD.some((t) => msg.includes(t))) return 'transient';
  if (code !== undefined && TRANSIENT_CODES.has(code)) return 'transient';
  return 'rejected';
}

/** What a failed request was, for the error message. */
export interface FailureContext {
  /** The configured endpoints, comma-joined. */
  endpoints: string;
  /** e.g. `put "/agents/a"`. */
  what: string;
  /** True for requests that change data (the outcome of a lost one is unknown). */
  mutation: boolean;
  timeoutMs: number;
  lease?: string;
  /** The etcd user the store authenticates as, when it does. */
  user?: string;
}

const checkEtcd = (endpoints: string) => `check that etcd is running and reachable from this host (etcdctl --endpoints=${endpoints} endpoint health)`;

/** The KedgeError for a failed etcd request; stable codes, messages that say what to check. */
export function etcdFailure(err: unknown, ctx: FailureContext): KedgeError {
  const kind = classifyEtcdError(err);
  const detail = errorMessage(err);
  const opts = { cause: err };
  switch (kind) {
    case 'lease-not-found':
      return new KedgeError('KEDGE_STORE_LEASE_NOT_FOUND', `lease ${ctx.lease ?? '?'} for ${ctx.what} has expired or was revoked; grant a new lease and register again`, opts);
    case 'no-space':
      return new KedgeError(
        'KEDGE_STORE_UNAVAILABLE',
        `etcd at ${ctx.endpoints} refuses writes (${ctx.what}): its database exceeded its space quota and raised the NOSPACE alarm; free space by compacting and defragmenting etcd (etcdctl compact, etcdctl defrag) or raise --quota-backend-bytes, then clear the alarm with "etcdctl alarm disarm"`,
        opts,
      );
    case 'too-large':
      return new KedgeError('KEDGE_STORE_INVALID_REQUEST', `${ctx.what} is larger than etcd at ${ctx.endpoints} accepts (its --max-request-bytes, 1.5 MiB by default); store less in one key`, opts);
    case 'compacted':
      return new KedgeError('KEDGE_STORE_COMPACTED', `${ctx.what} asked etcd at ${ctx.endpoints} for a revision it has compacted away; list again and continue from the revision the list returns`, opts);
    case 'auth-failed':
      return new KedgeError('KEDGE_STORE_AUTH', `etcd at ${ctx.endpoints} refused user "${ctx.user ?? ''}" (${ctx.what}): wrong user name or password; check etcdUser and the password in etcdPasswordFile against the etcd user (etcdctl user get ${ctx.user ?? 'USER'})`, opts);
    case 'permission-denied':
      return ctx.user === undefined
        ? new KedgeError('KEDGE_STORE_AUTH', `etcd at ${ctx.endpoints} denied ${ctx.what}: authentication is enabled on it; give the federation an etcd user (etcdUser and etcdPasswordFile) whose role grants readwrite on its keys (etcdctl role grant-permission ROLE --prefix=true readwrite /kedge/)`, opts)
        : new KedgeError('KEDGE_STORE_AUTH', `etcd at ${ctx.endpoints} denied ${ctx.what} to user "${ctx.user}": none of its roles grants readwrite on this key; grant it (etcdctl role grant-permission ROLE --prefix=true readwrite /kedge/)`, opts);
    case 'not-sent':
      return new KedgeError('KEDGE_STORE_UNAVAILABLE', `cannot reach etcd at ${ctx.endpoints}: gave up on ${ctx.what} after retrying for ${ctx.timeoutMs} ms (${detail}); ${checkEtcd(ctx.endpoints)}`, opts);
    case 'transient':
      return new KedgeError(
        'KEDGE_STORE_UNAVAILABLE',
        `etcd at ${ctx.endpoints} did not complete ${ctx.what} within ${ctx.timeoutMs} ms (${detail}); ${ctx.mutation ? 'the change may or may not have been applied, so read the key again before retrying; ' : ''}${checkEtcd(ctx.endpoints)}`,
        opts,
      );
    case 'rejected':
      return new KedgeError('KEDGE_STORE_UNAVAILABLE', `etcd at ${ctx.endpoints} rejected ${ctx.what} (${detail}); check etcd's logs and health (etcdctl --endpoints=${ctx.endpoints} endpoint status)`, opts);
  }
}
