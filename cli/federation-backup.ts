// `kedge federation backup` and `kedge federation restore`.
//
// backup reads a running federation through its API (any replica; the
// default), or a stopped one's data dir (--data-dir). restore writes into a
// stopped federation's data dir; the next start serves the restored state.
import * as path from 'node:path';
import { KedgeError } from '../proto/model/errors';
import { createLogger } from '../proto/model/log';
import { readTextFile } from '../proto/model/files';
import { exportBackup, parseBackup, restoreBackup, writeBackupFile, type BackupDoc } from '../federation/store/backup';
import { openEmbeddedStore } from '../federation/store/embedded';
import { embeddedStoreParent, KEDGE_VERSION } from '../federation/server';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';

const BACKUP_USAGE = 'kedge federation backup --out FILE [--data-dir DIR | --federation https://HOST:PORT --admin-token-file FILE]';
const RESTORE_USAGE = 'kedge federation restore --data-dir DIR [--force] FILE';

/** Writes a backup file; prints what it holds. */
export async function runBackup(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, out: { type: 'string', short: 'o' }, 'data-dir': { type: 'string' } }, BACKUP_USAGE);
  if (positionals.length) throw new KedgeError('KEDGE_USAGE', `unexpected argument ${positionals[0]}\n\nusage: ${BACKUP_USAGE}`);
  if (!values.out) throw new KedgeError('KEDGE_USAGE', `--out FILE is required (the backup holds the CA key and is written 0600)\n\nusage: ${BACKUP_USAGE}`);
  if (values['data-dir'] && values.federation) throw new KedgeError('KEDGE_USAGE', `give --data-dir (a stopped federation) or --federation (a running one), not both\n\nusage: ${BACKUP_USAGE}`);
  let doc: BackupDoc;
  if (values['data-dir']) {
    const dataDir = path.resolve(values['data-dir']);
    const store = await openEmbeddedStore(embeddedStoreParent(dataDir), { logger: createLogger('kedge-backup'), kedgeVersion: KEDGE_VERSION });
    try {
      doc = await exportBackup(store, { kedgeVersion: KEDGE_VERSION });
    } finally {
      await store.close();
    }
  } else {
    const target = resolveAdminTarget(values);
    doc = parseBackup(`from ${target.baseUrl}`, JSON.stringify(await apiRequest<unknown>(target, 'GET', '/api/v1/backup')));
  }
  await writeBackupFile(values.out, doc);
  process.stdout.write(`wrote ${values.out}: ${doc.kvs.length} keys at store revision ${doc.revision} (it holds the CA key: keep it as safe as the data dir)\n`);
  return 0;
}

/** Restores a backup file into a data dir. */
export async function runRestore(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { 'data-dir': { type: 'string' }, force: { type: 'boolean' } }, RESTORE_USAGE);
  if (positionals.length !== 1 || !values['data-dir']) throw new KedgeError('KEDGE_USAGE', `give --data-dir DIR and one backup FILE\n\nusage: ${RESTORE_USAGE}`);
  const file = positionals[0]!;
  const doc = parseBackup(file, readTextFile(file, 'KEDGE_BACKUP_INVALID', 'backup'));
  const dataDir = path.resolve(values['data-dir']);
  const r = await restoreBackup(embeddedStoreParent(dataDir), doc, { force: values.force === true, logger: createLogger('kedge-restore'), kedgeVersion: KEDGE_VERSION });
  const moved = r.movedTo ? `; the store that was there is now ${r.movedTo}` : '';
  process.stdout.write(`restored ${r.keys} keys from ${file} (taken ${doc.createdAt}) into ${dataDir}${moved}\n`);
  return 0;
}
