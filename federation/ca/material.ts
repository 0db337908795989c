// Where the CA's certificate and key come from: a self-signed root made on
// first start, or an operator's plug-in intermediate (--ca-cert/--ca-key).
// Persisting the material is the caller's job; this file only creates and
// validates it.
import * as crypto from 'node:crypto';
import { KedgeError } from '../../proto/model/errors';
import { isValidTrustDomain } from '../../proto/model/spiffe';
import { allowsCertSign, isCa, readCertFields, spkiPublicKeyBits } from './cert-fields';
import { DerError, encodeTlv, pemBlocks, TAG, toPem } from './der';
import { issueCertificate, keyIdentifier, randomSerial, signerFor, toWholeSecond } from './issue';
import { CERT_BACKDATE_MS } from '../../proto/model/certs';

/** The CA's signing certificate and key, the intermediates above it and the roots the mesh trusts. */
export interface CaMaterial {
  /** The certificate that signs workload certificates (the root itself for a self-signed CA). */
  certPem: string;
  /** Its private key, PKCS#8 PEM. */
  keyPem: string;
  /** Intermediates between the signing certificate and the root, nearest first; neither end included. */
  chainPem: string[];
  /** The self-signed roots the mesh trusts. */
  rootsPem: string[];
}

// Certificates are backdated so that hosts whose clocks run slightly behind
// already accept them (agents time renewals knowing this: proto/model/certs).
export const CLOCK_SKEW_MS = CERT_BACKDATE_MS;

/**
 * Creates a self-signed root CA (RSA 2048, 10 years by default) for a trust
 * domain. The root is itself an SVID of the trust domain (URI SAN
 * `spiffe://<trust-domain>`, the X509-SVID specification's SHOULD for
 * signing certificates). `generation` > 1 (roots made by `kedge ca rotate`)
 * is appended to the common name, so two roots of one mesh never share a
 * subject and chain building cannot confuse them.
 */
export function createRootCa(opts: RootCaOptions): CaMaterial {
  checkRootOptions(opts);
  return rootFromKey(opts, crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }));
}

/** createRootCa with the key made off the event loop (a running federation must keep answering while it makes one). */
export async function createRootCaAsync(opts: RootCaOptions): Promise<CaMaterial> {
  checkRootOptions(opts);
  const pair = await new Promise<{ privateKey: crypto.KeyObject; publicKey: crypto.KeyObject }>((resolve, reject) =>
    crypto.generateKeyPair('rsa', { modulusLength: 2048 }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey }))),
  );
  return rootFromKey(opts, pair);
}

/** What a new root is made for. */
export interface RootCaOptions {
  trustDomain: string;
  now?: Date;
  validityYears?: number;
  generation?: number;
}

function checkRootOptions(opts: RootCaOptions): void {
  if (!isValidTrustDomain(opts.trustDomain)) {
    throw new KedgeError('KEDGE_BAD_IDENTITY', `invalid trust domain "${opts.trustDomain}": use lowercase letters, digits, '-', '.' and '_'`);
  }
  const years = opts.validityYears ?? 10;
  if (!Number.isInteger(years) || years < 1) {
    throw new KedgeError('KEDGE_CA_INVALID', `root CA validity must be a whole number of years >= 1, got ${years}`);
  }
}

function rootFromKey(opts: RootCaOptions, { privateKey, publicKey }: { privateKey: crypto.KeyObject; publicKey: crypto.KeyObject }): CaMaterial {
  const years = opts.validityYears ?? 10;
  const now = (opts.now ?? new Date()).getTime();
  const spkiDer = publicKey.export({ type: 'spki', format: 'der' });
  const notAfter = toWholeSecond(now);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + years);
  const ski = keyIdentifier(spkiPublicKeyBits(spkiDer));
  const der = issueCertificate(
    {
      serialHex: randomSerial(),
      notBefore: toWholeSecond(now - CLOCK_SKEW_MS),
      notAfter,
      subject: [
        { name: 'organizationName', value: 'Kedge' },
        { name: 'commonName', value: `Kedge Root CA ${opts.trustDomain}${(opts.generation ?? 1) > 1 ? ` G${opts.generation}` : ''}` },
      ],
      spkiDer,
      extensions: [
        { name: 'basicConstraints', critical: true, cA: true },
        { name: 'keyUsage', critical: true, keyCertSign: true, cRLSign: true },
        // forge takes a string extnValue as raw DER, and key identifiers as binary strings.
        { name: 'subjectKeyIdentifier', value: encodeTlv(TAG.OCTET_STRING, ski).toString('binary') },
        { name: 'authorityKeyIdentifier', keyIdentifier: ski.toString('binary') },
        // Not critical: the subject is not empty (RFC 5280 4.2.1.6).
        { name: 'subjectAltName', altNames: [{ type: 6, value: `spiffe://${opts.trustDomain}` }] },
      ],
    },
    signerFor(privateKey),
  );
  const certPem = toPem(der, 'CERTIFICATE');
  return { certPem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), chainPem: [], rootsPem: [certPem] };
}

function invalid(message: string, cause?: unknown): KedgeError {
  return new KedgeError('KEDGE_CA_INVALID', message, cause === undefined ? undefined : { cause });
}

/**
 * Loads and validates a plug-in CA: `certFilePem` holds the signing CA
 * certificate followed by its chain up to and including the self-signed root
 * (a single self-signed CA certificate is a root), `keyPem` the signing key.
 * Throws KEDGE_CA_INVALID naming the certificate and what is wrong with it.
 */
export function loadPluggedCa(certFilePem: string, keyPem: string, opts: { now?: Date } = {}): CaMaterial {
  const now = (opts.now ?? new Date()).getTime();
  const ders = pemBlocks(certFilePem, 'CERTIFICATE');
  if (ders.length === 0) throw invalid('--ca-cert holds no "-----BEGIN CERTIFICATE-----" block; give the CA certificate and its chain in PEM');

  const certs = ders.map((der, i) => {
    try {
      return new crypto.X509Certificate(der);
    } catch (err) {
      throw invalid(`certificate #${i + 1} in --ca-cert cannot be parsed; check that the file is not truncated`, err);
    }
  });
  // X509Certificate.subject is undefined (despite its type) for an empty subject.
  const name = (i: number): string => `certificate #${i + 1} in --ca-cert (subject "${(certs[i]!.subject ?? '').replace(/\n/g, ', ')}")`;

  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(keyPem);
  } catch (err) {
    throw invalid('--ca-key cannot be read; give an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)', err);
  }
  if (key.asymmetricKeyType === undefined) throw invalid('--ca-key is not an asymmetric private key');
  signerFor(key); // rejects key types the CA cannot sign with

  certs.forEach((c, i) => {
    const { ca, certSign } = caFlags(c.raw, name(i));
    if (!ca) throw invalid(`${name(i)} is not a CA (basicConstraints CA:TRUE is missing); --ca-cert must start with the CA that signs workload certificates, followed by its issuers`);
    if (!certSign) throw invalid(`${name(i)} has a keyUsage without keyCertSign, so it may not sign certificates`);
    const notBefore = Date.parse(c.validFrom);
    const notAfter = Date.parse(c.validTo);
    if (notAfter <= now) throw invalid(`${name(i)} expired at ${new Date(notAfter).toISOString()}; renew it or plug in a current CA`);
    if (notBefore > now + CLOCK_SKEW_MS) throw invalid(`${name(i)} is not valid until ${new Date(notBefore).toISOString()}; check this host's clock`);
  });
  if (!certs[0]!.checkPrivateKey(key)) throw invalid(`--ca-key does not match ${name(0)}; give the key of the first certificate in --ca-cert`);

  for (let i = 0; i + 1 < certs.length; i++) {
    const child = certs[i]!;
    const parent = certs[i + 1]!;
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      throw invalid(`${name(i)} is not signed by ${name(i + 1)}; order --ca-cert as the signing CA, then its issuer, and so on up to the root`);
    }
  }
  const last = certs.length - 1;
  const root = certs[last]!;
  if (!root.checkIssued(root) || !root.verify(root.publicKey)) {
    throw invalid(`${name(last)} is not self-signed; append the rest of its chain, up to and including the root CA, to --ca-cert`);
  }

  const pems = certs.map((c) => toPem(c.raw, 'CERTIFICATE'));
  return {
    certPem: pems[0]!,
    keyPem: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
    chainPem: pems.slice(1, -1),
    rootsPem: [pems[last]!],
  };
}

function caFlags(der: Buffer, what: string): { ca: boolean; certSign: boolean } {
  try {
    const fields = readCertFields(der);
    return { ca: isCa(fields), certSign: allowsCertSign(fields) };
  } catch (err) {
    if (err instanceof DerError) throw invalid(`${what} is malformed: ${err.message}`, err);
    throw err;
  }
}
