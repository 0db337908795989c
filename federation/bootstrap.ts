// First-start material: the admin credential, kept in the store and in
// DIR/admin-token (0600). Restarts reuse it. (The mesh CA is ca/manager.ts.)
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { KedgeError, hasCode } from '../proto/model/errors';
import { writeFileAtomic } from '../proto/model/files';
import type { Store } from './store/types';

/** Store key of the admin credential, shared by every replica. */
export const ADMIN_TOKEN_KEY = '/kedge/admin/token';

/**
 * The admin credential: kept in the store (like the CA key) so every replica
 * accepts the same one, and written to DIR/admin-token (0600) for the CLI.
 * An existing file from an earlier start wins on first use of a new store.
 */
export async function loadOrCreateAdminToken(store: Store, dataDir: string): Promise<string> {
  const file = path.join(dataDir, 'admin-token');
  let local: string | undefined;
  try {
    local = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (local !== undefined && local.length < 32) {
    throw new KedgeError('KEDGE_BAD_ADMIN_TOKEN', `${file} holds no valid admin token; delete it to have a new one made`);
  }
  for (;;) {
    const kv = await store.get(ADMIN_TOKEN_KEY);
    if (kv) {
      if (kv.value !== local) writeFileAtomic(file, `${kv.value}\n`, 0o600);
      return kv.value;
    }
    const token = local ?? `kedge-admin.${randomBytes(32).toString('base64url')}`;
    try {
      await store.put(ADMIN_TOKEN_KEY, token, { expectRevision: 0 });
    } catch (err) {
      if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
    }
  }
}
