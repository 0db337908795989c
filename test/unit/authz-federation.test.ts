// AuthorizationPolicy storage and distribution: the federation's table
// (a bad document rejects only itself; each workload gets only the policies
// that select it) and the agent's side (a policy it cannot use is rejected
// alone, the others are compiled and enforced).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AuthzTable } from '../../federation/mesh/authz';
import { openEmbeddedStore } from '../../federation/store/embedded';
import { applyAuthorization } from '../../agent/registration/authz';
import { silentLogger } from '../../proto/model/log';
import { eventually, tempDir } from '../support/procs';

const doc = (name: string, namespace: string, spec: Record<string, unknown>) => ({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace }, spec });
const web = { namespace: 'shop', labels: { app: 'web' } };
const db = { namespace: 'shop', labels: { app: 'db' } };
const other = { namespace: 'blog', labels: { app: 'web' } };

describe('AuthzTable', () => {
  it('stores the valid documents of an apply, refuses the bad ones by name, and gives each workload only what selects it', async () => {
    const store = await openEmbeddedStore(tempDir('authz-store'), { logger: silentLogger() });
    let changes = 0;
    const table = new AuthzTable(store, { logger: silentLogger(), onChange: () => changes++ });
    await table.start();
    const r = await table.apply([
      doc('web-only', 'shop', { selector: { matchLabels: { app: 'web' } }, rules: [{}] }),
      doc('shop-deny', 'shop', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['blog'] } }] }] }),
      doc('mesh', 'kedge-system', { action: 'AUDIT', rules: [{}] }),
      doc('bad', 'shop', { rules: [{ to: [{ operation: { ports: ['http'] } }] }] }),
      doc('web-only', 'shop', { rules: [] }),
    ]);
    assert.deepEqual(r.applied.map((a) => a.name), ['web-only', 'shop-deny', 'mesh']);
    assert.equal(r.errors.length, 2);
    assert.match(r.errors[0]!, /^AuthorizationPolicy shop\/bad: spec\.rules\[0\]\.to\[0\]\.operation\.ports\[0\]: "http" is not a port/);
    assert.match(r.errors[1]!, /^AuthorizationPolicy shop\/web-only: appears twice in one apply/);
    const names = (w: typeof web) => table.documentsFor(w).map((j) => (JSON.parse(j) as { metadata: { name: string } }).metadata.name);
    assert.deepEqual(new Set(names(web)), new Set(['web-only', 'shop-deny', 'mesh']));
    assert.deepEqual(new Set(names(db)), new Set(['shop-deny', 'mesh']));
    assert.deepEqual(names(other), ['mesh']);
    const rows = table.rows([{ name: 'web-1', ...web }, { name: 'db-1', ...db }]);
    assert.deepEqual(rows.map((x) => [x.name, x.selector, x.workloads]), [
      ['mesh', '(mesh)', ['shop/db-1', 'shop/web-1']],
      ['shop-deny', '(namespace)', ['shop/db-1', 'shop/web-1']],
      ['web-only', 'app=web', ['shop/web-1']],
    ]);
    // The compiled matcher is the proxies' own: blog is denied at db, web needs the ALLOW.
    assert.equal(table.matcherFor(db).evaluate({ principal: 'cluster.local/ns/blog/sa/x', sourceIp: '10.0.0.1', destinationPort: 80 }).allowed, false);
    assert.equal(table.matcherFor(db).evaluate({ principal: 'cluster.local/ns/shop/sa/x', sourceIp: '10.0.0.1', destinationPort: 80 }).allowed, true);
    await table.remove('shop', 'web-only');
    assert.deepEqual(new Set(names(web)), new Set(['shop-deny', 'mesh']));
    await assert.rejects(table.remove('shop', 'web-only'), /no AuthorizationPolicy shop\/web-only was applied/);
    await eventually(() => changes > 0, 5_000, 'the watch to report the change');
    table.close();
    await store.close();
  });
});

describe('applyAuthorization (agent)', () => {
  it('rejects a policy it cannot use alone and enforces the others', () => {
    const good = JSON.stringify(doc('deny-attacker', 'shop', { action: 'DENY', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/attacker'] } }] }] }));
    const bad = JSON.stringify(doc('from-newer-kedge', 'shop', { action: 'DENY', rules: [{ to: [{ operation: { newField: ['x'] } }] }] }));
    const r = applyAuthorization([bad, good, '{not json'], web);
    assert.equal(r.rejected.length, 2);
    assert.match(r.rejected[0]!, /AuthorizationPolicy shop\/from-newer-kedge: spec\.rules\[0\]\.to\[0\]\.operation\.newField: unknown field/);
    assert.match(r.rejected[1]!, /^policy 3: not JSON/);
    assert.deepEqual(r.matcher.policies.DENY, ['shop/deny-attacker']);
    assert.equal(r.matcher.evaluate({ principal: 'cluster.local/ns/shop/sa/attacker', sourceIp: '10.0.0.1', destinationPort: 80 }).allowed, false);
    assert.equal(r.matcher.evaluate({ principal: 'cluster.local/ns/shop/sa/web', sourceIp: '10.0.0.1', destinationPort: 80 }).allowed, true);
  });
});
