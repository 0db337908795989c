// Mesh merge, per-agent deltas and push sessions: pure, table-tested.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildMeshView, sameData } from '../../federation/mesh/merge';
import type { AgentRecord } from '../../federation/mesh/types';
import { computeDelta } from '../../federation/push/delta';
import { PushSession } from '../../federation/push/session';
import { recordFromRegister } from '../../federation/api/register';
import { applyUpdate, toProxySnapshot } from '../../agent/registration/updates';
import type { ServiceUpdate } from '../../proto/loader';
import { hasCode } from '../../proto/model/errors';

/** Builds an agent record with defaults; override what a case needs. */
function agent(name: string, o: Partial<AgentRecord['workload']> & { services?: AgentRecord['services']; health?: AgentRecord['health'] } = {}): AgentRecord {
  const namespace = o.namespace ?? 'default';
  return {
    id: `${namespace}/${name}`,
    identity: `spiffe://cluster.local/ns/${namespace}/sa/${o.serviceAccount ?? name}`,
    workload: {
      name, namespace, serviceAccount: o.serviceAccount ?? name, address: o.address ?? '10.0.0.1',
      locality: o.locality ?? { region: 'r', zone: 'z', subzone: '' }, network: o.network ?? 'n', labels: o.labels ?? {}, inboundPort: o.inboundPort ?? 15006,
    },
    services: o.services ?? [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: 18080, protocol: 'http' }] }],
    health: o.health ?? {},
    host: null,
    replica: 'r1',
    connectedAt: '2026-01-01T00:00:00.000Z',
    agentVersion: 't',
  };
}

describe('buildMeshView', () => {
  it('merges the same name.namespace from several agents into one service', () => {
    const view = buildMeshView([agent('b', { address: '10.0.0.2' }), agent('a', { address: '10.0.0.1' })]);
    const svc = view.services.get('reviews.default')!;
    assert.equal(svc.hostname, 'reviews.default.svc.cluster.local');
    assert.deepEqual(svc.endpoints.map((e) => [e.address, e.workload, e.identity, e.mtlsPort, e.meshed]), [
      ['10.0.0.1', 'default/a', 'spiffe://cluster.local/ns/default/sa/a', 15006, true],
      ['10.0.0.2', 'default/b', 'spiffe://cluster.local/ns/default/sa/b', 15006, true],
    ]);
    assert.deepEqual(svc.endpoints[0]!.ports, [{ name: 'http', port: 18080 }]);
    assert.deepEqual(svc.warnings, []);
  });
  it('is deterministic: input order does not change versions', () => {
    const a = buildMeshView([agent('a'), agent('b', { address: '10.0.0.2' })]).services.get('reviews.default')!;
    const b = buildMeshView([agent('b', { address: '10.0.0.2' }), agent('a')]).services.get('reviews.default')!;
    assert.equal(a.version, b.version);
    const c = buildMeshView([agent('a'), agent('b', { address: '10.0.0.3' })]).services.get('reviews.default')!;
    assert.notEqual(a.version, c.version);
  });
  it('keeps namespaces apart', () => {
    const view = buildMeshView([agent('a'), agent('b', { namespace: 'shop' })]);
    assert.deepEqual([...view.services.keys()], ['reviews.default', 'reviews.shop']);
  });
  it('reports a port conflict as a warning instead of picking silently', () => {
    const view = buildMeshView([agent('a'), agent('b', { services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: 1, protocol: 'tcp' }] }] })]);
    assert.equal(view.services.get('reviews.default')!.warnings.length, 1);
    assert.match(view.services.get('reviews.default')!.warnings[0]!, /port "http": default\/b declares 9080\/tcp, default\/a 9080\/http/);
  });
  it('marks endpoints of unhealthy services', () => {
    const view = buildMeshView([agent('a', { health: { reviews: { healthy: false, detail: 'probe failed' } } })]);
    assert.equal(view.services.get('reviews.default')!.endpoints[0]!.health, 'UNHEALTHY');
  });
});

describe('buildMeshView reuse between rebuilds', () => {
  it('returns the same objects for services whose inputs did not change, and new ones for the rest', () => {
    const a = agent('a', { services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: 1, protocol: 'http' }] }, { name: 'ratings', ports: [{ name: 'http', port: 9080, targetPort: 1, protocol: 'http' }] }] });
    const b = agent('b', { address: '10.0.0.2', services: [{ name: 'details', ports: [{ name: 'http', port: 9080, targetPort: 1, protocol: 'http' }] }] });
    const v1 = buildMeshView([a, b]);
    const v2 = buildMeshView([a, b]);
    for (const [key, svc] of v1.services) assert.equal(v2.services.get(key), svc, `${key} reused`);
    // b's record replaced (as a health report replaces it): only details is rebuilt.
    const b2 = { ...b, health: { details: { healthy: false, detail: 'probe failed' } } };
    const v3 = buildMeshView([a, b2]);
    assert.equal(v3.services.get('reviews.default'), v1.services.get('reviews.default'));
    assert.equal(v3.services.get('ratings.default'), v1.services.get('ratings.default'));
    assert.notEqual(v3.services.get('details.default'), v1.services.get('details.default'));
    assert.equal(v3.services.get('details.default')!.endpoints[0]!.health, 'UNHEALTHY');
    assert.deepEqual([...v3.services.keys()], ['details.default', 'ratings.default', 'reviews.default']);
  });
  it('keeps a service whose inputs were replaced by equal ones (a health report replaces all of its agent\'s services)', () => {
    const svcs = ['reviews', 'ratings'].map((name) => ({ name, ports: [{ name: 'http', port: 9080, targetPort: 1, protocol: 'http' }] }));
    const a = agent('a', { services: svcs });
    const v1 = buildMeshView([a]);
    const replaced = structuredClone({ ...a, health: { ratings: { healthy: false, detail: 'probe failed' } } });
    const v2 = buildMeshView([replaced]);
    assert.equal(v2.services.get('reviews.default'), v1.services.get('reviews.default'), 'equal inputs: the same object');
    assert.notEqual(v2.services.get('ratings.default'), v1.services.get('ratings.default'));
    assert.equal(v2.services.get('ratings.default')!.endpoints[0]!.health, 'UNHEALTHY');
    assert.equal(buildMeshView([replaced]).services.get('ratings.default'), v2.services.get('ratings.default'));
  });
  it('rebuilds when a VIP, policy or domain changes, or an input is added, removed or reordered', () => {
    const a = agent('a');
    const b = agent('b', { address: '10.0.0.2' });
    const base = buildMeshView([a, b]).services.get('reviews.default')!;
    const steps: [string, () => ReturnType<typeof buildMeshView>][] = [
      ['vip', () => buildMeshView([a, b], { vips: new Map([['reviews.default', '240.240.0.9']]) })],
      ['policy', () => buildMeshView([a, b], { policies: new Map([['reviews.default', '{}']]) })],
      ['domain', () => buildMeshView([a, b], { domain: 'example.org' })],
      ['added', () => buildMeshView([a, b, agent('c', { address: '10.0.0.3' })])],
      ['removed', () => buildMeshView([a])],
      ['reordered', () => buildMeshView([b, a])],
    ];
    for (const [what, build] of steps) {
      buildMeshView([a, b]);
      assert.notEqual(build().services.get('reviews.default'), base, what);
    }
    assert.equal(buildMeshView([b, a]).services.get('reviews.default')!.version, base.version, 'order does not change the content');
  });
  it('gives the same services as a fresh build, whatever was built before', () => {
    const a = agent('a');
    const b = agent('b', { address: '10.0.0.2' });
    const pod = { ...agent('pod-1', { address: '10.1.0.1' }), cluster: 'east' };
    const kube = [sourceService('reviews', 'default', 'east', ['10.1.0.1', '10.1.0.2'])];
    const histories: Parameters<typeof buildMeshView>[] = [[[a, b]], [[pod], {}, [kube]], [[a, pod], {}, [kube]], [[a, b], { vips: new Map([['reviews.default', '240.240.0.1']]) }], [[b], {}, [kube]]];
    const fresh = histories.map((h) => JSON.stringify([...buildMeshView(...h).services]));
    // Every build again, after every other build.
    for (let i = 0; i < histories.length; i++) {
      for (let j = 0; j < histories.length; j++) {
        buildMeshView(...histories[j]!);
        assert.equal(JSON.stringify([...buildMeshView(...histories[i]!).services]), fresh[i], `build ${i} after build ${j}`);
      }
    }
  });
  it('meshes a pod endpoint again when its agent\'s record changes, and drops it when the agent goes', () => {
    const kube = [sourceService('reviews', 'default', 'east', ['10.1.0.1'])];
    const pod = { ...agent('pod-1', { address: '10.1.0.1' }), cluster: 'east' };
    const v1 = buildMeshView([pod], {}, [kube]).services.get('reviews.default')!;
    assert.deepEqual(v1.endpoints.map((e) => [e.meshed, e.mtlsPort]), [[true, 15006]]);
    const moved = { ...pod, workload: { ...pod.workload, inboundPort: 15106 } };
    const v2 = buildMeshView([moved], {}, [kube]).services.get('reviews.default')!;
    assert.deepEqual(v2.endpoints.map((e) => [e.meshed, e.mtlsPort]), [[true, 15106]]);
    const v3 = buildMeshView([], {}, [kube]).services.get('reviews.default')!;
    assert.deepEqual(v3.endpoints.map((e) => [e.meshed, e.mtlsPort]), [[false, 0]]);
  });
});

describe('sameData', () => {
  const cases: [unknown, unknown, boolean][] = [
    [{ a: 1, b: [1, { c: 'x' }] }, { b: [1, { c: 'x' }], a: 1 }, true],
    [{ a: 1 }, { a: 1, b: undefined }, false],
    [{ a: [1, 2] }, { a: [2, 1] }, false],
    [[], {}, false],
    [null, {}, false],
    ['1', 1, false],
    [new Map([[1, 2]]), new Map([[1, 3]]), false],
    [Object.assign(Object.create(null) as object, { a: 1 }), Object.assign(Object.create(null) as object, { a: 1 }), true],
  ];
  for (const [a, b, want] of cases) it(`${JSON.stringify(a)} vs ${JSON.stringify(b)}: ${want}`, () => assert.equal(sameData(a, b), want));
});

/** A source service with one plaintext endpoint per address. */
function sourceService(name: string, namespace: string, cluster: string, addresses: string[], port = { name: 'http', port: 9080, targetPort: 8080, protocol: 'http' }) {
  return {
    name, namespace, ports: [port],
    endpoints: addresses.map((address) => ({
      address, ports: [{ name: port.name, port: port.targetPort }], mtlsPort: 0, locality: { region: 'us-east1', zone: 'b', subzone: '' }, cluster,
      network: `net-${cluster}`, health: 'HEALTHY' as const, weight: 1, labels: {}, identity: '', meshed: false, workload: '',
    })),
  };
}

describe('buildMeshView across sources', () => {
  it('merges a service from VMs, two clusters and Consul into one', () => {
    const view = buildMeshView([agent('vm', { address: '10.9.0.1' })], {}, [
      [sourceService('reviews', 'default', 'east', ['10.1.0.1', '10.1.0.2'])],
      [sourceService('reviews', 'default', 'west', ['10.2.0.1'])],
      [sourceService('reviews', 'default', 'dc1', ['10.3.0.1'])],
    ]);
    const svc = view.services.get('reviews.default')!;
    assert.deepEqual(svc.endpoints.map((e) => `${e.cluster}/${e.address}`), ['dc1/10.3.0.1', 'east/10.1.0.1', 'east/10.1.0.2', 'vms/10.9.0.1', 'west/10.2.0.1']);
    // Target ports differ per endpoint; the service port and protocol agree, so no warning.
    assert.deepEqual(svc.warnings, []);
  });
  it('meshes a pod endpoint when an agent of that cluster registered its address', () => {
    const pod = { ...agent('pod-1', { address: '10.1.0.1' }), cluster: 'east' };
    const view = buildMeshView([pod], {}, [[sourceService('reviews', 'default', 'east', ['10.1.0.1', '10.1.0.2'])]]);
    const eps = view.services.get('reviews.default')!.endpoints;
    assert.deepEqual(eps.map((e) => [e.address, e.meshed, e.identity, e.mtlsPort]), [
      ['10.1.0.1', true, 'spiffe://cluster.local/ns/default/sa/pod-1', 15006],
      ['10.1.0.2', false, '', 0],
    ]);
  });
  it('an agent in another cluster with the same address does not mesh the pod', () => {
    const pod = { ...agent('pod-1', { address: '10.1.0.1' }), cluster: 'west' };
    const view = buildMeshView([pod], {}, [[sourceService('reviews', 'default', 'east', ['10.1.0.1'])]]);
    const eps = view.services.get('reviews.default')!.endpoints;
    assert.deepEqual(eps.map((e) => [e.cluster, e.meshed]), [['east', false], ['west', true]]);
  });
  it('warns on a port declared with different protocols by two sources', () => {
    const view = buildMeshView([], {}, [
      [sourceService('db', 'shop', 'east', ['10.1.0.1'], { name: 'pg', port: 5432, targetPort: 5432, protocol: 'tcp' })],
      [sourceService('db', 'shop', 'dc1', ['10.3.0.1'], { name: 'pg', port: 5432, targetPort: 5432, protocol: 'http' })],
    ]);
    assert.match(view.services.get('db.shop')!.warnings[0]!, /port "pg": dc1 declares 5432\/http, east 5432\/tcp/);
  });
  it('sets VIPs from the allocation table and versions change with them', () => {
    const a = buildMeshView([agent('a')], { vips: new Map([['reviews.default', '240.240.1.2']]) }).services.get('reviews.default')!;
    const b = buildMeshView([agent('a')]).services.get('reviews.default')!;
    assert.equal(a.vip, '240.240.1.2');
    assert.notEqual(a.version, b.version);
  });
});

/** A PushSession send function that records updates, flushed at once. */
function sendTo(sent: ServiceUpdate[]) {
  return (u: ServiceUpdate, flushed: () => void) => {
    sent.push(u);
    flushed();
  };
}

describe('computeDelta and PushSession', () => {
  const v1 = buildMeshView([agent('a')]);
  const v2 = buildMeshView([agent('a'), agent('b', { address: '10.0.0.2' })]);
  const empty = buildMeshView([]);
  it('sends only subscribed services that changed, and removals', () => {
    const subs = new Set(['reviews.default', 'ratings.default']);
    const d1 = computeDelta(v1, subs, new Map());
    assert.deepEqual(d1.services.map((s) => s.key), ['reviews.default']);
    assert.deepEqual(d1.removed, ['ratings.default']);
    const sent = new Map([['reviews.default', d1.services[0]!.version], ['ratings.default', '']]);
    assert.deepEqual(computeDelta(v1, subs, sent), { services: [], removed: [] });
    assert.deepEqual(computeDelta(v2, subs, sent).services.map((s) => s.endpoints.length), [2]);
    assert.deepEqual(computeDelta(empty, subs, sent), { services: [], removed: ['reviews.default'] });
  });
  it('numbers pushes, sends the first one even when empty, and records acks and nacks', () => {
    const sent: ServiceUpdate[] = [];
    const s = new PushSession(sendTo(sent), () => 0);
    s.subscribe(['other.default'], []);
    assert.equal(s.push(v1), true);
    assert.deepEqual(sent[0], { nonce: '1', services: [], removed: ['other.default'] });
    assert.equal(s.push(v1), false, 'nothing changed');
    s.subscribe(['reviews.default'], []);
    s.push(v1);
    assert.equal(sent[1]!.nonce, '2');
    assert.deepEqual(sent[1]!.services!.map((x) => x.key), ['reviews.default']);
    s.ack('2', '');
    s.ack('3', 'bad service');
    assert.equal(s.status().ackedNonce, '2');
    assert.equal(s.status().lastNack, '3: bad service');
    s.subscribe([], ['reviews.default']);
    assert.deepEqual(s.status().subscriptions, ['other.default']);
  });
  it('splits a push into updates of at most maxUpdateEndpoints endpoints, never splitting a service', () => {
    const names = ['s1', 's2', 's3', 's4'];
    const svcs = names.map((name) => ({ name, ports: [{ name: 'http', port: 9080, targetPort: 1, protocol: 'http' }] }));
    // s1..s3 have 2 endpoints each; s4 has 5 (more than the limit of 4 alone).
    const agents = [agent('a', { services: svcs }), agent('b', { address: '10.0.0.2', services: svcs }), ...[3, 4, 5].map((i) => agent(`c${i}`, { address: `10.0.0.${i}`, services: [svcs[3]!] }))];
    const view = buildMeshView(agents);
    const sent: ServiceUpdate[] = [];
    const s = new PushSession(sendTo(sent), () => 0, 4);
    s.subscribe([...names.map((n) => `${n}.default`), 'gone.default'], []);
    assert.equal(s.push(view), true);
    assert.deepEqual(sent.map((u) => [u.nonce, u.services!.map((x) => x.key), u.removed]), [
      ['1', ['s1.default', 's2.default'], ['gone.default']],
      ['2', ['s3.default'], []],
      ['3', ['s4.default'], []],
    ]);
    assert.equal(s.push(view), false, 'all of it was recorded as sent');
    assert.equal(s.status().sentNonce, '3');
  });
  it('holds pushes while updates are in flight and then sends the newest view once', () => {
    const a = agent('a');
    const views = [1, 2, 3].map((n) => buildMeshView([a, ...Array.from({ length: n }, (_, i) => agent(`b${i}`, { address: `10.0.1.${i}` }))]));
    const sent: ServiceUpdate[] = [];
    const pending: (() => void)[] = [];
    const s = new PushSession((u, flushed) => {
      sent.push(u);
      pending.push(flushed);
    }, () => 0);
    s.subscribe(['reviews.default'], []);
    assert.equal(s.push(views[0]!), true);
    assert.equal(s.push(views[1]!), false, 'held: the first update is in flight');
    assert.equal(s.push(views[2]!), false);
    assert.equal(sent.length, 1);
    const first = pending.shift()!;
    first();
    first(); // a second call of the same callback changes nothing
    assert.deepEqual(sent.map((u) => [u.nonce, u.services!.map((x) => x.endpoints!.length)]), [['1', [2]], ['2', [4]]], 'the newest view, once');
    assert.equal(s.push(views[2]!), false, 'held again: the second update is in flight');
    pending.shift()!();
    assert.equal(sent.length, 2, 'nothing new to send');
    assert.equal(s.push(views[1]!), true, 'an older view is a change too');
    assert.equal(sent.length, 3);
  });
  it('does not hold later pushes for an update whose send threw', () => {
    let fail = true;
    const sent: ServiceUpdate[] = [];
    const s = new PushSession((u, flushed) => {
      if (fail) throw new Error('stream closed');
      sent.push(u);
      flushed();
    }, () => 0);
    s.subscribe(['reviews.default'], []);
    assert.throws(() => s.push(v1), /stream closed/);
    fail = false;
    assert.equal(s.push(v2), true);
    assert.deepEqual(sent.map((u) => u.services!.map((x) => x.endpoints!.length)), [[2]]);
  });
  it('sends each subscriber only its changed services, in key order, as subscriptions change', () => {
    const svcs = ['reviews', 'ratings', 'details'].map((name) => ({ name, ports: [{ name: 'http', port: 9080, targetPort: 1, protocol: 'http' }] }));
    const a = agent('a', { services: svcs });
    const b = agent('b', { address: '10.0.0.2', services: svcs });
    const w1 = buildMeshView([a, b]);
    const sent: ServiceUpdate[] = [];
    const s = new PushSession(sendTo(sent), () => 0);
    s.subscribe(['reviews.default', 'details.default'], []);
    s.push(w1);
    assert.deepEqual(sent.at(-1)!.services!.map((x) => x.key), ['details.default', 'reviews.default']);
    assert.equal(s.push(w1), false);
    // One endpoint turns unhealthy: only that service, with the new health.
    const w2 = buildMeshView([a, { ...b, health: { reviews: { healthy: false, detail: 'x' } } }]);
    assert.equal(s.push(w2), true);
    assert.deepEqual(sent.at(-1)!.services!.map((x) => [x.key, x.endpoints!.map((e) => e.health)]), [['reviews.default', ['HEALTHY', 'UNHEALTHY']]]);
    // A new subscription after pushes: sent in order with nothing already sent.
    s.subscribe(['ratings.default', 'nope.default'], ['details.default']);
    s.push(w2);
    assert.deepEqual(sent.at(-1), { nonce: '3', services: [w2.services.get('ratings.default')], removed: ['nope.default'] });
    assert.equal(s.push(w2), false);
    // Re-subscribing to an unsubscribed service sends it again.
    s.subscribe(['details.default'], []);
    s.push(w2);
    assert.deepEqual(sent.at(-1)!.services!.map((x) => x.key), ['details.default']);
  });
});

describe('recordFromRegister', () => {
  const reg = {
    workload: { name: 'vm-1', namespace: 'shop', serviceAccount: 'payments', address: '127.0.0.2', locality: { region: 'r', zone: 'z', subzone: '' }, network: 'n', labels: {}, inboundPort: 15006, metricsPort: 0, gateway: null },
    services: [{ name: 'payments', namespace: 'shop', ports: [{ name: 'http', port: 9080, targetPort: 18080, protocol: 'http' }] }],
    host: null,
    subscriptions: [],
    agentVersion: 't',
  };
  const id = 'spiffe://cluster.local/ns/shop/sa/payments';
  it('accepts a registration matching the certificate', () => {
    const rec = recordFromRegister(reg, id, 'r1', new Date(0));
    assert.equal(rec.id, 'shop/vm-1');
    assert.equal(rec.identity, id);
  });
  it('refuses a workload claiming another identity', () => {
    assert.throws(() => recordFromRegister(reg, 'spiffe://cluster.local/ns/shop/sa/other', 'r1', new Date(0)), (e) => hasCode(e, 'KEDGE_PERMISSION_DENIED'));
  });
  const bad: [string, (r: typeof reg) => unknown][] = [
    ['address', (r) => ({ ...r, workload: { ...r.workload, address: 'host' } })],
    ['port', (r) => ({ ...r, services: [{ ...r.services[0]!, ports: [{ name: 'x', port: 0, targetPort: 1, protocol: 'tcp' }] }] })],
    ['protocol', (r) => ({ ...r, services: [{ ...r.services[0]!, ports: [{ name: 'x', port: 1, targetPort: 1, protocol: 'smtp' }] }] })],
    ['service namespace', (r) => ({ ...r, services: [{ ...r.services[0]!, namespace: 'other' }] })],
    ['duplicate service', (r) => ({ ...r, services: [r.services[0]!, r.services[0]!] })],
    ['inbound port', (r) => ({ ...r, workload: { ...r.workload, inboundPort: 0 } })],
  ];
  for (const [what, mutate] of bad) {
    it(`refuses a bad ${what}`, () => assert.throws(() => recordFromRegister(mutate(reg) as typeof reg, id, 'r1', new Date(0)), (e) => hasCode(e, 'KEDGE_BAD_REQUEST')));
  }
});

describe('agent applyUpdate', () => {
  const good = buildMeshView([agent('a')]).services.get('reviews.default')!;
  it('applies good services, rejects only the malformed one, and removes', () => {
    const broken = { ...good, key: 'ratings.default', name: 'ratings', endpoints: [{ ...good.endpoints[0]!, identity: 'not-spiffe' }] };
    const r = applyUpdate(new Map(), { nonce: '1', services: [good, broken], removed: [] });
    assert.deepEqual([...r.services.keys()], ['reviews.default']);
    assert.equal(r.rejected.length, 1);
    assert.match(r.rejected[0]!, /no valid SPIFFE identity/);
    const r2 = applyUpdate(r.services, { nonce: '2', services: [], removed: ['reviews.default'] });
    assert.equal(r2.services.size, 0);
  });
  it('builds a frozen proxy snapshot with every endpoint, unmeshed ones marked plaintext (auto mTLS)', () => {
    const plain = { ...good.endpoints[0]!, meshed: false, address: '10.9.9.9' };
    const snap = toProxySnapshot(new Map([['reviews.default', { ...good, endpoints: [good.endpoints[0]!, plain] }]]), '7');
    assert.equal(snap.version, '7');
    const view = snap.services.get('reviews.default')!;
    assert.deepEqual(view.endpoints.map((e) => [e.address, e.plaintext]), [['10.0.0.1', false], ['10.9.9.9', true]]);
    assert.ok(Object.isFrozen(view) && Object.isFrozen(view.endpoints));
  });
});
