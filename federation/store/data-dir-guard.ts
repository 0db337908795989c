// A federation must never start a new mesh by accident. When the store is
// empty (no admin token in it) but the data dir holds admin-token and
// root-cert.pem from an earlier start, the store was lost (a deleted
// folder, a wiped etcd); going on would make a new root CA that no agent
// trusts and forget every join token. Refused unless the operator says
// --init.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KedgeError } from '../../proto/model/errors';
import type { Store } from './types';

/** Files of the data dir that show a federation ran here before. */
export const EARLIER_START_FILES = ['admin-token', 'root-cert.pem'] as const;

/** Throws KEDGE_STORE_MISSING for an empty store behind a used data dir, unless `init`. */
export async function refuseLostStore(store: Store, opts: { dataDir: string; adminTokenKey: string; init: boolean; where: string }): Promise<void> {
  if (opts.init) return;
  if (await store.get(opts.adminTokenKey)) return;
  const present = EARLIER_START_FILES.filter((f) => fs.existsSync(path.join(opts.dataDir, f)));
  if (present.length < EARLIER_START_FILES.length) return;
  throw new KedgeError(
    'KEDGE_STORE_MISSING',
    `data dir ${opts.dataDir} has ${present.join(' and ')} from an earlier start, but the store (${opts.where}) is empty: ` +
      'the root CA, join tokens and VIPs it held are gone, and starting would make a new root CA that no agent trusts. ' +
      'Restore the store from a backup (kedge federation restore --data-dir DIR FILE), or start with --init to begin a new mesh on purpose.',
  );
}
