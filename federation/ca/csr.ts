// PKCS#10 parsing and verification (RFC 2986). The signature is checked
// natively over the certificationRequestInfo exactly as it was received, and
// the key is parsed once, natively, from the same bytes that will be
// certified. Everything that is wrong with a CSR is KEDGE_BAD_CSR.
import * as crypto from 'node:crypto';
import { KedgeError } from '../../proto/model/errors';
import { bitStringBytes, children, DerError, expectTag, readOid, readOnly, TAG, type Tlv } from './der';
import { OID } from './cert-fields';

/** A verified CSR: what it asks for and the key it proves possession of. */
export interface VerifiedCsr {
  /** URI SANs the CSR requests (its extensionRequest); only ever compared, never copied. */
  requestedUris: string[];
  /** SubjectPublicKeyInfo DER, exactly as signed. */
  spkiDer: Buffer;
  /** The subjectPublicKey bits, for the key identifier. */
  subjectPublicKey: Buffer;
  publicKey: crypto.KeyObject;
}

// An RSA 4096 CSR with a few SANs is under 3 KB of PEM; anything near this
// limit is not a CSR, and refusing it early bounds the work an agent can cause.
export const MAX_CSR_PEM_BYTES = 16 * 1024;
const MIN_RSA_BITS = 2048;
// Larger keys only cost verification time; nobody needs more than this.
const MAX_RSA_BITS = 8192;

// AlgorithmIdentifier { rsaEncryption, NULL } (RFC 3279).
const RSA_ENCRYPTION_ALG_ID = Buffer.from('300d06092a864886f70d0101010500', 'hex');
const KEY_ALGORITHMS: Record<string, string> = {
  '1.2.840.113549.1.1.1': 'RSA',
  '1.2.840.10045.2.1': 'EC',
  '1.3.101.112': 'Ed25519',
  '1.3.101.113': 'Ed448',
  '1.2.840.113549.1.1.10': 'RSA-PSS',
};
const EXTENSION_REQUEST = '1.2.840.113549.1.9.14';
const SIGNATURE_DIGESTS: Record<string, string> = {
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};

function bad(message: string, cause?: unknown): KedgeError {
  return new KedgeError('KEDGE_BAD_CSR', message, cause === undefined ? undefined : { cause });
}

/** Parses and verifies a PEM CSR; throws KEDGE_BAD_CSR saying what is wrong. */
export function verifyCsr(csrPem: string): VerifiedCsr {
  if (typeof csrPem !== 'string' || csrPem.length === 0) throw bad('the CSR is empty; send a PEM "CERTIFICATE REQUEST"');
  if (csrPem.length > MAX_CSR_PEM_BYTES) {
    throw bad(`the CSR is ${csrPem.length} bytes, over the ${MAX_CSR_PEM_BYTES}-byte limit; a Kedge CSR is an RSA key and one URI SAN, about 1 KB`);
  }
  const der = csrDer(csrPem);
  try {
    return verifyCsrDer(der);
  } catch (err) {
    if (err instanceof DerError) throw bad(`the CSR is not valid DER: ${err.message}`, err);
    throw err;
  }
}

function csrDer(pem: string): Buffer {
  const m = /-----BEGIN (NEW )?CERTIFICATE REQUEST-----([A-Za-z0-9+/=\s]*)-----END (NEW )?CERTIFICATE REQUEST-----/.exec(pem);
  if (!m) throw bad('no "-----BEGIN CERTIFICATE REQUEST-----" block found; send the CSR in PEM form');
  const der = Buffer.from((m[2] as string).replace(/\s+/g, ''), 'base64');
  if (der.length === 0) throw bad('the CSR PEM block is empty');
  return der;
}

function verifyCsrDer(der: Buffer): VerifiedCsr {
  const [info, algId, sig, ...rest] = children(readOnly(der, TAG.SEQUENCE, 'CertificationRequest'));
  if (rest.length > 0) throw new DerError('extra fields after the signature');
  const infoTlv = expectTag(info, TAG.SEQUENCE, 'certificationRequestInfo');
  const [version, subject, spki, attributes] = children(infoTlv);
  if (!(expectTag(version, TAG.INTEGER, 'version').content.length === 1 && version?.content[0] === 0)) {
    throw bad('the CSR version is not 1 (v1, encoded 0); generate it with a standard PKCS#10 tool');
  }
  expectTag(subject, TAG.SEQUENCE, 'subject');
  const spkiTlv = expectTag(spki, TAG.SEQUENCE, 'subjectPublicKeyInfo');
  const [keyAlg, keyBits] = children(spkiTlv);
  const subjectPublicKey = bitStringBytes(keyBits, 'subjectPublicKey');
  const publicKey = rsaPublicKey(expectTag(keyAlg, TAG.SEQUENCE, 'public key algorithm'), subjectPublicKey);
  checkKey(publicKey);

  const [algOidTlv, algParams, ...algRest] = children(expectTag(algId, TAG.SEQUENCE, 'signatureAlgorithm'));
  const algOid = readOid(algOidTlv, 'signature algorithm');
  const digest = SIGNATURE_DIGESTS[algOid];
  if (!digest) throw bad(`the CSR signature algorithm ${algOid} is not supported; sign it with RSA and SHA-256 (sha256WithRSAEncryption)`);
  // PKCS#1 v1.5 signature algorithms take NULL or absent parameters (RFC 4055).
  if (algRest.length > 0 || (algParams && !(algParams.tag === TAG.NULL && algParams.content.length === 0))) {
    throw new DerError('signature algorithm parameters must be NULL');
  }
  const signature = bitStringBytes(sig, 'signature');
  let ok = false;
  try {
    ok = crypto.verify(digest, infoTlv.raw, publicKey, signature);
  } catch {
    // a malformed signature value is a failed verification, nothing more
  }
  if (!ok) throw bad('the CSR signature does not verify: the request was altered, or was not signed by the key it carries');

  return { requestedUris: attributes ? requestedUris(attributes) : [], spkiDer: spkiTlv.raw, subjectPublicKey, publicKey };
}

// Importing the RSAPublicKey (PKCS#1) directly is ~10x cheaper than handing
// Node the SubjectPublicKeyInfo, which runs OpenSSL 3's generic decoder
// chain (measured: 14 us against 138 us per key). That is only equivalent
// when the AlgorithmIdentifier is exactly rsaEncryption with NULL
// parameters, which is what every RSA CSR carries and what is certified.
function rsaPublicKey(keyAlg: Tlv, subjectPublicKey: Buffer): crypto.KeyObject {
  if (!keyAlg.raw.equals(RSA_ENCRYPTION_ALG_ID)) {
    const oid = readOid(children(keyAlg)[0], 'public key algorithm');
    const kind = KEY_ALGORITHMS[oid];
    if (kind !== 'RSA') throw bad(`the CSR key is ${kind ?? `of type ${oid}`}; Kedge workload keys are RSA ${MIN_RSA_BITS} bits`);
    throw bad('the CSR key is RSA with non-NULL algorithm parameters; generate the CSR with a standard PKCS#10 tool');
  }
  try {
    readOnly(subjectPublicKey, TAG.SEQUENCE, 'RSAPublicKey'); // no trailing bytes OpenSSL might skip
    return crypto.createPublicKey({ key: subjectPublicKey, format: 'der', type: 'pkcs1' });
  } catch (err) {
    throw bad('the CSR public key cannot be parsed as an RSA key', err);
  }
}

function checkKey(key: crypto.KeyObject): void {
  const d = key.asymmetricKeyDetails ?? {};
  const bits = d.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS) {
    throw bad(`the CSR key is RSA ${bits} bits; use ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits`);
  }
  if ((d.publicExponent ?? 0n) < 65537n) throw bad(`the CSR key has public exponent ${d.publicExponent}; use 65537`);
}

// attributes [0] IMPLICIT SET OF Attribute; the extensionRequest attribute
// (PKCS#9) holds a SET with one Extensions SEQUENCE.
function requestedUris(attributes: Tlv): string[] {
  const uris: string[] = [];
  for (const attr of children(expectTag(attributes, TAG.CONTEXT_0, 'attributes'))) {
    const [type, values] = children(expectTag(attr, TAG.SEQUENCE, 'attribute'));
    if (readOid(type, 'attribute type') !== EXTENSION_REQUEST) continue;
    for (const exts of children(expectTag(values, TAG.SET, 'extensionRequest values'))) {
      for (const ext of children(expectTag(exts, TAG.SEQUENCE, 'requested extensions'))) {
        const parts = children(expectTag(ext, TAG.SEQUENCE, 'requested extension'));
        if (readOid(parts[0], 'extnID') !== OID.subjectAltName) continue;
        const value = expectTag(parts[parts.length - 1], TAG.OCTET_STRING, 'extnValue').content;
        for (const name of children(readOnly(value, TAG.SEQUENCE, 'subjectAltName'))) {
          // Only URIs matter: the CA decides every name in the certificate,
          // and URI is the one kind a CSR could use to claim an identity.
          if (name.tag === TAG.GN_URI) uris.push(name.content.toString('latin1'));
        }
      }
    }
  }
  return uris;
}

/** What a PEM CSR asks for; throws KEDGE_BAD_CSR for garbage, a non-CSR, a bad signature or a key that is not RSA >= 2048. */
export function inspectCsr(csrPem: string): { requestedUris: string[]; publicKeyPem: string } {
  const v = verifyCsr(csrPem);
  return { requestedUris: v.requestedUris, publicKeyPem: v.publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}
