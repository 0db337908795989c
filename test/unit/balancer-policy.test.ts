// Traffic policy documents: defaults, resolution, and errors that name the
// path in the document.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { hasCode } from '../../proto/model/errors';
import { TRAFFIC_POLICY_DEFAULTS, parseTrafficPolicy, validateTrafficPolicy } from '../../policy/traffic-policy';

const doc = (spec: Record<string, unknown>, top: Record<string, unknown> = {}): unknown => ({ kind: 'TrafficPolicy', spec: { service: 'reviews.default', ...spec }, ...top });

function errorsOf(d: unknown, opts = {}): string[] {
  const r = validateTrafficPolicy(d, opts);
  assert.equal(r.ok, false, 'expected errors');
  return r.ok ? [] : r.errors;
}

describe('validateTrafficPolicy', () => {
  it('a bare policy gets every default; outlier detection is on', () => {
    const r = validateTrafficPolicy(doc({}));
    assert.ok(r.ok);
    assert.deepEqual(r.value, { name: 'reviews.default', service: 'reviews.default', policy: TRAFFIC_POLICY_DEFAULTS });
    assert.deepEqual(TRAFFIC_POLICY_DEFAULTS.outlierDetection, { consecutiveErrors: 3, consecutive5xxErrors: 5, consecutiveGatewayErrors: 0, intervalMs: 10_000, baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 100 });
    assert.ok(Object.isFrozen(r.value.policy.outlierDetection));
  });

  it('resolves every field', () => {
    const r = validateTrafficPolicy(
      doc(
        {
          service: 'reviews.default.svc.cluster.local',
          loadBalancer: 'round-robin',
          connectTimeout: '750ms',
          panicThreshold: 30,
          locality: { enabled: true, failoverPriority: ['topology.istio.io/network', 'region', 'zone', 'version=v2'] },
          outlierDetection: { consecutiveErrors: 5, consecutive5xxErrors: 7, consecutiveGatewayErrors: 2, interval: '5s', baseEjectionTime: '30s', maxEjectionTime: '10m', maxEjectionPercent: 50 },
          circuitBreaker: { maxConnections: 100, maxPendingRequests: 10, maxRequests: 200, maxRequestsPerConnection: 1000, maxRetries: 3 },
          retryBudget: { percent: 25, minRetriesPerSecond: 5 },
          poolIdleTimeout: '2m',
        },
        { metadata: { name: 'reviews-failover' } },
      ),
    );
    assert.ok(r.ok);
    assert.deepEqual(r.value, {
      name: 'reviews-failover',
      service: 'reviews.default',
      policy: {
        loadBalancer: 'round-robin',
        connectTimeoutMs: 750,
        panicThreshold: 30,
        locality: { enabled: true, failoverPriority: ['topology.istio.io/network', 'region', 'zone', 'version=v2'], distribute: [] },
        outlierDetection: { consecutiveErrors: 5, consecutive5xxErrors: 7, consecutiveGatewayErrors: 2, intervalMs: 5000, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 600_000, maxEjectionPercent: 50 },
        circuitBreaker: { maxConnections: 100, maxPendingRequests: 10, maxRequests: 200, maxRequestsPerConnection: 1000, maxRetries: 3 },
        retryBudget: { percent: 25, minRetriesPerSecond: 5 },
        poolIdleTimeoutMs: 120_000,
      },
    });
  });

  it('reads distribute rules in the order written', () => {
    const r = validateTrafficPolicy(doc({ locality: { distribute: [{ from: 'us-east/zone-a/*', to: { 'us-east/zone-a/*': 80, 'us-east/zone-b/*': 20 } }] } }));
    assert.ok(r.ok);
    assert.deepEqual(r.value.policy.locality.distribute, [
      {
        from: 'us-east/zone-a/*',
        to: [
          { locality: 'us-east/zone-a/*', weight: 80 },
          { locality: 'us-east/zone-b/*', weight: 20 },
        ],
      },
    ]);
  });

  const bad: { name: string; doc: unknown; errors: string[] }[] = [
    { name: 'an impossible ejection share', doc: doc({ outlierDetection: { maxEjectionPercent: 150 } }), errors: ['spec.outlierDetection.maxEjectionPercent: must be between 0 and 100'] },
    { name: 'a fractional ejection share', doc: doc({ outlierDetection: { maxEjectionPercent: 12.5 } }), errors: ['spec.outlierDetection.maxEjectionPercent: must be a whole number'] },
    { name: 'a negative error count', doc: doc({ outlierDetection: { consecutiveErrors: -1 } }), errors: ['spec.outlierDetection.consecutiveErrors: must be between 0 and 1000'] },
    {
      name: 'a duration without a unit',
      doc: doc({ outlierDetection: { baseEjectionTime: 'soon' } }),
      errors: ['spec.outlierDetection.baseEjectionTime: invalid duration "soon": use a number with a unit, such as 500ms, 10s, 5m, 24h'],
    },
    { name: 'a cap shorter than the base', doc: doc({ outlierDetection: { baseEjectionTime: '1m', maxEjectionTime: '30s' } }), errors: ['spec.outlierDetection.maxEjectionTime: must not be shorter than baseEjectionTime (60000 ms)'] },
    { name: 'a zero connect timeout', doc: doc({ connectTimeout: '0s' }), errors: ['spec.connectTimeout: must be at least 1 ms'] },
    { name: 'an unknown balancer', doc: doc({ loadBalancer: 'random' }), errors: ['spec.loadBalancer: must be one of: least-request, round-robin'] },
    { name: 'an unknown field', doc: doc({ outlierDetection: { consecutiveLocalOriginFailures: 5 } }), errors: ['spec.outlierDetection.consecutiveLocalOriginFailures: unknown field (expected one of: consecutiveErrors, consecutive5xxErrors, consecutiveGatewayErrors, interval, baseEjectionTime, maxEjectionTime, maxEjectionPercent)'] },
    {
      name: 'a bare number as a duration (it once meant milliseconds)',
      doc: doc({ connectTimeout: 1, poolIdleTimeout: 30 }),
      errors: [
        'spec.connectTimeout: invalid duration 1: a bare number has no unit; write 1s or 1ms (units: ms, s, m, h, d)',
        'spec.poolIdleTimeout: invalid duration 30: a bare number has no unit; write 30s or 30ms (units: ms, s, m, h, d)',
      ],
    },
    {
      name: 'circuit breaker limits',
      doc: doc({ circuitBreaker: { maxConnections: 0, maxPendingRequests: 1.5, maxRequests: -1, maxRetries: 'many', maxConnectionPools: 3 } }),
      errors: [
        'spec.circuitBreaker.maxConnectionPools: unknown field (expected one of: maxConnections, maxPendingRequests, maxRequests, maxRequestsPerConnection, maxRetries)',
        'spec.circuitBreaker.maxConnections: must be between 1 and 1000000',
        'spec.circuitBreaker.maxPendingRequests: must be a whole number',
        'spec.circuitBreaker.maxRequests: must be between 1 and 1000000',
        'spec.circuitBreaker.maxRetries: must be a whole number',
      ],
    },
    { name: 'a retry budget over 100%', doc: doc({ retryBudget: { percent: 120 } }), errors: ['spec.retryBudget.percent: must be between 0 and 100'] },
    { name: 'no service', doc: { kind: 'TrafficPolicy', spec: {} }, errors: ['spec.service: is required: the service as name.namespace, for example reviews.default'] },
    { name: 'a malformed service', doc: doc({ service: 'Reviews' }), errors: ['spec.service: invalid service "Reviews": write it as name.namespace (for example reviews.default)'] },
    { name: 'the wrong kind', doc: doc({}, { kind: 'DestinationRule' }), errors: ['kind: must be TrafficPolicy, not "DestinationRule"'] },
    { name: 'no spec', doc: { kind: 'TrafficPolicy' }, errors: ['spec: is required'] },
    { name: 'not a mapping at all', doc: 'reviews', errors: ['(top level): must be a mapping'] },
    { name: 'failoverPriority not a list', doc: doc({ locality: { failoverPriority: 'network' } }), errors: ['spec.locality.failoverPriority: must be a list of keys such as [network, region, zone] or label names'] },
    {
      name: 'failoverPriority entries',
      doc: doc({ locality: { failoverPriority: ['region', '', 'a=b=c', 'region'] } }),
      errors: [
        'spec.locality.failoverPriority[1]: must be a key (network, region, zone, subzone or a label name), optionally key=value',
        'spec.locality.failoverPriority[2]: "a=b=c" is not key or key=value',
        'spec.locality.failoverPriority[3]: repeats key "region"; each key can appear once',
      ],
    },
    {
      name: 'distribute weights that do not add up',
      doc: doc({ locality: { distribute: [{ from: 'us-east/*', to: { 'us-east/zone-a': 70, 'us-east/zone-b': 20 } }] } }),
      errors: ['spec.locality.distribute[0].to: weights must add up to 100, not 90'],
    },
    {
      name: 'distribute patterns',
      doc: doc({ locality: { distribute: [{ from: '*/zone-a', to: { 'a/b/c/d': 50, 'us-east/*': 0 } }] } }),
      errors: [
        'spec.locality.distribute[0].from: must be a locality region[/zone[/subzone]], where the last part may be *, for example us-east/* or us-east/us-east-1a',
        'spec.locality.distribute[0].to["a/b/c/d"]: must be a locality region[/zone[/subzone]], where the last part may be *, for example us-east/* or us-east/us-east-1a',
        'spec.locality.distribute[0].to["us-east/*"]: must be between 1 and 100',
      ],
    },
    {
      name: 'distribute with failoverPriority',
      doc: doc({ locality: { failoverPriority: ['region'], distribute: [{ from: '*', to: { '*': 100 } }] } }),
      errors: ['spec.locality.distribute: cannot be combined with failoverPriority: distribute replaces failover priorities for the clients it matches (as in Istio); keep one'],
    },
    {
      name: 'locality settings while locality is off',
      doc: doc({ locality: { enabled: false, failoverPriority: ['region'] } }),
      errors: ['spec.locality.enabled: is false, so failoverPriority and distribute would be ignored; remove them or enable locality'],
    },
  ];
  for (const c of bad) {
    it(`names the path: ${c.name}`, () => assert.deepEqual(errorsOf(c.doc), c.errors));
  }

  it('reports every error in one go', () => {
    const errors = errorsOf(doc({ loadBalancer: 'magic', panicThreshold: 101, outlierDetection: { maxEjectionPercent: -5, interval: 'x' } }));
    assert.deepEqual(
      errors.map((e) => e.split(':')[0]),
      ['spec.loadBalancer', 'spec.panicThreshold', 'spec.outlierDetection.interval', 'spec.outlierDetection.maxEjectionPercent'],
    );
  });

  it('a policy naming an unknown service fails when the caller knows the services', () => {
    assert.deepEqual(errorsOf(doc({ service: 'ratings.default' }), { serviceExists: (k: string) => k === 'reviews.default' }), [
      'spec.service: no service ratings.default is known to the federation; check its name and namespace',
    ]);
    assert.ok(validateTrafficPolicy(doc({}), { serviceExists: (k: string) => k === 'reviews.default' }).ok);
  });
});

describe('parseTrafficPolicy', () => {
  it('throws KEDGE_BAD_POLICY listing every error with the file name', () => {
    assert.throws(
      () => parseTrafficPolicy(doc({ outlierDetection: { maxEjectionPercent: 150 }, panicThreshold: -1 }), 'policy.yaml'),
      (err: unknown) =>
        hasCode(err, 'KEDGE_BAD_POLICY') &&
        (err as Error).message === 'policy.yaml: spec.panicThreshold: must be between 0 and 100\npolicy.yaml: spec.outlierDetection.maxEjectionPercent: must be between 0 and 100',
    );
  });

  it('returns the object when valid', () => {
    assert.equal(parseTrafficPolicy(doc({}), 'policy.yaml').service, 'reviews.default');
  });
});
