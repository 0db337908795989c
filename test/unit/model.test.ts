// SPIFFE IDs, SNI names, service keys, localities, durations, addresses.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildSni, parseSni } from '../../proto/model/sni';
import { federationSpiffeId, formatSpiffeId, parseSpiffeId, uriSans } from '../../proto/model/spiffe';
import { parseServiceKey, serviceHostname, serviceKey } from '../../proto/model/service';
import { formatLocality, parseLocality } from '../../proto/model/locality';
import { parseDuration } from '../../proto/model/duration';
import { parseHostPort, formatHostPort } from '../../proto/model/address';
import { hasCode } from '../../proto/model/errors';

const code = (c: string) => (err: unknown) => hasCode(err, c);

describe('SPIFFE IDs', () => {
  it('formats and parses workload identities', () => {
    const id = { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'payments' };
    assert.equal(formatSpiffeId(id), 'spiffe://cluster.local/ns/shop/sa/payments');
    assert.deepEqual(parseSpiffeId('spiffe://cluster.local/ns/shop/sa/payments'), id);
    assert.equal(federationSpiffeId('example.org'), 'spiffe://example.org/ns/kedge-system/sa/kedge-federation');
  });
  for (const bad of ['spiffe://cluster.local/ns/shop', 'https://cluster.local/ns/a/sa/b', 'spiffe://cluster.local/ns/A/sa/b', 'spiffe://cluster.local/ns/a/sa/b/extra', 'spiffe:///ns/a/sa/b', '']) {
    it(`rejects ${JSON.stringify(bad)}`, () => assert.equal(parseSpiffeId(bad), undefined));
  }
  it('refuses to format names that cannot appear in an identity', () => {
    assert.throws(() => formatSpiffeId({ trustDomain: 'cluster.local', namespace: 'Shop', serviceAccount: 'x' }), code('KEDGE_BAD_IDENTITY'));
    assert.throws(() => formatSpiffeId({ trustDomain: 'a/b', namespace: 'shop', serviceAccount: 'x' }), code('KEDGE_BAD_IDENTITY'));
  });
  it('reads URI SANs from Node subjectaltname strings', () => {
    assert.deepEqual(uriSans('URI:spiffe://td/ns/a/sa/b, DNS:x.example'), ['spiffe://td/ns/a/sa/b']);
    assert.deepEqual(uriSans(undefined), []);
  });
});

describe('SNI names', () => {
  const table: [number, string, string][] = [
    [9080, 'reviews.default.svc.cluster.local', 'outbound_.9080_._.reviews.default.svc.cluster.local'],
    [5432, 'billing-db.shop.svc.example.org', 'outbound_.5432_._.billing-db.shop.svc.example.org'],
  ];
  for (const [port, host, sni] of table) {
    it(`${port} ${host}`, () => {
      assert.equal(buildSni(port, host), sni);
      assert.deepEqual(parseSni(sni), { port, hostname: host });
    });
  }
  for (const bad of ['reviews.default', 'outbound_.0_._.x', 'outbound_.70000_._.x', 'outbound_.80_._.', '', undefined, false]) {
    it(`rejects ${JSON.stringify(bad)}`, () => assert.throws(() => parseSni(bad as string), code('KEDGE_BAD_SNI')));
  }
});

describe('service keys', () => {
  it('parses short and full names', () => {
    assert.deepEqual(parseServiceKey('reviews.default'), { name: 'reviews', namespace: 'default' });
    assert.deepEqual(parseServiceKey('reviews.default.svc.cluster.local'), { name: 'reviews', namespace: 'default' });
    assert.equal(serviceKey({ name: 'a', namespace: 'b' }), 'a.b');
    assert.equal(serviceHostname({ name: 'a', namespace: 'b' }), 'a.b.svc.cluster.local');
  });
  for (const bad of ['reviews', 'a.b.c', 'Reviews.default', '.default', 'reviews.']) {
    it(`rejects ${bad}`, () => assert.throws(() => parseServiceKey(bad), code('KEDGE_BAD_SERVICE')));
  }
});

describe('localities, durations, addresses', () => {
  it('parses localities', () => {
    assert.deepEqual(parseLocality('us-east1/us-east1-b'), { region: 'us-east1', zone: 'us-east1-b', subzone: '' });
    assert.deepEqual(parseLocality('r/z/s'), { region: 'r', zone: 'z', subzone: 's' });
    assert.equal(formatLocality({ region: 'r', zone: 'z', subzone: '' }), 'r/z');
    assert.throws(() => parseLocality('a//b'), code('KEDGE_BAD_LOCALITY'));
    assert.throws(() => parseLocality('a/b/c/d'), code('KEDGE_BAD_LOCALITY'));
  });
  it('parses durations', () => {
    const table: [string, number][] = [['24h', 86_400_000], ['10s', 10_000], ['500ms', 500], ['1h30m', 5_400_000], ['1.5s', 1500]];
    for (const [s, ms] of table) assert.equal(parseDuration(s), ms, s);
    for (const bad of ['', '10', 'h', '10x', '-1s', '1h 2m']) assert.throws(() => parseDuration(bad), code('KEDGE_BAD_DURATION'), bad);
    // A bare YAML number once meant milliseconds; now it is refused with the fix.
    assert.throws(() => parseDuration(1, 'connectTimeout'), /connectTimeout 1: a bare number has no unit; write 1s or 1ms/);
  });
  it('parses addresses', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:15012', 'f'), { host: '127.0.0.1', port: 15012 });
    assert.deepEqual(parseHostPort('[::1]:80', 'f'), { host: '::1', port: 80 });
    assert.equal(formatHostPort({ host: '::1', port: 80 }), '[::1]:80');
    for (const bad of ['127.0.0.1', ':80', 'a:b', 'h:70000']) assert.throws(() => parseHostPort(bad, 'f'), code('KEDGE_BAD_ADDRESS'), bad);
  });
});
