// Validation of HTTPLocalRateLimitPolicy and MeshQuota: the documents of
// docs/rate-limits.md pass; each bad one gets an error naming the document
// and the path in it.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { validateRateLimitDocument } from '../../policy/ratelimit/validate';
import { applyRateLimits } from '../../agent/registration/ratelimit';

const local = (spec: unknown, apiVersion = 'policy.kedge.dev/v1alpha1') => ({ apiVersion, kind: 'HTTPLocalRateLimitPolicy', metadata: { name: 'rl', namespace: 'shop' }, spec });
const quota = (spec: Record<string, unknown>) => ({ apiVersion: 'policy.kedge.dev/v1alpha1', kind: 'MeshQuota', metadata: { name: 'q', namespace: 'shop' }, spec: { targetRef: { kind: 'Service', name: 'b' }, requests: 100, ...spec } });
const target = { kind: 'Service', name: 'web' };

function errors(doc: unknown): string[] {
  const r = validateRateLimitDocument(doc);
  return r.ok ? [] : r.errors;
}

describe('rate-limit validation', () => {
  it('accepts Linkerd\'s fields under Linkerd\'s API version, and the Kedge extensions under Kedge\'s', () => {
    assert.deepEqual(errors(local({ targetRef: target, total: { requestsPerSecond: 100 }, identity: { requestsPerSecond: 20 }, overrides: [{ requestsPerSecond: 25, clientRefs: [{ kind: 'ServiceAccount', namespace: 'default', name: 'vip' }] }] }, 'policy.linkerd.io/v1alpha1')), []);
    assert.deepEqual(errors(local({ targetRef: target, limits: [{ name: 'x', requestsPerSecond: 5, burst: 10, key: ['sourcePrincipal', 'sourceNamespace', 'destinationService', 'route', 'method', 'request.headers[x-tenant]'], routes: [{ name: 'api', path: { type: 'PathPrefix', value: '/api' }, method: 'GET' }] }] })), []);
    const q = validateRateLimitDocument(quota({ clientRefs: [{ kind: 'ServiceAccount', namespace: 'default', name: 'a' }], window: '1m', failureMode: 'Open' }));
    assert.ok(q.ok);
    assert.equal(q.ok && q.value.kind === 'MeshQuota' && q.value.leaseTimeoutMs, 180_000, 'leaseTimeout defaults to three windows');
  });

  const cases: [string, unknown, RegExp][] = [
    ['zero rate', local({ targetRef: target, identity: { requestsPerSecond: 0 } }), /^HTTPLocalRateLimitPolicy shop\/rl: spec\.identity\.requestsPerSecond: is 0; a limit must be at least 1/],
    ['negative rate in a keyed limit', local({ targetRef: target, limits: [{ name: 'x', requestsPerSecond: -5 }] }), /spec\.limits\[0\]\.requestsPerSecond: is -5; a limit must be at least 1/],
    ['zero quota', quota({ requests: 0 }), /^MeshQuota shop\/q: spec\.requests: is 0; a limit must be at least 1/],
    ['negative quota', quota({ requests: -100 }), /spec\.requests: is -100/],
    ['fractional rate', local({ targetRef: target, total: { requestsPerSecond: 1.5 } }), /spec\.total\.requestsPerSecond: must be a whole number/],
    ['unknown field', local({ targetRef: target, total: { requestsPerSecond: 1, rps: 2 } }), /spec\.total\.rps: unknown field/],
    ['a Kedge extension under Linkerd\'s API version', local({ targetRef: target, limits: [] }, 'policy.linkerd.io/v1alpha1'), /spec\.limits: unknown field/],
    ['a Linkerd Server target', local({ targetRef: { group: 'policy.linkerd.io', kind: 'Server', name: 'web-http' }, total: { requestsPerSecond: 1 } }, 'policy.linkerd.io/v1alpha1'), /spec\.targetRef\.kind: Server is a Linkerd resource Kedge does not have; must be Service/],
    ['a limit that limits nothing', local({ targetRef: target }), /spec: limits nothing/],
    ['a bad key part', local({ targetRef: target, limits: [{ name: 'x', requestsPerSecond: 1, key: ['user'] }] }), /spec\.limits\[0\]\.key\[0\]: must be one of: sourcePrincipal/],
    ['a route key without routes', local({ targetRef: target, limits: [{ name: 'x', requestsPerSecond: 1, key: ['route'] }] }), /spec\.limits\[0\]\.key: keys by route but the limit has no routes/],
    ['a TCP limit keyed by method', local({ targetRef: target, limits: [{ name: 'x', connectionsPerSecond: 1, key: ['method'] }] }), /spec\.limits\[0\]\.key\[0\]: method is not known for a TCP connection/],
    ['both rates', local({ targetRef: target, limits: [{ name: 'x', connectionsPerSecond: 1, requestsPerSecond: 1 }] }), /spec\.limits\[0\]: give requestsPerSecond .* not both/],
    ['an override without clients', local({ targetRef: target, overrides: [{ requestsPerSecond: 3 }] }), /spec\.overrides\[0\]\.clientRefs: is required/],
    ['a window too short', quota({ window: '500ms' }), /spec\.window: must be at least 1000 ms/],
    ['a bad failure mode', quota({ failureMode: 'Maybe' }), /spec\.failureMode: must be one of: Closed, Open/],
    ['a quota without a target', { apiVersion: 'policy.kedge.dev/v1alpha1', kind: 'MeshQuota', metadata: { name: 'q' }, spec: { requests: 1 } }, /MeshQuota default\/q: spec\.targetRef: is required/],
    ['a wrong API version', { ...quota({}), apiVersion: 'policy.linkerd.io/v1alpha1' }, /apiVersion: is "policy\.linkerd\.io\/v1alpha1"; write apiVersion: policy\.kedge\.dev\/v1alpha1/],
  ];
  for (const [what, doc, re] of cases) {
    it(`refuses ${what}, naming the document and the path`, () => {
      const e = errors(doc);
      assert.ok(e.some((x) => re.test(x)), `expected ${re} in:\n${e.join('\n')}`);
    });
  }
});

describe('the agent applying pushed rate-limit documents', () => {
  it('a document it cannot use is rejected alone, named; the others are enforced', () => {
    const good = JSON.stringify(local({ targetRef: target, identity: { requestsPerSecond: 10 } }));
    const q = JSON.stringify(quota({}));
    const bad = JSON.stringify(local({ targetRef: target, identity: { requestsPerSecond: -1 } }));
    const r = applyRateLimits([good, bad, q, '{not json']);
    assert.equal(r.local.length, 1);
    assert.equal(r.quotas.length, 1);
    assert.equal(r.rejected.length, 2);
    assert.match(r.rejected[0]!, /^rejected, not enforced: HTTPLocalRateLimitPolicy shop\/rl: spec\.identity\.requestsPerSecond: is -1/);
    assert.match(r.rejected[1]!, /^rate-limit document 4: not JSON/);
  });
});
