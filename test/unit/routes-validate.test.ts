// Route documents: every error names the document, the path in it and what
// to write instead; what Kedge does not implement is refused, never ignored.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { hasCode } from '../../proto/model/errors';
import { parseRouteDocument, validateRouteDocument, type RouteObject } from '../../policy/routes';

const parent = { group: '', kind: 'Service', name: 'reviews', port: 9080 };

function http(rules: unknown[], extra: { spec?: Record<string, unknown>; top?: Record<string, unknown> } = {}): unknown {
  return { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'reviews', namespace: 'default' }, spec: { parentRefs: [parent], rules, ...extra.spec }, ...extra.top };
}
function grpc(rules: unknown[]): unknown {
  return { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'cart' }, spec: { parentRefs: [{ ...parent, name: 'cart' }], rules } };
}
const backend = { backendRefs: [{ name: 'reviews-v1', port: 9080 }] };

function errorsOf(doc: unknown, opts = {}): string[] {
  const r = validateRouteDocument(doc, opts);
  assert.equal(r.ok, false, 'expected errors');
  return r.ok ? [] : r.errors;
}

describe('validateRouteDocument', () => {
  it('a canary route resolves with the API defaults', () => {
    const r = validateRouteDocument(http([{ backendRefs: [{ name: 'reviews-v1', port: 9080, weight: 90 }, { name: 'reviews-v2', port: 9080, weight: 10 }] }]));
    assert.ok(r.ok);
    const v = r.value as RouteObject;
    assert.deepEqual(v.parents, [{ service: 'reviews.default', port: 9080, sectionName: undefined }]);
    assert.deepEqual(v.rules[0]!.matches, [{ path: { type: 'PathPrefix', value: '/' }, method: undefined, headers: [], queryParams: [] }]);
    assert.deepEqual(v.rules[0]!.backends.map((b) => [b.service, b.weight]), [['reviews-v1.default', 90], ['reviews-v2.default', 10]]);
    assert.ok(Object.isFrozen(v.rules[0]));
  });

  const bad: { name: string; doc: unknown; errors: (string | RegExp)[]; opts?: object }[] = [
    {
      name: 'an unknown field',
      doc: http([{ ...backend, matchs: [] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].matchs: unknown field (expected one of: name, matches, filters, backendRefs, timeouts, retry, sessionPersistence)'],
    },
    {
      name: 'a filter Kedge does not support',
      doc: http([{ ...backend, filters: [{ type: 'CORS', cors: { allowOrigins: ['*'] } }] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].filters[0].type: Kedge does not implement the CORS filter; answer CORS in the application'],
    },
    {
      name: 'an unknown filter type',
      doc: http([{ ...backend, filters: [{ type: 'RateLimit' }] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].filters[0].type: "RateLimit" is not a HTTPRoute filter Kedge supports; use one of: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror, ExtensionRef'],
    },
    {
      name: 'a malformed regex',
      doc: http([{ ...backend, matches: [{ path: { type: 'RegularExpression', value: '/users/([0-9]+' } }] }]),
      errors: [/^HTTPRoute default\/reviews: spec\.rules\[0\]\.matches\[0\]\.path\.value: is not a valid regular expression: /],
    },
    {
      name: 'a regex RE2 cannot express',
      doc: http([{ ...backend, matches: [{ headers: [{ type: 'RegularExpression', name: 'x', value: '(?!admin).*' }] }] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].matches[0].headers[0].value: "(?!admin).*" uses a lookaround or backreference; Kedge takes the RE2-compatible subset of ECMAScript regular expressions'],
    },
    {
      name: 'weights all zero',
      doc: http([{ backendRefs: [{ name: 'a', port: 80, weight: 0 }, { name: 'b', port: 80, weight: 0 }] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].backendRefs: has every weight 0, so no request could be sent anywhere; give at least one backend a weight above 0'],
    },
    {
      name: 'a rule without backends',
      doc: http([{ matches: [{ path: { value: '/x' } }] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].backendRefs: is empty, so every request this rule matches would fail (the Gateway API answers 500); add backendRefs, or a RequestRedirect filter'],
    },
    {
      name: 'a backend without a port',
      doc: http([{ backendRefs: [{ name: 'reviews-v1' }] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].backendRefs[0].port: is required for a Service: the service port (not the target port), such as 8080'],
    },
    {
      name: 'a parentRef without kind (a Gateway)',
      doc: http([backend], { spec: { parentRefs: [{ name: 'reviews' }] } }),
      errors: ['HTTPRoute default/reviews: spec.parentRefs[0].kind: is Gateway when omitted; Kedge routes attach to Services (the Gateway API mesh profile): write kind: Service and group: ""'],
    },
    {
      name: 'hostnames on a mesh route',
      doc: http([backend], { spec: { hostnames: ['reviews.example.com'] } }),
      errors: ['HTTPRoute default/reviews: spec.hostnames: has no meaning on a mesh route (GEP-1294 says mesh implementations must not infer anything from it); to match the Host header, use matches[].headers with name: host'],
    },
    {
      name: 'an older API version',
      doc: http([backend], { top: { apiVersion: 'gateway.networking.k8s.io/v1beta1' } }),
      errors: ['HTTPRoute default/reviews: apiVersion: is "gateway.networking.k8s.io/v1beta1"; write apiVersion: gateway.networking.k8s.io/v1 (Kedge reads the v1 API; v1 has the same fields for what Kedge supports)'],
    },
    {
      name: 'a bare number and a malformed duration',
      doc: http([{ ...backend, timeouts: { request: 1, backendRequest: '1.5s' }, retry: { backoff: '100us' } }]),
      errors: [
        'HTTPRoute default/reviews: spec.rules[0].timeouts.request: a bare number has no unit; write "1s" or "1ms" (a Gateway API duration, GEP-2257)',
        'HTTPRoute default/reviews: spec.rules[0].timeouts.backendRequest: must be a Gateway API duration (GEP-2257): 1 to 4 parts of up to 5 digits with h, m, s or ms, such as 500ms, 10s or 1m30s',
        'HTTPRoute default/reviews: spec.rules[0].retry.backoff: must be a Gateway API duration (GEP-2257): 1 to 4 parts of up to 5 digits with h, m, s or ms, such as 500ms, 10s or 1m30s',
      ],
    },
    {
      name: 'a backend timeout longer than the request timeout',
      doc: http([{ ...backend, timeouts: { request: '1s', backendRequest: '2s' } }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].timeouts.backendRequest: must not be longer than request (the request timeout covers every backend attempt)'],
    },
    {
      name: 'retry codes outside 400-599',
      doc: http([{ ...backend, retry: { codes: [200, 503], attempts: 0 } }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].retry.codes[0]: must be between 400 and 599', 'HTTPRoute default/reviews: spec.rules[0].retry.attempts: must be between 1 and 10'],
    },
    {
      name: 'ReplacePrefixMatch without a single PathPrefix match',
      doc: http([{ ...backend, matches: [{ path: { type: 'Exact', value: '/a' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/b' } } }] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].filters[0].urlRewrite.path.type: ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix (the prefix it replaces)'],
    },
    {
      name: 'a redirect with backends, and a rewrite with it',
      doc: http([{ ...backend, filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https' } }, { type: 'URLRewrite', urlRewrite: { hostname: 'x' } }] }]),
      errors: [
        'HTTPRoute default/reviews: spec.rules[0].filters: has both RequestRedirect and URLRewrite; the Gateway API does not allow them together',
        'HTTPRoute default/reviews: spec.rules[0].backendRefs: must be empty with a RequestRedirect filter: a redirected request goes nowhere',
      ],
    },
    {
      name: 'a filter with the wrong field',
      doc: http([{ ...backend, filters: [{ type: 'RequestHeaderModifier', responseHeaderModifier: { set: [] } }] }]),
      errors: [
        'HTTPRoute default/reviews: spec.rules[0].filters[0].responseHeaderModifier: does not belong to a filter of type RequestHeaderModifier (which takes requestHeaderModifier)',
        'HTTPRoute default/reviews: spec.rules[0].filters[0].requestHeaderModifier: is required for type RequestHeaderModifier',
      ],
    },
    {
      name: 'one header with two actions, a pseudo-header',
      doc: http([{ ...backend, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-A', value: '1' }], remove: ['x-a', ':path'] } }] }]),
      errors: [
        'HTTPRoute default/reviews: spec.rules[0].filters[0].requestHeaderModifier.remove[0]: header "x-a" already has an action in this filter; the Gateway API allows one action per header name',
        'HTTPRoute default/reviews: spec.rules[0].filters[0].requestHeaderModifier.remove[1]: must be an HTTP header name (RFC 9110 token characters, no pseudo-headers such as :path)',
      ],
    },
    {
      name: 'a header match repeated in another case',
      doc: http([{ ...backend, matches: [{ headers: [{ name: 'Version', value: '1' }, { name: 'version', value: '2' }] }] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].matches[0].headers[1].name: repeats header "version"; the Gateway API would ignore this entry, so remove it or merge it into the first'],
    },
    {
      name: 'a path the API forbids, a lowercase method',
      doc: http([{ ...backend, matches: [{ path: { value: '/a//b' }, method: 'get' }] }]),
      errors: [
        'HTTPRoute default/reviews: spec.rules[0].matches[0].path.value: must not contain "//"',
        'HTTPRoute default/reviews: spec.rules[0].matches[0].method: must be one of: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH (uppercase)',
      ],
    },
    {
      name: 'an ExtensionRef to something other than a FaultInjection',
      doc: http([{ ...backend, filters: [{ type: 'ExtensionRef', extensionRef: { group: 'example.com', kind: 'Lua', name: 'x' } }] }]),
      errors: ['HTTPRoute default/reviews: spec.rules[0].filters[0].extensionRef: refers to "example.com"/"Lua"; the only extension Kedge knows is group: kedge.io, kind: FaultInjection'],
    },
    {
      name: 'a status block in a file',
      doc: http([backend], { top: { status: { parents: [] } } }),
      errors: ['HTTPRoute default/reviews: status: is written by controllers, not by users; remove it'],
    },
    {
      name: 'an unknown parent service and a missing backend',
      doc: http([{ backendRefs: [{ name: 'reviews-v1', port: 9080 }, { name: 'reviews-v9', port: 9080 }] }]),
      opts: { serviceExists: (k: string) => k === 'reviews-v1.default' },
      errors: [
        'HTTPRoute default/reviews: spec.parentRefs[0]: names the service reviews.default, which no source of the federation knows; check its name and namespace (or register it first)',
        'HTTPRoute default/reviews: spec.rules[0].backendRefs[1]: names the backend reviews-v9.default, which no source of the federation knows; check its name and namespace (or register it first)',
      ],
    },
    {
      name: 'ports the services do not have',
      doc: http([{ backendRefs: [{ name: 'reviews-v1', port: 18080 }] }], { spec: { parentRefs: [{ ...parent, port: 9999 }, { ...parent, port: undefined, sectionName: 'grpc' }] } }),
      opts: { serviceExists: () => true, servicePorts: () => [{ name: 'http', port: 9080 }] },
      errors: [
        'HTTPRoute default/reviews: spec.parentRefs[0].port: reviews.default has no port 9999 (its ports: http 9080)',
        'HTTPRoute default/reviews: spec.parentRefs[1].sectionName: reviews.default has no port named grpc (its ports: http 9080)',
        'HTTPRoute default/reviews: spec.rules[0].backendRefs[0].port: reviews-v1.default has no port 18080 (its ports: http 9080); give the service port, not the target port',
      ],
    },
    {
      name: 'a gRPC exact service with a slash, no service or method',
      doc: grpc([{ ...backend, matches: [{ method: { service: 'shop/Cart' } }, { method: { type: 'Exact' } }] }]),
      errors: [
        'GRPCRoute default/cart: spec.rules[0].matches[0].method.service: must be a gRPC service name such as helloworld.Greeter (no "/")',
        'GRPCRoute default/cart: spec.rules[0].matches[1].method: needs service, method or both (the API requires one)',
      ],
    },
    {
      name: 'an HTTP-only filter on a GRPCRoute, HTTP codes in a gRPC retry',
      doc: grpc([{ ...backend, filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'x' } }], retry: { codes: [503] } }]),
      errors: [
        'GRPCRoute default/cart: spec.rules[0].filters[0].type: "URLRewrite" is not a GRPCRoute filter Kedge supports; use one of: RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, ExtensionRef',
        /^GRPCRoute default\/cart: spec\.rules\[0\]\.retry\.codes\[0\]: must be a gRPC status name such as UNAVAILABLE or RESOURCE_EXHAUSTED \(one of: CANCELLED, /,
      ],
    },
    {
      name: 'a FaultInjection without a percentage, with an unknown gRPC status',
      doc: { apiVersion: 'kedge.io/v1alpha1', kind: 'FaultInjection', metadata: { name: 'flaky' }, spec: { delay: { fixedDelay: '100ms' }, abort: { grpcStatus: 'BROKEN', percentage: { value: 120 } } } },
      errors: [
        'FaultInjection default/flaky: spec.delay.percentage: is required: the share of requests, such as percentage: { value: 10 }',
        /^FaultInjection default\/flaky: spec\.abort\.grpcStatus: must be a gRPC status name/,
        'FaultInjection default/flaky: spec.abort.percentage.value: must be a number from 0 to 100',
      ],
    },
    {
      name: 'a FaultInjection that does nothing',
      doc: { apiVersion: 'kedge.io/v1alpha1', kind: 'FaultInjection', metadata: { name: 'noop' }, spec: {} },
      errors: ['FaultInjection default/noop: spec: needs delay, abort or both'],
    },
  ];
  for (const c of bad) {
    it(`names the path: ${c.name}`, () => {
      const errors = errorsOf(c.doc, c.opts);
      assert.equal(errors.length, c.errors.length, errors.join('\n'));
      c.errors.forEach((want, i) => (typeof want === 'string' ? assert.equal(errors[i], want) : assert.match(errors[i]!, want)));
    });
  }

  it('a route read from a cluster may carry status and server metadata', () => {
    const doc = http([backend], { top: { status: { parents: [] }, metadata: { name: 'reviews', namespace: 'default', uid: 'u1', resourceVersion: '7', creationTimestamp: '2026-03-01T10:00:00Z' } } });
    const r = validateRouteDocument(doc, { fromCluster: true });
    assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
    assert.equal((r.value as RouteObject).createdAt, '2026-03-01T10:00:00.000Z');
  });

  it('parseRouteDocument throws KEDGE_BAD_ROUTE with every error', () => {
    assert.throws(() => parseRouteDocument(http([{}])), (err: unknown) => hasCode(err, 'KEDGE_BAD_ROUTE') && /spec\.rules\[0\]\.backendRefs: is empty/.test((err as Error).message));
  });
});
