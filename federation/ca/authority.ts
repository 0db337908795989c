// The mesh CA at run time: signs workload CSRs for the identity the caller
// authenticated, and issues the federation's own serving certificate.
import * as crypto from 'node:crypto';
import { KedgeError } from '../../proto/model/errors';
import { parseSpiffeId } from '../../proto/model/spiffe';
import { readCertFields, spkiPublicKeyBits, subjectKeyId, type CertFields } from './cert-fields';
import { verifyCsr } from './csr';
import { encodeTlv, TAG, toPem } from './der';
import { issueCertificate, keyIdentifier, randomSerial, serialForDisplay, signerFor, toWholeSecond, type Signer } from './issue';
import { CLOCK_SKEW_MS, type CaMaterial } from './material';

/** Options for a CertificateAuthority: default workload lifetime and an injectable clock. */
export interface CertificateAuthorityOptions {
  workloadTtlMs: number;
  /** Milliseconds since the epoch; Date.now by default. */
  clock?: () => number;
}

/** A signed workload certificate: leaf first, then intermediates, never the root. */
export interface SignedCertificate {
  chainPem: string[];
  /** Uppercase hex, as X509Certificate.serialNumber reports it. */
  serial: string;
  notAfter: Date;
}

/** A certificate with the private key made for it. */
export interface IssuedKeyPair {
  keyPem: string;
  chainPem: string[];
  notAfter: Date;
}

// Extensions identical in every workload certificate: RFC 5280 requires the
// SAN to be critical when the subject is empty; digitalSignature covers
// (EC)DHE TLS, keyEncipherment RSA key transport.
const WORKLOAD_EXTENSIONS = [
  { name: 'basicConstraints', critical: true, cA: false },
  { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
  { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
];

/** What a serving certificate names besides the SPIFFE ID, and its lifetime. */
export interface ServingOptions {
  ttlMs?: number;
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
}

/** The mesh certificate authority, built once from validated CaMaterial. */
export class CertificateAuthority {
  private readonly signer: Signer;
  private readonly issuerDer: Buffer;
  private readonly authorityKeyId: string | undefined;
  private readonly caNotAfterMs: number;
  private readonly chainTail: string[];
  private readonly roots: string[];
  private readonly workloadTtlMs: number;
  private readonly clock: () => number;

  constructor(material: CaMaterial, opts: CertificateAuthorityOptions) {
    checkTtl(opts.workloadTtlMs);
    let key: crypto.KeyObject;
    let cert: crypto.X509Certificate;
    let fields: CertFields;
    let ski: Buffer | undefined;
    try {
      key = crypto.createPrivateKey(material.keyPem);
      cert = new crypto.X509Certificate(material.certPem);
      fields = readCertFields(cert.raw);
      ski = subjectKeyId(fields);
    } catch (err) {
      throw new KedgeError('KEDGE_CA_INVALID', 'the CA certificate or key cannot be parsed; load plug-in CAs with loadPluggedCa', { cause: err });
    }
    if (!cert.ca) throw new KedgeError('KEDGE_CA_INVALID', 'the CA certificate is not a CA (basicConstraints CA:TRUE with keyCertSign)');
    if (!cert.checkPrivateKey(key)) throw new KedgeError('KEDGE_CA_INVALID', 'the CA key does not match the CA certificate');
    this.signer = signerFor(key);
    this.issuerDer = fields.subjectDer;
    this.authorityKeyId = ski?.toString('binary');
    this.caNotAfterMs = Date.parse(cert.validTo);
    const selfSigned = cert.checkIssued(cert) && cert.verify(cert.publicKey);
    this.chainTail = selfSigned ? [] : [toPem(cert.raw, 'CERTIFICATE'), ...material.chainPem];
    this.roots = [...material.rootsPem];
    this.workloadTtlMs = opts.workloadTtlMs;
    this.clock = opts.clock ?? Date.now;
  }

  /** The roots a workload must trust to verify mesh certificates. */
  trustBundle(): string[] {
    return [...this.roots];
  }

  /**
   * Signs a CSR for `spiffeId`, the identity the caller authenticated. The
   * CSR may request that identity or none; anything else is
   * KEDGE_CSR_IDENTITY_MISMATCH. A malformed, forged or weak CSR is KEDGE_BAD_CSR.
   */
  signCsr(csrPem: string, spiffeId: string, opts: { ttlMs?: number } = {}): SignedCertificate {
    checkIdentity(spiffeId);
    const csr = verifyCsr(csrPem);
    const requested = csr.requestedUris;
    if (requested.length > 1 || (requested.length === 1 && requested[0] !== spiffeId)) {
      throw new KedgeError(
        'KEDGE_CSR_IDENTITY_MISMATCH',
        `the CSR requests ${requested.map((u) => JSON.stringify(u)).join(', ')} but the caller is authorized only for "${spiffeId}"; ` +
          'request that identity (or none) in the CSR, or check which join token or service account the agent uses',
      );
    }
    return this.issue(spiffeId, csr.spkiDer, csr.subjectPublicKey, opts.ttlMs);
  }

  /** Issues the federation's own serving certificate (workload profile) with a freshly made RSA 2048 key. */
  issueServing(spiffeId: string, opts: ServingOptions = {}): IssuedKeyPair {
    checkIdentity(spiffeId);
    return this.issueServingWith(spiffeId, crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }), opts);
  }

  /** issueServing with the key made off the event loop. */
  async issueServingAsync(spiffeId: string, opts: ServingOptions = {}): Promise<IssuedKeyPair> {
    checkIdentity(spiffeId);
    const pair = await new Promise<{ privateKey: crypto.KeyObject; publicKey: crypto.KeyObject }>((resolve, reject) =>
      crypto.generateKeyPair('rsa', { modulusLength: 2048 }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey }))),
    );
    return this.issueServingWith(spiffeId, pair, opts);
  }

  private issueServingWith(spiffeId: string, { privateKey, publicKey }: { privateKey: crypto.KeyObject; publicKey: crypto.KeyObject }, opts: ServingOptions): IssuedKeyPair {
    const spkiDer = publicKey.export({ type: 'spki', format: 'der' });
    const subjectPublicKey = spkiPublicKeyBits(spkiDer);
    // DNS and IP names besides the SPIFFE ID: for the HTTPS API, which curl
    // and browsers check by host name, not by SPIFFE ID.
    const extra = [...(opts.dnsNames ?? []).map((value) => ({ type: 2, value })), ...(opts.ipAddresses ?? []).map((ip) => ({ type: 7, ip }))];
    const signed = this.issue(spiffeId, spkiDer, subjectPublicKey, opts.ttlMs, extra);
    return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), chainPem: signed.chainPem, notAfter: signed.notAfter };
  }

  private issue(spiffeId: string, spkiDer: Buffer, subjectPublicKey: Buffer, ttlMs = this.workloadTtlMs, extraAltNames: object[] = []): SignedCertificate {
    checkTtl(ttlMs);
    const now = this.clock();
    if (now >= this.caNotAfterMs) {
      throw new KedgeError('KEDGE_CA_EXPIRED', `the CA certificate expired at ${new Date(this.caNotAfterMs).toISOString()}; rotate the CA (--ca-cert/--ca-key) or its data dir`);
    }
    // A leaf outliving its issuer would fail verification at the CA's expiry anyway.
    const notAfter = toWholeSecond(Math.min(now + ttlMs, this.caNotAfterMs));
    const serialHex = randomSerial();
    const ski = keyIdentifier(subjectPublicKey);
    const extensions: object[] = [
      ...WORKLOAD_EXTENSIONS,
      { name: 'subjectKeyIdentifier', value: encodeTlv(TAG.OCTET_STRING, ski).toString('binary') },
      { name: 'subjectAltName', critical: true, altNames: [{ type: 6, value: spiffeId }, ...extraAltNames] },
    ];
    if (this.authorityKeyId !== undefined) extensions.push({ name: 'authorityKeyIdentifier', keyIdentifier: this.authorityKeyId });
    const der = issueCertificate(
      { serialHex, notBefore: toWholeSecond(now - CLOCK_SKEW_MS), notAfter, subject: [], issuerDer: this.issuerDer, spkiDer, extensions },
      this.signer,
    );
    return { chainPem: [toPem(der, 'CERTIFICATE'), ...this.chainTail], serial: serialForDisplay(serialHex), notAfter };
  }
}

function checkTtl(ttlMs: number): void {
  if (!Number.isFinite(ttlMs) || ttlMs < 1000) {
    throw new KedgeError('KEDGE_CA_BAD_TTL', `certificate lifetime must be at least 1s, got ${ttlMs}ms; check the workload certificate TTL setting`);
  }
}

// The caller authenticated this identity; a malformed one is a bug upstream,
// and must not end up in a certificate.
function checkIdentity(spiffeId: string): void {
  if (typeof spiffeId !== 'string' || parseSpiffeId(spiffeId) === undefined) {
    throw new KedgeError('KEDGE_BAD_IDENTITY', `"${spiffeId}" is not a Kedge SPIFFE ID (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)`);
  }
}
