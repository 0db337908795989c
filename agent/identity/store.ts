// The agent's identity on disk. Each certificate lives in its own folder
// DATA/identity/<serial>/ (key.pem 0600, cert-chain.pem, trust-bundle.pem);
// the symlink DATA/identity/current is switched atomically, so a crash during
// renewal leaves either the old or the new identity, never a key that does
// not match its certificate.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { KedgeError } from '../../proto/model/errors';
import { writeFileAtomic } from '../../proto/model/files';
import type { TlsIdentity } from '../proxy/types';
import { parseCertChain } from './csr';

/** File names inside an identity folder. */
export const IDENTITY_FILES = { key: 'key.pem', chain: 'cert-chain.pem', bundle: 'trust-bundle.pem' } as const;

/** Builds the proxy's TlsIdentity from PEMs, checking the key matches the leaf. */
export function toTlsIdentity(keyPem: string, certChainPem: string, trustBundlePem: string): TlsIdentity {
  const info = parseCertChain(certChainPem);
  const leaf = new X509Certificate(certChainPem);
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) {
    throw new KedgeError('KEDGE_BAD_CERT', 'the private key does not match the certificate');
  }
  return { spiffeId: info.spiffeId, certChainPem, keyPem, trustBundlePem, serial: info.serial, notAfter: info.notAfter };
}

/** The folder holding the current identity files. */
export function currentIdentityDir(dataDir: string): string {
  return path.join(dataDir, 'identity', 'current');
}

/** Reads the saved identity; undefined when there is none (first start). */
export function loadIdentity(dataDir: string): TlsIdentity | undefined {
  const dir = currentIdentityDir(dataDir);
  if (!fs.existsSync(dir)) return undefined;
  const read = (name: string) => fs.readFileSync(path.join(dir, name), 'utf8');
  try {
    return toTlsIdentity(read(IDENTITY_FILES.key), read(IDENTITY_FILES.chain), read(IDENTITY_FILES.bundle));
  } catch (err) {
    throw new KedgeError(
      'KEDGE_IDENTITY_UNREADABLE',
      `the saved identity in ${dir} is unusable (${(err as Error).message}); remove ${path.join(dataDir, 'identity')} and rejoin with a new token`,
      { cause: err },
    );
  }
}

/** Saves an identity and makes it current; older folders are removed. */
export function saveIdentity(dataDir: string, id: TlsIdentity): void {
  const base = path.join(dataDir, 'identity');
  const name = `${id.serial}-${Date.now()}`;
  const dir = path.join(base, name);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(path.join(dir, IDENTITY_FILES.key), id.keyPem, 0o600);
  writeFileAtomic(path.join(dir, IDENTITY_FILES.chain), id.certChainPem, 0o644);
  writeFileAtomic(path.join(dir, IDENTITY_FILES.bundle), id.trustBundlePem, 0o644);
  const link = path.join(base, 'current');
  const tmpLink = path.join(base, `current.${process.pid}.tmp`);
  fs.rmSync(tmpLink, { force: true });
  fs.symlinkSync(name, tmpLink);
  fs.renameSync(tmpLink, link);
  for (const entry of fs.readdirSync(base)) {
    if (entry !== name && entry !== 'current') fs.rmSync(path.join(base, entry), { recursive: true, force: true });
  }
}
