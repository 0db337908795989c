// The trust bundle in the SPIFFE bundle format (SPIFFE Trust Domain and
// Bundle, section 4; X509-SVID, section 6): an RFC 7517 JWK Set with one JWK
// per root CA certificate, `use` "x509-svid", the certificate as the single
// `x5c` entry, no `kid`, the public key's own parameters (RFC 7518 section 6:
// n/e for RSA, crv/x/y for EC), plus `spiffe_sequence` and
// `spiffe_refresh_hint`.
import { X509Certificate } from 'node:crypto';

/** One x509-svid JWK. */
export interface X509SvidJwk {
  kty: string;
  use: 'x509-svid';
  x5c: [string];
  [param: string]: string | string[];
}

/** A SPIFFE bundle (JWK Set). */
export interface SpiffeBundle {
  keys: X509SvidJwk[];
  spiffe_sequence: number;
  spiffe_refresh_hint: number;
}

/**
 * How often (seconds) consumers are told to check back: the five minutes
 * the specification suggests as a client default, short enough that a
 * rotation's new root is seen long before it signs anything in a foreign
 * trust domain's view of the mesh.
 */
export const SPIFFE_REFRESH_HINT_SECONDS = 300;

// The key parameters a public JWK may carry per key type; anything else
// Node's export might add is left out (the specification: implementers
// SHOULD NOT include parameters defined neither there nor in RFC 7517/7518).
const KEY_PARAMS: Record<string, readonly string[]> = { RSA: ['n', 'e'], EC: ['crv', 'x', 'y'], OKP: ['crv', 'x'] };

/** Builds the bundle from PEM root certificates. */
export function spiffeBundle(rootsPem: readonly string[], sequence: number, refreshHintSeconds = SPIFFE_REFRESH_HINT_SECONDS): SpiffeBundle {
  const keys = rootsPem.map((pem): X509SvidJwk => {
    const cert = new X509Certificate(pem);
    const jwk = cert.publicKey.export({ format: 'jwk' }) as Record<string, string>;
    const kty = jwk.kty ?? '';
    const out: X509SvidJwk = { kty, use: 'x509-svid', x5c: [cert.raw.toString('base64')] };
    for (const p of KEY_PARAMS[kty] ?? []) if (jwk[p] !== undefined) out[p] = jwk[p];
    return out;
  });
  return { keys, spiffe_sequence: sequence, spiffe_refresh_hint: refreshHintSeconds };
}
