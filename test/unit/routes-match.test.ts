// Route matching: the Gateway API's precedence rules, table-tested against
// the examples of its conformance suite (conformance/tests/*.yaml, read and
// restated here for a mesh parentRef) and its spec text.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  compileServiceRoutes, literalPrefix, modifyPath, pickBackend, queryValue, redirectLocation, validateRouteDocument,
  type FaultObject, type RouteObject, type RouteRequest, type ServiceRoutes,
} from '../../policy/routes';

const SERVICE = { key: 'echo.mesh', namespace: 'mesh', ports: [{ name: 'http', port: 80 }, { name: 'grpc', port: 9000 }] };

/** A route document attached to echo.mesh port 80 (or `port`), in namespace `ns`. */
function route(kind: 'HTTPRoute' | 'GRPCRoute', name: string, rules: unknown[], opts: { ns?: string; createdAt?: string; port?: number } = {}): unknown {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind,
    metadata: { name, namespace: opts.ns ?? 'mesh', creationTimestamp: opts.createdAt ?? '2026-01-01T00:00:00Z' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'echo', namespace: 'mesh', port: opts.port ?? (kind === 'GRPCRoute' ? 9000 : 80) }], rules },
  };
}

const to = (backend: string, extra: Record<string, unknown> = {}) => ({ backendRefs: [{ name: backend, port: 8080 }], ...extra });

function valid(doc: unknown): RouteObject {
  const r = validateRouteDocument(doc);
  if (!r.ok) assert.fail(r.errors.join('\n'));
  return r.value as RouteObject;
}

function compile(docs: unknown[], clientNs = 'mesh', faults: Map<string, FaultObject> = new Map()): ServiceRoutes {
  const routes = compileServiceRoutes(SERVICE, docs.map(valid), faults, clientNs);
  assert.ok(routes, 'routes attach');
  return routes;
}

function req(target: string, headers: Record<string, string> = {}, method = 'GET'): RouteRequest {
  const q = target.indexOf('?');
  const lower = new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { method, path: q === -1 ? target : target.slice(0, q), query: q === -1 ? '' : target.slice(q + 1), headers: lower };
}

/** The backend service a request lands on, or 404. */
function backendOf(routes: ServiceRoutes, port: number, r: RouteRequest): string {
  const t = routes.forPort(port)?.match(r);
  return t ? t.backends.map((b) => b.service.split('.')[0]).join('+') : '404';
}

describe('HTTPRoute matching', () => {
  // conformance/tests/mesh/httproute-matching.yaml
  const matching = compile([
    route('HTTPRoute', 'mesh-matching', [
      to('echo-v1', { matches: [{ path: { type: 'PathPrefix', value: '/' } }, { headers: [{ name: 'version', value: 'one' }] }] }),
      to('echo-v2', { matches: [{ path: { type: 'PathPrefix', value: '/v2' } }, { headers: [{ name: 'version', value: 'two' }] }] }),
    ]),
  ]);
  const table: [string, Record<string, string>, string][] = [
    ['/', {}, 'echo-v1'],
    ['/example', {}, 'echo-v1'],
    ['/', { Version: 'one' }, 'echo-v1'],
    ['/v2', {}, 'echo-v2'],
    ['/v2/example', {}, 'echo-v2'],
    ['/', { Version: 'two' }, 'echo-v2'],
    ['/v2/', {}, 'echo-v2'],
    ['/v2example', {}, 'echo-v1'],
    ['/foo/v2/example', {}, 'echo-v1'],
  ];
  for (const [path, headers, want] of table) {
    it(`mesh-matching: ${path} ${JSON.stringify(headers)} -> ${want}`, () => assert.equal(backendOf(matching, 80, req(path, headers)), want));
  }

  // conformance/tests/httproute-query-param-matching.yaml
  const query = compile([
    route('HTTPRoute', 'query-param-matching', [
      to('v1', { matches: [{ queryParams: [{ name: 'animal', value: 'whale' }] }] }),
      to('v2', { matches: [{ queryParams: [{ name: 'animal', value: 'dolphin' }] }] }),
      to('v3', { matches: [{ queryParams: [{ name: 'animal', value: 'dolphin' }, { name: 'color', value: 'blue' }] }, { queryParams: [{ name: 'ANIMAL', value: 'Whale' }] }] }),
      to('v1', { matches: [{ path: { type: 'PathPrefix', value: '/path1' }, queryParams: [{ name: 'animal', value: 'whale' }] }] }),
      to('v2', { matches: [{ headers: [{ name: 'version', value: 'one' }], queryParams: [{ name: 'animal', value: 'whale' }] }] }),
      to('v3', { matches: [{ path: { type: 'PathPrefix', value: '/path2' }, headers: [{ name: 'version', value: 'two' }], queryParams: [{ name: 'animal', value: 'whale' }] }] }),
      to('v1', {
        matches: [
          { path: { type: 'PathPrefix', value: '/path3' }, queryParams: [{ name: 'animal', value: 'shark' }] },
          { path: { type: 'PathPrefix', value: '/path4' }, headers: [{ name: 'version', value: 'three' }], queryParams: [{ name: 'animal', value: 'kraken' }] },
        ],
      }),
      to('v1', { matches: [{ path: { type: 'PathPrefix', value: '/path5' } }] }),
      to('v2', { matches: [{ queryParams: [{ name: 'animal', value: 'hydra' }] }] }),
      to('v3', { matches: [{ headers: [{ name: 'version', value: 'four' }] }] }),
    ]),
  ]);
  const queryTable: [string, Record<string, string>, string][] = [
    ['/?animal=whale', {}, 'v1'],
    ['/?animal=dolphin', {}, 'v2'],
    ['/?animal=dolphin&color=blue', {}, 'v3'],
    ['/?ANIMAL=Whale', {}, 'v3'],
    ['/?animal=whale&otherparam=irrelevant', {}, 'v1'],
    ['/?animal=dolphin&color=yellow', {}, 'v2'],
    ['/?color=blue', {}, '404'],
    ['/?animal=dog', {}, '404'],
    ['/?animal=whaledolphin', {}, '404'],
    ['/', {}, '404'],
    ['/path1?animal=whale', {}, 'v1'],
    ['/?animal=whale', { version: 'one' }, 'v2'],
    ['/path2?animal=whale', { version: 'two' }, 'v3'],
    ['/path3?animal=shark', {}, 'v1'],
    ['/path4?animal=kraken', { version: 'three' }, 'v1'],
    ['/?animal=shark', {}, '404'],
    ['/path4?animal=kraken', {}, '404'],
    // A longer prefix beats a query match; a header match beats a query match.
    ['/path5?animal=hydra', {}, 'v1'],
    ['/?animal=hydra', { version: 'four' }, 'v3'],
  ];
  for (const [path, headers, want] of queryTable) {
    it(`query-param-matching: ${path} ${JSON.stringify(headers)} -> ${want}`, () => assert.equal(backendOf(query, 80, req(path, headers)), want));
  }

  it('an Exact path beats any PathPrefix, a method beats headers, more headers beat more query parameters', () => {
    const r = compile([
      route('HTTPRoute', 'precedence', [
        to('prefix-headers', { matches: [{ path: { type: 'PathPrefix', value: '/foo' }, headers: [{ name: 'a', value: '1' }, { name: 'b', value: '2' }] }] }),
        to('exact', { matches: [{ path: { type: 'Exact', value: '/foo' } }] }),
        to('method', { matches: [{ path: { type: 'PathPrefix', value: '/bar' }, method: 'POST' }] }),
        to('two-headers', { matches: [{ path: { type: 'PathPrefix', value: '/bar' }, headers: [{ name: 'a', value: '1' }, { name: 'b', value: '2' }] }] }),
        to('one-header-two-query', { matches: [{ path: { type: 'PathPrefix', value: '/baz' }, headers: [{ name: 'a', value: '1' }] }] }),
        to('two-query', { matches: [{ path: { type: 'PathPrefix', value: '/baz' }, queryParams: [{ name: 'x', value: '1' }, { name: 'y', value: '2' }] }] }),
      ]),
    ]);
    assert.equal(backendOf(r, 80, req('/foo', { a: '1', b: '2' })), 'exact');
    assert.equal(backendOf(r, 80, req('/foo/x', { a: '1', b: '2' })), 'prefix-headers');
    assert.equal(backendOf(r, 80, req('/bar', { a: '1', b: '2' }, 'POST')), 'method');
    assert.equal(backendOf(r, 80, req('/bar', { a: '1', b: '2' }, 'GET')), 'two-headers');
    assert.equal(backendOf(r, 80, req('/baz?x=1&y=2', { a: '1' })), 'one-header-two-query');
    assert.equal(backendOf(r, 80, req('/baz?x=1&y=2')), 'two-query');
  });

  it('ties across routes go to the oldest, then to namespace/name; within a route to the first rule', () => {
    const rules = (b: string) => [to(`${b}-first`, { matches: [{ path: { type: 'PathPrefix', value: '/' } }] }), to(`${b}-second`, { matches: [{ path: { type: 'PathPrefix', value: '/' } }] })];
    const older = compile([route('HTTPRoute', 'a-new', rules('new'), { createdAt: '2026-02-01T00:00:00Z' }), route('HTTPRoute', 'z-old', rules('old'), { createdAt: '2026-01-01T00:00:00Z' })]);
    assert.equal(backendOf(older, 80, req('/')), 'old-first');
    const sameTime = compile([route('HTTPRoute', 'zeta', rules('zeta')), route('HTTPRoute', 'alpha', rules('alpha'))]);
    assert.equal(backendOf(sameTime, 80, req('/')), 'alpha-first');
  });

  it('RegularExpression paths match the whole path, after Exact and before every PathPrefix', () => {
    const r = compile([
      route('HTTPRoute', 're', [
        to('prefix', { matches: [{ path: { type: 'PathPrefix', value: '/users' } }] }),
        to('regex', { matches: [{ path: { type: 'RegularExpression', value: '/users/[0-9]+' } }] }),
        to('exact', { matches: [{ path: { type: 'Exact', value: '/users/0' } }] }),
      ]),
    ]);
    assert.equal(backendOf(r, 80, req('/users/42')), 'regex');
    assert.equal(backendOf(r, 80, req('/users/42/x')), 'prefix');
    assert.equal(backendOf(r, 80, req('/users/0')), 'exact');
    assert.equal(backendOf(r, 80, req('/x/users/42')), '404');
  });

  it('header names match case-insensitively and values exactly; regex header values match the whole value', () => {
    const r = compile([route('HTTPRoute', 'h', [to('canary', { matches: [{ headers: [{ name: 'X-Canary', value: '1' }] }] }), to('re', { matches: [{ headers: [{ type: 'RegularExpression', name: 'user-agent', value: 'curl/.*' }] }] }), to('stable')])]);
    assert.equal(backendOf(r, 80, req('/', { 'x-canary': '1' })), 'canary');
    assert.equal(backendOf(r, 80, req('/', { 'x-canary': '10' })), 'stable');
    assert.equal(backendOf(r, 80, req('/', { 'user-agent': 'curl/8.5' })), 're');
    assert.equal(backendOf(r, 80, req('/', { 'user-agent': 'not curl/8.5' })), 'stable');
  });

  it('a route without a port attaches to every port; one with sectionName to the port of that name', () => {
    const doc = route('HTTPRoute', 'all', [to('v1')]) as { spec: { parentRefs: Record<string, unknown>[] } };
    delete doc.spec.parentRefs[0]!.port;
    const all = compile([doc]);
    assert.equal(backendOf(all, 80, req('/')), 'v1');
    assert.equal(backendOf(all, 9000, req('/')), 'v1');
    doc.spec.parentRefs[0]!.sectionName = 'grpc';
    const named = compile([doc]);
    assert.equal(named.forPort(80), undefined);
    assert.equal(backendOf(named, 9000, req('/')), 'v1');
  });

  it('weighted backends split by weight; weight 0 takes nothing', () => {
    const r = compile([route('HTTPRoute', 'canary', [{ backendRefs: [{ name: 'reviews-v1', port: 9080, weight: 90 }, { name: 'reviews-v2', port: 9080, weight: 10 }, { name: 'off', port: 9080, weight: 0 }] }])]);
    const t = r.forPort(80)!.match(req('/'))!;
    assert.equal(t.totalWeight, 100);
    assert.equal(pickBackend(t, 0)!.service, 'reviews-v1.mesh');
    assert.equal(pickBackend(t, 0.8999)!.service, 'reviews-v1.mesh');
    assert.equal(pickBackend(t, 0.9)!.service, 'reviews-v2.mesh');
    assert.equal(pickBackend(t, 0.99999)!.service, 'reviews-v2.mesh');
    const counts = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const s = pickBackend(t, i / 1000)!.service;
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(counts), { 'reviews-v1.mesh': 900, 'reviews-v2.mesh': 100 });
  });
});

describe('GRPCRoute matching', () => {
  const SVC = 'gateway_api_conformance.echo_basic.grpcecho.GrpcEcho';
  // conformance/tests/grpcroute-exact-method-matching.yaml
  const exact = compile([route('GRPCRoute', 'exact-matching', [to('v1', { matches: [{ method: { service: SVC, method: 'Echo' } }] }), to('v2', { matches: [{ method: { service: SVC, method: 'EchoTwo' } }] })])]);
  it('exact-method-matching', () => {
    assert.equal(backendOf(exact, 9000, req(`/${SVC}/Echo`, {}, 'POST')), 'v1');
    assert.equal(backendOf(exact, 9000, req(`/${SVC}/EchoTwo`, {}, 'POST')), 'v2');
    assert.equal(backendOf(exact, 9000, req(`/${SVC}/EchoThree`, {}, 'POST')), '404');
    assert.equal(backendOf(exact, 9000, req(`/${SVC}x/Echo`, {}, 'POST')), '404');
  });

  // conformance/tests/grpcroute-header-matching.yaml
  const headers = compile([
    route('GRPCRoute', 'grpc-header-matching', [
      to('v1', { matches: [{ headers: [{ name: 'version', value: 'one' }] }] }),
      to('v2', { matches: [{ headers: [{ name: 'version', value: 'two' }] }] }),
      to('v1', { matches: [{ headers: [{ name: 'version', value: 'two' }, { name: 'color', value: 'orange' }] }] }),
      to('v1', { matches: [{ headers: [{ name: 'color', value: 'blue' }] }, { headers: [{ name: 'color', value: 'green' }] }] }),
      to('v2', { matches: [{ headers: [{ name: 'color', value: 'red' }] }, { headers: [{ name: 'color', value: 'yellow' }] }] }),
    ]),
  ]);
  const table: [Record<string, string>, string][] = [
    [{ Version: 'one' }, 'v1'],
    [{ Version: 'two' }, 'v2'],
    [{ Version: 'two', Color: 'orange' }, 'v1'],
    [{ Version: 'two', Color: 'blue' }, 'v2'],
    [{ Color: 'orange' }, '404'],
    [{ 'Some-Other-Header': 'one' }, '404'],
    [{ Color: 'blue' }, 'v1'],
    [{ Color: 'green' }, 'v1'],
    [{ Color: 'red' }, 'v2'],
    [{ Color: 'yellow' }, 'v2'],
    [{ Color: 'purple' }, '404'],
  ];
  for (const [h, want] of table) it(`header-matching: ${JSON.stringify(h)} -> ${want}`, () => assert.equal(backendOf(headers, 9000, req(`/${SVC}/Echo`, h, 'POST')), want));

  it('more service characters win, then more method characters, then headers; regexes count none', () => {
    const r = compile([
      route('GRPCRoute', 'g', [
        to('method-only', { matches: [{ method: { method: 'Get' } }] }),
        to('service', { matches: [{ method: { service: 'shop.Cart' } }] }),
        to('service-method', { matches: [{ method: { service: 'shop.Cart', method: 'Get' } }] }),
        to('regex', { matches: [{ method: { type: 'RegularExpression', service: 'shop\\..*', method: 'List.*' } }] }),
        to('any'),
      ]),
    ]);
    assert.equal(backendOf(r, 9000, req('/shop.Cart/Get')), 'service-method');
    assert.equal(backendOf(r, 9000, req('/shop.Cart/Put')), 'service');
    assert.equal(backendOf(r, 9000, req('/shop.Order/Get')), 'method-only');
    assert.equal(backendOf(r, 9000, req('/shop.Order/ListAll')), 'regex');
    assert.equal(backendOf(r, 9000, req('/other.Svc/Put')), 'any');
    assert.equal(backendOf(r, 9000, req('/not-grpc')), 'any');
  });

  it('a GRPCRoute wins over an HTTPRoute on the same service port, with a note', () => {
    const r = compile([route('HTTPRoute', 'web', [to('http')], { port: 9000 }), route('GRPCRoute', 'rpc', [to('grpc')])]);
    assert.equal(r.forPort(9000)!.kind, 'GRPCRoute');
    assert.equal(backendOf(r, 9000, req('/a.B/C')), 'grpc');
    assert.match(r.notes.join('\n'), /HTTPRoute mesh\/web: not used on port 9000: a GRPCRoute attaches to the same service port/);
  });
});

describe('mesh attachment (GEP-1294)', () => {
  it('a consumer route applies only to clients in its namespace, which then skip the producer routes', () => {
    const docs = [route('HTTPRoute', 'producer', [to('v1')]), route('HTTPRoute', 'consumer', [to('v2', { backendRefs: [{ name: 'echo-v2', namespace: 'mesh', port: 8080 }] })], { ns: 'shop' })];
    assert.equal(backendOf(compile(docs, 'mesh'), 80, req('/')), 'v1');
    assert.equal(backendOf(compile(docs, 'other'), 80, req('/')), 'v1');
    const shop = compile(docs, 'shop');
    assert.equal(backendOf(shop, 80, req('/')), 'echo-v2');
    assert.match(shop.notes.join('\n'), /producer: not used on port 80 by clients in shop/);
  });

  it('routes for other services attach to nothing', () => {
    const doc = route('HTTPRoute', 'elsewhere', [to('v1')]) as { spec: { parentRefs: Record<string, unknown>[] } };
    doc.spec.parentRefs[0]!.name = 'other';
    assert.equal(compileServiceRoutes(SERVICE, [valid(doc)], new Map(), 'mesh'), undefined);
  });
});

describe('targets', () => {
  it('carry filters, timeouts and retry, and resolve FaultInjection; a missing one aborts with 500', () => {
    const doc = route('HTTPRoute', 'full', [
      to('v1', {
        name: 'main',
        filters: [
          { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-Env', value: 'prod' }], add: [{ name: 'x-add', value: 'a' }], remove: ['X-Debug'] } },
          { type: 'ExtensionRef', extensionRef: { group: 'kedge.io', kind: 'FaultInjection', name: 'flaky' } },
          { type: 'RequestMirror', requestMirror: { backendRef: { name: 'shadow', port: 8080 }, percent: 25 } },
        ],
        timeouts: { request: '200ms', backendRequest: '100ms' },
        retry: { codes: [503, 502], attempts: 3, backoff: '10ms' },
      }),
    ]);
    const fault: FaultObject = { kind: 'FaultInjection', namespace: 'mesh', name: 'flaky', createdAt: '', delay: { ms: 100, percent: 50 }, abort: { httpStatus: 503, grpcStatus: undefined, percent: 10 } };
    const t = compile([doc], 'mesh', new Map([['mesh/flaky', fault]])).forPort(80)!.match(req('/'))!;
    assert.deepEqual(t.ref, { kind: 'HTTPRoute', namespace: 'mesh', name: 'full', rule: 0, ruleName: 'main', id: 'HTTPRoute/mesh/full/0' });
    assert.deepEqual(t.filters.requestHeaders, { set: [{ name: 'x-env', value: 'prod' }], add: [{ name: 'x-add', value: 'a' }], remove: ['x-debug'] });
    assert.deepEqual(t.filters.fault, { name: 'mesh/flaky', delay: { ms: 100, fraction: 0.5 }, abort: { httpStatus: 503, grpcStatus: 14, fraction: 0.1 } });
    assert.deepEqual(t.filters.mirrors, [{ service: 'shadow.mesh', port: 8080, fraction: 0.25 }]);
    assert.deepEqual(t.timeouts, { requestMs: 200, backendRequestMs: 100 });
    assert.deepEqual([...t.retry!.httpCodes].sort(), [502, 503]);
    assert.equal(t.retry!.attempts, 3);
    assert.equal(t.retry!.backoffMs, 10);
    assert.ok(Object.isFrozen(t) && Object.isFrozen(t.filters));
    const missing = compile([doc]).forPort(80)!.match(req('/'))!;
    assert.deepEqual(missing.filters.fault!.abort, { httpStatus: 500, grpcStatus: 14, fraction: 1 });
  });

  it('ReplacePrefixMatch follows the API table; redirects build Location as the API says', () => {
    const prefixTable: [string, string, string, string][] = [
      ['/foo/bar', '/foo', '/xyz', '/xyz/bar'],
      ['/foo/bar', '/foo', '/xyz/', '/xyz/bar'],
      ['/foo/bar', '/foo/', '/xyz', '/xyz/bar'],
      ['/foo/bar', '/foo/', '/xyz/', '/xyz/bar'],
      ['/foo', '/foo', '/xyz', '/xyz'],
      ['/foo/', '/foo', '/xyz', '/xyz/'],
      ['/foo/bar', '/foo', '', '/bar'],
      ['/foo/', '/foo', '', '/'],
      ['/foo', '/foo', '', '/'],
      ['/foo/', '/foo', '/', '/'],
      ['/foo', '/foo', '/', '/'],
    ];
    for (const [path, prefix, repl, want] of prefixTable) {
      const doc = route('HTTPRoute', 'rw', [to('v1', { matches: [{ path: { type: 'PathPrefix', value: prefix } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: repl } } }] })]);
      const t = compile([doc]).forPort(80)!.match(req(path))!;
      assert.equal(modifyPath(path, t.filters.rewrite!.path!), want, `${path} ${prefix} ${JSON.stringify(repl)}`);
    }
    const redirect = (f: Record<string, unknown>) => {
      const t = compile([route('HTTPRoute', 'r', [{ filters: [{ type: 'RequestRedirect', requestRedirect: f }] }])]).forPort(80)!.match(req('/a'))!;
      assert.equal(t.backends.length, 0);
      return { status: t.redirect!.statusCode, location: redirectLocation(t.redirect!, { scheme: 'http', host: 'echo.mesh', port: 80, path: '/a', query: 'q=1' }) };
    };
    assert.deepEqual(redirect({ scheme: 'https' }), { status: 302, location: 'https://echo.mesh/a?q=1' });
    assert.deepEqual(redirect({ hostname: 'example.org', statusCode: 301 }), { status: 301, location: 'http://example.org/a?q=1' });
    assert.deepEqual(redirect({ port: 8443, scheme: 'https' }), { status: 302, location: 'https://echo.mesh:8443/a?q=1' });
    assert.deepEqual(redirect({ path: { type: 'ReplaceFullPath', replaceFullPath: '/b' } }), { status: 302, location: 'http://echo.mesh/b?q=1' });
  });

  it('literalPrefix: the fixed start of a path regex, conservatively', () => {
    const table: [string, string][] = [
      ['/users/[0-9]+', '/users/'],
      ['/api/v1/.*', '/api/v1/'],
      ['/a(b|c)', ''],
      ['/ab?c', '/a'],
      ['/ab*', '/a'],
      ['/ab{2}', '/a'],
      ['[/]x', ''],
      ['/x\\.json', '/x'],
    ];
    for (const [pattern, want] of table) assert.equal(literalPrefix(pattern), want, pattern);
  });

  it('queryValue takes the first value, percent-decoded, and only whole names', () => {
    assert.equal(queryValue('a=1&a=2', 'a'), '1');
    assert.equal(queryValue('ab=1&a=%20x', 'a'), ' x');
    assert.equal(queryValue('a', 'a'), '');
    assert.equal(queryValue('b=1', 'a'), undefined);
    assert.equal(queryValue('', 'a'), undefined);
    assert.equal(queryValue('a=%zz', 'a'), '%zz');
  });
});
