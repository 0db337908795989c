// Certificate assembly: node-forge lays out the TBSCertificate (version,
// validity, names, extensions), Node's native crypto signs it.
//
// Why the split: forge's pure-JS RSA signing manages ~40 certificates per
// second, native signing well over ten times that (docs/BENCHMARKS.md).
// Three TBS fields are spliced in as verified DER instead of letting forge
// re-encode them:
//   - the issuer name, byte-identical to the CA certificate's subject, which
//     chain building matches on (a re-encoded plug-in CA name could differ in
//     string types);
//   - the subject public key, byte-identical to the key whose CSR signature
//     was verified, so forge never has to parse it;
//   - the signature AlgorithmIdentifier, which forge writes with NULL
//     parameters even for ECDSA (RFC 5758 requires them absent).
import * as crypto from 'node:crypto';
import * as forge from 'node-forge';
import { KedgeError } from '../../proto/model/errors';
import { children, encodeTlv, readOnly, TAG } from './der';

/** A CA private key with the matching X.509 signature algorithm. */
export interface Signer {
  key: crypto.KeyObject;
  /** Digest name for crypto.sign. */
  digest: string;
  /** Dotted OID of the signature algorithm, for messages and forge. */
  algorithmOid: string;
  /** The DER AlgorithmIdentifier written in the TBS and the certificate. */
  algorithmIdDer: Buffer;
}

const SHA256_WITH_RSA = '1.2.840.113549.1.1.11';
const ALG_ID = {
  // sha256WithRSAEncryption, NULL parameters (RFC 4055).
  rsaSha256: Buffer.from('300d06092a864886f70d01010b0500', 'hex'),
  // ecdsa-with-SHA256 / SHA384, parameters absent (RFC 5758).
  ecdsaSha256: Buffer.from('300a06082a8648ce3d040302', 'hex'),
  ecdsaSha384: Buffer.from('300a06082a8648ce3d040303', 'hex'),
};

/**
 * The signer for a CA key; throws KEDGE_CA_INVALID for key types the mesh
 * cannot use (RSA < 2048 bits, curves other than P-256/P-384, EdDSA).
 */
export function signerFor(key: crypto.KeyObject): Signer {
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa') {
    if ((d.modulusLength ?? 0) < 2048) {
      throw new KedgeError('KEDGE_CA_INVALID', `the CA key is RSA ${d.modulusLength ?? '?'} bits; use RSA 2048 or larger, or EC P-256/P-384`);
    }
    return { key, digest: 'sha256', algorithmOid: SHA256_WITH_RSA, algorithmIdDer: ALG_ID.rsaSha256 };
  }
  if (key.asymmetricKeyType === 'ec' && d.namedCurve === 'prime256v1') {
    return { key, digest: 'sha256', algorithmOid: '1.2.840.10045.4.3.2', algorithmIdDer: ALG_ID.ecdsaSha256 };
  }
  if (key.asymmetricKeyType === 'ec' && d.namedCurve === 'secp384r1') {
    return { key, digest: 'sha384', algorithmOid: '1.2.840.10045.4.3.3', algorithmIdDer: ALG_ID.ecdsaSha384 };
  }
  const what = key.asymmetricKeyType === 'ec' ? `EC ${d.namedCurve ?? '?'}` : String(key.asymmetricKeyType);
  throw new KedgeError('KEDGE_CA_INVALID', `the CA key type ${what} is not supported; use RSA 2048 or larger, or EC P-256/P-384`);
}

/** What goes into one certificate; names and extensions in forge's form. */
export interface CertificateSpec {
  /** Positive DER INTEGER content as hex (see randomSerial). */
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  /** Subject attributes; [] for workload certificates. */
  subject: forge.pki.CertificateField[];
  /** The issuing CA's subject as DER; omitted for a self-signed certificate (issuer = subject). */
  issuerDer?: Buffer;
  /** The certified key as SubjectPublicKeyInfo DER. */
  spkiDer: Buffer;
  extensions: object[];
}

// forge's getTBSCertificate insists on an RSA key object to encode; the real
// SubjectPublicKeyInfo replaces it (see the header comment).
const PLACEHOLDER_KEY = forge.pki.setRsaPublicKey(new forge.jsbn.BigInteger('1'), new forge.jsbn.BigInteger('1'));

// Present in node-forge since 0.7 but missing from @types/node-forge.
const getTBSCertificate = (forge.pki as unknown as { getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate;

// TBSCertificate children, all present in what forge writes for a v3 certificate.
const TBS_SIGNATURE = 2;
const TBS_ISSUER = 3;
const TBS_SPKI = 6;

/** Builds and signs a certificate; returns its DER. */
export function issueCertificate(spec: CertificateSpec, signer: Signer): Buffer {
  const cert = forge.pki.createCertificate();
  cert.serialNumber = spec.serialHex;
  cert.validity.notBefore = spec.notBefore;
  cert.validity.notAfter = spec.notAfter;
  cert.setSubject(spec.subject);
  cert.setIssuer(spec.subject);
  cert.publicKey = PLACEHOLDER_KEY;
  cert.siginfo.algorithmOid = SHA256_WITH_RSA;
  cert.setExtensions(spec.extensions);
  const forgeTbs = Buffer.from(forge.asn1.toDer(getTBSCertificate(cert)).getBytes(), 'binary');

  const parts = children(readOnly(forgeTbs, TAG.SEQUENCE, 'TBSCertificate')).map((t) => t.raw);
  parts[TBS_SIGNATURE] = signer.algorithmIdDer;
  if (spec.issuerDer) parts[TBS_ISSUER] = spec.issuerDer;
  parts[TBS_SPKI] = spec.spkiDer;
  const tbs = encodeTlv(TAG.SEQUENCE, Buffer.concat(parts));

  // ECDSA signatures come out DER-encoded (Node's default dsaEncoding), as X.509 wants.
  const signature = crypto.sign(signer.digest, tbs, signer.key);
  const sigBits = encodeTlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([0]), signature]));
  return encodeTlv(TAG.SEQUENCE, Buffer.concat([tbs, signer.algorithmIdDer, sigBits]));
}

// Serials draw from a pooled buffer: crypto.randomBytes costs ~8 us a call
// whatever the size, a measurable share of one signing.
const SERIAL_BYTES = 16;
const pool = Buffer.alloc(SERIAL_BYTES * 256);
let poolOffset = pool.length;

/**
 * A random 128-bit positive serial (RFC 5280 allows up to 20 octets) as the
 * minimal DER INTEGER content in hex: leading zero octets dropped, one zero
 * octet prepended when the top bit is set so the number stays positive.
 */
export function randomSerial(): string {
  for (;;) {
    if (poolOffset === pool.length) {
      crypto.randomFillSync(pool);
      poolOffset = 0;
    }
    const b = pool.subarray(poolOffset, poolOffset + SERIAL_BYTES);
    poolOffset += SERIAL_BYTES;
    let i = 0;
    while (i < b.length && b[i] === 0) i++;
    if (i === b.length) continue; // zero is not a valid serial; odds 2^-128
    const hex = b.subarray(i).toString('hex');
    return ((b[i] as number) & 0x80 ? '00' : '') + hex;
  }
}

/** A serial as Node's X509Certificate.serialNumber reports it: uppercase hex, no sign octet. */
export function serialForDisplay(serialHex: string): string {
  return serialHex.replace(/^(00)+/, '').toUpperCase();
}

/** The key identifier of RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(subjectPublicKey: Buffer): Buffer {
  return crypto.createHash('sha1').update(subjectPublicKey).digest();
}

/** Rounds down to a whole second, as certificate times are encoded. */
export function toWholeSecond(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}
