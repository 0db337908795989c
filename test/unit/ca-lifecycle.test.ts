// The pure parts of the CA lifecycle: the root's SPIFFE ID, key wrapping
// under a key-encryption key, the stored state and the steps of a rotation,
// the SPIFFE bundle document, and where the key-encryption key comes from.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRootCa } from '../../federation/ca';
import { isWrappedKey, unwrapKey, wrapKey } from '../../federation/ca/key-wrap';
import { obtainKek } from '../../federation/ca/kek';
import {
  advanceRotation, finishRotation, fingerprintOf, initialState, parseCaState, requestReissue, rotationBlockers, servingRoot, startRotation, trustedRoots,
  type AgentCaView, type CaState, type StoredRoot,
} from '../../federation/ca/state';
import { spiffeBundle } from '../../federation/ca/spiffe-bundle';
import { resolveFederationConfig } from '../../federation/config';
import { hasCode, KedgeError } from '../../proto/model/errors';

const KEK = Buffer.from('a-key-encryption-key-of-32-bytes');
const rootA = createRootCa({ trustDomain: 'example.org' });
const rootB = createRootCa({ trustDomain: 'example.org', generation: 2 });
const stored = (m: { certPem: string; keyPem: string }): StoredRoot => ({ certPem: m.certPem, key: { pem: m.keyPem } });
const A = fingerprintOf(rootA.certPem);
const B = fingerprintOf(rootB.certPem);
const NOW = new Date('2030-01-01T00:00:00Z');

function expectCode(fn: () => unknown, code: string, re?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(hasCode(err, code), `expected ${code}, got ${(err as KedgeError).code}: ${(err as Error).message}`);
    if (re) assert.match((err as Error).message, re);
    return true;
  });
}

describe('root CA', () => {
  it('is an SVID of its trust domain: URI SAN spiffe://<trust-domain>, not critical, beside CA:TRUE and keyCertSign', () => {
    const cert = new crypto.X509Certificate(rootA.certPem);
    assert.equal(cert.subjectAltName, 'URI:spiffe://example.org');
    assert.equal(cert.ca, true);
    assert.equal(cert.subject, 'O=Kedge\nCN=Kedge Root CA example.org');
    assert.equal(new crypto.X509Certificate(rootB.certPem).subject, 'O=Kedge\nCN=Kedge Root CA example.org G2', 'a rotated root has its own subject');
  });
});

describe('CA key wrapping', () => {
  it('round-trips, and the record holds no plaintext', () => {
    const w = wrapKey(rootA.keyPem, KEK, A);
    assert.ok(isWrappedKey(w));
    assert.ok(!JSON.stringify(w).includes('PRIVATE KEY'));
    assert.equal(unwrapKey(w, KEK, A, 'test'), rootA.keyPem);
    assert.notEqual(wrapKey(rootA.keyPem, KEK, A).data, w.data, 'a fresh salt and IV each time');
  });

  it('refuses a wrong key, a record moved to another certificate, and a tampered record, naming the key source', () => {
    const w = wrapKey(rootA.keyPem, KEK, A);
    expectCode(() => unwrapKey(w, Buffer.from('another-key-of-enough-length!!'), A, '--ca-key-encryption-key-file /k'), 'KEDGE_CA_KEY_WRONG', /from --ca-key-encryption-key-file \/k/);
    expectCode(() => unwrapKey(w, KEK, B, 'x'), 'KEDGE_CA_KEY_WRONG');
    const data = Buffer.from(w.data, 'base64');
    data[10] = data[10]! ^ 1;
    expectCode(() => unwrapKey({ ...w, data: data.toString('base64') }, KEK, A, 'x'), 'KEDGE_CA_KEY_WRONG');
    expectCode(() => unwrapKey({ ...w, n: 3 }, KEK, A, 'x'), 'KEDGE_CA_INVALID', /scrypt parameters/);
  });
});

describe('CA state', () => {
  const agents = (...v: [string, number | undefined, string | undefined][]): AgentCaView[] => v.map(([id, bundleSequence, certRoot]) => ({ id, bundleSequence, certRoot }));

  it('reads the record written before rotation existed as one root, sequence 1', () => {
    const legacy = JSON.stringify({ certPem: rootA.certPem, keyPem: rootA.keyPem, chainPem: [], rootsPem: [rootA.certPem] });
    const s = parseCaState(legacy);
    assert.deepEqual(s, { version: 2, sequence: 1, generation: 1, roots: [stored(rootA)], signing: A });
    assert.deepEqual(parseCaState(JSON.stringify(s)), s);
  });

  it('refuses damaged records, naming what is wrong', () => {
    expectCode(() => parseCaState('{'), 'KEDGE_CA_INVALID', /is not JSON/);
    expectCode(() => parseCaState(JSON.stringify({ version: 3 })), 'KEDGE_CA_INVALID', /unknown version 3/);
    expectCode(() => parseCaState(JSON.stringify({ ...initialState(stored(rootA)), roots: [] })), 'KEDGE_CA_INVALID', /no roots/);
    expectCode(() => parseCaState(JSON.stringify({ ...initialState(stored(rootA)), signing: B })), 'KEDGE_CA_INVALID', /signing root it does not hold/);
    expectCode(() => parseCaState(JSON.stringify({ ...initialState(stored(rootA)), roots: [{ certPem: rootA.certPem, key: {} }] })), 'KEDGE_CA_INVALID', /without certificate or key/);
  });

  it('walks a rotation: both roots trusted, the new one signs after every agent has the bundle, the old one goes after every agent renewed', () => {
    const s0 = initialState(stored(rootA));
    const s1 = startRotation(s0, stored(rootB), { now: NOW, reissue: false });
    assert.deepEqual(trustedRoots(s1), [rootA.certPem, rootB.certPem]);
    assert.equal(s1.sequence, 2);
    assert.equal(s1.generation, 2);
    assert.equal(s1.signing, A, 'the old root signs until every agent trusts the new one');
    assert.equal(servingRoot(s1), A);
    assert.equal(s1.rotation?.phase, 'distributing');

    const stale = agents(['default/a', 2, A], ['default/b', 1, A], ['default/c', undefined, undefined]);
    assert.deepEqual(rotationBlockers(s1, stale), [
      { agent: 'default/b', reason: 'has trust bundle 1, not 2' },
      { agent: 'default/c', reason: 'has not reported its trust bundle yet' },
    ]);
    assert.equal(advanceRotation(s1, stale, NOW), undefined);

    const s2 = advanceRotation(s1, agents(['default/a', 2, A], ['default/b', 2, A]), NOW)!;
    assert.equal(s2.signing, B);
    assert.equal(s2.sequence, 2, 'the bundle did not change');
    assert.equal(servingRoot(s2), A, 'the federation keeps serving from the old root, which agents joining with the old root file trust');
    assert.equal(s2.rotation?.phase, 'reissuing');
    assert.deepEqual(rotationBlockers(s2, agents(['default/a', 2, B], ['default/b', 2, A], ['default/c', 2, undefined])).map((b) => b.reason), [
      'holds a certificate from the old root',
      'has not reported a certificate from the new root yet',
    ]);

    const s3 = advanceRotation(s2, agents(['default/a', 2, B], ['default/b', 2, B]), NOW)!;
    assert.equal(s3.rotation, undefined);
    assert.deepEqual(trustedRoots(s3), [rootB.certPem]);
    assert.equal(s3.signing, B);
    assert.equal(s3.sequence, 3);
    assert.equal(advanceRotation(s3, [], NOW), undefined, 'nothing to do without a rotation');
  });

  it('with no agents, each step may be taken at once', () => {
    const s1 = startRotation(initialState(stored(rootA)), stored(rootB), { now: NOW, reissue: true });
    const s2 = advanceRotation(s1, [], NOW)!;
    assert.equal(s2.rotation?.reissue, true);
    assert.deepEqual(trustedRoots(advanceRotation(s2, [], NOW)!), [rootB.certPem]);
  });

  it('refuses a second rotation while one runs; --reissue and --finish act on the running one', () => {
    const s1 = startRotation(initialState(stored(rootA)), stored(rootB), { now: NOW, reissue: false });
    const rootC = createRootCa({ trustDomain: 'example.org', generation: 3 });
    expectCode(() => startRotation(s1, stored(rootC), { now: NOW, reissue: false }), 'KEDGE_CA_ROTATION_IN_PROGRESS', /already in progress \(phase distributing since 2030-01-01T00:00:00.000Z[\s\S]*--reissue[\s\S]*--finish/);
    assert.equal(requestReissue(s1).rotation?.reissue, true);
    const done = finishRotation(s1);
    assert.deepEqual(trustedRoots(done), [rootB.certPem]);
    assert.equal(done.signing, B);
    expectCode(() => finishRotation(done), 'KEDGE_CA_NO_ROTATION', /kedge ca rotate/);
    expectCode(() => requestReissue(done), 'KEDGE_CA_NO_ROTATION');
  });

  it('never leaves the mesh without the signing root in its bundle, at any step', () => {
    let s: CaState = initialState(stored(rootA));
    const steps: CaState[] = [s];
    s = startRotation(s, stored(rootB), { now: NOW, reissue: false });
    steps.push(s);
    while (s.rotation) {
      s = advanceRotation(s, [], NOW)!;
      steps.push(s);
    }
    for (const x of steps) {
      const fps = x.roots.map((r) => fingerprintOf(r.certPem));
      assert.ok(fps.length > 0 && fps.includes(x.signing) && fps.includes(servingRoot(x)));
    }
  });
});

describe('SPIFFE bundle', () => {
  it('has one x509-svid JWK per root: x5c the DER, no kid, the key parameters of RFC 7518 only', () => {
    const b = spiffeBundle([rootA.certPem, rootB.certPem], 7, 300);
    assert.equal(b.spiffe_sequence, 7);
    assert.equal(b.spiffe_refresh_hint, 300);
    assert.equal(b.keys.length, 2);
    const k = b.keys[0]!;
    assert.deepEqual(Object.keys(k), ['kty', 'use', 'x5c', 'n', 'e']);
    assert.equal(k.use, 'x509-svid');
    assert.deepEqual(k.x5c, [new crypto.X509Certificate(rootA.certPem).raw.toString('base64')]);
    const jwk = new crypto.X509Certificate(rootA.certPem).publicKey.export({ format: 'jwk' });
    assert.equal(k.n, jwk.n);
    assert.equal(k.e, 'AQAB');
    assert.deepEqual(spiffeBundle([], 1).keys, []);
    // An EC root (plug-in CAs may be EC): crv, x, y.
    const ecPem = execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', '/dev/null', '-subj', '/CN=ec', '-days', '1', '-addext', 'basicConstraints=critical,CA:TRUE'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const ecKey = spiffeBundle([ecPem], 1).keys[0]!;
    assert.deepEqual(Object.keys(ecKey), ['kty', 'use', 'x5c', 'crv', 'x', 'y']);
    assert.equal(ecKey.crv, 'P-256');
  });
});

describe('CA key-encryption key sources', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-kek-'));

  it('reads a file or the environment without the trailing newline, and runs a command', async () => {
    fs.writeFileSync(path.join(dir, 'kek'), 'correct horse battery staple\n');
    assert.equal((await obtainKek({ kind: 'file', file: path.join(dir, 'kek') })).toString(), 'correct horse battery staple');
    assert.equal((await obtainKek({ kind: 'env', name: 'K' }, { K: 'from-the-environment-123' })).toString(), 'from-the-environment-123');
    assert.equal((await obtainKek({ kind: 'command', command: `printf '%s\\n' kms-said-this-key-0123` })).toString(), 'kms-said-this-key-0123');
  });

  it('names what is wrong: a missing file, a short key, a failing command', async () => {
    await assert.rejects(obtainKek({ kind: 'file', file: path.join(dir, 'nope') }), (e: Error) => hasCode(e, 'KEDGE_CA_KEK_INVALID') && /cannot read the CA key-encryption key file .*nope: ENOENT/.test(e.message));
    await assert.rejects(obtainKek({ kind: 'env', name: 'K' }, { K: 'short' }), (e: Error) => hasCode(e, 'KEDGE_CA_KEK_INVALID') && /environment variable K is 5 bytes; give at least 16/.test(e.message));
    await assert.rejects(obtainKek({ kind: 'command', command: 'echo vault sealed >&2; exit 3' }), (e: Error) => hasCode(e, 'KEDGE_CA_KEK_UNAVAILABLE') && /--ca-key-command "echo vault sealed >&2; exit 3" failed \(3\): vault sealed/.test(e.message));
  });

  it('config takes one source, and none with a plug-in CA', () => {
    const base = { 'data-dir': dir };
    assert.deepEqual(resolveFederationConfig({ ...base, 'ca-key-command': 'kms decrypt' }, 'h', {}).caKek, { kind: 'command', command: 'kms decrypt' });
    assert.deepEqual(resolveFederationConfig(base, 'h', { KEDGE_CA_KEY_ENCRYPTION_KEY: 'x'.repeat(20) }).caKek, { kind: 'env', name: 'KEDGE_CA_KEY_ENCRYPTION_KEY' });
    assert.equal(resolveFederationConfig(base, 'h', {}).caKek, undefined);
    expectCode(() => resolveFederationConfig({ ...base, 'ca-key-command': 'a', 'ca-key-encryption-key-file': 'b' }, 'h', {}), 'KEDGE_BAD_CONFIG', /two sources of the same key/);
    expectCode(() => resolveFederationConfig({ ...base, 'ca-key-encryption-key-file': 'b' }, 'h', { KEDGE_CA_KEY_ENCRYPTION_KEY: 'y' }), 'KEDGE_BAD_CONFIG', /KEDGE_CA_KEY_ENCRYPTION_KEY is set too/);
    expectCode(() => resolveFederationConfig({ ...base, 'ca-cert': 'c', 'ca-key': 'k', 'ca-key-command': 'a' }, 'h', {}), 'KEDGE_BAD_CONFIG', /plug-in CA's key is read from --ca-key/);
  });
});
