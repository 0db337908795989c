// First-start material: the mesh CA (kept durable in the store so every
// replica signs with the same one) exported as DIR/root-cert.pem, and the
// admin credential in DIR/admin-token (0600). Restarts reuse both.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { KedgeError, hasCode } from '../proto/model/errors';
import type { Logger } from '../proto/model/log';
import { readTextFile, writeFileAtomic } from '../proto/model/files';
import type { Store } from './store/types';
import { CaMaterial, createRootCa, loadPluggedCa } from './ca';

/** Store key of the self-signed root CA (certificate and key). */
export const ROOT_CA_KEY = '/kedge/ca/root';

/** Loads the plug-in CA, or the stored root, or creates and stores a new root. */
export async function loadCaMaterial(store: Store, opts: { trustDomain: string; caCertFile?: string | undefined; caKeyFile?: string | undefined; logger: Logger }): Promise<CaMaterial> {
  if (opts.caCertFile && opts.caKeyFile) {
    const read = (f: string, what: string) => readTextFile(f, 'KEDGE_CA_INVALID', what);
    const material = loadPluggedCa(read(opts.caCertFile, '--ca-cert'), read(opts.caKeyFile, '--ca-key'));
    opts.logger.info({ caCert: opts.caCertFile }, 'using plug-in CA');
    return material;
  }
  for (;;) {
    const kv = await store.get(ROOT_CA_KEY);
    if (kv) return JSON.parse(kv.value) as CaMaterial;
    const material = createRootCa({ trustDomain: opts.trustDomain });
    try {
      // Create-only: when replicas race on first start, one root wins and all use it.
      await store.put(ROOT_CA_KEY, JSON.stringify(material), { expectRevision: 0 });
      opts.logger.info({ trustDomain: opts.trustDomain }, 'created a new self-signed root CA');
      return material;
    } catch (err) {
      if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
    }
  }
}

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
