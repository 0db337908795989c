// Plug-in CAs (--ca-cert/--ca-key) made by the real openssl CLI: chains the
// CA accepts and signs under, verified by openssl and by a real mTLS
// handshake, and the operator mistakes loadPluggedCa must name.
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { once } from 'node:events';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { CertificateAuthority, createRootCa, loadPluggedCa } from '../../federation/ca';
import { generateKeyAndCsr } from '../../agent/identity/csr';
import { KedgeError } from '../../proto/model/errors';

const WEB = 'spiffe://corp.example/ns/default/sa/web';
const API = 'spiffe://corp.example/ns/default/sa/api';
const DAY = 86_400_000;

let dir: string;
function openssl(args: string[]): string {
  return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function read(name: string): string {
  return fs.readFileSync(path.join(dir, name), 'utf8');
}
function write(name: string, content: string): string {
  fs.writeFileSync(path.join(dir, name), content);
  return name;
}

interface CaSpec {
  /** Subject in openssl -subj form; may hold UTF-8. */
  subj: string;
  /** Signing CA name; omitted for a self-signed root. */
  issuer?: string;
  key?: string[];
  ext?: string;
}
const CA_EXT = 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n';

/** Makes NAME.key and NAME.crt with openssl, as an operator would. */
function opensslCert(name: string, spec: CaSpec): { certPem: string; keyPem: string } {
  const key = spec.key ?? ['-newkey', 'rsa:2048'];
  write(`${name}.ext`, spec.ext ?? CA_EXT);
  if (spec.issuer === undefined) {
    openssl(['req', '-x509', '-new', '-utf8', ...key, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-subj', spec.subj,
      '-days', '3650', '-config', '/dev/null', '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-addext', 'subjectKeyIdentifier=hash']);
  } else {
    openssl(['req', '-new', '-utf8', ...key, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', spec.subj, '-config', '/dev/null']);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${spec.issuer}.crt`, '-CAkey', `${spec.issuer}.key`,
      '-set_serial', `0x${crypto.randomBytes(12).toString('hex')}`, '-days', '1825', '-extfile', `${name}.ext`, '-out', `${name}.crt`]);
  }
  return { certPem: read(`${name}.crt`), keyPem: read(`${name}.key`) };
}

function opensslVerify(rootPem: string, chain: string[]): string {
  const [leaf, ...intermediates] = chain;
  const args = ['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', write('v-root.pem', rootPem)];
  if (intermediates.length > 0) args.push('-untrusted', write('v-inter.pem', intermediates.join('')));
  args.push(write('v-leaf.pem', leaf!));
  return openssl(args);
}

function expectInvalid(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KedgeError, String(err));
    assert.equal(err.code, 'KEDGE_CA_INVALID', err.message);
    assert.match(err.message, message);
    return true;
  });
}

let root: { certPem: string; keyPem: string };
let inter: { certPem: string; keyPem: string };
let csr: { keyPem: string; csrPem: string };

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-ca-plugged-'));
  // Non-ASCII UTF8String names: the leaf's issuer must be the intermediate's
  // subject byte for byte, or openssl cannot build the chain.
  root = opensslCert('root', { subj: '/O=Société Exemple/CN=Corp Root CA' });
  inter = opensslCert('inter', { subj: '/O=Société Exemple/OU=Mesh/CN=Corp Mesh Intermediate', issuer: 'root',
    ext: CA_EXT.replace('CA:TRUE', 'CA:TRUE,pathlen:0') });
  csr = await generateKeyAndCsr({ spiffeId: WEB });
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('loadPluggedCa: accepted chains', () => {
  it('signs under an RSA intermediate: chain [leaf, intermediate], trust bundle [root], openssl verify passes', () => {
    const material = loadPluggedCa(inter.certPem + root.certPem, inter.keyPem);
    assert.deepEqual(material.chainPem, []);
    assert.equal(material.rootsPem.length, 1);
    assert.equal(new crypto.X509Certificate(material.rootsPem[0]!).fingerprint256, new crypto.X509Certificate(root.certPem).fingerprint256);
    assert.equal(new crypto.X509Certificate(material.certPem).fingerprint256, new crypto.X509Certificate(inter.certPem).fingerprint256);

    const ca = new CertificateAuthority(material, { workloadTtlMs: DAY });
    const res = ca.signCsr(csr.csrPem, WEB);
    assert.equal(res.chainPem.length, 2);
    assert.equal(new crypto.X509Certificate(res.chainPem[1]!).fingerprint256, new crypto.X509Certificate(inter.certPem).fingerprint256);
    assert.deepEqual(ca.trustBundle(), material.rootsPem);
    assert.match(opensslVerify(ca.trustBundle()[0]!, res.chainPem), /v-leaf.pem: OK/);

    const leaf = new crypto.X509Certificate(res.chainPem[0]!);
    const intermediate = new crypto.X509Certificate(res.chainPem[1]!);
    assert.equal(leaf.issuer, intermediate.subject);
    assert.ok(leaf.checkIssued(intermediate) && leaf.verify(intermediate.publicKey));
    assert.ok(intermediate.verify(new crypto.X509Certificate(root.certPem).publicKey));
  });

  it('signs under an EC P-256 intermediate with ECDSA-SHA256', () => {
    const ec = opensslCert('ec-inter', { subj: '/O=Corp/CN=EC Intermediate', issuer: 'root', key: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'] });
    const ca = new CertificateAuthority(loadPluggedCa(ec.certPem + root.certPem, ec.keyPem), { workloadTtlMs: DAY });
    const res = ca.signCsr(csr.csrPem, WEB);
    assert.match(openssl(['x509', '-noout', '-text', '-in', write('ec-leaf.pem', res.chainPem[0]!)]), /Signature Algorithm: ecdsa-with-SHA256/);
    assert.match(opensslVerify(root.certPem, res.chainPem), /OK/);
  });

  it('sends every intermediate of a three-level chain, never the root', () => {
    const issuing = opensslCert('issuing', { subj: '/O=Corp/CN=Issuing CA', issuer: 'root' });
    const sub = opensslCert('sub', { subj: '/O=Corp/CN=Mesh Sub CA', issuer: 'issuing', ext: CA_EXT.replace('CA:TRUE', 'CA:TRUE,pathlen:0') });
    const material = loadPluggedCa(sub.certPem + issuing.certPem + root.certPem, sub.keyPem);
    assert.equal(material.chainPem.length, 1);
    const res = new CertificateAuthority(material, { workloadTtlMs: DAY }).signCsr(csr.csrPem, WEB);
    const fingerprints = res.chainPem.map((p) => new crypto.X509Certificate(p).fingerprint256);
    assert.deepEqual(fingerprints.slice(1), [sub.certPem, issuing.certPem].map((p) => new crypto.X509Certificate(p).fingerprint256));
    assert.match(opensslVerify(root.certPem, res.chainPem), /OK/);
  });

  it('treats a single self-signed CA certificate as the root', () => {
    const material = loadPluggedCa(root.certPem, root.keyPem);
    assert.deepEqual(material.chainPem, []);
    assert.deepEqual(material.rootsPem, [material.certPem]);
    const res = new CertificateAuthority(material, { workloadTtlMs: DAY }).signCsr(csr.csrPem, WEB);
    assert.equal(res.chainPem.length, 1);
    assert.match(opensslVerify(root.certPem, res.chainPem), /OK/);
  });

  it('reloads a root it created itself (the persisted first-start CA)', () => {
    const created = createRootCa({ trustDomain: 'corp.example' });
    const reloaded = loadPluggedCa(created.certPem, created.keyPem);
    assert.deepEqual(reloaded, created);
  });

  it('issues certificates that complete a real mTLS handshake through the intermediate', async () => {
    const ca = new CertificateAuthority(loadPluggedCa(inter.certPem + root.certPem, inter.keyPem), { workloadTtlMs: DAY });
    const server = ca.issueServing(API);
    const client = ca.signCsr(csr.csrPem, WEB);
    // Workload certificates carry no DNS name: peers check the SPIFFE ID instead.
    const spiffeOnly = (_host: string, cert: tls.PeerCertificate): Error | undefined =>
      cert.subjectaltname === `URI:${API}` ? undefined : new Error(`unexpected server identity ${cert.subjectaltname}`);
    const srv = tls.createServer(
      { key: server.keyPem, cert: server.chainPem.join(''), ca: ca.trustBundle(), requestCert: true, rejectUnauthorized: true },
      (socket) => socket.end(socket.getPeerCertificate().subjectaltname ?? 'none'),
    );
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    try {
      const port = (srv.address() as { port: number }).port;
      const socket = tls.connect({ host: '127.0.0.1', port, key: csr.keyPem, cert: client.chainPem.join(''), ca: ca.trustBundle(), checkServerIdentity: spiffeOnly });
      let seen = '';
      socket.setEncoding('utf8').on('data', (d: string) => (seen += d));
      await once(socket, 'end');
      assert.equal(socket.authorized, true, String(socket.authorizationError));
      assert.equal(seen, `URI:${WEB}`, 'the server saw the client identity');
      socket.destroy();
    } finally {
      srv.close();
    }
  });
});

describe('loadPluggedCa: rejected material names what is wrong', () => {
  it('rejects a certificate that is not a CA', () => {
    const leaf = opensslCert('not-ca', { subj: '/CN=just a server', issuer: 'root', ext: 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' });
    expectInvalid(() => loadPluggedCa(leaf.certPem + root.certPem, leaf.keyPem), /certificate #1 in --ca-cert \(subject "CN=just a server"\) is not a CA/);
  });

  it('rejects a CA whose key usage forbids certificate signing', () => {
    const noSign = opensslCert('no-sign', { subj: '/CN=no sign', issuer: 'root', ext: 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature\n' });
    expectInvalid(() => loadPluggedCa(noSign.certPem + root.certPem, noSign.keyPem), /keyUsage without keyCertSign/);
  });

  it('rejects a key that does not match the signing certificate', () => {
    expectInvalid(() => loadPluggedCa(inter.certPem + root.certPem, root.keyPem), /--ca-key does not match certificate #1 .*Corp Mesh Intermediate/);
  });

  it('rejects an expired CA, and an intermediate that expires before the check time', () => {
    const old = createRootCa({ trustDomain: 'corp.example', now: new Date(Date.now() - 11 * 365 * DAY) });
    expectInvalid(() => loadPluggedCa(old.certPem, old.keyPem), /certificate #1 in --ca-cert \(subject "O=Kedge, CN=Kedge Root CA corp.example"\) expired at/);
    expectInvalid(() => loadPluggedCa(inter.certPem + root.certPem, inter.keyPem, { now: new Date(Date.now() + 6 * 365 * DAY) }), /certificate #1 .* expired at/);
  });

  it('rejects a CA that is not valid yet', () => {
    expectInvalid(() => loadPluggedCa(inter.certPem + root.certPem, inter.keyPem, { now: new Date(Date.now() - 2 * DAY) }), /is not valid until .*check this host's clock/);
  });

  it('rejects a chain that does not end in a self-signed root', () => {
    expectInvalid(() => loadPluggedCa(inter.certPem, inter.keyPem), /not self-signed; append the rest of its chain/);
  });

  it('rejects a chain in the wrong order or with a foreign root', () => {
    expectInvalid(() => loadPluggedCa(root.certPem + inter.certPem, root.keyPem), /certificate #1 .* is not signed by certificate #2/);
    const foreign = opensslCert('foreign', { subj: '/O=Société Exemple/CN=Corp Root CA' });
    expectInvalid(() => loadPluggedCa(inter.certPem + foreign.certPem, inter.keyPem), /certificate #1 .* is not signed by certificate #2/);
  });

  it('rejects files that hold no usable certificate or key', () => {
    expectInvalid(() => loadPluggedCa('', inter.keyPem), /holds no "-----BEGIN CERTIFICATE-----" block/);
    expectInvalid(() => loadPluggedCa(inter.keyPem, inter.keyPem), /holds no "-----BEGIN CERTIFICATE-----" block/);
    const corrupt = `-----BEGIN CERTIFICATE-----\n${crypto.randomBytes(300).toString('base64')}\n-----END CERTIFICATE-----\n`;
    expectInvalid(() => loadPluggedCa(corrupt + root.certPem, inter.keyPem), /certificate #1 in --ca-cert cannot be parsed/);
    expectInvalid(() => loadPluggedCa(inter.certPem + root.certPem, 'not a key'), /--ca-key cannot be read/);
    openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-aes256', '-pass', 'pass:secret', '-out', 'enc.key']);
    expectInvalid(() => loadPluggedCa(inter.certPem + root.certPem, read('enc.key')), /--ca-key cannot be read; give an unencrypted PEM private key/);
  });

  it('rejects CA keys the mesh will not sign with', () => {
    const weak = opensslCert('weak', { subj: '/CN=weak root', key: ['-newkey', 'rsa:1024'] });
    expectInvalid(() => loadPluggedCa(weak.certPem, weak.keyPem), /RSA 1024 bits; use RSA 2048 or larger/);
    const ed = opensslCert('ed', { subj: '/CN=ed root', key: ['-newkey', 'ed25519'] });
    expectInvalid(() => loadPluggedCa(ed.certPem, ed.keyPem), /key type ed25519 is not supported/);
  });
});
