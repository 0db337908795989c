// The agent's side of issuance: make a key on this host and a CSR for it
// (only the CSR leaves the host), and read back what the federation signed.
import * as crypto from 'node:crypto';
import { promisify } from 'node:util';
import * as forge from 'node-forge';
import { KedgeError } from '../../proto/model/errors';
import { parseSpiffeId, uriSans } from '../../proto/model/spiffe';

const generateKeyPair = promisify(crypto.generateKeyPair);

// Present in node-forge but missing from @types/node-forge.
const getCertificationRequestInfo = (forge.pki as unknown as { getCertificationRequestInfo(csr: forge.pki.CertificateSigningRequest): forge.asn1.Asn1 })
  .getCertificationRequestInfo;

/**
 * Makes an RSA 2048 key (PKCS#8 PEM) off the event loop and a CSR for it.
 * The CSR has an empty subject; with `spiffeId` it requests that one URI SAN,
 * which the federation compares with the identity it authenticated.
 */
export async function generateKeyAndCsr(opts: { spiffeId?: string } = {}): Promise<{ keyPem: string; csrPem: string }> {
  const { privateKey, publicKey } = await generateKeyPair('rsa', { modulusLength: 2048 });
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
  csr.setSubject([]);
  if (opts.spiffeId !== undefined) {
    const extensionRequest = {
      name: 'extensionRequest',
      // Critical because the subject is empty (RFC 5280 4.2.1.6).
      extensions: [{ name: 'subjectAltName', critical: true, altNames: [{ type: 6, value: opts.spiffeId }] }],
    };
    csr.setAttributes([extensionRequest as unknown as forge.pki.CertificateField]);
  }
  // forge lays the request out; Node signs it (forge's pure-JS RSA signing is
  // dozens of times slower, docs/BENCHMARKS.md).
  const info = getCertificationRequestInfo(csr);
  const infoDer = Buffer.from(forge.asn1.toDer(info).getBytes(), 'binary');
  csr.certificationRequestInfo = info;
  csr.signatureOid = forge.pki.oids.sha256WithRSAEncryption as string;
  csr.signature = crypto.sign('sha256', infoDer, privateKey).toString('binary');
  return {
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    csrPem: forge.pki.certificationRequestToPem(csr),
  };
}

/** What the agent needs from its certificate chain: identity, serial and validity of the leaf. */
export interface CertChainInfo {
  spiffeId: string;
  /** Uppercase hex, as X509Certificate.serialNumber reports it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** Reads the first certificate of a PEM chain; throws KEDGE_BAD_CERT unless it has exactly one URI SAN, a Kedge SPIFFE ID. */
export function parseCertChain(pem: string): CertChainInfo {
  let leaf: crypto.X509Certificate;
  try {
    leaf = new crypto.X509Certificate(pem);
  } catch (err) {
    throw new KedgeError('KEDGE_BAD_CERT', 'the certificate chain cannot be parsed; expected PEM certificates, leaf first', { cause: err });
  }
  const uris = uriSans(leaf.subjectAltName);
  const spiffeId = uris[0];
  if (uris.length !== 1 || spiffeId === undefined || parseSpiffeId(spiffeId) === undefined) {
    throw new KedgeError(
      'KEDGE_BAD_CERT',
      `the certificate (serial ${leaf.serialNumber}) must carry exactly one URI SAN, a SPIFFE ID spiffe://<trust-domain>/ns/<ns>/sa/<sa>; it has ${uris.length === 0 ? 'none' : uris.join(', ')}`,
    );
  }
  return { spiffeId, serial: leaf.serialNumber, notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo) };
}
