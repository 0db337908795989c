// Proves the CA can sign: a certificate for a throwaway CSR (made once, key
// discarded) signed through the same path agents' CSRs take. Checked at
// start and every CA_CHECK_MS; about 6 ms each.
import * as crypto from 'node:crypto';
import * as forge from 'node-forge';
import { errorMessage } from '../../proto/model/errors';

/** How often the CA self-check runs. */
export const CA_CHECK_MS = 30_000;

/** The part of the CA the check uses. */
export interface SigningCa { signCsr(csrPem: string, spiffeId: string, opts?: { ttlMs?: number }): unknown }

let csrPem: string | undefined;

function throwawayCsr(): string {
  if (csrPem) return csrPem;
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
  csr.setSubject([]);
  csr.sign(forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()), forge.md.sha256.create());
  csrPem = forge.pki.certificationRequestToPem(csr);
  return csrPem;
}

/** Signs a throwaway CSR; ok, or the reason the CA could not sign. */
export function checkCaSigns(ca: SigningCa, trustDomain: string): { ok: boolean; error?: string } {
  try {
    ca.signCsr(throwawayCsr(), `spiffe://${trustDomain}/ns/kedge-system/sa/readiness-check`, { ttlMs: 60_000 });
    return { ok: true };
  } catch (err) {
    return { ok: false, error: `the CA cannot sign: ${errorMessage(err)}` };
  }
}
