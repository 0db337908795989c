// The one store interface the federation writes through. It is modelled on
// etcd v3 so that `embedded` (in process, the default) and `etcd` (several
// replicas) are interchangeable and pass the same conformance suite
// (test/support/store-conformance.ts). Semantics follow etcd:
//
// - One global revision counter; every change (put, delete, a lease revoke or
//   expiry) advances it. A lease revoke deleting several keys is one revision,
//   like one etcd transaction. Revisions may skip numbers (the embedded store
//   does after a restart), so callers compare them, never count them.
// - `expectRevision` is etcd's `mod_revision` compare: an absent key has
//   revision 0, so 0 means "create only" and n means "unchanged since n".
// - `watch` takes the revision the caller has already seen (for example the
//   `revision` that `list` returned) and delivers changes strictly after it;
//   the etcd implementation passes `fromRevision + 1` as etcd's inclusive
//   `start_revision`.

/** One stored key with its etcd-style bookkeeping. */
export interface KeyValue { key: string; value: string; createRevision: number; modRevision: number; lease?: string }

/** One change seen by a watch; a delete carries the revision of the delete. */
export type WatchEvent = { type: 'put'; kv: KeyValue } | { type: 'delete'; key: string; modRevision: number };

/** A running watch; `close` stops delivery (no callback runs after it returns). */
export interface Watch { close(): void }

/** Options for `put`: attach a lease, or guard on the key's current revision. */
export interface PutOptions { lease?: string; /* 0 = only if the key does not exist; n = only if its modRevision is n */ expectRevision?: number }

/** Whether the store takes writes now, for readiness. */
export interface StoreHealth {
  writable: boolean;
  /** Why not, phrased for an operator. */
  error?: string;
  /** Since when writes fail (ISO time). */
  since?: string;
}

/** The federation's key-value store: etcd v3 semantics, two implementations. */
export interface Store {
  /** The key's current value, or undefined when absent. */
  get(key: string): Promise<KeyValue | undefined>;
  /** Every key starting with `prefix`, sorted by key, with the store revision they were read at. */
  list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }>;
  /** Writes a key; a failed `expectRevision` guard rejects with KedgeError 'KEDGE_STORE_CONFLICT'. */
  put(key: string, value: string, opts?: PutOptions): Promise<{ revision: number }>;
  /** Deletes a key; false when it was absent. A failed guard rejects with 'KEDGE_STORE_CONFLICT'. */
  delete(key: string, opts?: { expectRevision?: number }): Promise<boolean>;
  /**
   * Delivers every change under prefix after fromRevision (default: current), in revision order, batched;
   * fromRevision older than what the store still remembers -> onError(KedgeError 'KEDGE_STORE_COMPACTED') so the caller relists.
   */
  watch(prefix: string, opts: { fromRevision?: number }, onEvents: (events: WatchEvent[]) => void, onError?: (err: Error) => void): Watch;
  /** Creates a lease that expires `ttlMs` after the last keepAlive (etcd rounds up to whole seconds). */
  grantLease(ttlMs: number): Promise<string>;
  /** Renews a lease for another TTL; false when the lease expired or is unknown. */
  keepAlive(lease: string): Promise<boolean>;
  /** Ends a lease now and deletes its keys (emitting delete events); unknown leases are ignored. */
  revokeLease(lease: string): Promise<void>;
  /** Whether writes work now; a store that lost its disk or quorum recovers on its own when it returns. */
  health(): StoreHealth;
  /** Which implementation this is, for status output. */
  readonly kind: 'embedded' | 'etcd';
  /**
   * Drops the history of past values from disk where the store can do so
   * itself (embedded: snapshot now, truncate the log), so a secret that was
   * overwritten (the CA key before it was encrypted) does not linger there.
   */
  discardHistory?(): Promise<void>;
  /** Waits for pending writes, stops timers and watches, and releases the store. */
  close(): Promise<void>;
}

