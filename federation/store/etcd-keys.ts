// Pure helpers for the etcd store: key namespacing, prefix ranges, and
// turning etcd's wire records (int64s as decimal strings, bytes as Buffers)
// into the Store's plain objects. No I/O here, so it is table-tested.
import type { IEvent, IKeyValue } from 'etcd3';
import type { KeyValue, WatchEvent } from './types';

/** A key range in etcd's terms: `[key, range_end)`; `range_end` [0] means "every key from `key` on". */
export interface KeyRange { key: Buffer; range_end: Buffer }

const ZERO = Buffer.from([0]);

/**
 * The smallest key greater than every key starting with `prefix` (etcd's
 * GetPrefixRangeEnd): drop trailing 0xff bytes, then increment the last byte.
 * A prefix of only 0xff bytes (or none) has no such key; etcd spells that [0].
 */
export function prefixRangeEnd(prefix: Buffer): Buffer {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = Buffer.from(prefix.subarray(0, i + 1));
      end[i] = prefix[i]! + 1;
      return end;
    }
  }
  return ZERO;
}

/** Maps Store keys to etcd keys under a namespace (`prefix` in openEtcdStore) and back. */
export class KeyCodec {
  private readonly ns: Buffer;

  constructor(namespace: string) {
    this.ns = Buffer.from(namespace, 'utf8');
  }

  encode(key: string): Buffer {
    return Buffer.concat([this.ns, Buffer.from(key, 'utf8')]);
  }

  decode(key: Buffer): string {
    return key.subarray(this.ns.length).toString('utf8');
  }

  /** Every etcd key whose Store key starts with `prefix`. etcd refuses an empty `key`, so "everything" is [0, [0]). */
  range(prefix: string): KeyRange {
    const start = this.encode(prefix);
    if (start.length === 0) return { key: ZERO, range_end: ZERO };
    return { key: start, range_end: prefixRangeEnd(start) };
  }
}

/** etcd's int64 fields arrive as decimal strings; revisions stay far below 2^53. */
export const int = (s: string | number | undefined): number => (s === undefined || s === '' ? 0 : Number(s));

/** One etcd key-value as a Store KeyValue; lease "0" means none, so the field is left out. */
export function toKeyValue(kv: IKeyValue, codec: KeyCodec): KeyValue {
  const out: KeyValue = {
    key: codec.decode(kv.key),
    value: kv.value.toString('utf8'),
    createRevision: int(kv.create_revision),
    modRevision: int(kv.mod_revision),
  };
  if (kv.lease !== undefined && kv.lease !== '0' && kv.lease !== '') out.lease = String(kv.lease);
  return out;
}

/** One etcd watch event as a Store WatchEvent (the proto loader sends enum names, "PUT"/"DELETE"). */
export function toWatchEvent(ev: IEvent, codec: KeyCodec): WatchEvent {
  if (String(ev.type).toUpperCase() === 'DELETE') return { type: 'delete', key: codec.decode(ev.kv.key), modRevision: int(ev.kv.mod_revision) };
  return { type: 'put', kv: toKeyValue(ev.kv, codec) };
}

/** The revision a watch event happened at. */
export const eventRevision = (e: WatchEvent): number => (e.type === 'put' ? e.kv.modRevision : e.modRevision);

/** etcd lease TTLs are whole seconds: round up, at least 1 (etcd itself raises TTLs below its minimum, 2 s by default). */
export function leaseTtlSeconds(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs / 1000));
}

/** etcd lease IDs travel as decimal int64 strings; anything else cannot name a lease. */
export function isLeaseId(lease: string): boolean {
  return /^[1-9][0-9]{0,18}$/.test(lease);
}

/** Exponential backoff with jitter in [half, full] of min(max, base * 2^attempt); `random` is injectable for tests. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const full = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(full / 2 + (full / 2) * random());
}
