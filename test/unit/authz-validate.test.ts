// AuthorizationPolicy documents: every error names the document and the path
// in it and says what to write instead; what Kedge does not implement is
// refused, never ignored.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { hasCode } from '../../proto/model/errors';
import { parseAuthorizationPolicy, validateAuthorizationPolicy } from '../../policy/authz';

function doc(spec: unknown, extra: Record<string, unknown> = {}): unknown {
  return { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'p', namespace: 'foo' }, spec, ...extra };
}
function errorsOf(d: unknown): string[] {
  const r = validateAuthorizationPolicy(d);
  assert.equal(r.ok, false, 'expected errors');
  return r.ok ? [] : r.errors;
}

describe('validateAuthorizationPolicy', () => {
  it('a policy with every supported field validates, with patterns parsed', () => {
    const v = parseAuthorizationPolicy(
      doc({
        selector: { matchLabels: { app: 'httpbin' } },
        action: 'DENY',
        rules: [
          {
            from: [{ source: { principals: ['cluster.local/ns/default/sa/*'], notNamespaces: ['prod'], ipBlocks: ['10.0.0.0/8'], remoteIpBlocks: ['::1'] } }],
            to: [{ operation: { hosts: ['*.Example.com'], ports: ['8080'], methods: ['GET'], notPaths: ['/healthz', '*/metrics'] } }],
            when: [{ key: 'request.headers[X-Token]', values: ['*'] }, { key: 'destination.port', notValues: ['9000'] }],
          },
        ],
      }),
    );
    assert.equal(v.action, 'DENY');
    assert.deepEqual(v.selector, { app: 'httpbin' });
    const r = v.rules[0]!;
    assert.deepEqual(r.from[0]!.principals, { values: [{ kind: 'prefix', value: 'cluster.local/ns/default/sa/' }], notValues: [] });
    assert.deepEqual(r.to[0]!.hosts!.values, [{ kind: 'suffix', value: '.example.com' }]);
    assert.deepEqual(r.to[0]!.ports!.values, [8080]);
    assert.deepEqual(r.when[0]!.parsed, { kind: 'header', name: 'x-token' });
    assert.ok(Object.isFrozen(r.from[0]));
  });

  it('v1beta1 is read too, and action defaults to ALLOW', () => {
    const v = parseAuthorizationPolicy({ ...(doc({ rules: [{}] }) as object), apiVersion: 'security.istio.io/v1beta1' });
    assert.equal(v.action, 'ALLOW');
  });

  const bad: { name: string; doc: unknown; errors: (string | RegExp)[] }[] = [
    { name: 'an unknown top-level spec field', doc: doc({ rule: [] }), errors: ['AuthorizationPolicy foo/p: spec.rule: unknown field (expected one of: selector, targetRef, targetRefs, action, provider, rules)'] },
    { name: 'an unknown source field', doc: doc({ rules: [{ from: [{ source: { principal: ['x'] } }] }] }), errors: [/^AuthorizationPolicy foo\/p: spec\.rules\[0\]\.from\[0\]\.source\.principal: unknown field/, /spec\.rules\[0\]\.from\[0\]\.source: has no fields/] },
    { name: 'CUSTOM', doc: doc({ action: 'CUSTOM', provider: { name: 'ext' } }), errors: [/spec\.action: CUSTOM \(an external authorizer\) is not supported by Kedge/, /spec\.provider: is only for action CUSTOM/] },
    { name: 'an unknown action', doc: doc({ action: 'REJECT' }), errors: ['AuthorizationPolicy foo/p: spec.action: must be one of: ALLOW, DENY, AUDIT'] },
    { name: 'an empty source (principals and notPrincipals both empty)', doc: doc({ rules: [{ from: [{ source: { principals: [], notPrincipals: [] } }] }] }), errors: [/spec\.rules\[0\]\.from\[0\]\.source: has no fields/] },
    { name: 'a from without source', doc: doc({ rules: [{ from: [{}] }] }), errors: ['AuthorizationPolicy foo/p: spec.rules[0].from[0].source: is required'] },
    { name: 'an empty operation', doc: doc({ rules: [{ to: [{ operation: {} }] }] }), errors: [/spec\.rules\[0\]\.to\[0\]\.operation: has no fields/] },
    { name: 'a * in the middle of a path', doc: doc({ rules: [{ to: [{ operation: { paths: ['/api/*/users'] } }] }] }), errors: [/spec\.rules\[0\]\.to\[0\]\.operation\.paths\[0\]: "\/api\/\*\/users" has a \* that is not only at the start or only at the end/] },
    { name: 'a path template', doc: doc({ rules: [{ to: [{ operation: { paths: ['/api/{*}/x'] } }] }] }), errors: [/paths\[0\]: "\/api\/\{\*\}\/x" uses a path template/] },
    { name: 'a relative path', doc: doc({ rules: [{ to: [{ operation: { notPaths: ['api'] } }] }] }), errors: [/notPaths\[0\]: "api" must start with \//] },
    { name: 'a path with a query', doc: doc({ rules: [{ to: [{ operation: { paths: ['/a?b=1'] } }] }] }), errors: [/paths\[0\]: "\/a\?b=1" has a query/] },
    { name: 'an ipBlock that is not a CIDR', doc: doc({ rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/33', 'ten'] } }] }] }), errors: [/ipBlocks\[0\]: "10\.0\.0\.0\/33" is not an IP address or CIDR block/, /ipBlocks\[1\]: "ten" is not an IP address or CIDR block/] },
    { name: 'a bad port', doc: doc({ rules: [{ to: [{ operation: { ports: ['http', '70000'] } }] }] }), errors: [/ports\[0\]: "http" is not a port/, /ports\[1\]: "70000" is not a port/] },
    { name: 'an empty value', doc: doc({ rules: [{ from: [{ source: { namespaces: [''] } }] }] }), errors: [/namespaces\[0\]: is empty/] },
    { name: 'a principal with the spiffe:// scheme', doc: doc({ rules: [{ from: [{ source: { principals: ['spiffe://cluster.local/ns/a/sa/b'] } }] }] }), errors: [/principals\[0\]: write principals without the spiffe:\/\/ scheme, as Istio does: "cluster.local\/ns\/a\/sa\/b"/] },
    { name: 'JWT request principals', doc: doc({ rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] }), errors: [/requestPrincipals: needs RequestAuthentication \(JWT\)/] },
    { name: 'a when without values', doc: doc({ rules: [{ when: [{ key: 'source.namespace' }] }] }), errors: ['AuthorizationPolicy foo/p: spec.rules[0].when[0]: at least one of values or notValues must be set for key source.namespace'] },
    { name: 'a when on a JWT claim', doc: doc({ rules: [{ when: [{ key: 'request.auth.claims[iss]', values: ['x'] }] }] }), errors: [/when\[0\]\.key: request\.auth\.claims\[iss\] needs RequestAuthentication/] },
    { name: 'an unknown when key', doc: doc({ rules: [{ when: [{ key: 'source.user', values: ['x'] }] }] }), errors: [/when\[0\]\.key: unknown key "source\.user"/] },
    { name: 'a when source.ip that is not an address', doc: doc({ rules: [{ when: [{ key: 'source.ip', values: ['10.0.0.1/40'] }] }] }), errors: [/when\[0\]\.values\[0\]: "10\.0\.0\.1\/40" is not an IP address/] },
    { name: 'targetRefs', doc: doc({ targetRefs: [{ kind: 'Service', name: 'x' }] }), errors: [/spec\.targetRefs: Kedge attaches policies to workloads only/] },
    { name: 'a bad selector label', doc: doc({ selector: { matchLabels: { app: 7 } } }), errors: [/spec\.selector\.matchLabels\.app: must be a Kubernetes label value/] },
    { name: 'the wrong apiVersion', doc: { ...(doc({}) as object), apiVersion: 'security.istio.io/v2' }, errors: ['AuthorizationPolicy foo/p: apiVersion: is "security.istio.io/v2"; write apiVersion: security.istio.io/v1'] },
    { name: 'a dry-run annotation', doc: { ...(doc({}) as object), metadata: { name: 'p', namespace: 'foo', annotations: { 'istio.io/dry-run': 'true' } } }, errors: [/istio\.io\/dry-run: Kedge does not implement dry-run policies/] },
    { name: 'a status block', doc: doc({}, { status: {} }), errors: [/status: is written by controllers/] },
  ];
  for (const b of bad) {
    it(`refuses ${b.name}`, () => {
      const errors = errorsOf(b.doc);
      for (const want of b.errors) assert.ok(errors.some((e) => (typeof want === 'string' ? e === want : want.test(e))), `missing ${String(want)} in:\n${errors.join('\n')}`);
      for (const e of errors) assert.match(e, /^AuthorizationPolicy foo\/p: /);
    });
  }

  it('parseAuthorizationPolicy throws KEDGE_BAD_POLICY with every error', () => {
    assert.throws(
      () => parseAuthorizationPolicy(doc({ rules: [{ to: [{ operation: { ports: ['x'] } }], from: [{ source: {} }] }] })),
      (err: unknown) => hasCode(err, 'KEDGE_BAD_POLICY') && /ports\[0\]/.test((err as Error).message) && /from\[0\]\.source/.test((err as Error).message),
    );
  });
});
