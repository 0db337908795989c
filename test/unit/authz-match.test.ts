// The compiled authorization matcher against the examples of Istio's
// documentation (AuthorizationPolicy reference, security concepts, the
// authz-http, authz-deny, authz-tcp and authz-ip tasks), restated as tables:
// each case names the example it comes from and the decision Istio documents.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { authzPath, compileAuthorization, parseAuthorizationPolicy, type AuthzRequest, type AuthzWorkload } from '../../policy/authz';

type Spec = Record<string, unknown>;
function policy(name: string, namespace: string, spec: Spec | undefined): unknown {
  return { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace }, ...(spec === undefined ? {} : { spec }) };
}
const sa = (ns: string, name: string) => `cluster.local/ns/${ns}/sa/${name}`;

interface Req {
  from?: string;
  ip?: string;
  port?: number;
  method?: string;
  path?: string;
  host?: string;
  headers?: Record<string, string>;
  sni?: string;
  tcp?: boolean;
}
function request(r: Req): AuthzRequest {
  const headers = r.headers ?? {};
  return {
    principal: r.from ?? '',
    sourceIp: r.ip ?? '10.0.0.9',
    destinationPort: r.port ?? 8000,
    sni: r.sni,
    http: r.tcp ? undefined : { host: r.host ?? 'httpbin.foo:8000', method: r.method ?? 'GET', path: r.path ?? '/', header: (n) => headers[n] },
  };
}

interface Case {
  name: string;
  policies: unknown[];
  workload?: AuthzWorkload;
  checks: { req: Req; allowed: boolean; by?: string; audit?: string }[];
}

const httpbin: AuthzWorkload = { namespace: 'foo', labels: { app: 'httpbin', version: 'v1' } };
const sleep = sa('foo', 'sleep');

const cases: Case[] = [
  {
    name: 'no policy: everything is allowed',
    policies: [],
    checks: [{ req: {}, allowed: true }, { req: { tcp: true }, allowed: true }],
  },
  {
    name: 'allow-nothing (spec: {}) denies every request to the namespace',
    policies: [policy('allow-nothing', 'foo', {})],
    checks: [
      { req: { from: sleep }, allowed: false },
      { req: { from: sleep, tcp: true }, allowed: false },
    ],
  },
  {
    name: 'allow-nothing with no spec at all',
    policies: [policy('allow-nothing', 'foo', undefined)],
    checks: [{ req: { from: sleep }, allowed: false }],
  },
  {
    name: 'deny-all (DENY with an empty rule) denies even when an allow-all exists',
    policies: [policy('deny-all', 'foo', { action: 'DENY', rules: [{}] }), policy('allow-all', 'foo', { rules: [{}] })],
    checks: [{ req: { from: sleep }, allowed: false, by: 'foo/deny-all#0' }],
  },
  {
    name: 'allow-all (an empty rule) allows everything',
    policies: [policy('allow-all', 'foo', { rules: [{}] })],
    checks: [
      { req: {}, allowed: true, by: 'foo/allow-all#0' },
      { req: { tcp: true }, allowed: true, by: 'foo/allow-all#0' },
    ],
  },
  {
    name: 'a DENY with no rules matches nothing',
    policies: [policy('deny-none', 'foo', { action: 'DENY' })],
    checks: [{ req: {}, allowed: true }],
  },
  {
    name: 'reference allow-read: GET from sleep in default, or from namespace test',
    policies: [
      policy('allow-read', 'foo', {
        action: 'ALLOW',
        rules: [{ from: [{ source: { principals: [sa('default', 'sleep')] } }, { source: { namespaces: ['test'] } }], to: [{ operation: { methods: ['GET'] } }] }],
      }),
    ],
    checks: [
      { req: { from: sa('default', 'sleep') }, allowed: true, by: 'foo/allow-read#0' },
      { req: { from: sa('test', 'anything') }, allowed: true },
      { req: { from: sa('default', 'sleep'), method: 'POST' }, allowed: false },
      { req: { from: sa('default', 'other') }, allowed: false },
      { req: {}, allowed: false },
    ],
  },
  {
    name: 'reference deny: POST from namespace dev is denied',
    policies: [policy('deny', 'foo', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['dev'] } }], to: [{ operation: { methods: ['POST'] } }] }] })],
    checks: [
      { req: { from: sa('dev', 'x'), method: 'POST' }, allowed: false, by: 'foo/deny#0' },
      { req: { from: sa('dev', 'x'), method: 'GET' }, allowed: true },
      { req: { from: sa('prod', 'x'), method: 'POST' }, allowed: true },
    ],
  },
  {
    name: 'authz-deny task: deny GET, then deny unless x-token is admin',
    policies: [
      policy('deny-method-get', 'foo', { selector: { matchLabels: { app: 'httpbin' } }, action: 'DENY', rules: [{ to: [{ operation: { methods: ['GET'] } }], when: [{ key: 'request.headers[x-token]', notValues: ['admin'] }] }] }),
    ],
    checks: [
      { req: { from: sleep, method: 'GET', headers: { 'x-token': 'admin' } }, allowed: true },
      { req: { from: sleep, method: 'GET', headers: { 'x-token': 'guest' } }, allowed: false },
      { req: { from: sleep, method: 'GET' }, allowed: false, by: 'foo/deny-method-get#0' },
      { req: { from: sleep, method: 'POST', headers: { 'x-token': 'guest' } }, allowed: true },
    ],
  },
  {
    name: 'authz-deny task: allow only /ip, with the DENY still first',
    policies: [
      policy('deny-path-headers', 'foo', { selector: { matchLabels: { app: 'httpbin' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/headers'] } }], when: [{ key: 'request.headers[x-token]', notValues: ['admin'] }] }] }),
      policy('allow-path-ip', 'foo', { selector: { matchLabels: { app: 'httpbin' } }, action: 'ALLOW', rules: [{ to: [{ operation: { paths: ['/ip'] } }] }] }),
    ],
    checks: [
      { req: { path: '/ip' }, allowed: true, by: 'foo/allow-path-ip#0' },
      { req: { path: '/headers', headers: { 'x-token': 'admin' } }, allowed: false },
      { req: { path: '/headers' }, allowed: false, by: 'foo/deny-path-headers#0' },
    ],
  },
  {
    name: 'value matching: exact, prefix*, *suffix and * (presence)',
    policies: [policy('paths', 'foo', { rules: [{ to: [{ operation: { paths: ['/exact', '/test/*', '*/info'] } }] }, { from: [{ source: { principals: ['*'] } }], to: [{ operation: { paths: ['/authn'] } }] }] })],
    checks: [
      { req: { path: '/exact' }, allowed: true },
      { req: { path: '/exact/more' }, allowed: false },
      { req: { path: '/test/' }, allowed: true },
      { req: { path: '/test/a/b?x=1' }, allowed: true },
      { req: { path: '/test' }, allowed: false },
      { req: { path: '/a/info' }, allowed: true },
      { req: { path: '/authn', from: sleep }, allowed: true, by: 'foo/paths#1' },
      { req: { path: '/authn' }, allowed: false },
    ],
  },
  {
    name: 'paths are matched normalised: dot segments and escaped unreserved characters',
    policies: [policy('deny-admin', 'foo', { action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin', '/admin/*'] } }] }] })],
    checks: [
      { req: { path: '/admin' }, allowed: false },
      { req: { path: '/public/../admin' }, allowed: false },
      { req: { path: '/%61dmin/x' }, allowed: false },
      { req: { path: '/./admin?y' }, allowed: false },
      { req: { path: '/administrator' }, allowed: true },
    ],
  },
  {
    name: 'exclusion: deny unauthenticated requests except to /healthz',
    policies: [policy('require-mtls', 'foo', { action: 'DENY', rules: [{ from: [{ source: { notPrincipals: ['*'] } }], to: [{ operation: { notPaths: ['/healthz'] } }] }] })],
    checks: [
      { req: { path: '/healthz' }, allowed: true },
      { req: { path: '/data' }, allowed: false },
      { req: { path: '/data', from: sleep }, allowed: true },
    ],
  },
  {
    name: 'ipBlocks and notIpBlocks (authz-ip task)',
    policies: [policy('ingress', 'foo', { rules: [{ from: [{ source: { ipBlocks: ['1.2.3.4', '5.6.7.0/24', 'fd00::/8'], notIpBlocks: ['5.6.7.8'] } }] }] })],
    checks: [
      { req: { ip: '1.2.3.4' }, allowed: true },
      { req: { ip: '::ffff:1.2.3.4' }, allowed: true },
      { req: { ip: '1.2.3.5' }, allowed: false },
      { req: { ip: '5.6.7.200' }, allowed: true },
      { req: { ip: '5.6.7.8' }, allowed: false },
      { req: { ip: 'fd12::1' }, allowed: true },
      { req: { ip: 'fe80::1' }, allowed: false },
    ],
  },
  {
    name: 'hosts match case-insensitively, with or without the port',
    policies: [policy('hosts', 'foo', { rules: [{ to: [{ operation: { hosts: ['httpbin.foo', '*.example.com'] } }] }] })],
    checks: [
      { req: { host: 'HTTPBIN.foo:8000' }, allowed: true },
      { req: { host: 'httpbin.foo' }, allowed: true },
      { req: { host: 'api.example.com:443' }, allowed: true },
      { req: { host: 'httpbin.bar' }, allowed: false },
    ],
  },
  {
    name: 'when conditions: source.namespace, source.principal, destination.port, connection.sni, source.ip',
    policies: [
      policy('when', 'foo', {
        rules: [
          { when: [{ key: 'source.namespace', values: ['foo'] }, { key: 'destination.port', values: ['8000'] }] },
          { when: [{ key: 'source.principal', values: ['*/sa/admin'] }] },
          { when: [{ key: 'connection.sni', values: ['outbound_.9090_._*'] }] },
          { when: [{ key: 'source.ip', values: ['192.168.0.0/16'] }] },
        ],
      }),
    ],
    checks: [
      { req: { from: sleep, port: 8000 }, allowed: true, by: 'foo/when#0' },
      { req: { from: sleep, port: 8001 }, allowed: false },
      { req: { from: sa('bar', 'admin'), port: 8001 }, allowed: true, by: 'foo/when#1' },
      { req: { from: sa('bar', 'x'), sni: 'outbound_.9090_._.httpbin.foo.svc.cluster.local' }, allowed: true, by: 'foo/when#2' },
      { req: { ip: '192.168.4.4' }, allowed: true, by: 'foo/when#3' },
      { req: { ip: '10.0.0.1' }, allowed: false },
    ],
  },
  {
    name: 'authz-tcp task: ALLOW on ports 9000 and 9001 leaves 9002 denied',
    policies: [policy('tcp-policy', 'foo', { rules: [{ to: [{ operation: { ports: ['9000', '9001'] } }] }] })],
    checks: [
      { req: { tcp: true, port: 9000 }, allowed: true },
      { req: { tcp: true, port: 9001 }, allowed: true },
      { req: { tcp: true, port: 9002 }, allowed: false },
    ],
  },
  {
    name: 'authz-tcp task: an ALLOW rule with an HTTP-only field matches no TCP traffic',
    policies: [policy('tcp-policy', 'foo', { rules: [{ to: [{ operation: { methods: ['GET'], ports: ['9000'] } }] }] })],
    checks: [
      { req: { tcp: true, port: 9000 }, allowed: false },
      { req: { tcp: true, port: 9001 }, allowed: false },
      { req: { port: 9000, method: 'GET' }, allowed: true },
    ],
  },
  {
    name: 'authz-tcp task: a DENY rule with an HTTP-only field denies all TCP traffic to its port',
    policies: [policy('tcp-policy', 'foo', { action: 'DENY', rules: [{ to: [{ operation: { methods: ['GET'], ports: ['9000'] } }] }] })],
    checks: [
      { req: { tcp: true, port: 9000 }, allowed: false, by: 'foo/tcp-policy#0' },
      { req: { tcp: true, port: 9001 }, allowed: true },
      { req: { port: 9000, method: 'POST' }, allowed: true },
      { req: { port: 9000, method: 'GET' }, allowed: false },
    ],
  },
  {
    name: 'a DENY with only request.headers conditions denies every TCP connection',
    policies: [policy('hdr', 'foo', { action: 'DENY', rules: [{ when: [{ key: 'request.headers[x-bad]', values: ['1'] }] }] })],
    checks: [
      { req: { tcp: true }, allowed: false },
      { req: {}, allowed: true },
      { req: { headers: { 'x-bad': '1' } }, allowed: false },
    ],
  },
  {
    name: 'selector: a policy for version v2 does not apply to v1',
    policies: [policy('v2-only', 'foo', { selector: { matchLabels: { app: 'httpbin', version: 'v2' } }, rules: [] })],
    checks: [{ req: {}, allowed: true }],
  },
  {
    name: 'another namespace: a policy of bar does not apply to foo',
    policies: [policy('allow-nothing', 'bar', {})],
    checks: [{ req: {}, allowed: true }],
  },
  {
    name: 'mesh-wide: the root namespace kedge-system applies to every namespace',
    policies: [policy('mesh-deny', 'kedge-system', { action: 'DENY', rules: [{ from: [{ source: { principals: [sa('default', 'attacker')] } }] }] })],
    checks: [
      { req: { from: sa('default', 'attacker') }, allowed: false, by: 'kedge-system/mesh-deny#0' },
      { req: { from: sleep }, allowed: true },
    ],
  },
  {
    name: 'namespace-wide ALLOW with a workload-specific DENY (concepts: DENY wins, ALLOW still required)',
    policies: [
      policy('allow-foo', 'foo', { rules: [{ from: [{ source: { namespaces: ['foo'] } }] }] }),
      policy('deny-delete', 'foo', { selector: { matchLabels: { app: 'httpbin' } }, action: 'DENY', rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }] }),
    ],
    checks: [
      { req: { from: sleep, method: 'GET' }, allowed: true, by: 'foo/allow-foo#0' },
      { req: { from: sleep, method: 'DELETE' }, allowed: false, by: 'foo/deny-delete#0' },
      { req: { from: sa('bar', 'sleep'), method: 'GET' }, allowed: false },
    ],
  },
  {
    name: 'AUDIT never changes the decision and is reported',
    policies: [policy('audit', 'foo', { action: 'AUDIT', rules: [{ to: [{ operation: { paths: ['/user/profile/*'] } }] }] }), policy('allow-all', 'foo', { rules: [{}] })],
    checks: [
      { req: { path: '/user/profile/1' }, allowed: true, audit: 'foo/audit#0' },
      { req: { path: '/other' }, allowed: true },
    ],
  },
  {
    name: 'notPrincipals and notNamespaces; plaintext has neither',
    policies: [policy('not', 'foo', { rules: [{ from: [{ source: { notNamespaces: ['bar'], principals: ['cluster.local/*'] } }] }] })],
    checks: [
      { req: { from: sleep }, allowed: true },
      { req: { from: sa('bar', 'x') }, allowed: false },
      { req: {}, allowed: false },
    ],
  },
];

describe('compileAuthorization (Istio documented examples)', () => {
  for (const c of cases) {
    it(c.name, () => {
      const m = compileAuthorization(c.policies.map((p) => parseAuthorizationPolicy(p)), c.workload ?? httpbin);
      c.checks.forEach((check, i) => {
        const d = m.evaluate(request(check.req));
        const what = `check ${i} ${JSON.stringify(check.req)}: ${d.reason}`;
        assert.equal(d.allowed, check.allowed, what);
        if (check.by !== undefined) assert.equal(d.match && `${d.match.policy}#${d.match.rule}`, check.by, what);
        if (check.audit !== undefined) assert.equal(d.audit && `${d.audit.policy}#${d.audit.rule}`, check.audit, what);
      });
    });
  }

  it('lists the policies that select the workload by action', () => {
    const m = compileAuthorization(
      [policy('a', 'foo', { rules: [{}] }), policy('d', 'kedge-system', { action: 'DENY', rules: [{}] }), policy('x', 'bar', {})].map((p) => parseAuthorizationPolicy(p)),
      httpbin,
    );
    assert.deepEqual(m.policies, { ALLOW: ['foo/a'], DENY: ['kedge-system/d'], AUDIT: [] });
    assert.equal(m.empty, false);
    assert.equal(compileAuthorization([], httpbin).empty, true);
  });

  it('a root namespace can be configured', () => {
    const m = compileAuthorization([parseAuthorizationPolicy(policy('deny', 'istio-system', { action: 'DENY', rules: [{}] }))], httpbin, { rootNamespace: 'istio-system' });
    assert.equal(m.evaluate(request({})).allowed, false);
  });
});

describe('authzPath', () => {
  const table: [string, string][] = [
    ['/a/b?x=1', '/a/b'],
    ['/a/./b', '/a/b'],
    ['/a/../b', '/b'],
    ['/../../x', '/x'],
    ['/a/b/..', '/a/'],
    ['/%7Euser/%2e%2e/admin', '/admin'],
    ['/keep%2Fslash', '/keep%2Fslash'],
    ['', '/'],
  ];
  for (const [input, want] of table) it(`${JSON.stringify(input)} -> ${want}`, () => assert.equal(authzPath(input), want));
});
