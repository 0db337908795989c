// Backups of the federation's durable state: every key without a lease (the
// CA, the admin token, join tokens, VIPs, policies), with a checksum over
// the whole document. Leased keys (agent registrations) are left out: agents
// register again. A backup holds the CA's private key, so it is written 0600.
//
// `restore` writes a backup into a data dir's embedded store; it refuses a
// data dir that already has a store unless told to move it aside.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { openEmbeddedStore } from './embedded';
import { acquireDirLock } from './lock';
import { COMMIT_FILE, SNAPSHOT_FILE, WAL_FILE } from './persist';
import type { Store } from './types';

export const BACKUP_FORMAT = 'kedge-backup/v1';

/** A backup document as written to a file. */
export interface BackupDoc {
  format: string;
  kedge?: string;
  createdAt: string;
  /** Store revision the keys were read at. */
  revision: number;
  kvs: { key: string; value: string }[];
  /** sha256 (hex) of the JSON of the document without this field. */
  sha256: string;
}

const digest = (doc: Omit<BackupDoc, 'sha256'>): string => createHash('sha256').update(JSON.stringify(doc)).digest('hex');

/** Reads every durable key of the store into a backup document. */
export async function exportBackup(store: Store, opts: { kedgeVersion?: string; now?: () => Date } = {}): Promise<BackupDoc> {
  const { kvs, revision } = await store.list('');
  const body = {
    format: BACKUP_FORMAT,
    ...(opts.kedgeVersion ? { kedge: opts.kedgeVersion } : {}),
    createdAt: (opts.now ?? (() => new Date()))().toISOString(),
    revision,
    kvs: kvs.filter((kv) => kv.lease === undefined).map(({ key, value }) => ({ key, value })),
  };
  return { ...body, sha256: digest(body) };
}

function badBackup(file: string, detail: string): KedgeError {
  return new KedgeError('KEDGE_BACKUP_INVALID', `backup ${file} ${detail}; use a file written by kedge federation backup, whole and unchanged`);
}

/** Parses and verifies a backup file's text. */
export function parseBackup(file: string, text: string): BackupDoc {
  let doc: Partial<BackupDoc>;
  try {
    doc = JSON.parse(text) as Partial<BackupDoc>;
  } catch (err) {
    throw badBackup(file, `is not valid JSON (${(err as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null) throw badBackup(file, 'is not a backup document');
  if (doc.format !== BACKUP_FORMAT) {
    const newer = typeof doc.format === 'string' && /^kedge-backup\/v(\d+)$/.exec(doc.format);
    if (newer && Number(newer[1]) > 1) {
      throw new KedgeError('KEDGE_BACKUP_INVALID', `backup ${file} has format ${doc.format}${doc.kedge ? ` (Kedge ${doc.kedge})` : ''}, newer than this Kedge reads (${BACKUP_FORMAT}); restore it with that Kedge version`);
    }
    throw badBackup(file, `has format ${JSON.stringify(doc.format)}, not ${BACKUP_FORMAT}`);
  }
  const { sha256, ...body } = doc;
  if (!Array.isArray(body.kvs) || typeof body.createdAt !== 'string' || !Number.isSafeInteger(body.revision)) throw badBackup(file, 'lacks kvs, createdAt or revision');
  if (typeof sha256 !== 'string' || sha256 !== digest(body as Omit<BackupDoc, 'sha256'>)) throw badBackup(file, 'fails its checksum (changed or cut short)');
  for (const [i, kv] of body.kvs.entries()) {
    if (typeof kv?.key !== 'string' || kv.key === '' || typeof kv.value !== 'string') throw badBackup(file, `has a malformed entry ${i}`);
  }
  return doc as BackupDoc;
}

/** Writes a backup file (0600, atomically). */
export async function writeBackupFile(file: string, doc: BackupDoc): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await fs.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(doc)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
}

async function hasStore(storeDir: string): Promise<boolean> {
  for (const f of [COMMIT_FILE, SNAPSHOT_FILE, WAL_FILE]) {
    try {
      const st = await fs.stat(join(storeDir, f));
      if (st.size > 0) return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return false;
}

/**
 * Restores a backup into `<dataDir>/store`. An existing store is refused,
 * or with `force` moved to `store.before-restore-<time>` (never deleted).
 * Returns where an old store went, if one was moved.
 */
export async function restoreBackup(dataDir: string, doc: BackupDoc, opts: { force?: boolean; logger: Logger; kedgeVersion?: string }): Promise<{ movedTo?: string; keys: number }> {
  const storeDir = join(dataDir, 'store');
  let movedTo: string | undefined;
  if (await hasStore(storeDir)) {
    if (!opts.force) {
      throw new KedgeError('KEDGE_STORE_EXISTS', `data dir ${dataDir} already has a store (${storeDir}); stop its federation and pass --force to move that store aside (it is kept as store.before-restore-<time>), or restore into an empty data dir`);
    }
    movedTo = join(dataDir, `store.before-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    // Holding the old store's lock proves no federation is using it; the
    // store may be corrupt, so it is locked, not opened.
    const lock = await acquireDirLock(storeDir, dataDir, opts.logger);
    try {
      await fs.rename(storeDir, movedTo);
    } finally {
      await lock.release();
    }
  }
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const store = await openEmbeddedStore(dataDir, { logger: opts.logger, ...(opts.kedgeVersion ? { kedgeVersion: opts.kedgeVersion } : {}) });
  try {
    // Concurrent puts are written as one batch: one fsync for the lot.
    await Promise.all(doc.kvs.map((kv) => store.put(kv.key, kv.value, { expectRevision: 0 })));
  } finally {
    await store.close();
  }
  return { ...(movedTo ? { movedTo } : {}), keys: doc.kvs.length };
}
