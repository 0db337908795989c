import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { MAX_PEER_HEADER_BYTES, decodePeerHeader, encodePeerHeader, endpointPeer, peerFromPrincipal } from '../../agent/telemetry/peer-metadata';
import { UNKNOWN_PEER } from '../../agent/proxy/record';
import type { EndpointView } from '../../agent/proxy/types';
import { PRODUCTPAGE, peer } from '../support/records';

const PP_SAN = 'spiffe://cluster.local/ns/default/sa/productpage';

test('the header round-trips a workload; the principal comes from the certificate only', () => {
  const header = encodePeerHeader(PRODUCTPAGE);
  assert.equal(header, 'v1;w=productpage-v1;n=default;a=productpage;v=v1;cs=productpage;cr=v1;c=vms');
  assert.deepEqual(decodePeerHeader(header, PP_SAN), PRODUCTPAGE);
  assert.equal(decodePeerHeader(header, '')?.principal, '');
  // The same value decodes to the same object (the metrics sink caches per object).
  assert.equal(decodePeerHeader(header, PP_SAN), decodePeerHeader(header, PP_SAN));
});

test('values with separators and non-ASCII survive; unknown fields from newer senders are skipped', () => {
  const odd = peer({ workload: 'a;b=c,d', namespace: 'default', app: 'café "x"' });
  assert.deepEqual(decodePeerHeader(encodePeerHeader(odd), PP_SAN), { ...odd, principal: PP_SAN });
  assert.equal(decodePeerHeader('v1;w=x;zz=future', PP_SAN)?.workload, 'x');
});

test('absent, too long, another version or malformed: undefined (the caller falls back)', () => {
  assert.equal(decodePeerHeader(undefined, PP_SAN), undefined);
  assert.equal(decodePeerHeader(`v1;w=${'x'.repeat(MAX_PEER_HEADER_BYTES)}`, PP_SAN), undefined);
  assert.equal(decodePeerHeader('v2;w=x', PP_SAN), undefined);
  assert.equal(decodePeerHeader('v1;w', PP_SAN), undefined);
  assert.equal(decodePeerHeader('v1;w=%E0%A4%A', PP_SAN), undefined);
});

test('metadata claiming another namespace than the certificate is not believed', () => {
  const claim = encodePeerHeader(peer({ workload: 'admin-console', namespace: 'kube-system' }));
  assert.deepEqual(decodePeerHeader(claim, PP_SAN), peerFromPrincipal(PP_SAN));
  assert.deepEqual(peerFromPrincipal(PP_SAN), { ...UNKNOWN_PEER, principal: PP_SAN, namespace: 'default' });
  assert.equal(peerFromPrincipal(''), UNKNOWN_PEER);
});

test('an endpoint of the mesh view gives its workload, labels and cluster, one object per view', () => {
  const view: EndpointView = {
    address: '10.0.0.7', mtlsPort: 15006, identity: 'spiffe://cluster.local/ns/default/sa/reviews', workload: 'default/reviews-v2',
    healthy: true, ports: [], labels: { app: 'reviews', version: 'v2' }, cluster: 'east',
  };
  const p = endpointPeer(view);
  assert.deepEqual(p, { principal: view.identity, workload: 'reviews-v2', namespace: 'default', app: 'reviews', version: 'v2', canonicalService: 'reviews', canonicalRevision: 'v2', cluster: 'east' });
  assert.equal(endpointPeer(view), p);
  const plain: EndpointView = { address: '10.0.0.9', mtlsPort: 0, identity: '', workload: '', healthy: true, ports: [], plaintext: true };
  assert.equal(endpointPeer(plain), UNKNOWN_PEER);
});
