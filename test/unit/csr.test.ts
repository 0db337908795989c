// The agent's key and CSR, checked by the real openssl CLI, and reading back
// a signed chain.
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { generateKeyAndCsr, parseCertChain } from '../../agent/identity/csr';
import { CertificateAuthority, createRootCa, inspectCsr } from '../../federation/ca';
import { KedgeError } from '../../proto/model/errors';
import { CERT_BACKDATE_MS } from '../../proto/model/certs';

const WEB = 'spiffe://example.org/ns/default/sa/web';

let dir: string;
/** openssl's stdout and stderr; `req -verify` reports a bad signature on stderr with exit status 0. */
function openssl(args: string[], input?: string): string {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout + r.stderr;
}
function expectBadCert(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof KedgeError && err.code === 'KEDGE_BAD_CERT' && message.test(err.message));
}

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-csr-test-'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('generateKeyAndCsr', () => {
  it('makes an RSA 2048 PKCS#8 key and a CSR openssl verifies, requesting the SPIFFE ID as the only URI SAN', async () => {
    const { keyPem, csrPem } = await generateKeyAndCsr({ spiffeId: WEB });
    assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    const key = crypto.createPrivateKey(keyPem);
    assert.equal(key.asymmetricKeyType, 'rsa');
    assert.equal(key.asymmetricKeyDetails?.modulusLength, 2048);

    const text = openssl(['req', '-noout', '-text', '-verify'], csrPem);
    assert.match(text, /self-signature verify OK/);
    assert.match(text, /Subject: *\n/, 'empty subject');
    assert.match(text, new RegExp(`Subject Alternative Name: critical\\n\\s+URI:${WEB}\\n`));
    // The CSR proves possession of exactly this key.
    assert.equal(inspectCsr(csrPem).publicKeyPem, crypto.createPublicKey(key).export({ type: 'spki', format: 'pem' }));
    assert.deepEqual(inspectCsr(csrPem).requestedUris, [WEB]);
  });

  it('requests no extensions without a SPIFFE ID', async () => {
    const { csrPem } = await generateKeyAndCsr();
    assert.match(openssl(['req', '-noout', '-verify'], csrPem), /self-signature verify OK/);
    // (openssl req -text prints a "Requested Extensions:" header even when there are none.)
    assert.doesNotMatch(openssl(['asn1parse'], csrPem), /Extension Request/);
    assert.deepEqual(inspectCsr(csrPem).requestedUris, []);
  });

  it('makes a fresh key every time', async () => {
    const [a, b] = await Promise.all([generateKeyAndCsr(), generateKeyAndCsr()]);
    assert.notEqual(a.keyPem, b.keyPem);
  });
});

describe('parseCertChain', () => {
  it('reads identity, serial and validity of the leaf (the first certificate)', async () => {
    const root = createRootCa({ trustDomain: 'example.org' });
    const ca = new CertificateAuthority(root, { workloadTtlMs: 3_600_000 });
    const { csrPem } = await generateKeyAndCsr({ spiffeId: WEB });
    const signed = ca.signCsr(csrPem, WEB);
    // Leaf first, then something else: only the first certificate counts.
    const info = parseCertChain(signed.chainPem[0]! + root.certPem);
    assert.equal(info.spiffeId, WEB);
    assert.equal(info.serial, signed.serial);
    assert.equal(info.notAfter.getTime(), signed.notAfter.getTime());
    const leaf = new crypto.X509Certificate(signed.chainPem[0]!);
    assert.equal(info.notBefore.getTime(), new Date(leaf.validFrom).getTime());
    assert.equal(info.notAfter.getTime() - info.notBefore.getTime(), 3_600_000 + CERT_BACKDATE_MS, 'the lifetime asked for, plus the backdating for clock skew');
  });

  it('rejects certificates without exactly one SPIFFE URI SAN, naming what they have', () => {
    const cases: [string, string, RegExp][] = [
      ['no SAN', '', /it has none/],
      ['DNS only', 'subjectAltName=DNS:web.example.org', /it has none/],
      ['two URIs', `subjectAltName=URI:${WEB},URI:spiffe://example.org/ns/default/sa/db`, /it has spiffe:\/\/example.org\/ns\/default\/sa\/web, spiffe/],
      ['not a SPIFFE ID', 'subjectAltName=URI:https://example.org/web', /it has https:\/\/example.org\/web/],
    ];
    for (const [name, ext, message] of cases) {
      const args = ['req', '-x509', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'k.pem', '-out', 'c.pem', '-subj', '/CN=test', '-days', '1'];
      if (ext) args.push('-addext', ext);
      openssl(args);
      const pem = fs.readFileSync(path.join(dir, 'c.pem'), 'utf8');
      assert.throws(() => parseCertChain(pem), (err: unknown) => err instanceof KedgeError && err.code === 'KEDGE_BAD_CERT' && message.test(err.message), name);
    }
  });

  it('rejects input that is not a certificate', () => {
    expectBadCert(() => parseCertChain(''), /cannot be parsed/);
    expectBadCert(() => parseCertChain('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), /cannot be parsed/);
  });
});
