// The mesh CA with a self-signed root: certificate contents, verification by
// the real openssl CLI and by Node, CSR checks, lifetimes.
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as forge from 'node-forge';
import { CertificateAuthority, createRootCa, inspectCsr, type CaMaterial } from '../../federation/ca';
import { generateKeyAndCsr } from '../../agent/identity/csr';
import { hasCode, KedgeError } from '../../proto/model/errors';
import { CERT_BACKDATE_MS } from '../../proto/model/certs';

const WEB = 'spiffe://example.org/ns/default/sa/web';
const DB = 'spiffe://example.org/ns/prod/sa/db';
const DAY = 86_400_000;
// A whole second, so certificate times (second precision) compare exactly.
const NOW = Date.UTC(2030, 0, 15, 12, 0, 0);

let dir: string;
function openssl(args: string[]): string {
  return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function write(name: string, content: string): string {
  fs.writeFileSync(path.join(dir, name), content);
  return name;
}
/** Runs `openssl verify`; returns its output, or throws with openssl's complaint. */
function opensslVerify(rootPem: string, chain: string[], extra: string[] = []): string {
  const [leaf, ...intermediates] = chain;
  // -attime: the certificates are issued at the fixed test clock, not today.
  const args = ['verify', '-x509_strict', '-attime', String(NOW / 1000 + 60), ...extra, '-CAfile', write('v-root.pem', rootPem)];
  if (intermediates.length > 0) args.push('-untrusted', write('v-inter.pem', intermediates.join('')));
  args.push(write('v-leaf.pem', leaf!));
  return openssl(args);
}
/** openssl's description of the named extensions of a certificate. */
function extensionText(certPem: string, exts: string): string {
  return openssl(['x509', '-noout', '-ext', exts, '-in', write('ext.pem', certPem)]);
}
function expectCode(code: string, fn: () => unknown, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KedgeError, `expected KedgeError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

let root: CaMaterial;
let ca: CertificateAuthority;
let csrs: { keyPem: string; csrPem: string }[];

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-ca-test-'));
  root = createRootCa({ trustDomain: 'example.org', now: new Date(NOW) });
  ca = new CertificateAuthority(root, { workloadTtlMs: DAY, clock: () => NOW });
  csrs = await Promise.all([generateKeyAndCsr({ spiffeId: WEB }), generateKeyAndCsr(), generateKeyAndCsr({ spiffeId: DB })]);
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('createRootCa', () => {
  it('makes a self-signed RSA 2048 CA valid for 10 years, with a critical CA:true and keyCertSign/cRLSign', () => {
    const cert = new crypto.X509Certificate(root.certPem);
    assert.equal(cert.subject, 'O=Kedge\nCN=Kedge Root CA example.org');
    assert.equal(cert.issuer, cert.subject);
    assert.ok(cert.ca);
    assert.ok(cert.verify(cert.publicKey), 'self-signature verifies');
    assert.ok(cert.checkPrivateKey(crypto.createPrivateKey(root.keyPem)));
    assert.equal(cert.publicKey.asymmetricKeyDetails?.modulusLength, 2048);
    assert.equal(new Date(cert.validFrom).getTime(), NOW - CERT_BACKDATE_MS, 'backdated for clock skew');
    assert.equal(new Date(cert.validTo).toISOString(), '2040-01-15T12:00:00.000Z');
    assert.deepEqual(root.rootsPem, [root.certPem]);
    assert.deepEqual(root.chainPem, []);
    assert.match(root.keyPem, /^-----BEGIN PRIVATE KEY-----/);

    const text = extensionText(root.certPem, 'basicConstraints,keyUsage,subjectKeyIdentifier,authorityKeyIdentifier');
    assert.match(text, /Basic Constraints: critical\n\s+CA:TRUE\n/);
    assert.match(text, /Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
    const ski = /Subject Key Identifier: *\n\s+([0-9A-F:]+)/.exec(text)?.[1];
    assert.ok(ski, text);
    assert.match(text, new RegExp(`Authority Key Identifier: *\\n\\s+(keyid:)?${ski}`));
    // The real CLI accepts it as a trust anchor for itself.
    assert.match(opensslVerify(root.certPem, [root.certPem]), /OK/);
  });

  it('rejects a trust domain that cannot appear in a SPIFFE ID', () => {
    expectCode('KEDGE_BAD_IDENTITY', () => createRootCa({ trustDomain: 'Example Org' }), /trust domain/);
  });
});

describe('signCsr: workload certificate profile', () => {
  it('issues a leaf with an empty subject, exactly one critical URI SAN, CA:false and TLS usages', () => {
    const res = ca.signCsr(csrs[0]!.csrPem, WEB);
    assert.equal(res.chainPem.length, 1, 'a root-signed leaf has no intermediates, and the root is never sent');
    const leaf = new crypto.X509Certificate(res.chainPem[0]!);
    assert.equal(leaf.subject, undefined, 'Node reports an empty subject as undefined');
    assert.equal(openssl(['x509', '-noout', '-subject', '-in', write('subj.pem', res.chainPem[0]!)]), 'subject=\n');
    assert.equal(leaf.subjectAltName, `URI:${WEB}`);
    assert.equal(leaf.ca, false);
    assert.equal(leaf.issuer, 'O=Kedge\nCN=Kedge Root CA example.org');
    const text = extensionText(res.chainPem[0]!, 'basicConstraints,keyUsage,extendedKeyUsage,subjectAltName');
    assert.match(text, /Basic Constraints: critical\n\s+CA:FALSE\n/);
    assert.match(text, /Key Usage: critical\n\s+Digital Signature, Key Encipherment\n/);
    assert.match(text, /Extended Key Usage: *\n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/);
    assert.match(text, new RegExp(`Subject Alternative Name: critical\\n\\s+URI:${WEB}\\n`));
  });

  it('certifies the key from the CSR, and the agent key matches the leaf', () => {
    const res = ca.signCsr(csrs[0]!.csrPem, WEB);
    const leaf = new crypto.X509Certificate(res.chainPem[0]!);
    assert.ok(leaf.checkPrivateKey(crypto.createPrivateKey(csrs[0]!.keyPem)));
    assert.equal(leaf.publicKey.export({ type: 'spki', format: 'pem' }), inspectCsr(csrs[0]!.csrPem).publicKeyPem);
  });

  it('gives the leaf a lifetime of exactly the TTL from now, backdated for clock skew', () => {
    for (const [ttlMs, expected] of [
      [undefined, DAY],
      [3_600_000, 3_600_000],
      [90_000, 90_000],
    ] as const) {
      const res = ca.signCsr(csrs[1]!.csrPem, WEB, ttlMs === undefined ? {} : { ttlMs });
      const leaf = new crypto.X509Certificate(res.chainPem[0]!);
      assert.equal(new Date(leaf.validTo).getTime() - NOW, expected, `ttl ${ttlMs}`);
      assert.equal(res.notAfter.getTime(), NOW + expected);
      assert.equal(new Date(leaf.validFrom).getTime(), NOW - CERT_BACKDATE_MS);
    }
  });

  it('uses random, positive, 128-bit serials that never repeat', () => {
    const serials = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const res = ca.signCsr(csrs[1]!.csrPem, WEB);
      const leaf = new crypto.X509Certificate(res.chainPem[0]!);
      assert.equal(res.serial, leaf.serialNumber);
      assert.ok(BigInt(`0x${res.serial}`) > 0n && BigInt(`0x${res.serial}`) < 2n ** 128n, res.serial);
      serials.add(res.serial);
    }
    assert.equal(serials.size, 300);
    // 300 serials of 128 random bits: some top bits are set (DER needs a
    // leading zero octet there), which openssl must still parse as positive.
    const text = openssl(['x509', '-noout', '-serial', '-in', write('s.pem', ca.signCsr(csrs[1]!.csrPem, WEB).chainPem[0]!)]);
    assert.match(text, /^serial=[0-9A-F]+\n$/);
  });

  it('verifies with openssl verify (strict, as TLS client and server) and with Node', () => {
    const res = ca.signCsr(csrs[0]!.csrPem, WEB);
    assert.match(opensslVerify(root.rootsPem[0]!, res.chainPem), /v-leaf.pem: OK/);
    assert.match(opensslVerify(root.rootsPem[0]!, res.chainPem, ['-purpose', 'sslclient']), /OK/);
    assert.match(opensslVerify(root.rootsPem[0]!, res.chainPem, ['-purpose', 'sslserver']), /OK/);
    const leaf = new crypto.X509Certificate(res.chainPem[0]!);
    const rootCert = new crypto.X509Certificate(ca.trustBundle()[0]!);
    assert.ok(leaf.checkIssued(rootCert));
    assert.ok(leaf.verify(rootCert.publicKey));
  });

  it('is rejected by openssl verify under another root (the check is real)', () => {
    const other = createRootCa({ trustDomain: 'example.org', now: new Date(NOW) });
    const res = ca.signCsr(csrs[0]!.csrPem, WEB);
    assert.throws(() => opensslVerify(other.certPem, res.chainPem), /unable to get local issuer certificate/);
  });

  it('signs a CSR that requests nothing with the authorized identity', () => {
    assert.deepEqual(inspectCsr(csrs[1]!.csrPem).requestedUris, []);
    const leaf = new crypto.X509Certificate(ca.signCsr(csrs[1]!.csrPem, DB).chainPem[0]!);
    assert.equal(leaf.subjectAltName, `URI:${DB}`);
  });

  it('accepts a CSR made by openssl req, certifying only the authorized identity', () => {
    openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'o.key', '-out', 'o.csr', '-subj', '/CN=ignored/O=ignored',
      '-addext', `subjectAltName=URI:${WEB},DNS:evil.example.com`]);
    const res = ca.signCsr(fs.readFileSync(path.join(dir, 'o.csr'), 'utf8'), WEB);
    const leaf = new crypto.X509Certificate(res.chainPem[0]!);
    assert.equal(leaf.subject, undefined, 'the CSR subject is never copied');
    assert.equal(leaf.subjectAltName, `URI:${WEB}`, 'nor its DNS names');
    assert.ok(leaf.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(path.join(dir, 'o.key')))));
    assert.match(opensslVerify(root.certPem, res.chainPem), /OK/);
  });

  it('refuses to sign for a malformed identity', () => {
    expectCode('KEDGE_BAD_IDENTITY', () => ca.signCsr(csrs[1]!.csrPem, 'spiffe://example.org/anything'));
    expectCode('KEDGE_BAD_IDENTITY', () => ca.signCsr(csrs[1]!.csrPem, ''));
  });

  it('refuses a lifetime under a second', () => {
    expectCode('KEDGE_CA_BAD_TTL', () => ca.signCsr(csrs[1]!.csrPem, WEB, { ttlMs: 0 }));
    expectCode('KEDGE_CA_BAD_TTL', () => ca.signCsr(csrs[1]!.csrPem, WEB, { ttlMs: Number.NaN }));
    expectCode('KEDGE_CA_BAD_TTL', () => new CertificateAuthority(root, { workloadTtlMs: -1 }));
  });
});

describe('signCsr: identity binding', () => {
  it('rejects a CSR for another identity, naming both', () => {
    expectCode('KEDGE_CSR_IDENTITY_MISMATCH', () => ca.signCsr(csrs[2]!.csrPem, WEB), new RegExp(`requests "${DB}".*authorized only for "${WEB}"`));
  });

  it('rejects a CSR that asks for the authorized identity plus another', () => {
    openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'two.key', '-out', 'two.csr', '-subj', '/',
      '-addext', `subjectAltName=URI:${WEB},URI:${DB}`]);
    const csr = fs.readFileSync(path.join(dir, 'two.csr'), 'utf8');
    assert.deepEqual(inspectCsr(csr).requestedUris, [WEB, DB]);
    expectCode('KEDGE_CSR_IDENTITY_MISMATCH', () => ca.signCsr(csr, WEB));
  });
});

describe('signCsr: hostile input', () => {
  // A CSR whose bytes are changed after signing.
  function tamper(csrPem: string, edit: (der: Buffer) => void): string {
    const der = pemBody(csrPem);
    edit(der);
    return csrPemOf(der);
  }

  it('rejects a CSR whose signature has a flipped bit', () => {
    const forged = tamper(csrs[0]!.csrPem, (der) => {
      der[der.length - 10]! ^= 0x01;
    });
    expectCode('KEDGE_BAD_CSR', () => ca.signCsr(forged, WEB), /signature does not verify/);
    expectCode('KEDGE_BAD_CSR', () => inspectCsr(forged));
  });

  it('rejects a CSR whose public key was swapped for another (proof of possession fails)', () => {
    // Keep the victim's identity and signature, present the attacker's key:
    // CertificationRequest { info { version, subject, spki, attributes }, alg, sig }.
    const victim = forge.asn1.fromDer(pemBody(csrs[0]!.csrPem).toString('binary'));
    const attacker = forge.asn1.fromDer(pemBody(csrs[1]!.csrPem).toString('binary'));
    const info = (victim.value as forge.asn1.Asn1[])[0]!.value as forge.asn1.Asn1[];
    info[2] = ((attacker.value as forge.asn1.Asn1[])[0]!.value as forge.asn1.Asn1[])[2]!;
    const forged = csrPemOf(Buffer.from(forge.asn1.toDer(victim).getBytes(), 'binary'));
    assert.notEqual(inspectCsr(csrs[1]!.csrPem).publicKeyPem, inspectCsr(csrs[0]!.csrPem).publicKeyPem);
    assert.equal(forge.pki.certificationRequestFromPem(forged).getAttribute({ name: 'extensionRequest' })?.extensions?.[0]?.altNames?.[0]?.value, WEB,
      'the forged CSR still asks for the victim identity');
    expectCode('KEDGE_BAD_CSR', () => ca.signCsr(forged, WEB), /not signed by the key it carries/);
  });

  it('rejects every single-byte corruption of a valid CSR without crashing', () => {
    const der = pemBody(csrs[0]!.csrPem);
    let rejected = 0;
    for (let i = 0; i < der.length; i++) {
      const bad = Buffer.from(der);
      bad[i]! ^= 0x01;
      expectCode('KEDGE_BAD_CSR', () => ca.signCsr(csrPemOf(bad), WEB));
      rejected++;
    }
    assert.equal(rejected, der.length);
  });

  it('rejects garbage, empty, non-CSR and oversized input with KEDGE_BAD_CSR', () => {
    const cases: [string, string, RegExp][] = [
      ['empty', '', /empty/],
      ['text', 'hello world', /no "-----BEGIN CERTIFICATE REQUEST-----" block/],
      ['empty block', '-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n', /empty/],
      ['random DER', csrPemOf(crypto.randomBytes(600)), /not valid DER|version|key/],
      ['truncated', csrs[0]!.csrPem.slice(0, 300) + '\n-----END CERTIFICATE REQUEST-----\n', /not valid DER/],
      ['a certificate', root.certPem, /no "-----BEGIN CERTIFICATE REQUEST-----" block/],
      ['a certificate relabelled as a CSR', root.certPem.replace(/CERTIFICATE/g, 'CERTIFICATE REQUEST'), /not valid DER|version/],
      ['1 MB', 'A'.repeat(1024 * 1024), /over the 16384-byte limit/],
      ['1 MB inside a PEM block', `-----BEGIN CERTIFICATE REQUEST-----\n${'QUFB'.repeat(262_144)}\n-----END CERTIFICATE REQUEST-----\n`, /limit/],
    ];
    for (const [name, input, message] of cases) {
      expectCode('KEDGE_BAD_CSR', () => ca.signCsr(input, WEB), message);
      assert.ok(hasCode(catchErr(() => inspectCsr(input)), 'KEDGE_BAD_CSR'), name);
    }
    expectCode('KEDGE_BAD_CSR', () => ca.signCsr(undefined as unknown as string, WEB));
  });

  it('rejects weak and non-RSA keys from openssl req, saying what to use', () => {
    const cases: [string[], RegExp][] = [
      [['-newkey', 'rsa:1024'], /RSA 1024 bits; use 2048/],
      [['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'], /key is EC; Kedge workload keys are RSA 2048/],
      [['-newkey', 'ed25519'], /key is Ed25519/],
    ];
    for (const [keyArgs, message] of cases) {
      openssl(['req', '-new', ...keyArgs, '-nodes', '-keyout', 'w.key', '-out', 'w.csr', '-subj', '/CN=w']);
      expectCode('KEDGE_BAD_CSR', () => ca.signCsr(fs.readFileSync(path.join(dir, 'w.csr'), 'utf8'), WEB), message);
    }
  });

  it('rejects a CSR signed with SHA-1', () => {
    openssl(['req', '-new', '-newkey', 'rsa:2048', '-sha1', '-nodes', '-keyout', 's1.key', '-out', 's1.csr', '-subj', '/CN=w']);
    expectCode('KEDGE_BAD_CSR', () => ca.signCsr(fs.readFileSync(path.join(dir, 's1.csr'), 'utf8'), WEB), /1\.2\.840\.113549\.1\.1\.5 is not supported/);
  });
});

describe('CA lifetime', () => {
  it('never issues a leaf outliving the CA', () => {
    const caNotAfter = new Date(new crypto.X509Certificate(root.certPem).validTo).getTime();
    const late = new CertificateAuthority(root, { workloadTtlMs: DAY, clock: () => caNotAfter - 3_600_000 });
    const res = late.signCsr(csrs[0]!.csrPem, WEB);
    assert.equal(res.notAfter.getTime(), caNotAfter);
    assert.equal(new Date(new crypto.X509Certificate(res.chainPem[0]!).validTo).getTime(), caNotAfter);
  });

  it('refuses to sign once the CA has expired', () => {
    const caNotAfter = new Date(new crypto.X509Certificate(root.certPem).validTo).getTime();
    const expired = new CertificateAuthority(root, { workloadTtlMs: DAY, clock: () => caNotAfter });
    expectCode('KEDGE_CA_EXPIRED', () => expired.signCsr(csrs[0]!.csrPem, WEB), /expired at 2040-01-15T12:00:00.000Z/);
  });
});

describe('issueServing', () => {
  it("issues the federation's own certificate with a fresh key, in the workload profile", () => {
    const id = 'spiffe://example.org/ns/kedge-system/sa/kedge-federation';
    const res = ca.issueServing(id, { ttlMs: 3_600_000 });
    const leaf = new crypto.X509Certificate(res.chainPem[0]!);
    assert.equal(leaf.subjectAltName, `URI:${id}`);
    assert.equal(leaf.ca, false);
    assert.ok(leaf.checkPrivateKey(crypto.createPrivateKey(res.keyPem)));
    assert.equal(crypto.createPrivateKey(res.keyPem).asymmetricKeyDetails?.modulusLength, 2048);
    assert.equal(res.notAfter.getTime(), NOW + 3_600_000);
    assert.match(opensslVerify(root.certPem, res.chainPem, ['-purpose', 'sslserver']), /OK/);
  });
});

describe('CertificateAuthority construction', () => {
  it('rejects a key that does not belong to the certificate', () => {
    const other = createRootCa({ trustDomain: 'example.org' });
    expectCode('KEDGE_CA_INVALID', () => new CertificateAuthority({ ...root, keyPem: other.keyPem }, { workloadTtlMs: DAY }));
  });
});

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

function csrPemOf(der: Buffer): string {
  return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
}

function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}
