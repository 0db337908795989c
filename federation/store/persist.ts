// On-disk format of the embedded store, in <dataDir>/store/:
//
//   snapshot.json  every durable key at `revision`, replaced atomically
//                  (temp file, fsync, rename, directory fsync).
//   wal.log        changes after the snapshot, one per line:
//                  `<crc32 of the JSON, 8 hex> <JSON record>\n`, appended and
//                  fdatasync'd before the change is acknowledged.
//
// Replay skips records at or below the snapshot's revision, so a crash
// between writing a snapshot and truncating the log loses and doubles
// nothing. A crash mid-append leaves a last line without its newline: that
// torn record was never acknowledged and is dropped. Anything else that does
// not parse is corruption, reported without touching the file.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { KedgeError } from '../../proto/model/errors';

/** A key that survives restarts (one without a lease). */
export interface DurableKv { key: string; value: string; createRevision: number; modRevision: number }

/**
 * One log record. `reserve` raises the revision floor for the next start:
 * changes to leased keys are not logged, but their revisions must never be
 * handed out again after a restart.
 */
export type WalRecord =
  | { op: 'put'; rev: number; key: string; value: string; create: number }
  | { op: 'delete'; rev: number; key: string }
  | { op: 'reserve'; rev: number };

/** What `loadState` recovered. */
export interface LoadedState {
  revision: number;
  reserved: number;
  kvs: Map<string, DurableKv>;
  walRecords: number;
  tornBytes: number;
}

export const SNAPSHOT_FILE = 'snapshot.json';
export const WAL_FILE = 'wal.log';
const FORMAT = 'kedge-store/v1';

/** Encodes one record as a log line. */
export function encodeRecord(r: WalRecord): string {
  const json = JSON.stringify(r);
  return `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`;
}

function corrupt(file: string, detail: string): KedgeError {
  return new KedgeError(
    'KEDGE_STORE_CORRUPT',
    `store file ${file} is corrupt (${detail}); it was left untouched. Restore it from a backup, ` +
      `or move the store directory away to start empty (join tokens and other durable state in it are then lost).`,
  );
}

const isRev = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;

function parseSnapshot(file: string, text: string): { revision: number; reserved: number; kvs: DurableKv[] } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw corrupt(file, `not valid JSON: ${(err as Error).message}`);
  }
  const d = doc as { format?: unknown; revision?: unknown; reserved?: unknown; kvs?: unknown };
  if (typeof d !== 'object' || d === null || d.format !== FORMAT) throw corrupt(file, `not a ${FORMAT} snapshot`);
  if (!isRev(d.revision) || !isRev(d.reserved) || !Array.isArray(d.kvs)) throw corrupt(file, 'revision, reserved or kvs missing');
  const revision = d.revision;
  for (const [i, kv] of (d.kvs as DurableKv[]).entries()) {
    const ok = typeof kv === 'object' && kv !== null && typeof kv.key === 'string' && typeof kv.value === 'string' &&
      isRev(kv.createRevision) && isRev(kv.modRevision) && kv.createRevision <= kv.modRevision && kv.modRevision <= revision;
    if (!ok) throw corrupt(file, `entry ${i} is malformed`);
  }
  const kvs = (d.kvs as DurableKv[]).map(({ key, value, createRevision, modRevision }) => ({ key, value, createRevision, modRevision }));
  return { revision, reserved: d.reserved, kvs };
}

function parseRecord(line: string): WalRecord | undefined {
  const m = /^([0-9a-f]{8}) (.*)$/.exec(line);
  if (!m || parseInt(m[1]!, 16) !== crc32(m[2]!)) return undefined;
  let r: Partial<WalRecord & { key: unknown; value: unknown; create: unknown }>;
  try {
    r = JSON.parse(m[2]!) as typeof r;
  } catch {
    return undefined;
  }
  if (!isRev(r.rev)) return undefined;
  if (r.op === 'reserve') return r as WalRecord;
  if (r.op === 'delete' && typeof r.key === 'string') return r as WalRecord;
  if (r.op === 'put' && typeof r.key === 'string' && typeof r.value === 'string' && isRev(r.create)) return r as WalRecord;
  return undefined;
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Reads the snapshot and replays the log; throws KEDGE_STORE_CORRUPT without writing anything. */
export async function loadState(dir: string): Promise<LoadedState> {
  const snapFile = join(dir, SNAPSHOT_FILE);
  const walFile = join(dir, WAL_FILE);
  const snapText = await readOptional(snapFile);
  const snap = snapText === undefined ? { revision: 0, reserved: 0, kvs: [] } : parseSnapshot(snapFile, snapText);
  const kvs = new Map(snap.kvs.map((kv) => [kv.key, kv]));
  const state: LoadedState = { revision: snap.revision, reserved: snap.reserved, kvs, walRecords: 0, tornBytes: 0 };

  const walText = (await readOptional(walFile)) ?? '';
  const lines = walText.split('\n');
  const torn = lines.pop() ?? ''; // text after the last newline: an unfinished append
  state.tornBytes = Buffer.byteLength(torn);
  for (const [i, line] of lines.entries()) {
    const r = parseRecord(line);
    if (!r) throw corrupt(walFile, `line ${i + 1} fails its checksum or is malformed`);
    state.walRecords++;
    if (r.op === 'reserve') {
      state.reserved = Math.max(state.reserved, r.rev);
      continue;
    }
    if (r.rev <= snap.revision) continue; // already in the snapshot
    if (r.op === 'put') kvs.set(r.key, { key: r.key, value: r.value, createRevision: r.create, modRevision: r.rev });
    else kvs.delete(r.key);
    state.revision = Math.max(state.revision, r.rev);
  }
  return state;
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
export async function writeSnapshot(dir: string, revision: number, reserved: number, kvs: Iterable<DurableKv>): Promise<void> {
  const list = [...kvs].map(({ key, value, createRevision, modRevision }) => ({ key, value, createRevision, modRevision }));
  const text = `${JSON.stringify({ format: FORMAT, revision, reserved, kvs: list })}\n`;
  const tmp = join(dir, `${SNAPSHOT_FILE}.tmp`);
  const fh = await fs.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, join(dir, SNAPSHOT_FILE));
  await fsyncDir(dir);
}

/** The append side of wal.log. */
export class WalWriter {
  private constructor(private readonly fh: fs.FileHandle, private bytes: number) {}

  /** Opens (creating) the log for appending and makes its directory entry durable. */
  static async open(dir: string): Promise<WalWriter> {
    const fh = await fs.open(join(dir, WAL_FILE), 'a', 0o600);
    const { size } = await fh.stat();
    await fsyncDir(dir);
    return new WalWriter(fh, size);
  }

  /** Current size in bytes, to decide when to compact. */
  get size(): number {
    return this.bytes;
  }

  /** Appends whole lines and returns once they are on disk. */
  async append(text: string): Promise<void> {
    await this.fh.appendFile(text);
    await this.fh.datasync();
    this.bytes += Buffer.byteLength(text);
  }

  /** Empties the log, after a snapshot has taken over its contents. */
  async truncate(): Promise<void> {
    await this.fh.truncate(0);
    await this.fh.datasync();
    this.bytes = 0;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
