// The few raw fields of a CA certificate that Node's X509Certificate does not
// expose: the subject as DER (copied into issued certificates' issuer), the
// subject key identifier (copied into their authority key identifier) and
// key usage.
import { bitStringBytes, children, expectTag, readOid, readOnly, TAG } from './der';

/** One X.509 extension: its OID, criticality and extnValue contents. */
export interface Extension {
  critical: boolean;
  value: Buffer;
}

/** The DER fields of a certificate that the CA copies or checks. */
export interface CertFields {
  subjectDer: Buffer;
  /** The subjectPublicKey bits inside the SubjectPublicKeyInfo. */
  subjectPublicKey: Buffer;
  /** Extensions by dotted OID. */
  extensions: Map<string, Extension>;
}

export const OID = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  basicConstraints: '2.5.29.19',
  subjectAltName: '2.5.29.17',
} as const;

/** Reads a certificate's subject, public key bits and extensions; throws DerError. */
export function readCertFields(der: Buffer): CertFields {
  const [tbs] = children(readOnly(der, TAG.SEQUENCE, 'Certificate'));
  const f = children(expectTag(tbs, TAG.SEQUENCE, 'TBSCertificate'));
  // version [0] is absent in v1 certificates.
  const at = f[0]?.tag === TAG.CONTEXT_0 ? 1 : 0;
  const subject = expectTag(f[at + 4], TAG.SEQUENCE, 'subject');
  const spki = children(expectTag(f[at + 5], TAG.SEQUENCE, 'subjectPublicKeyInfo'));
  const extensions = new Map<string, Extension>();
  const extWrapper = f.slice(at + 6).find((t) => t.tag === TAG.CONTEXT_3);
  if (extWrapper) {
    const [seq] = children(extWrapper);
    for (const ext of children(expectTag(seq, TAG.SEQUENCE, 'extensions'))) {
      const parts = children(expectTag(ext, TAG.SEQUENCE, 'extension'));
      const critical = parts.length === 3 && parts[1]?.tag === TAG.BOOLEAN && parts[1].content[0] !== 0;
      const value = expectTag(parts[parts.length - 1], TAG.OCTET_STRING, 'extnValue').content;
      extensions.set(readOid(parts[0], 'extnID'), { critical, value });
    }
  }
  return { subjectDer: subject.raw, subjectPublicKey: bitStringBytes(spki[1], 'subjectPublicKey'), extensions };
}

/** The subjectPublicKey bits of a SubjectPublicKeyInfo DER. */
export function spkiPublicKeyBits(spkiDer: Buffer): Buffer {
  return bitStringBytes(children(readOnly(spkiDer, TAG.SEQUENCE, 'subjectPublicKeyInfo'))[1], 'subjectPublicKey');
}

/** The subject key identifier's bytes, when the certificate carries one. */
export function subjectKeyId(fields: CertFields): Buffer | undefined {
  const ext = fields.extensions.get(OID.subjectKeyIdentifier);
  return ext ? readOnly(ext.value, TAG.OCTET_STRING, 'subjectKeyIdentifier').content : undefined;
}

/**
 * Whether key usage allows signing certificates: true when the extension is
 * absent (RFC 5280 then places no restriction) or has keyCertSign (bit 5).
 */
export function allowsCertSign(fields: CertFields): boolean {
  const ext = fields.extensions.get(OID.keyUsage);
  if (!ext) return true;
  const bits = readOnly(ext.value, TAG.BIT_STRING, 'keyUsage').content;
  const first = bits[1] ?? 0;
  return (first & 0x04) !== 0;
}

/** Whether basicConstraints says CA:TRUE (X509Certificate.ca also folds in key usage). */
export function isCa(fields: CertFields): boolean {
  const ext = fields.extensions.get(OID.basicConstraints);
  if (!ext) return false;
  const [flag] = children(readOnly(ext.value, TAG.SEQUENCE, 'basicConstraints'));
  return flag?.tag === TAG.BOOLEAN && flag.content[0] !== 0;
}
