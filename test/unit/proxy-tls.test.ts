import assert from 'node:assert/strict';
import type { PeerCertificate } from 'node:tls';
import { describe, it } from 'node:test';
import { buildIdentityContexts, peerSpiffeId, SessionCache, verifyPeerIdentity } from '../../agent/proxy/tls';
import type { EndpointView, ServiceView } from '../../agent/proxy/types';
import { attemptOrder, endpointPool } from '../../agent/proxy/upstream';
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

const ep = (address: string, healthy = true): EndpointView => ({ address, mtlsPort: 15006, identity: ID, workload: address, healthy, ports: [] });
const names = (eps: readonly EndpointView[]): string[] => eps.map((e) => e.address);
const service = (endpoints: EndpointView[]): ServiceView => ({ key: 'cart.shop', hostname: 'cart', vip: '', ports: [], endpoints, version: '1' });

describe('attemptOrder', () => {
  const pool = [ep('a'), ep('b'), ep('c'), ep('d')];
  const cases: Array<[string, readonly EndpointView[], number, string[]]> = [
    ['starts at the round-robin position and tries at most 3', pool, 0, ['a', 'b', 'c']],
    ['wraps around the pool', pool, 3, ['d', 'a', 'b']],
    ['tries each endpoint once when fewer than 3', pool.slice(0, 2), 1, ['b', 'a']],
    ['returns nothing for no endpoints', [], 5, []],
  ];
  for (const [name, p, start, want] of cases) it(name, () => assert.deepEqual(names(attemptOrder(p, start)), want));
});

describe('endpointPool', () => {
  it('keeps only healthy endpoints', () => {
    assert.deepEqual(names(endpointPool(service([ep('a', false), ep('b'), ep('c', false)]))), ['b']);
  });
  it('falls back to every endpoint when none is healthy', () => {
    assert.deepEqual(names(endpointPool(service([ep('a', false), ep('b', false)]))), ['a', 'b']);
  });
});
