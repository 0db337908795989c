// The default store: in process, no other daemon. Every key is durable (see
// persist.ts for the files), leased ones with their lease's TTL: after a
// restart each lease lives one more TTL from the open, as etcd's leases do
// after a leader change, so a restarted federation still serves the agent
// registrations it held for the grace period. Keepalives only move an
// expiry in memory; they are never logged.
//
// Every change goes through one queue. A drain step stages all queued changes
// against the current state (guards see earlier changes of the same batch),
// appends their log lines with one fdatasync, and only then applies them to
// memory, notifies watches and settles the callers. So nothing is visible
// before it is durable, and a burst of writers costs one fsync, not one each.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { acquireDirLock, type DirLock } from './lock';
import { encodeRecord, Journal, loadState, type DurableKv } from './persist';
import type { KeyValue, PutOptions, Store, StoreHealth, Watch, WatchEvent } from './types';

/** Timer functions, injectable so lease expiry can be driven by tests. */
export interface StoreTimers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

/** Options for `openEmbeddedStore`; only `logger` is required. */
export interface EmbeddedStoreOptions {
  logger: Logger;
  /** Milliseconds since the epoch, for lease expiry. */
  clock?: () => number;
  timers?: StoreTimers;
  /** Watch events remembered for resuming watches (default 10,000). */
  historyLimit?: number;
  /** Log size that triggers a snapshot (default 4 MiB). */
  compactBytes?: number;
  /** The Kedge version, recorded in the store's files so a newer format can be named. */
  kedgeVersion?: string;
}

// Leases are checked this often; etcd's lessor checks every 500 ms.
const LEASE_CHECK_MS = 100;
// Leased writes are not logged, so their revisions are claimed in blocks:
// one `reserve` record per this many revisions keeps the counter monotonic
// across crashes.
const RESERVE_STEP = 1000;
// How often a store whose writes fail tries again on its own.
const PROBE_MS = 1000;

interface Lease { ttlMs: number; expiresAt: number; keys: Set<string>; ending: boolean }
interface Watcher { prefix: string; onEvents: (e: WatchEvent[]) => void; queue: WatchEvent[]; scheduled: boolean; closed: boolean }
type Outcome = { ok: true; value: unknown } | { ok: false; err: unknown };
interface Pending { stage: (b: Batch) => unknown; resolve: (v: unknown) => void; reject: (err: unknown) => void }

/** Changes staged by one drain step, not yet durable or visible. */
class Batch {
  readonly changed = new Map<string, KeyValue | null>();
  readonly wal: string[] = [];
  readonly events: WatchEvent[] = [];
  /** Side effects of staging (leases taken out of the table), undone when the batch cannot be written. */
  readonly undo: (() => void)[] = [];
  constructor(public revision: number) {}
}

const eventRevision = (e: WatchEvent): number => (e.type === 'put' ? e.kv.modRevision : e.modRevision);

function conflict(key: string, expected: number, found: KeyValue | undefined): KedgeError {
  const now = found ? `it is at revision ${found.modRevision}` : 'it does not exist';
  const want = expected === 0 ? 'expected it not to exist' : `expected revision ${expected}`;
  return new KedgeError('KEDGE_STORE_CONFLICT', `key "${key}" changed concurrently: ${want} but ${now}; read it again and retry`);
}

function invalid(message: string): KedgeError {
  return new KedgeError('KEDGE_STORE_INVALID_REQUEST', message);
}

class EmbeddedStore implements Store {
  readonly kind = 'embedded' as const;
  private readonly kvs = new Map<string, KeyValue>();
  private readonly leases = new Map<string, Lease>();
  private readonly watchers = new Set<Watcher>();
  private history: WatchEvent[] = [];
  private historyStart: number; // every event after this revision is in `history`
  private queue: Pending[] = [];
  private draining: Promise<void> | undefined;
  private writeError: KedgeError | undefined; // the last write failed; cleared by the next that succeeds
  private writeErrorSince: number | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly timer: unknown;
  private readonly clock: () => number;
  private readonly timers: StoreTimers;
  private reserved: number; // revisions up to here are claimed on disk (see RESERVE_STEP)
  private readonly compactWaiters: (() => void)[] = [];

  constructor(
    private readonly dir: string,
    private readonly lock: DirLock,
    private readonly wal: Journal,
    private revision: number,
    durable: Iterable<DurableKv>,
    private readonly logger: Logger,
    private readonly opts: EmbeddedStoreOptions,
  ) {
    this.clock = opts.clock ?? Date.now;
    const opened = this.clock();
    for (const { leaseTtlMs, ...kv } of durable) {
      this.kvs.set(kv.key, Object.freeze({ ...kv }));
      if (kv.lease === undefined) continue;
      // A lease from before the restart lives one more TTL from now.
      let l = this.leases.get(kv.lease);
      if (!l) this.leases.set(kv.lease, (l = { ttlMs: leaseTtlMs!, expiresAt: opened + leaseTtlMs!, keys: new Set(), ending: false }));
      l.keys.add(kv.key);
    }
    this.historyStart = revision;
    this.reserved = revision;
    this.timers = opts.timers ?? { setInterval, clearInterval: (h) => clearInterval(h as NodeJS.Timeout) };
    this.timer = this.timers.setInterval(() => this.expireLeases(), LEASE_CHECK_MS);
    (this.timer as { unref?: () => void }).unref?.();
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.checkOpen();
    return this.kvs.get(key);
  }

  async list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }> {
    this.checkOpen();
    const kvs = [...this.kvs.values()].filter((kv) => kv.key.startsWith(prefix));
    kvs.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { kvs, revision: this.revision };
  }

  put(key: string, value: string, opts: PutOptions = {}): Promise<{ revision: number }> {
    if (key === '') return Promise.reject(invalid('store keys must not be empty'));
    if (typeof value !== 'string') return Promise.reject(invalid(`value for key "${key}" must be a string`));
    return this.enqueue((b) => {
      const old = this.lookup(b, key);
      this.guard(key, opts.expectRevision, old);
      const lease = opts.lease;
      if (lease !== undefined) {
        const l = this.leases.get(lease);
        if (!l || l.ending) throw new KedgeError('KEDGE_STORE_LEASE_NOT_FOUND', `lease ${lease} for key "${key}" has expired or was revoked; grant a new lease and register again`);
      }
      const rev = ++b.revision;
      const kv: KeyValue = Object.freeze({ key, value, createRevision: old?.createRevision ?? rev, modRevision: rev, ...(lease === undefined ? {} : { lease }) });
      b.changed.set(key, kv);
      b.events.push({ type: 'put', kv });
      const ttl = lease === undefined ? undefined : this.leases.get(lease)!.ttlMs;
      b.wal.push(encodeRecord({ op: 'put', rev, key, value, create: kv.createRevision, ...(lease === undefined ? {} : { lease, ttl }) }));
      return { revision: rev };
    }) as Promise<{ revision: number }>;
  }

  delete(key: string, opts: { expectRevision?: number } = {}): Promise<boolean> {
    return this.enqueue((b) => {
      const old = this.lookup(b, key);
      this.guard(key, opts.expectRevision, old);
      if (!old) return false;
      const rev = ++b.revision;
      b.changed.set(key, null);
      b.events.push({ type: 'delete', key, modRevision: rev });
      b.wal.push(encodeRecord({ op: 'delete', rev, key }));
      return true;
    }) as Promise<boolean>;
  }

  watch(prefix: string, opts: { fromRevision?: number }, onEvents: (events: WatchEvent[]) => void, onError?: (err: Error) => void): Watch {
    const w: Watcher = { prefix, onEvents, queue: [], scheduled: false, closed: false };
    const handle = { close: () => this.closeWatch(w) };
    const from = opts.fromRevision ?? this.revision;
    const fail = (err: KedgeError): Watch => {
      setImmediate(() => {
        if (w.closed) return;
        w.closed = true;
        if (onError) onError(err);
        else this.logger.error({ err, prefix }, 'store watch failed and has no error handler');
      });
      return handle;
    };
    if (this.closed) return fail(this.closedError());
    if (from < this.historyStart) {
      return fail(new KedgeError(
        'KEDGE_STORE_COMPACTED',
        `watch on "${prefix}" from revision ${from} asks for changes this store no longer remembers (it keeps those after revision ${this.historyStart}); list the prefix again and watch from the revision the list returns`,
      ));
    }
    this.watchers.add(w);
    this.deliver(w, this.history.filter((e) => eventRevision(e) > from && this.matches(w, e)));
    return handle;
  }

  async grantLease(ttlMs: number): Promise<string> {
    this.checkOpen();
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw invalid(`lease TTL must be a positive number of milliseconds, got ${ttlMs}`);
    const id = randomBytes(8).toString('hex');
    this.leases.set(id, { ttlMs, expiresAt: this.clock() + ttlMs, keys: new Set(), ending: false });
    return id;
  }

  async keepAlive(lease: string): Promise<boolean> {
    this.checkOpen();
    const l = this.leases.get(lease);
    const now = this.clock();
    if (!l || l.ending || l.expiresAt <= now) return false; // an overdue lease is swept on the next tick
    l.expiresAt = now + l.ttlMs;
    return true;
  }

  async revokeLease(lease: string): Promise<void> {
    await this.enqueue((b) => this.stageRevoke(b, lease));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true; // new requests are refused; queued ones still finish
    this.timers.clearInterval(this.timer);
    clearInterval(this.probeTimer);
    while (this.draining) await this.draining;
    for (const w of this.watchers) this.closeWatch(w);
    try {
      await this.wal.close();
    } finally {
      await this.lock.release();
    }
  }

  health(): StoreHealth {
    if (this.writeError) return { writable: false, error: this.writeError.message, since: new Date(this.writeErrorSince!).toISOString() };
    return { writable: true };
  }

  // --- the write path -------------------------------------------------------

  private writeFailed(err: unknown): KedgeError {
    const e = new KedgeError(
      'KEDGE_STORE_IO',
      `writing the store log in ${this.dir} failed (${errorMessage(err)}); the change was not saved. Check free space and the disk: the store retries every second and takes writes again as soon as the disk does`,
      { cause: err },
    );
    if (!this.writeError) {
      this.writeErrorSince = this.clock();
      this.logger.error({ err: errorMessage(err), dir: this.dir }, 'store write failed; refusing writes until the disk takes them again');
    }
    this.writeError = e;
    if (!this.probeTimer && !this.closed) {
      this.probeTimer = setInterval(() => this.probe(), PROBE_MS);
      this.probeTimer.unref();
    }
    return e;
  }

  private writeSucceeded(): void {
    if (!this.writeError) return;
    this.logger.info({ dir: this.dir, failingForMs: this.clock() - this.writeErrorSince! }, 'store writes work again');
    this.writeError = undefined;
    this.writeErrorSince = undefined;
    clearInterval(this.probeTimer);
    this.probeTimer = undefined;
  }

  // While writes fail, one small durable write a second finds out when they work again.
  private probe(): void {
    this.enqueue((b) => {
      b.wal.push(encodeRecord({ op: 'reserve', rev: this.reserved }));
    }).catch(() => undefined);
  }


  private enqueue(stage: (b: Batch) => unknown): Promise<unknown> {
    if (this.closed) return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => {
      this.queue.push({ stage, resolve, reject });
      this.kick();
    });
  }

  // Restarts draining when requests arrived after the last drain step looked
  // (for example from a caller continuing after its own write resolved).
  private kick(): void {
    if (this.draining || this.queue.length === 0) return;
    this.draining = this.drain().finally(() => {
      this.draining = undefined;
      this.kick();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const ops = this.queue;
      this.queue = [];
      const b = new Batch(this.revision);
      // A stage function checks before it changes anything, so a throwing
      // one (a failed guard) leaves the batch as it was.
      const outcomes: Outcome[] = ops.map((op) => {
        try {
          return { ok: true, value: op.stage(b) };
        } catch (err) {
          return { ok: false, err };
        }
      });
      if (b.revision > this.reserved) b.wal.push(encodeRecord({ op: 'reserve', rev: b.revision + RESERVE_STEP }));
      try {
        if (b.wal.length > 0) await this.wal.append(b.wal.join(''));
      } catch (err) {
        // Nothing of the batch is applied or acknowledged, and the journal
        // overwrites what it half wrote on the next attempt: refuse this
        // batch, keep serving reads, and take writes again once the disk does.
        for (const u of b.undo.reverse()) u();
        const failure = this.writeFailed(err);
        for (const op of ops) op.reject(failure);
        continue;
      }
      if (b.wal.length > 0) this.writeSucceeded();
      if (b.revision > this.reserved) this.reserved = b.revision + RESERVE_STEP;
      this.apply(b);
      ops.forEach((op, i) => {
        const o = outcomes[i]!;
        if (o.ok) op.resolve(o.value);
        else op.reject(o.err);
      });
      if (this.compactWaiters.length > 0 || this.wal.size > (this.opts.compactBytes ?? 4 << 20)) {
        const waiters = this.compactWaiters.splice(0);
        await this.compact();
        for (const w of waiters) w();
      }
    }
  }

  private lookup(b: Batch, key: string): KeyValue | undefined {
    return b.changed.has(key) ? b.changed.get(key) ?? undefined : this.kvs.get(key);
  }

  private guard(key: string, expected: number | undefined, current: KeyValue | undefined): void {
    if (expected === undefined) return;
    if ((current?.modRevision ?? 0) !== expected) throw conflict(key, expected, current);
  }

  // One revision for all the lease's keys, like etcd's single revoke transaction.
  private stageRevoke(b: Batch, lease: string): void {
    const l = this.leases.get(lease);
    if (!l) return;
    this.leases.delete(lease);
    b.undo.push(() => {
      // Back in the table; an expired one is swept again on the next tick.
      l.ending = false;
      this.leases.set(lease, l);
    });
    const keys = new Set([...l.keys, ...b.changed.keys()]);
    const doomed = [...keys].filter((k) => this.lookup(b, k)?.lease === lease).sort();
    if (doomed.length === 0) return;
    const rev = ++b.revision;
    for (const key of doomed) {
      b.changed.set(key, null);
      b.events.push({ type: 'delete', key, modRevision: rev });
      b.wal.push(encodeRecord({ op: 'delete', rev, key }));
    }
  }

  private apply(b: Batch): void {
    for (const [key, kv] of b.changed) {
      const old = this.kvs.get(key);
      if (old?.lease !== undefined) this.leases.get(old.lease)?.keys.delete(key);
      if (kv) {
        this.kvs.set(key, kv);
        if (kv.lease !== undefined) this.leases.get(kv.lease)?.keys.add(key);
      } else {
        this.kvs.delete(key);
      }
    }
    this.revision = b.revision;
    if (b.events.length === 0) return;
    this.remember(b.events);
    for (const w of this.watchers) this.deliver(w, b.events.filter((e) => this.matches(w, e)));
  }

  private remember(events: WatchEvent[]): void {
    this.history.push(...events);
    const limit = this.opts.historyLimit ?? 10_000;
    if (this.history.length <= limit + (limit >> 2)) return; // trim in chunks, not per event
    let cut = this.history.length - limit;
    // Never split a revision: a watch resumes from a revision, not an event.
    while (cut < this.history.length && eventRevision(this.history[cut]!) === eventRevision(this.history[cut - 1]!)) cut++;
    this.historyStart = eventRevision(this.history[cut - 1]!);
    this.history = this.history.slice(cut);
  }

  async discardHistory(): Promise<void> {
    this.checkOpen();
    // Run by the write path after the pending writes, never beside a log append.
    const compacted = new Promise<void>((resolve) => {
      void this.enqueue(() => this.compactWaiters.push(resolve)).catch(() => resolve());
    });
    await compacted;
  }

  private async compact(): Promise<void> {
    try {
      const all: DurableKv[] = [];
      for (const kv of this.kvs.values()) {
        if (kv.lease === undefined) all.push(kv);
        else {
          const l = this.leases.get(kv.lease);
          if (l) all.push({ ...kv, leaseTtlMs: l.ttlMs });
        }
      }
      await this.wal.rewrite(this.revision, this.reserved, all);
    } catch (err) {
      // The log still holds everything, so this is not fatal; it retries after the next write.
      this.logger.warn({ err, dir: this.dir }, 'store snapshot failed; keeping the log');
    }
  }

  private expireLeases(): void {
    const now = this.clock();
    for (const [id, l] of this.leases) {
      if (l.ending || l.expiresAt > now) continue;
      l.ending = true;
      this.logger.debug({ lease: id, keys: l.keys.size }, 'store lease expired');
      this.enqueue((b) => this.stageRevoke(b, id)).catch((err) => this.logger.warn({ err, lease: id }, 'deleting keys of an expired lease failed'));
    }
  }

  // --- watches --------------------------------------------------------------

  private matches(w: Watcher, e: WatchEvent): boolean {
    return (e.type === 'put' ? e.kv.key : e.key).startsWith(w.prefix);
  }

  // Callbacks run on a later turn, never inside a write, and a watch gets all
  // events that arrived meanwhile as one batch.
  private deliver(w: Watcher, events: WatchEvent[]): void {
    if (events.length === 0 || w.closed) return;
    w.queue.push(...events);
    if (w.scheduled) return;
    w.scheduled = true;
    setImmediate(() => {
      w.scheduled = false;
      if (w.closed || w.queue.length === 0) return;
      const batch = w.queue;
      w.queue = [];
      try {
        w.onEvents(batch);
      } catch (err) {
        this.logger.error({ err, prefix: w.prefix }, 'store watch callback threw');
      }
    });
  }

  private closeWatch(w: Watcher): void {
    w.closed = true;
    w.queue = [];
    this.watchers.delete(w);
  }

  private checkOpen(): void {
    if (this.closed) throw this.closedError();
  }

  private closedError(): KedgeError {
    return new KedgeError('KEDGE_STORE_CLOSED', `the store in ${this.dir} is closed; this is a shutdown-ordering bug in the caller`);
  }
}

/**
 * Opens (creating) the embedded store under `<dataDir>/store`. Refuses a data
 * dir another live process holds (KEDGE_STORE_LOCKED) and damaged files
 * (KEDGE_STORE_CORRUPT, files untouched). Leased keys do not survive close or
 * a crash; keys without a lease and the revision counter do.
 */
export async function openEmbeddedStore(dataDir: string, opts: EmbeddedStoreOptions): Promise<Store> {
  const dir = join(dataDir, 'store');
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const lock = await acquireDirLock(dir, dataDir, opts.logger);
  try {
    const loaded = await loadState(dir);
    const revision = Math.max(loaded.revision, loaded.reserved);
    if (loaded.unacknowledgedBytes > 0) {
      opts.logger.warn(
        { dir, bytes: loaded.unacknowledgedBytes, records: loaded.unacknowledgedRecords },
        'dropped the end of the store log that was never acknowledged (a crash during a write); no client was told it succeeded',
      );
    }
    if (loaded.legacy) opts.logger.info({ dir }, 'rewriting the store in the current format (kedge-store/v2)');
    // Every open starts from a fresh snapshot and an empty log, so appends
    // never follow a dropped tail and the earlier format is gone after it.
    const wal = await Journal.start(dir, loaded, opts.kedgeVersion);
    opts.logger.info({ dir, revision, keys: loaded.kvs.size, lock: lock.kind }, 'embedded store opened');
    return new EmbeddedStore(dir, lock, wal, revision, loaded.kvs.values(), opts.logger, opts);
  } catch (err) {
    await lock.release();
    throw err;
  }
}
