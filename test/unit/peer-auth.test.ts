// PeerAuthentication: validation (Istio's checks, errors naming the document
// and the path), resolution per workload and port as Istio composes
// policies (mesh < namespace < workload, UNSET inherits, the oldest of one
// level wins, portLevelMtls from the workload policy only), the federation
// table (pushes, rows, a selector matching nothing) and the agent's side (a
// bad document rejected alone, the agent's inboundMode as the fallback).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { validatePeerAuthentication } from '../../policy/peer-auth/validate';
import { modeOnPort, resolvePeerAuth } from '../../policy/peer-auth/resolve';
import type { PeerAuthObject } from '../../policy/peer-auth/model';
import { AuthzTable } from '../../federation/mesh/authz';
import { openEmbeddedStore } from '../../federation/store/embedded';
import { applyAuthorization, failClosed } from '../../agent/registration/authz';
import { silentLogger } from '../../proto/model/log';
import { eventually, tempDir } from '../support/procs';

const pa = (name: string, namespace: string, spec: Record<string, unknown> | undefined, createdAt?: string) => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'PeerAuthentication',
  metadata: { name, namespace, ...(createdAt ? { creationTimestamp: createdAt } : {}) },
  ...(spec ? { spec } : {}),
});
const parse = (d: unknown): PeerAuthObject => {
  const r = validatePeerAuthentication(d);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r.value;
};
const finance = { namespace: 'foo', labels: { app: 'finance' } };
const web = { namespace: 'foo', labels: { app: 'web' } };
const elsewhere = { namespace: 'bar', labels: { app: 'finance' } };

describe('PeerAuthentication validation', () => {
  const cases: [string, unknown, RegExp][] = [
    ['an unknown field', pa('x', 'foo', { mtls: { mode: 'STRICT', strict: true } }), /^PeerAuthentication foo\/x: spec\.mtls\.strict: unknown field \(expected one of: mode\)$/],
    ['an unknown spec field', pa('x', 'foo', { mode: 'STRICT' }), /^PeerAuthentication foo\/x: spec\.mode: unknown field/],
    ['a mode Istio does not have', pa('x', 'foo', { mtls: { mode: 'strict' } }), /^PeerAuthentication foo\/x: spec\.mtls\.mode: must be one of: UNSET, DISABLE, PERMISSIVE, STRICT$/],
    ['portLevelMtls without a selector (impossible combination)', pa('x', 'foo', { mtls: { mode: 'STRICT' }, portLevelMtls: { 8080: { mode: 'DISABLE' } } }), /^PeerAuthentication foo\/x: spec\.portLevelMtls: needs spec\.selector\.matchLabels/],
    ['port 0', pa('x', 'foo', { selector: { matchLabels: { app: 'a' } }, portLevelMtls: { 0: { mode: 'DISABLE' } } }), /^PeerAuthentication foo\/x: spec\.portLevelMtls\.0: "0" is not a port/],
    ['a named port', pa('x', 'foo', { selector: { matchLabels: { app: 'a' } }, portLevelMtls: { http: { mode: 'DISABLE' } } }), /spec\.portLevelMtls\.http: "http" is not a port/],
    ['a port without a mode mapping', pa('x', 'foo', { selector: { matchLabels: { app: 'a' } }, portLevelMtls: { 8080: 'DISABLE' } }), /spec\.portLevelMtls\.8080: must be a mapping/],
    ['a bad label', pa('x', 'foo', { selector: { matchLabels: { 'app!': 'a' } } }), /spec\.selector\.matchLabels\.app!: is not a Kubernetes label key/],
    ['a wrong apiVersion', { ...pa('x', 'foo', {}), apiVersion: 'security.istio.io/v2' }, /apiVersion: is "security\.istio\.io\/v2"; write apiVersion: security\.istio\.io\/v1/],
  ];
  for (const [what, doc, re] of cases) {
    it(`refuses ${what}, naming the document and the path`, () => {
      const r = validatePeerAuthentication(doc);
      assert.equal(r.ok, false);
      assert.ok(!r.ok && r.errors.some((e) => re.test(e)), `${JSON.stringify(!r.ok && r.errors)} does not match ${re}`);
    });
  }
  it('accepts Istio\'s documented examples, and no spec (everything UNSET)', () => {
    assert.equal(parse(pa('default', 'foo', { mtls: { mode: 'STRICT' } })).mode, 'STRICT');
    const p = parse(pa('default', 'foo', { selector: { matchLabels: { app: 'finance' } }, mtls: { mode: 'UNSET' }, portLevelMtls: { 8080: { mode: 'DISABLE' } } }));
    assert.deepEqual([p.mode, p.ports], ['UNSET', { 8080: 'DISABLE' }]);
    assert.equal(parse(pa('empty', 'foo', undefined)).mode, 'UNSET');
  });
});

describe('PeerAuthentication resolution (Istio examples)', () => {
  const mesh = parse(pa('default', 'kedge-system', { mtls: { mode: 'STRICT' } }));
  const nsPermissive = parse(pa('default', 'foo', { mtls: { mode: 'PERMISSIVE' } }));
  const financeStrict = parse(pa('finance', 'foo', { selector: { matchLabels: { app: 'finance' } }, mtls: { mode: 'STRICT' } }));
  const finance8080 = parse(pa('finance', 'foo', { selector: { matchLabels: { app: 'finance' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { 8080: { mode: 'DISABLE' } } }));
  const inherit8080 = parse(pa('finance', 'foo', { selector: { matchLabels: { app: 'finance' } }, mtls: { mode: 'UNSET' }, portLevelMtls: { 8080: { mode: 'DISABLE' }, 9090: { mode: 'UNSET' } } }));
  const table: [string, PeerAuthObject[], typeof web, number | undefined, string][] = [
    ['no policy: PERMISSIVE', [], web, undefined, 'PERMISSIVE'],
    ['mesh-wide STRICT', [mesh], elsewhere, 80, 'STRICT'],
    ['namespace PERMISSIVE over mesh STRICT', [mesh, nsPermissive], web, 80, 'PERMISSIVE'],
    ['the namespace policy does not reach another namespace', [mesh, nsPermissive], elsewhere, 80, 'STRICT'],
    ['workload STRICT over namespace PERMISSIVE', [nsPermissive, financeStrict], finance, 80, 'STRICT'],
    ['workload policy does not select another workload', [nsPermissive, financeStrict], web, 80, 'PERMISSIVE'],
    ['a selector matches only its own namespace', [nsPermissive, financeStrict], elsewhere, 80, 'PERMISSIVE'],
    ['port 8080 DISABLE under workload STRICT', [finance8080], finance, 8080, 'DISABLE'],
    ['other ports keep STRICT', [finance8080], finance, 8081, 'STRICT'],
    ['workload UNSET inherits the namespace', [mesh, nsPermissive, inherit8080], finance, 80, 'PERMISSIVE'],
    ['its port 8080 DISABLE still applies', [mesh, nsPermissive, inherit8080], finance, 8080, 'DISABLE'],
    ['a port UNSET takes the workload mode', [mesh, inherit8080], finance, 9090, 'STRICT'],
    ['an unknown destination port takes the workload mode', [finance8080], finance, undefined, 'STRICT'],
  ];
  for (const [what, policies, w, port, want] of table) {
    it(what, () => assert.equal(modeOnPort(resolvePeerAuth(policies, w), port), want));
  }
  it('a selector in the root namespace does not select other namespaces (Istio ignores it)', () => {
    const rootSel = parse(pa('root-sel', 'kedge-system', { selector: { matchLabels: { app: 'finance' } }, mtls: { mode: 'DISABLE' } }));
    assert.equal(resolvePeerAuth([mesh, rootSel], finance).mode, 'STRICT');
  });
  it('of two policies at one level the oldest wins; without creation times the name decides', () => {
    const old = parse(pa('zz-old', 'foo', { mtls: { mode: 'DISABLE' } }, '2026-01-01T00:00:00Z'));
    const young = parse(pa('aa-young', 'foo', { mtls: { mode: 'STRICT' } }, '2026-06-01T00:00:00Z'));
    assert.equal(resolvePeerAuth([young, old], web).mode, 'DISABLE');
    const a = parse(pa('a', 'foo', { mtls: { mode: 'STRICT' } }));
    const b = parse(pa('b', 'foo', { mtls: { mode: 'DISABLE' } }));
    assert.equal(resolvePeerAuth([b, a], web).mode, 'STRICT');
    const w1 = parse(pa('w1', 'foo', { selector: { matchLabels: { app: 'finance' } }, mtls: { mode: 'DISABLE' } }, '2026-03-01T00:00:00Z'));
    const w2 = parse(pa('w2', 'foo', { selector: { matchLabels: { app: 'finance' } }, mtls: { mode: 'STRICT' } }, '2026-02-01T00:00:00Z'));
    assert.equal(resolvePeerAuth([w1, w2], finance).mode, 'STRICT');
  });
  it('the fallback (an agent\'s inboundMode) applies where no policy sets a mode', () => {
    assert.equal(resolvePeerAuth([], web, { fallback: 'STRICT' }).mode, 'STRICT');
    assert.equal(resolvePeerAuth([parse(pa('u', 'foo', { mtls: { mode: 'UNSET' } }))], web, { fallback: 'STRICT' }).mode, 'STRICT');
    assert.equal(resolvePeerAuth([nsPermissive], web, { fallback: 'STRICT' }).mode, 'PERMISSIVE');
  });
});

describe('PeerAuthentication in the federation table and on the agent', () => {
  it('stores, pushes to the workloads it applies to, lists, shows a selector matching nothing, and deletes', async () => {
    const store = await openEmbeddedStore(tempDir('peer-auth-store'), { logger: silentLogger() });
    let changes = 0;
    const table = new AuthzTable(store, { logger: silentLogger(), onChange: () => changes++, now: () => new Date('2026-12-08T00:00:00Z') });
    await table.start();
    const r = await table.apply([
      pa('default', 'foo', { mtls: { mode: 'STRICT' } }),
      pa('finance', 'foo', { selector: { matchLabels: { app: 'finance' } }, portLevelMtls: { 9090: { mode: 'PERMISSIVE' } } }),
      pa('nobody', 'foo', { selector: { matchLabels: { app: 'nope' } }, mtls: { mode: 'DISABLE' } }),
      pa('bad', 'foo', { mtls: { mode: 'OFF' } }),
    ], 'PeerAuthentication');
    assert.deepEqual(r.applied.map((a) => a.name), ['default', 'finance', 'nobody']);
    assert.deepEqual(r.errors, ['PeerAuthentication foo/bad: spec.mtls.mode: must be one of: UNSET, DISABLE, PERMISSIVE, STRICT']);
    assert.ok(changes > 0);
    const names = (w: typeof web) => table.documentsFor(w).map((j) => (JSON.parse(j) as { metadata: { name: string } }).metadata.name).sort();
    assert.deepEqual(names(finance), ['default', 'finance']);
    assert.deepEqual(names(web), ['default']);
    assert.deepEqual(names(elsewhere), []);
    const res = table.peerAuthFor(finance);
    assert.deepEqual([res.mode, [...res.ports]], ['STRICT', [[9090, 'PERMISSIVE']]]);
    const rows = table.peerAuthRows([{ name: 'finance-1', ...finance }, { name: 'web-1', ...web }]);
    assert.deepEqual(rows.map((x) => [x.name, x.selector, x.mode, x.ports, x.workloads]), [
      ['default', '(namespace)', 'STRICT', [], ['foo/finance-1', 'foo/web-1']],
      ['finance', 'app=finance', 'UNSET', ['9090=PERMISSIVE'], ['foo/finance-1']],
      ['nobody', 'app=nope', 'DISABLE', [], []],
    ]);
    // The first apply's creation time is kept by a re-apply (Istio's oldest-wins tie-break).
    const stamped = () => (JSON.parse(table.documentsFor(web)[0]!) as { metadata: { creationTimestamp: string } }).metadata.creationTimestamp;
    assert.equal(stamped(), '2026-12-08T00:00:00.000Z');
    await table.apply([pa('default', 'foo', { mtls: { mode: 'PERMISSIVE' } })], 'PeerAuthentication');
    assert.equal(stamped(), '2026-12-08T00:00:00.000Z');
    // One endpoint per kind: an AuthorizationPolicy sent as PeerAuthentication is refused by name.
    const wrong = await table.apply([{ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'a' } }], 'PeerAuthentication');
    assert.match(wrong.errors[0]!, /AuthorizationPolicy: this endpoint takes PeerAuthentication documents only/);
    await table.remove('foo', 'default', 'PeerAuthentication');
    // The store's watch may still echo the re-apply before the delete: wait for the delete itself.
    await eventually(() => names(web).length === 0, 5_000, 'the delete to reach the table');
    await assert.rejects(table.remove('foo', 'default', 'PeerAuthentication'), /no PeerAuthentication foo\/default was applied/);
    table.close();
    await store.close();
  });

  it('on the agent: a document it cannot use is rejected alone; the others stay in force with the inboundMode as fallback', () => {
    const good = JSON.stringify(pa('finance', 'foo', { selector: { matchLabels: { app: 'finance' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { 9090: { mode: 'PERMISSIVE' } } }));
    const bad = JSON.stringify(pa('future', 'foo', { mtls: { mode: 'STRICT', extra: 1 } }));
    const authz = JSON.stringify({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-all', namespace: 'foo' }, spec: {} });
    const r = applyAuthorization([bad, good, authz], finance, { fallback: 'PERMISSIVE' });
    assert.deepEqual(r.rejected, ['rejected, not enforced: PeerAuthentication foo/future: spec.mtls.extra: unknown field (expected one of: mode)']);
    assert.deepEqual(r.counts, { authorizationPolicies: 1, peerAuthentications: 1 });
    assert.deepEqual([r.peerAuthentication.mode, [...r.peerAuthentication.ports]], ['STRICT', [[9090, 'PERMISSIVE']]]);
    assert.equal(r.matcher.evaluate({ principal: 'cluster.local/ns/foo/sa/web', sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: 80, sni: '' }).allowed, false);
    assert.equal(applyAuthorization([], web, { fallback: 'STRICT' }).peerAuthentication.mode, 'STRICT');
  });

  it('fail-closed denies every request and refuses plaintext', () => {
    const f = failClosed(web);
    assert.equal(f.peerAuthentication.mode, 'STRICT');
    const d = f.matcher.evaluate({ principal: 'cluster.local/ns/foo/sa/web', sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: 80, sni: '' });
    assert.equal(d.allowed, false);
  });
});
