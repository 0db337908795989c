// On-disk format of the embedded store (kedge-store/v2), in <dataDir>/store/:
//
//   COMMIT         the witness: which snapshot and how many bytes of the log
//                  were acknowledged. Two fixed 256-byte slots written in
//                  turn, each `<crc32> <JSON>` padded; the valid slot with the
//                  higher sequence number wins, so a torn slot write falls
//                  back to the previous one (bbolt's two meta pages).
//   snapshot.json  `<crc32> <JSON>\n`: every durable key at `revision`,
//                  replaced atomically (temp file, fsync, rename, dir fsync).
//   wal.log        a `begin` header naming the store, then one change per
//                  line, `<crc32 of the JSON, 8 hex> <JSON record>\n`.
//
// A batch is acknowledged only after its log lines are fdatasync'd and then
// COMMIT records the new log length, also fdatasync'd. So on open:
// - log bytes past the committed length were never acknowledged (a crash
//   mid-write): dropped and reported;
// - a log shorter than committed, emptied or missing, a snapshot missing or
//   older than committed, a checksum that fails, or a file of another store:
//   acknowledged data is gone, so KEDGE_STORE_CORRUPT names the file and
//   nothing is written. An operator restores a backup, never a silent start.
//
// Replay skips records at or below the snapshot's revision, so a crash
// between writing a snapshot and rewriting the log loses and doubles nothing.
// A store of the earlier format (kedge-store/v1: no COMMIT, no header) is
// read once and rewritten in this one.
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { KedgeError } from '../../proto/model/errors';

/**
 * A key as written to disk. A leased key carries its lease and the lease's
 * TTL: after a restart the lease lives one more TTL (as etcd's leases do
 * after a leader change), so agent registrations outlive a federation
 * restart by the grace period, and go if the agent does not come back.
 */
export interface DurableKv { key: string; value: string; createRevision: number; modRevision: number; lease?: string; leaseTtlMs?: number }

/**
 * One log record. `reserve` raises the revision floor for the next start
 * (revisions are claimed in blocks and never handed out twice). `begin`
 * opens every log. A put with `lease` and `ttl` is a leased key.
 */
export type WalRecord =
  | { op: 'put'; rev: number; key: string; value: string; create: number; lease?: string; ttl?: number }
  | { op: 'delete'; rev: number; key: string }
  | { op: 'reserve'; rev: number }
  | { op: 'begin'; rev: number; format: string; store: string };

/** What `loadState` recovered. */
export interface LoadedState {
  /** Random id of this store, in every file of it. */
  storeId: string;
  revision: number;
  reserved: number;
  kvs: Map<string, DurableKv>;
  walRecords: number;
  /** Log bytes past the last acknowledged batch: dropped. */
  unacknowledgedBytes: number;
  /** Complete records among them (a crash after the log write, before COMMIT). */
  unacknowledgedRecords: number;
  /** True for a directory with no store in it yet. */
  fresh: boolean;
  /** The earlier format (kedge-store/v1), or an upgrade from it that was interrupted. */
  legacy: boolean;
  /** For a v1 store: the log bytes up to its last whole record. */
  legacyWalBytes?: number;
}

export const SNAPSHOT_FILE = 'snapshot.json';
export const WAL_FILE = 'wal.log';
export const COMMIT_FILE = 'COMMIT';
export const STORE_FORMAT = 'kedge-store/v2';
const FORMAT_VERSION = 2;
const LEGACY_FORMAT = 'kedge-store/v1';
const SLOT = 256;

/** Encodes one record (or any JSON value) as a checksummed line. */
export function encodeRecord(r: WalRecord | object): string {
  const json = JSON.stringify(r);
  return `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`;
}

/** The JSON of a checksummed line, or undefined when the checksum or JSON fails. */
function decodeLine(line: string): unknown {
  const m = /^([0-9a-f]{8}) (.*)$/s.exec(line);
  if (!m || parseInt(m[1]!, 16) !== crc32(m[2]!)) return undefined;
  try {
    return JSON.parse(m[2]!);
  } catch {
    return undefined;
  }
}

const RESTORE_ADVICE = 'Nothing was changed. Restore the data dir from a backup (kedge federation restore), ' +
  'or, to give up what it held (the CA, join tokens, VIPs), move the store directory away and start with --init.';

function corrupt(file: string, detail: string): KedgeError {
  return new KedgeError('KEDGE_STORE_CORRUPT', `store file ${file} is corrupt or missing: ${detail}. ${RESTORE_ADVICE}`);
}

const isRev = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;

/** Throws KEDGE_STORE_VERSION for a format this Kedge does not read. */
function checkFormat(file: string, format: unknown, writtenBy: unknown): void {
  if (format === STORE_FORMAT) return;
  const m = typeof format === 'string' ? /^kedge-store\/v(\d+)$/.exec(format) : null;
  if (m && Number(m[1]) > FORMAT_VERSION) {
    const by = typeof writtenBy === 'string' ? ` (written by Kedge ${writtenBy})` : '';
    throw new KedgeError(
      'KEDGE_STORE_VERSION',
      `store file ${file} has format ${format}${by}, newer than this Kedge reads (${STORE_FORMAT}); run the newer Kedge, or restore a backup taken for this version. Nothing was changed.`,
    );
  }
  throw corrupt(file, `unknown format ${JSON.stringify(format)}`);
}

/** One COMMIT slot: what was acknowledged. */
export interface CommitRecord {
  format: string;
  store: string;
  seq: number;
  /** Revision of the snapshot in place (snapshot.json may be newer, never older). */
  snapshot: number;
  /** Bytes of wal.log acknowledged. */
  wal: number;
  /** Set while upgrading a v1 store: its snapshot may be v1 JSON and its log has no header. */
  legacy?: boolean;
  kedge?: string;
}

function parseCommit(file: string, buf: Buffer): CommitRecord {
  const slots: CommitRecord[] = [];
  for (let i = 0; i + SLOT <= buf.length; i += SLOT) {
    const c = decodeLine(buf.subarray(i, i + SLOT).toString('utf8').trimEnd()) as Partial<CommitRecord> | undefined;
    if (c && typeof c === 'object' && typeof c.store === 'string' && isRev(c.seq) && isRev(c.snapshot) && isRev(c.wal)) slots.push(c as CommitRecord);
  }
  if (slots.length === 0) throw corrupt(file, 'neither of its two records passes its checksum');
  const best = slots.reduce((a, b) => (b.seq > a.seq ? b : a));
  checkFormat(file, best.format, best.kedge);
  return best;
}

function parseSnapshot(file: string, text: string, storeId: string | undefined): { store: string; revision: number; reserved: number; kvs: DurableKv[] } {
  const d = decodeLine(text.replace(/\n$/, '')) as { format?: unknown; kedge?: unknown; store?: unknown; revision?: unknown; reserved?: unknown; kvs?: unknown } | undefined;
  if (!d || typeof d !== 'object') throw corrupt(file, 'it fails its checksum (a changed or truncated byte)');
  checkFormat(file, d.format, d.kedge);
  if (typeof d.store !== 'string' || !isRev(d.revision) || !isRev(d.reserved) || !Array.isArray(d.kvs)) throw corrupt(file, 'store, revision, reserved or kvs missing');
  if (storeId !== undefined && d.store !== storeId) throw corrupt(file, `it belongs to store ${d.store}, not to this store ${storeId} (a file copied from another data dir?)`);
  return { store: d.store, revision: d.revision, reserved: d.reserved, kvs: checkKvs(file, d.kvs, d.revision) };
}

function checkKvs(file: string, list: unknown[], revision: number): DurableKv[] {
  return list.map((kv, i) => {
    const k = kv as Partial<DurableKv> | null;
    const ok = typeof k === 'object' && k !== null && typeof k.key === 'string' && typeof k.value === 'string' &&
      isRev(k.createRevision) && isRev(k.modRevision) && k.createRevision <= k.modRevision && k.modRevision <= revision;
    const leased = k?.lease === undefined || (typeof k.lease === 'string' && typeof k.leaseTtlMs === 'number' && k.leaseTtlMs > 0);
    if (!ok || !leased) throw corrupt(file, `entry ${i} is malformed`);
    return { key: k.key!, value: k.value!, createRevision: k.createRevision!, modRevision: k.modRevision!, ...(k.lease === undefined ? {} : { lease: k.lease, leaseTtlMs: k.leaseTtlMs! }) };
  });
}

/** Parses one log line into a record, or undefined when it fails its checksum or shape. */
export function parseRecord(line: string): WalRecord | undefined {
  const r = decodeLine(line) as Partial<WalRecord & { key: unknown; value: unknown; create: unknown; format: unknown; store: unknown }> | undefined;
  if (!r || typeof r !== 'object' || !isRev(r.rev)) return undefined;
  if (r.op === 'reserve') return { op: 'reserve', rev: r.rev };
  if (r.op === 'delete' && typeof r.key === 'string') return { op: 'delete', rev: r.rev, key: r.key };
  if (r.op === 'put' && typeof r.key === 'string' && typeof r.value === 'string' && isRev(r.create)) {
    const rl = r as { lease?: unknown; ttl?: unknown };
    if (rl.lease === undefined) return { op: 'put', rev: r.rev, key: r.key, value: r.value, create: r.create };
    if (typeof rl.lease === 'string' && typeof rl.ttl === 'number' && rl.ttl > 0) return { op: 'put', rev: r.rev, key: r.key, value: r.value, create: r.create, lease: rl.lease, ttl: rl.ttl };
    return undefined;
  }
  if (r.op === 'begin' && typeof r.format === 'string' && typeof r.store === 'string') return { op: 'begin', rev: r.rev, format: r.format, store: r.store };
  return undefined;
}

async function readOptional(file: string): Promise<Buffer | undefined> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Applies log lines to the state; `begin` must come first when `storeId` is given. */
function replay(file: string, lines: string[], state: LoadedState, snapshotRevision: number, storeId: string | undefined): void {
  for (const [i, line] of lines.entries()) {
    const r = parseRecord(line);
    if (!r) throw corrupt(file, `line ${i + 1} fails its checksum or is malformed`);
    if (storeId !== undefined && i === 0) {
      if (r.op !== 'begin') throw corrupt(file, 'its first line is not the log header');
      if (r.store !== storeId) throw corrupt(file, `it belongs to store ${r.store}, not to this store ${storeId} (a file copied from another data dir?)`);
      checkFormat(file, r.format, undefined);
      continue;
    }
    if (r.op === 'begin') throw corrupt(file, `line ${i + 1} is a second log header`);
    state.walRecords++;
    if (r.op === 'reserve') {
      state.reserved = Math.max(state.reserved, r.rev);
      continue;
    }
    if (r.rev <= snapshotRevision) continue; // already in the snapshot
    if (r.op === 'put') state.kvs.set(r.key, { key: r.key, value: r.value, createRevision: r.create, modRevision: r.rev, ...(r.lease === undefined ? {} : { lease: r.lease, leaseTtlMs: r.ttl! }) });
    else state.kvs.delete(r.key);
    state.revision = Math.max(state.revision, r.rev);
  }
}

const emptyState = (storeId: string): LoadedState => ({
  storeId, revision: 0, reserved: 0, kvs: new Map(), walRecords: 0, unacknowledgedBytes: 0, unacknowledgedRecords: 0, fresh: false, legacy: false,
});

/** Reads COMMIT, the snapshot and the log; throws KEDGE_STORE_CORRUPT (or _VERSION) without writing anything. */
export async function loadState(dir: string): Promise<LoadedState> {
  const commitFile = join(dir, COMMIT_FILE);
  const snapFile = join(dir, SNAPSHOT_FILE);
  const walFile = join(dir, WAL_FILE);
  const [commitBuf, snapBuf, walBuf] = await Promise.all([readOptional(commitFile), readOptional(snapFile), readOptional(walFile)]);
  // An empty COMMIT is a first start that crashed before its first record.
  if (commitBuf === undefined || commitBuf.length === 0) return loadWithoutCommit(dir, snapBuf, walBuf);

  const commit = parseCommit(commitFile, commitBuf);
  const state = emptyState(commit.store);
  let snapshotRevision = 0;
  if (snapBuf === undefined) {
    if (commit.snapshot > 0) throw corrupt(snapFile, `it is gone, but ${COMMIT_FILE} records a snapshot at revision ${commit.snapshot}`);
  } else {
    const snap = commit.legacy && snapBuf[0] === 0x7b ? parseLegacySnapshot(snapFile, snapBuf) : parseSnapshot(snapFile, snapBuf.toString('utf8'), commit.store);
    if (snap.revision < commit.snapshot) throw corrupt(snapFile, `it is at revision ${snap.revision}, older than the snapshot at revision ${commit.snapshot} that ${COMMIT_FILE} records (an old copy put back?)`);
    snapshotRevision = snap.revision;
    state.revision = snap.revision;
    state.reserved = snap.reserved;
    for (const kv of snap.kvs) state.kvs.set(kv.key, kv);
  }
  const wal = walBuf ?? Buffer.alloc(0);
  if (wal.length < commit.wal) {
    const what = walBuf === undefined ? 'it is gone' : wal.length === 0 ? 'it is empty' : `it holds ${wal.length} bytes`;
    throw corrupt(walFile, `${what}, but ${commit.wal} bytes of it were acknowledged to clients: acknowledged changes were lost`);
  }
  const acked = wal.subarray(0, commit.wal).toString('utf8');
  if (acked.length > 0 && !acked.endsWith('\n')) throw corrupt(walFile, `the acknowledged part (${commit.wal} bytes) does not end on a whole record`);
  replay(walFile, acked.length === 0 ? [] : acked.slice(0, -1).split('\n'), state, snapshotRevision, commit.legacy ? undefined : commit.store);
  state.unacknowledgedBytes = wal.length - commit.wal;
  state.unacknowledgedRecords = wal.subarray(commit.wal).toString('utf8').split('\n').filter((l) => {
    const r = parseRecord(l);
    return r !== undefined && (r.op === 'put' || r.op === 'delete') && r.rev > snapshotRevision;
  }).length;
  state.legacy = commit.legacy === true;
  return state;
}

/**
 * A directory without COMMIT: empty (a new store), the earlier format, or a
 * store of this format that lost its COMMIT (corrupt: how much of its log
 * was acknowledged is unknown).
 */
function loadWithoutCommit(dir: string, snapBuf: Buffer | undefined, walBuf: Buffer | undefined): LoadedState {
  const snapFile = join(dir, SNAPSHOT_FILE);
  const walFile = join(dir, WAL_FILE);
  const state = emptyState(randomBytes(8).toString('hex'));
  const walText = walBuf?.toString('utf8') ?? '';
  if (snapBuf === undefined && walText === '') return { ...state, fresh: true };
  const v2Log = parseRecord(walText.split('\n', 1)[0] ?? '')?.op === 'begin';
  const v2Snapshot = snapBuf !== undefined && snapBuf[0] !== 0x7b;
  if (v2Log || v2Snapshot) throw corrupt(join(dir, COMMIT_FILE), `it is gone, but ${v2Snapshot ? SNAPSHOT_FILE : WAL_FILE} is of format ${STORE_FORMAT}, so how much of the log was acknowledged is unknown`);
  // The earlier format: the snapshot was plain JSON, a torn append was a last line without its newline.
  let snapshotRevision = 0;
  if (snapBuf !== undefined) {
    const snap = parseLegacySnapshot(snapFile, snapBuf);
    snapshotRevision = snap.revision;
    state.revision = snap.revision;
    state.reserved = snap.reserved;
    for (const kv of snap.kvs) state.kvs.set(kv.key, kv);
  }
  const lines = walText.split('\n');
  const torn = lines.pop() ?? '';
  replay(walFile, lines, state, snapshotRevision, undefined);
  state.unacknowledgedBytes = Buffer.byteLength(torn);
  state.legacyWalBytes = Buffer.byteLength(walText) - state.unacknowledgedBytes;
  return { ...state, legacy: true };
}

function parseLegacySnapshot(file: string, buf: Buffer): { revision: number; reserved: number; kvs: DurableKv[] } {
  let d: { format?: unknown; revision?: unknown; reserved?: unknown; kvs?: unknown };
  try {
    d = JSON.parse(buf.toString('utf8')) as typeof d;
  } catch (err) {
    throw corrupt(file, `not valid JSON: ${(err as Error).message}`);
  }
  if (typeof d !== 'object' || d === null || d.format !== LEGACY_FORMAT) throw corrupt(file, `not a ${LEGACY_FORMAT} snapshot`);
  if (!isRev(d.revision) || !isRev(d.reserved) || !Array.isArray(d.kvs)) throw corrupt(file, 'revision, reserved or kvs missing');
  return { revision: d.revision, reserved: d.reserved, kvs: checkKvs(file, d.kvs, d.revision) };
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Replaces snapshot.json atomically with these keys. */
export async function writeSnapshot(dir: string, storeId: string, revision: number, reserved: number, kvs: Iterable<DurableKv>, kedgeVersion?: string): Promise<void> {
  const list = [...kvs].map(({ key, value, createRevision, modRevision, lease, leaseTtlMs }) => ({ key, value, createRevision, modRevision, ...(lease === undefined ? {} : { lease, leaseTtlMs }) }));
  const text = encodeRecord({ format: STORE_FORMAT, ...(kedgeVersion ? { kedge: kedgeVersion } : {}), store: storeId, revision, reserved, kvs: list });
  const tmp = join(dir, `${SNAPSHOT_FILE}.tmp`);
  try {
    const fh = await fs.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, join(dir, SNAPSHOT_FILE));
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined); // a full disk should not also keep a half snapshot
    throw err;
  }
  await fsyncDir(dir);
}

/**
 * The write side: the log and COMMIT. A batch is durable and acknowledged
 * once `append` returns; `rewrite` starts a new log after a snapshot.
 *
 * A failed write changes nothing that counts: log lines are written at the
 * acknowledged length (not appended), and COMMIT's sequence number advances
 * only once a slot is on disk, so after ENOSPC or EIO the next attempt
 * overwrites whatever half-written bytes were left and the store goes on
 * when the disk does.
 */
export class Journal {
  private legacy = false;
  // The committed log is empty and has no header yet: the next append writes it first.
  private headerPending = false;
  private fileSize: number;

  private constructor(
    private readonly dir: string,
    private readonly wal: fs.FileHandle,
    private readonly commitFh: fs.FileHandle,
    private readonly storeId: string,
    private readonly kedgeVersion: string | undefined,
    private seq: number,
    private snapshotRevision: number,
    private bytes: number,
    fileSize: number,
  ) {
    this.fileSize = fileSize;
  }

  /**
   * Snapshots the loaded state and starts an empty log: the state every
   * open begins from, so a dropped tail or an earlier format is gone after it.
   */
  static async start(dir: string, state: LoadedState, kedgeVersion?: string): Promise<Journal> {
    const commitPath = join(dir, COMMIT_FILE);
    const commitFh = await fs.open(commitPath, fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
    let wal: fs.FileHandle | undefined;
    try {
      const existing = await commitFh.readFile();
      const seq = existing.length > 0 ? parseCommit(commitPath, existing).seq : 0;
      wal = await fs.open(join(dir, WAL_FILE), fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
      await fsyncDir(dir);
      const { size } = await wal.stat();
      const j = new Journal(dir, wal, commitFh, state.storeId, kedgeVersion, seq, 0, existing.length === 0 ? state.legacyWalBytes ?? 0 : 0, size);
      if (existing.length === 0) {
        // First COMMIT of a new or v1 store: it names the store and accepts
        // the v1 files as they are, so a crash during the rewrite below
        // finds either them or the new snapshot, never an unknown state.
        j.legacy = true;
        await j.writeCommit(0, j.bytes);
      }
      await j.rewrite(state.revision, state.reserved, state.kvs.values());
      return j;
    } catch (err) {
      await wal?.close();
      await commitFh.close();
      throw err;
    }
  }

  /** Acknowledged log size in bytes, to decide when to compact. */
  get size(): number {
    return this.bytes;
  }

  /** Writes whole lines; once it returns they are on disk and recorded as acknowledged. */
  async append(text: string): Promise<void> {
    const header = this.headerPending ? encodeRecord({ op: 'begin', rev: this.snapshotRevision, format: STORE_FORMAT, store: this.storeId }) : '';
    const buf = Buffer.from(header + text, 'utf8');
    await writeAll(this.wal, buf, this.bytes);
    this.fileSize = Math.max(this.fileSize, this.bytes + buf.length);
    await this.wal.datasync();
    await this.writeCommit(this.snapshotRevision, this.bytes + buf.length);
    this.bytes += buf.length;
    this.headerPending = false;
    await this.trimTail();
  }

  /** Writes a snapshot of `kvs` at `revision` and empties the log behind it. */
  async rewrite(revision: number, reserved: number, kvs: Iterable<DurableKv>): Promise<void> {
    await writeSnapshot(this.dir, this.storeId, revision, reserved, kvs, this.kedgeVersion);
    // The snapshot holds every record of the log, so none of the log needs to
    // stay acknowledged; its old lines become a tail the next append overwrites.
    this.legacy = false;
    await this.writeCommit(revision, 0);
    this.snapshotRevision = revision;
    this.bytes = 0;
    this.headerPending = true;
    await this.trimTail();
  }

  /** Rewrites the acknowledged state into COMMIT, to check the disk takes writes again. */
  async probe(): Promise<void> {
    await this.writeCommit(this.snapshotRevision, this.bytes);
  }

  // Cuts bytes past the acknowledged length; a failure only leaves a tail the next open drops.
  private async trimTail(): Promise<void> {
    if (this.fileSize <= this.bytes) return;
    try {
      await this.wal.truncate(this.bytes);
      this.fileSize = this.bytes;
    } catch {
      // harmless: the tail is past what COMMIT acknowledges
    }
  }

  private async writeCommit(snapshot: number, wal: number): Promise<void> {
    const seq = this.seq + 1;
    const rec: CommitRecord = { format: STORE_FORMAT, ...(this.kedgeVersion ? { kedge: this.kedgeVersion } : {}), store: this.storeId, seq, snapshot, wal, ...(this.legacy ? { legacy: true } : {}) };
    const line = encodeRecord(rec);
    if (line.length > SLOT) throw new Error(`commit record of ${line.length} bytes exceeds its ${SLOT}-byte slot`);
    const buf = Buffer.alloc(SLOT, ' ');
    buf.write(line.slice(0, -1), 0, 'utf8');
    buf[SLOT - 1] = 0x0a;
    // The slot not holding the newest record; a failed write is retried into the same one.
    await writeAll(this.commitFh, buf, (seq % 2) * SLOT);
    await this.commitFh.datasync();
    this.seq = seq;
  }

  async close(): Promise<void> {
    try {
      await this.wal.close();
    } finally {
      await this.commitFh.close();
    }
  }
}

async function writeAll(fh: fs.FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}
