// The server proxy's local limiter (HTTPLocalRateLimitPolicy) as a table of
// requests against an explicit clock: Linkerd's total / identity /
// overrides, Kedge's keyed limits (principal, namespace, service, route,
// method, header) and TCP connection rates, retry-after, and buckets that
// survive a push that did not change them.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { LocalLimiter, type LimitRequest } from '../../policy/ratelimit/local';
import type { LocalRateLimitPolicy } from '../../policy/ratelimit/model';
import { parseRateLimitDocument } from '../../policy/ratelimit/validate';

const A = 'cluster.local/ns/default/sa/a';
const B = 'cluster.local/ns/default/sa/b';
const VIP = 'cluster.local/ns/vip/sa/client';

function policy(spec: Record<string, unknown>, apiVersion = 'policy.kedge.dev/v1alpha1'): LocalRateLimitPolicy {
  return parseRateLimitDocument({ apiVersion, kind: 'HTTPLocalRateLimitPolicy', metadata: { name: 'rl', namespace: 'shop' }, spec: { targetRef: { kind: 'Service', name: 'web' }, ...spec } }) as LocalRateLimitPolicy;
}

const req = (principal: string, over: Partial<NonNullable<LimitRequest['http']>> & { headers?: Record<string, string> } = {}): LimitRequest => ({
  principal,
  service: 'web.shop',
  http: { method: over.method ?? 'GET', path: over.path ?? '/', header: (n) => over.headers?.[n] },
});

/** How many of `n` requests at `now` are admitted. */
function admitted(l: LocalLimiter, r: LimitRequest, n: number, now: number): number {
  let ok = 0;
  for (let i = 0; i < n; i++) if (l.admit(r, now) === undefined) ok++;
  return ok;
}

describe('LocalLimiter', () => {
  it('identity: 10 rps per principal, each principal its own bucket; refills at the rate', () => {
    const l = new LocalLimiter([policy({ identity: { requestsPerSecond: 10 } }, 'policy.linkerd.io/v1alpha1')]);
    assert.equal(admitted(l, req(A), 15, 0), 10);
    assert.equal(admitted(l, req(B), 15, 0), 10, 'B is not charged for A');
    assert.equal(admitted(l, req(A), 5, 100), 1, 'one token back after 100 ms');
    assert.equal(admitted(l, req(A), 20, 1_100), 10, 'a full second refills the bucket, no more');
    const refusal = l.admit(req(A), 1_100);
    assert.deepEqual(refusal, { policy: 'shop/rl', limit: 'identity', retryAfterSeconds: 1 });
  });

  it('a request for another service is not limited', () => {
    const l = new LocalLimiter([policy({ total: { requestsPerSecond: 1 } })]);
    assert.equal(admitted(l, { ...req(A), service: 'other.shop' }, 5, 0), 5);
  });

  it('total caps everyone together; an override replaces the identity limit for its client', () => {
    const l = new LocalLimiter([
      policy({ total: { requestsPerSecond: 30 }, identity: { requestsPerSecond: 5 }, overrides: [{ requestsPerSecond: 20, clientRefs: [{ kind: 'ServiceAccount', namespace: 'vip', name: 'client' }] }] }),
    ]);
    assert.equal(admitted(l, req(A), 10, 0), 5);
    assert.equal(admitted(l, req(VIP), 30, 0), 20, 'the override, not the identity limit');
    assert.equal(admitted(l, req(B), 10, 0), 5, 'total: 30 - 5 - 20 leaves 5');
    assert.equal(l.admit(req('cluster.local/ns/x/sa/y'), 0)?.limit, 'total');
  });

  it('keyed limits: by header, by route and method, by namespace; requests outside the routes are not counted', () => {
    const l = new LocalLimiter([
      policy({
        limits: [
          { name: 'tenant', requestsPerSecond: 2, key: ['request.headers[x-tenant]'] },
          { name: 'api-writes', requestsPerSecond: 1, key: ['route', 'method', 'sourceNamespace'], routes: [{ name: 'api', path: { type: 'PathPrefix', value: '/api' } }] },
        ],
      }),
    ]);
    assert.equal(admitted(l, req(A, { headers: { 'x-tenant': 't1' } }), 5, 0), 2);
    assert.equal(admitted(l, req(A, { headers: { 'x-tenant': 't2' } }), 5, 0), 2);
    const l2 = new LocalLimiter([policy({ limits: [{ name: 'api', requestsPerSecond: 1, key: ['route', 'method', 'sourceNamespace'], routes: [{ name: 'api', path: { type: 'PathPrefix', value: '/api' } }] }] })]);
    assert.equal(admitted(l2, req(A, { path: '/api/x?q=1', method: 'POST' }), 3, 0), 1);
    assert.equal(admitted(l2, req(B, { path: '/api/y', method: 'POST' }), 3, 0), 0, 'same namespace, route and method: one bucket');
    assert.equal(admitted(l2, req(B, { path: '/api/y', method: 'GET' }), 3, 0), 1, 'another method, another bucket');
    assert.equal(admitted(l2, req(VIP, { path: '/api', method: 'POST' }), 3, 0), 1, 'another namespace, another bucket');
    assert.equal(admitted(l2, req(A, { path: '/apix', method: 'POST' }), 5, 0), 5, '/apix is not under /api');
  });

  it('a connectionsPerSecond limit counts TCP connections only', () => {
    const l = new LocalLimiter([policy({ limits: [{ name: 'conns', connectionsPerSecond: 3, key: ['sourcePrincipal'] }] })]);
    const tcp: LimitRequest = { principal: A, service: 'web.shop' };
    assert.equal(admitted(l, tcp, 10, 0), 3);
    assert.equal(admitted(l, req(A), 10, 0), 10, 'HTTP requests are not connections');
  });

  it('a refused request takes no token from the other buckets; retry-after counts whole seconds to the next token', () => {
    const l = new LocalLimiter([policy({ total: { requestsPerSecond: 100 }, limits: [{ name: 'slow', requestsPerSecond: 1, burst: 1, key: ['sourcePrincipal'], routes: [{ name: 'slow', path: { type: 'Exact', value: '/slow' } }] }] })]);
    assert.equal(admitted(l, req(A, { path: '/slow' }), 50, 0), 1);
    assert.equal(admitted(l, req(B), 200, 0), 99, 'A\'s 49 refusals cost the total bucket nothing');
    const l3 = new LocalLimiter([policy({ limits: [{ name: 'slow', requestsPerSecond: 1, burst: 1, key: [] }] })]);
    l3.admit(req(A), 0);
    assert.equal(l3.admit(req(A), 0)?.retryAfterSeconds, 1);
  });

  it('buckets survive a push that keeps the limit, and restart when it changes', () => {
    const p = policy({ identity: { requestsPerSecond: 3 } });
    const l1 = new LocalLimiter([p]);
    assert.equal(admitted(l1, req(A), 3, 0), 3);
    const l2 = new LocalLimiter([policy({ identity: { requestsPerSecond: 3 } })], l1);
    assert.equal(admitted(l2, req(A), 3, 0), 0, 'same limit: same bucket, still empty');
    const l3 = new LocalLimiter([policy({ identity: { requestsPerSecond: 4 } })], l2);
    assert.equal(admitted(l3, req(A), 5, 0), 4, 'changed limit: a fresh bucket');
  });
});
