// What a join token grants, checked against registrations: pure tables.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { certRefusal, type BindingRecord } from '../../federation/grants/bindings';
import { EMPTY_GRANT, type Grant, type RegistrationClaim, globMatch, grantViolations, validateGrant } from '../../federation/grants/grant';
import { hasCode } from '../../proto/model/errors';

const grant = (g: Partial<Grant>): Grant => ({ ...EMPTY_GRANT, ...g });
const claim = (c: Partial<RegistrationClaim>): RegistrationClaim => ({ name: 'vm-1', labels: {}, services: [], network: '', gateway: false, ...c });

describe('globMatch', () => {
  const cases: [string, string, boolean][] = [
    ['vm-1', 'vm-1', true],
    ['vm-1', 'vm-10', false],
    ['vm-*', 'vm-1', true],
    ['vm-*', 'vm-', true],
    ['vm-*', 'db-1', false],
    ['*', 'anything', true],
    ['*-east', 'reviews-east', true],
    ['*-east', 'reviews-west', false],
    ['a*b*c', 'axxbyyc', true],
    ['a*b*c', 'acb', false],
    ['ab*ba', 'aba', false],
  ];
  for (const [p, n, want] of cases) it(`${p} ${want ? 'matches' : 'does not match'} ${n}`, () => assert.equal(globMatch(p, n), want));
});

describe('grantViolations', () => {
  const cases: { name: string; grant: Grant; claim: RegistrationClaim; bound?: string; want: RegExp[] }[] = [
    { name: 'nothing claimed, nothing granted', grant: EMPTY_GRANT, claim: claim({}), want: [] },
    { name: 'a service without --service', grant: EMPTY_GRANT, claim: claim({ services: ['reviews'] }), want: [/service "reviews" is not granted \(granted: none\); create the token with --service reviews/] },
    { name: 'a granted service', grant: grant({ services: ['reviews'] }), claim: claim({ services: ['reviews'] }), want: [] },
    { name: 'a glob of services', grant: grant({ services: ['reviews-*'] }), claim: claim({ services: ['reviews-v2', 'ratings'] }), want: [/service "ratings" is not granted \(granted: reviews-\*\)/] },
    { name: 'another workload name than --workload', grant: grant({ workload: 'vm-1' }), claim: claim({ name: 'vm-2' }), want: [/workload name "vm-2" is not granted \(the token allows vm-1\); create the token with --workload vm-2/] },
    { name: 'a name within the --workload glob', grant: grant({ workload: 'vm-*' }), claim: claim({ name: 'vm-7' }), want: [] },
    { name: 'a second name for a bound certificate', grant: EMPTY_GRANT, claim: claim({ name: 'vm-2' }), bound: 'vm-1', want: [/bound to workload "vm-1" and cannot register as "vm-2"/] },
    { name: 'a label not granted', grant: grant({ labels: { app: 'web' } }), claim: claim({ labels: { app: 'web', tier: 'gold' } }), want: [/label tier=gold is not granted; create the token with --labels tier=gold/] },
    { name: 'a label with another value', grant: grant({ labels: { app: 'web' } }), claim: claim({ labels: { app: 'db' } }), want: [/label app=db is not granted \(the token allows app=web\)/] },
    { name: 'a label granted with any value', grant: grant({ labels: { version: '*' } }), claim: claim({ labels: { version: 'v9' } }), want: [] },
    { name: 'a self-declared gateway', grant: EMPTY_GRANT, claim: claim({ gateway: true, network: 'net-b' }), want: [/east-west gateway of network "net-b" is not granted; create the token with --gateway net-b/] },
    { name: 'a gateway of another network', grant: grant({ gateway: 'net-a' }), claim: claim({ gateway: true, network: 'net-b' }), want: [/not granted \(the token allows network net-a\)/] },
    { name: 'a granted gateway', grant: grant({ gateway: 'net-b' }), claim: claim({ gateway: true, network: 'net-b' }), want: [] },
    { name: 'every violation at once', grant: EMPTY_GRANT, claim: claim({ services: ['a', 'b'], labels: { x: 'y' }, gateway: true, network: 'n' }), want: [/"a"/, /"b"/, /x=y/, /gateway/] },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const got = grantViolations(c.grant, c.claim, c.bound);
      assert.equal(got.length, c.want.length, got.join('\n'));
      c.want.forEach((re, i) => assert.match(got[i]!, re));
    });
  }
});

describe('validateGrant', () => {
  it('normalises: sorted, deduplicated services, defaults', () => {
    assert.deepEqual(validateGrant({ services: ['ratings', 'reviews', 'ratings'] }), { services: ['ratings', 'reviews'], workload: '', labels: {}, gateway: '' });
    assert.deepEqual(validateGrant(undefined), EMPTY_GRANT);
  });
  const bad: [string, Partial<Grant>, RegExp][] = [
    ['a service that is not a DNS label', { services: ['Reviews'] }, /--service "Reviews"/],
    ['a service name over 63 characters', { services: ['a'.repeat(64)] }, /--service/],
    ['a workload with a space', { workload: 'vm 1' }, /--workload "vm 1"/],
    ['a bad label key', { labels: { 'bad key': 'x' } }, /--labels bad key=x/],
    ['a bad label value', { labels: { app: 'a b' } }, /--labels app=a b/],
    ['a gateway that is not a network name', { gateway: 'Net_A' }, /--gateway "Net_A"/],
  ];
  for (const [name, g, re] of bad) {
    it(`refuses ${name}`, () => assert.throws(() => validateGrant(g), (err: unknown) => hasCode(err, 'KEDGE_TOKEN_INVALID_REQUEST') && re.test((err as Error).message)));
  }
});

describe('certRefusal', () => {
  const b = (over: Partial<BindingRecord>): BindingRecord => ({
    id: 'b1', identity: 'spiffe://cluster.local/ns/default/sa/vm', namespace: 'default', serviceAccount: 'vm', via: 'token x', createdAt: '2030-01-01T00:00:00Z',
    certs: [{ serial: 'C3', notAfter: 3 }, { serial: 'C2', notAfter: 2 }, { serial: 'C1', notAfter: 1 }], ...over,
  });
  it('lets the newest certificate and the one before it renew or connect', () => {
    assert.equal(certRefusal(b({}), 'C3'), undefined);
    assert.equal(certRefusal(b({}), 'C2'), undefined);
  });
  it('refuses a superseded certificate', () => assert.match(certRefusal(b({}), 'C1')!, /newer certificate/));
  it('refuses a certificate the binding never had', () => assert.match(certRefusal(b({}), 'FF')!, /newer certificate/));
  it('refuses every certificate of a revoked binding', () => assert.match(certRefusal(b({ revoked: { at: 'then', reason: 'stolen' } }), 'C3')!, /revoked at then \(stolen\)/));
});
