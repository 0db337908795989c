// Encryption of the CA private key at rest, under a key-encryption key (KEK)
// the operator supplies. AES-256-GCM (authenticated: a wrong KEK or a
// tampered record fails, it never decrypts to garbage) with the AES key
// derived from the KEK by scrypt and a per-record salt, so the KEK may be a
// passphrase as well as random bytes. The additional data binds a record to
// the certificate it belongs to: a wrapped key copied next to another
// certificate does not decrypt.
import * as crypto from 'node:crypto';
import { KedgeError } from '../../proto/model/errors';

/** A wrapped private key as kept in the store (binary fields base64). */
export interface WrappedKey {
  alg: 'aes-256-gcm';
  kdf: 'scrypt';
  /** scrypt cost parameters: N (a power of two), r, p. */
  n: number;
  r: number;
  p: number;
  salt: string;
  iv: string;
  tag: string;
  data: string;
}

// scrypt N = 2^15, r = 8 (32 MiB, ~100 ms here): derived once per root and
// process, so the cost is paid at start and at a rotation only.
const SCRYPT = { n: 1 << 15, r: 8, p: 1 } as const;
const MAX_SCRYPT_N = 1 << 20;
/** Shortest key-encryption key accepted, in bytes. */
export const MIN_KEK_BYTES = 16;

function aad(certFingerprint: string): Buffer {
  return Buffer.from(`kedge-ca-key/v1 ${certFingerprint}`);
}

function derive(kek: Buffer, salt: Buffer, w: { n: number; r: number; p: number }): Buffer {
  return crypto.scryptSync(kek, salt, 32, { N: w.n, r: w.r, p: w.p, maxmem: 256 * w.n * w.r + 1024 * 1024 });
}

/** Checks a key-encryption key's length; `what` names where it came from. */
export function checkKek(kek: Buffer, what: string): void {
  if (kek.length < MIN_KEK_BYTES) {
    throw new KedgeError('KEDGE_CA_KEK_INVALID', `the CA key-encryption key from ${what} is ${kek.length} bytes; give at least ${MIN_KEK_BYTES} (for example: openssl rand -base64 32)`);
  }
}

/** Encrypts a PEM private key for the certificate with SHA-256 fingerprint `certFingerprint`. */
export function wrapKey(keyPem: string, kek: Buffer, certFingerprint: string): WrappedKey {
  const salt = crypto.randomBytes(16);
  const iv = crypto.randomBytes(12);
  const cipher = crypto.createCipheriv('aes-256-gcm', derive(kek, salt, SCRYPT), iv);
  cipher.setAAD(aad(certFingerprint));
  const data = Buffer.concat([cipher.update(keyPem, 'utf8'), cipher.final()]);
  return { alg: 'aes-256-gcm', kdf: 'scrypt', ...SCRYPT, salt: salt.toString('base64'), iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64') };
}

/** True when `v` has the shape of a WrappedKey. */
export function isWrappedKey(v: unknown): v is WrappedKey {
  const w = v as Partial<WrappedKey> | null;
  return typeof w === 'object' && w !== null && w.alg === 'aes-256-gcm' && w.kdf === 'scrypt' &&
    [w.salt, w.iv, w.tag, w.data].every((f) => typeof f === 'string') && [w.n, w.r, w.p].every((f) => Number.isInteger(f));
}

/**
 * Decrypts a wrapped key; KEDGE_CA_KEY_WRONG when the KEK is not the one it
 * was wrapped with (or the record was altered), naming `kekSource`.
 */
export function unwrapKey(w: WrappedKey, kek: Buffer, certFingerprint: string, kekSource: string): string {
  if (!(w.n > 1 && w.n <= MAX_SCRYPT_N && (w.n & (w.n - 1)) === 0 && w.r >= 1 && w.r <= 32 && w.p >= 1 && w.p <= 16)) {
    throw new KedgeError('KEDGE_CA_INVALID', `the stored CA key has unusable scrypt parameters (N=${w.n}, r=${w.r}, p=${w.p}); the store record is damaged`);
  }
  const decipher = crypto.createDecipheriv('aes-256-gcm', derive(kek, Buffer.from(w.salt, 'base64'), w), Buffer.from(w.iv, 'base64'));
  decipher.setAAD(aad(certFingerprint));
  decipher.setAuthTag(Buffer.from(w.tag, 'base64'));
  try {
    return Buffer.concat([decipher.update(Buffer.from(w.data, 'base64')), decipher.final()]).toString('utf8');
  } catch (err) {
    throw new KedgeError(
      'KEDGE_CA_KEY_WRONG',
      `the CA private key in the store cannot be decrypted with the key-encryption key from ${kekSource}: it is not the key the CA key was encrypted with (or the record was altered); give the original key`,
      { cause: err },
    );
  }
}
