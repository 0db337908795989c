import assert from 'node:assert/strict';
import type { PeerCertificate } from 'node:tls';
import { describe, it } from 'node:test';
import { buildIdentityContexts, peerSpiffeId, SessionCache, verifyPeerIdentity } from '../../agent/proxy/tls';
import { hasCode } from '../../proto/model/errors';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';

const ID = 'spiffe://kedge.test/ns/shop/sa/cart';
const cert = (subjectaltname: string | undefined): PeerCertificate => ({ subjectaltname }) as PeerCertificate;

describe('verifyPeerIdentity', () => {
  const cases: Array<[string, string | undefined, string | undefined]> = [
    ['accepts the single matching URI SAN', `URI:${ID}`, undefined],
    ['accepts a match next to DNS SANs', `DNS:cart.local, URI:${ID}`, undefined],
    ['refuses another identity', 'URI:spiffe://kedge.test/ns/shop/sa/impostor', 'spiffe://kedge.test/ns/shop/sa/impostor'],
    ['refuses two URI SANs even if one matches', `URI:${ID}, URI:spiffe://kedge.test/ns/x/sa/y`, `${ID}, spiffe://kedge.test/ns/x/sa/y`],
    ['refuses a certificate without URI SANs', 'DNS:cart.local', 'no URI SAN'],
    ['refuses a certificate without SANs', undefined, 'no URI SAN'],
  ];
  for (const [name, san, presented] of cases) {
    it(name, () => {
      const err = verifyPeerIdentity(cert(san), ID);
      if (presented === undefined) return assert.equal(err, undefined);
      assert.ok(hasCode(err, 'KEDGE_PEER_IDENTITY_MISMATCH'));
      assert.match(err!.message, new RegExp(`presented ${presented.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} but the endpoint is registered as ${ID.replace(/[./]/g, '\\$&')}`));
    });
  }

  it('peerSpiffeId returns the only URI SAN, or nothing when ambiguous', () => {
    assert.equal(peerSpiffeId(cert(`URI:${ID}`)), ID);
    assert.equal(peerSpiffeId(cert(`URI:${ID}, URI:${ID}x`)), undefined);
    assert.equal(peerSpiffeId(undefined), undefined);
  });
});

describe('buildIdentityContexts', () => {
  it('builds contexts for a valid identity', () => {
    const leaf = makeLeaf(makeCa('unit'), ID);
    const c = buildIdentityContexts(toTlsIdentity(leaf));
    assert.equal(c.spiffeId, ID);
    assert.equal(c.serial, leaf.serial);
  });

  it('refuses a key that does not match the certificate with KEDGE_TLS_IDENTITY_INVALID', () => {
    const ca = makeCa('unit');
    const id = { ...toTlsIdentity(makeLeaf(ca, ID)), keyPem: makeLeaf(ca, ID, 'other-key').keyPem };
    assert.throws(() => buildIdentityContexts(id), (err) => hasCode(err, 'KEDGE_TLS_IDENTITY_INVALID') && String((err as Error).message).includes(ID));
  });
});

describe('SessionCache', () => {
  it('evicts the oldest session beyond its bound and refreshes on set', () => {
    const c = new SessionCache(2);
    const s = (v: string) => ({ session: Buffer.from(v), peer: ID });
    c.set('a', s('1'));
    c.set('b', s('2'));
    c.set('a', s('3'));
    c.set('c', s('4'));
    assert.equal(c.get('b'), undefined);
    assert.equal(String(c.get('a')?.session), '3');
    assert.equal(c.size, 2);
    c.clear();
    assert.equal(c.size, 0);
  });
});
