// The Store on an existing etcd v3 cluster, for several federation replicas
// sharing one state. Semantics match the embedded store (one conformance
// suite): guards are etcd transactions comparing mod_revision (an absent key
// is at 0), leases are etcd leases, watches are etcd watches that resume
// across reconnects. Every request has a deadline: an unreachable etcd, or
// one refusing writes, yields KEDGE_STORE_UNAVAILABLE naming the endpoints,
// never a hang.
//
// Differences from the embedded store worth knowing:
// - Lease TTLs are whole seconds, and etcd raises short ones to its minimum
//   (2 s with default flags). etcd also renews every lease to its full TTL
//   when it restarts or elects a leader, so a restart never expires leases.
// - A watch without fromRevision starts after the newest revision this store
//   has seen in any response, not at etcd's "now": a change this process
//   makes after watch() returns is then never missed, however the requests
//   race; a few changes by others just before the call may be delivered too.
import { CompareResult, CompareTarget, type IKeyValue, type IRangeResponse, type IResponseOp, type KVClient } from 'etcd3';
import { KedgeError } from '../../proto/model/errors';
import { classifyEtcdError } from './etcd-errors';
import { diagnoseEtcdConnection } from './etcd-probe';
import type { Logger } from '../../proto/model/log';
import { LeaseKeepAliver } from './etcd-keepalive';
import { int, isLeaseId, KeyCodec, leaseTtlSeconds, toKeyValue } from './etcd-keys';
import { EtcdRpc, type EtcdSecurity } from './etcd-rpc';
import { EtcdWatch } from './etcd-watch';
import type { KeyValue, PutOptions, Store, StoreHealth, Watch, WatchEvent } from './types';

/** Options for openEtcdStore; only `logger` is required. */
export interface EtcdStoreOptions {
  logger: Logger;
  /** Namespace for every key (e.g. '/kedge/'), so several meshes can share one etcd; default ''. */
  prefix?: string;
  /** How long open() waits for etcd to answer (default 5 s). */
  dialTimeoutMs?: number;
  /** Deadline for each operation, retries included (default 5 s). */
  requestTimeoutMs?: number;
  /** Keys per range request in list() (default 1000); pages are read at one revision. */
  listPageSize?: number;
  /** TLS and user for an etcd that requires them; default plaintext, no auth. */
  security?: EtcdSecurity;
}

function invalid(message: string): KedgeError {
  return new KedgeError('KEDGE_STORE_INVALID_REQUEST', message);
}

function conflict(key: string, expected: number, found: IKeyValue | undefined): KedgeError {
  const now = found ? `it is at revision ${int(found.mod_revision)}` : 'it does not exist';
  const want = expected === 0 ? 'expected it not to exist' : `expected revision ${expected}`;
  return new KedgeError('KEDGE_STORE_CONFLICT', `key "${key}" changed concurrently: ${want} but ${now}; read it again and retry`);
}

function checkGuard(key: string, expectRevision: number | undefined): void {
  if (expectRevision !== undefined && !(Number.isSafeInteger(expectRevision) && expectRevision >= 0)) {
    throw invalid(`expectRevision for key "${key}" must be a revision (an integer >= 0), got ${expectRevision}`);
  }
}

/** The key read by a transaction's failure branch, for the conflict message. */
const failedRead = (res: IResponseOp[]): IKeyValue | undefined => res[0]?.response_range?.kvs[0];

// Read while writes fail, to notice etcd is back: a quorum read needs what a write needs.
const PROBE_KEY = '/kedge/health-probe';

class EtcdStore implements Store {
  readonly kind = 'etcd' as const;
  private readonly kv: KVClient;
  private readonly keepAliver: LeaseKeepAliver;
  private readonly watches = new Set<EtcdWatch>();
  private readonly inflight = new Set<Promise<unknown>>();
  private closed = false;
  private writeError: { message: string; since: number } | undefined;
  private probing: NodeJS.Timeout | undefined;

  constructor(private readonly rpc: EtcdRpc, private readonly codec: KeyCodec, private readonly logger: Logger, private readonly pageSize: number) {
    this.kv = rpc.client.kv;
    this.keepAliver = new LeaseKeepAliver(rpc.client.leaseClient, (h) => rpc.observe(h));
  }

  get(key: string): Promise<KeyValue | undefined> {
    return this.run(async () => {
      const res = await this.rpc.call({ what: `get "${key}"`, mutation: false }, (o) => this.kv.range({ key: this.codec.encode(key) }, o));
      const kv = res.kvs[0];
      return kv ? toKeyValue(kv, this.codec) : undefined;
    });
  }

  list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }> {
    return this.run(async () => {
      // A compaction between two pages makes the pinned revision unreadable; start over at the new one.
      for (let attempt = 1; ; attempt++) {
        try {
          return await this.listPages(prefix);
        } catch (err) {
          if (!(err instanceof KedgeError && err.code === 'KEDGE_STORE_COMPACTED') || attempt >= 3) throw err;
        }
      }
    });
  }

  health(): StoreHealth {
    return this.writeError ? { writable: false, error: this.writeError.message, since: new Date(this.writeError.since).toISOString() } : { writable: true };
  }

  put(key: string, value: string, opts: PutOptions = {}): Promise<{ revision: number }> {
    return this.tracked(async () => {
      if (typeof key !== 'string' || key === '') throw invalid('store keys must be non-empty strings');
      if (typeof value !== 'string') throw invalid(`value for key "${key}" must be a string`);
      checkGuard(key, opts.expectRevision);
      const { lease, expectRevision } = opts;
      if (lease !== undefined && !isLeaseId(lease)) {
        throw new KedgeError('KEDGE_STORE_LEASE_NOT_FOUND', `lease ${JSON.stringify(lease)} for key "${key}" is not an etcd lease ID; grant a new lease and register again`);
      }
      const k = this.codec.encode(key);
      const req = { key: k, value: Buffer.from(value, 'utf8'), ...(lease === undefined ? {} : { lease }) };
      const spec = { what: `put "${key}"`, mutation: true, ...(lease === undefined ? {} : { lease }) };
      if (expectRevision === undefined) {
        const res = await this.rpc.call(spec, (o) => this.kv.put(req, o));
        return { revision: int(res.header.revision) };
      }
      const res = await this.rpc.call(spec, (o) => this.kv.txn({
        compare: [{ key: k, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: expectRevision }],
        success: [{ request_put: req }],
        failure: [{ request_range: { key: k } }],
      }, o));
      if (!res.succeeded) throw conflict(key, expectRevision, failedRead(res.responses));
      return { revision: int(res.header.revision) };
    });
  }

  delete(key: string, opts: { expectRevision?: number } = {}): Promise<boolean> {
    return this.tracked(async () => {
      checkGuard(key, opts.expectRevision);
      const k = this.codec.encode(key);
      const spec = { what: `delete "${key}"`, mutation: true };
      if (opts.expectRevision === undefined) {
        const res = await this.rpc.call(spec, (o) => this.kv.deleteRange({ key: k }, o));
        return int(res.deleted) > 0;
      }
      const expected = opts.expectRevision;
      const res = await this.rpc.call(spec, (o) => this.kv.txn({
        compare: [{ key: k, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: expected }],
        success: [{ request_delete_range: { key: k } }],
        failure: [{ request_range: { key: k } }],
      }, o));
      if (!res.succeeded) throw conflict(key, expected, failedRead(res.responses));
      return int(res.responses[0]?.response_delete_range?.deleted) > 0;
    });
  }

  watch(prefix: string, opts: { fromRevision?: number }, onEvents: (events: WatchEvent[]) => void, onError?: (err: Error) => void): Watch {
    const from = opts.fromRevision;
    const refuse = (err: KedgeError): Watch => {
      let open = true;
      setImmediate(() => {
        if (!open) return;
        open = false;
        try {
          if (onError) onError(err);
          else this.logger.error({ err, prefix }, 'store watch failed and has no error handler');
        } catch (thrown) {
          this.logger.error({ err: thrown, prefix }, 'store watch error handler threw');
        }
      });
      return { close: () => (open = false) };
    };
    if (this.closed) return refuse(this.closedError());
    if (from !== undefined && !(Number.isSafeInteger(from) && from >= 0)) {
      return refuse(invalid(`watch on "${prefix}": fromRevision must be a revision (an integer >= 0), got ${from}`));
    }
    const w: EtcdWatch = new EtcdWatch({
      watches: this.rpc.client.watchClient,
      codec: this.codec,
      logger: this.logger,
      endpoints: this.rpc.endpointList,
      revision: () => this.rpc.revision,
      observe: (h) => this.rpc.observe(h),
      refreshAuth: () => this.rpc.refreshAuth(),
      user: this.rpc.username,
      ended: (ended) => this.watches.delete(ended),
    }, prefix, from, onEvents, onError);
    this.watches.add(w);
    return w;
  }

  grantLease(ttlMs: number): Promise<string> {
    return this.run(async () => {
      if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw invalid(`lease TTL must be a positive number of milliseconds, got ${ttlMs}`);
      const ttl = leaseTtlSeconds(ttlMs);
      const res = await this.rpc.call({ what: `grant a ${ttl} s lease`, mutation: false }, (o) => this.rpc.client.leaseClient.leaseGrant({ TTL: ttl, ID: 0 }, o));
      if (res.error) throw new KedgeError('KEDGE_STORE_UNAVAILABLE', `etcd at ${this.rpc.endpointList} refused to grant a ${ttl} s lease (${res.error}); check etcd's logs and health`);
      return String(res.ID);
    });
  }

  keepAlive(lease: string): Promise<boolean> {
    return this.run(async () => {
      if (!isLeaseId(lease)) return false;
      const ttl = await this.rpc.call({ what: `renew lease ${lease}`, mutation: false }, (o) => this.keepAliver.once(lease, Number(o.deadline)));
      return ttl > 0;
    });
  }

  revokeLease(lease: string): Promise<void> {
    return this.run(async () => {
      if (!isLeaseId(lease)) return;
      try {
        await this.rpc.call({ what: `revoke lease ${lease}`, mutation: false, lease }, (o) => this.rpc.client.leaseClient.leaseRevoke({ ID: lease }, o));
      } catch (err) {
        if (!(err instanceof KedgeError && err.code === 'KEDGE_STORE_LEASE_NOT_FOUND')) throw err;
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.probing);
    for (const w of [...this.watches]) w.close();
    // Requests already sent finish (each is bounded by its deadline) before the connection goes.
    await Promise.allSettled([...this.inflight]);
    this.keepAliver.close();
    this.rpc.close();
  }

  private async listPages(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }> {
    const { key, range_end } = this.codec.range(prefix);
    const kvs: KeyValue[] = [];
    let from = key;
    let revision = 0;
    for (;;) {
      const page: IRangeResponse = await this.rpc.call({ what: `list "${prefix}"`, mutation: false }, (o) =>
        this.kv.range({ key: from, range_end, limit: this.pageSize, ...(revision > 0 ? { revision } : {}) }, o));
      if (revision === 0) revision = int(page.header.revision);
      for (const kv of page.kvs) kvs.push(toKeyValue(kv, this.codec));
      const last = page.kvs[page.kvs.length - 1];
      if (!page.more || !last) return { kvs, revision };
      from = Buffer.concat([last.key, Buffer.from([0])]); // the next key after `last`
    }
  }

  /**
   * Runs a write and records whether etcd took it, for health(): a write
   * refused for being wrong (a guard, a lease) says nothing about etcd. While
   * writes fail, a quorum read every second notices when etcd is back.
   */
  private tracked<T>(op: () => Promise<T>): Promise<T> {
    return this.run(op).then(
      (v) => {
        this.writeWorks();
        return v;
      },
      (err: unknown) => {
        if (err instanceof KedgeError && !['KEDGE_STORE_CONFLICT', 'KEDGE_STORE_INVALID_REQUEST', 'KEDGE_STORE_LEASE_NOT_FOUND', 'KEDGE_STORE_CLOSED'].includes(err.code)) {
          this.writeError ??= { message: err.message, since: Date.now() };
          this.probing ??= setInterval(() => {
            this.get(PROBE_KEY).then(() => this.writeWorks(), () => undefined);
          }, 1000).unref();
        }
        throw err;
      },
    );
  }

  private writeWorks(): void {
    this.writeError = undefined;
    clearInterval(this.probing);
    this.probing = undefined;
  }

  /** Runs one operation unless the store is closed, tracking it so close() can wait for it. */
  private run<T>(op: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(this.closedError());
    const p = op();
    this.inflight.add(p);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }

  private closedError(): KedgeError {
    return new KedgeError('KEDGE_STORE_CLOSED', `the etcd store (${this.rpc.endpointList}) is closed; this is a shutdown-ordering bug in the caller`);
  }
}

/**
 * Connects to etcd (`endpoints` like ['127.0.0.1:2379'], or with http://) and
 * returns the Store on it once one endpoint answered. Rejects with
 * KEDGE_STORE_UNAVAILABLE when none does within `dialTimeoutMs`.
 */
export async function openEtcdStore(endpoints: string[], opts: EtcdStoreOptions): Promise<Store> {
  if (!Array.isArray(endpoints) || endpoints.length === 0) throw invalid(`etcd endpoints must be a non-empty list of host:port strings, got ${JSON.stringify(endpoints)}`);
  const list = endpoints.map((e) => (typeof e === 'string' ? e.trim() : ''));
  for (const [i, e] of list.entries()) {
    // etcd3 strips http:// and https:// (the latter switching to TLS); anything else would reach gRPC as a bogus target.
    if (!/^(https?:\/\/)?[^\s/:]+:\d{1,5}$/.test(e) && !/^(https?:\/\/)?\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(e)) {
      throw invalid(`etcd endpoint ${JSON.stringify(endpoints[i])} must be host:port (or http://host:port), e.g. 127.0.0.1:2379`);
    }
  }
  const rpc = new EtcdRpc(list, opts.requestTimeoutMs ?? 5000, () => new KedgeError('KEDGE_STORE_CLOSED', `the etcd store (${list.join(',')}) is closed; this is a shutdown-ordering bug in the caller`), opts.security);
  const dialTimeoutMs = opts.dialTimeoutMs ?? 5000;
  try {
    const status = await rpc.call({ what: 'the status request', mutation: false, timeoutMs: dialTimeoutMs }, (o) => rpc.client.maintenance.status(o));
    opts.logger.info({ endpoints: list, version: status.version, revision: rpc.revision, dbSize: int(status.dbSize), prefix: opts.prefix ?? '', tls: opts.security?.tls !== undefined, user: rpc.username }, 'etcd store opened');
    if (status.errors?.length) opts.logger.warn({ endpoints: list, errors: status.errors }, 'etcd reports errors (an active alarm such as NOSPACE refuses writes)');
    return new EtcdStore(rpc, new KeyCodec(opts.prefix ?? ''), opts.logger, opts.listPageSize ?? 1000);
  } catch (err) {
    rpc.close();
    throw await withDiagnosis(err, list, opts.security ?? {});
  }
}

/** A first connection that failed without a reason gets one from a probe of each endpoint, when the probe finds it. */
async function withDiagnosis(err: unknown, endpoints: string[], security: EtcdSecurity): Promise<unknown> {
  if (!(err instanceof KedgeError) || classifyEtcdError(err.cause) !== 'not-sent') return err;
  const found = (await Promise.all(endpoints.map((e) => diagnoseEtcdConnection(e, security).catch(() => undefined)))).filter((d) => d !== undefined);
  const endpointList = endpoints.join(',');
  return found.length === 0 ? err : new KedgeError(err.code, `cannot connect to etcd at ${endpointList}: ${[...new Set(found)].join('; ')}`, { cause: err.cause });
}
