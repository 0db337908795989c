// The kubernetes source against Kubernetes API doubles, through the real
// @kubernetes/client-node: sync, scaling, 410 relists, dropped watches,
// outages (STALE), bad credentials, garbage and hanging API servers,
// TokenReview, and two clusters in one process.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubernetesSource, type KubernetesSourceConfig } from '../../federation/sources/kubernetes/source';
import { reviewServiceAccountToken } from '../../federation/sources/kubernetes/token-review';
import { K8S_ERRORS } from '../../federation/sources/kubernetes/errors';
import { servicesFromObjects } from '../../federation/sources/kubernetes/mapping';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { hasCode } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';
import type { SourceService } from '../../federation/sources/types';
import { KubeApiDouble, writeKubeconfig } from '../support/kube-double';
import { endpointSlice, node, replicas, service } from '../support/fixtures/kube';

// Services, EndpointSlices, Nodes, HTTPRoutes, GRPCRoutes, AuthorizationPolicies and PeerAuthentications.
const WATCHES = 7;

const NODES = [
  { name: 'node-b', zone: 'us-east1-b' },
  { name: 'node-c', zone: 'us-east1-c' },
];

// Short timings so outages and retries play out in well under a second.
// (requestTimeoutMs stays generous: a loaded CI host must not turn a slow list into a failure.)
const FAST: Partial<KubernetesSourceConfig> = { staleAfterMs: 400, requestTimeoutMs: 2500, backoff: { initialMs: 40, maxMs: 300 }, watchTimeoutSeconds: 60 };

interface Cluster {
  double: KubeApiDouble;
  kubeconfig: string;
  dir: string;
}

async function cluster(t: TestContext, name: string, opts: { ipPrefix?: string; replicas?: number; region?: string } = {}): Promise<Cluster> {
  const double = await KubeApiDouble.start({ name });
  const dir = mkdtempSync(join(tmpdir(), `kedge-kube-${name}-`));
  t.after(async () => {
    await double.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const region = opts.region ?? 'us-east1';
  double.apply(
    node('node-b', { region, zone: `${region}-b` }),
    node('node-c', { region, zone: `${region}-c` }),
    service('reviews', 'default', [{ name: 'http', port: 9080 }]),
    endpointSlice('reviews', 'default', [{ name: 'http', port: 9080 }], replicas('reviews', opts.replicas ?? 2, { ipPrefix: opts.ipPrefix ?? '10.1.0', nodes: NODES.map((n) => ({ name: n.name, zone: `${region}-${n.zone.slice(-1)}` })) })),
  );
  return { double, dir, kubeconfig: writeKubeconfig(double, join(dir, `${name}.kubeconfig`)) };
}

function source(t: TestContext, c: Cluster, name: string, extra: Partial<KubernetesSourceConfig> = {}): KubernetesSource {
  const s = new KubernetesSource({ name, kubeconfig: c.kubeconfig, network: `net-${name}`, logger: silentLogger(), ...FAST, ...extra });
  t.after(() => s.close());
  return s;
}

async function waitFor(what: string, pred: () => boolean, timeoutMs = 5000): Promise<number> {
  const start = Date.now();
  while (!pred()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return Date.now() - start;
}

function addresses(s: KubernetesSource, name = 'reviews'): string[] {
  return (s.services().find((x) => x.name === name)?.endpoints ?? []).map((e) => e.address);
}

function healths(s: KubernetesSource): string[] {
  return s.services().flatMap((x: SourceService) => x.endpoints.map((e) => e.health));
}

test('initial sync: services with endpoints, locality from slice and node, status connected', async (t) => {
  const c = await cluster(t, 'east');
  const s = source(t, c, 'east');
  let changes = 0;
  await s.start(() => changes++);
  // start() resolves after the first sync, or after a first failure on a very loaded host.
  await waitFor('first sync', () => s.status().connected);
  const reviews = s.services().find((x) => x.name === 'reviews');
  assert.ok(reviews);
  assert.deepEqual(reviews.ports, [{ name: 'http', port: 9080, targetPort: 9080, protocol: 'http' }]);
  assert.deepEqual(
    reviews.endpoints.map((e) => [e.address, e.health, e.cluster, e.network, `${e.locality!.region}/${e.locality!.zone}`, e.meshed]),
    [
      ['10.1.0.1', 'HEALTHY', 'east', 'net-east', 'us-east1/us-east1-b', false],
      ['10.1.0.2', 'HEALTHY', 'east', 'net-east', 'us-east1/us-east1-c', false],
    ],
  );
  const st = s.status();
  assert.equal(st.kind, 'kubernetes');
  assert.equal(st.connected, true);
  assert.equal(st.stale, false);
  assert.equal(st.error, undefined);
  assert.equal(st.services, 1);
  assert.equal(st.endpoints, 2);
  assert.ok(st.lastSync);
  assert.ok(changes >= 1, 'onChange fired for the initial sync');
});

test('scaling a deployment (slice change) reaches services() and onChange quickly', async (t) => {
  const c = await cluster(t, 'east');
  const s = source(t, c, 'east');
  let changedAt = 0;
  await s.start(() => (changedAt = Date.now()));
  await waitFor('watches open', () => c.double.activeWatches() === WATCHES);
  const latencies: number[] = [];
  for (const count of [5, 1, 3]) {
    changedAt = 0;
    const t0 = Date.now();
    c.double.setEndpoints('default', 'reviews-abcde', replicas('reviews', count, { ipPrefix: '10.1.0', nodes: NODES }));
    await waitFor(`${count} endpoints`, () => addresses(s).length === count && changedAt > 0, 5000);
    latencies.push(changedAt - t0);
  }
  assert.deepEqual(addresses(s), ['10.1.0.1', '10.1.0.2', '10.1.0.3']);
  t.diagnostic(`slice change -> onChange latency ms: ${latencies.join(', ')}`);
  // A pod turning unready is a health change, not a removal.
  c.double.setEndpoints('default', 'reviews-abcde', [...replicas('reviews', 2, { ipPrefix: '10.1.0' }), { ip: '10.1.0.3', ready: false }]);
  await waitFor('unready endpoint', () => healths(s).includes('UNHEALTHY'));
  assert.deepEqual(healths(s), ['HEALTHY', 'HEALTHY', 'UNHEALTHY']);
  // A new service and its deletion.
  c.double.apply(service('ratings', 'shop', [{ name: 'grpc', port: 50051 }]), endpointSlice('ratings', 'shop', [{ name: 'grpc', port: 50051 }], [{ ip: '10.1.5.1' }]));
  await waitFor('ratings', () => addresses(s, 'ratings').length === 1);
  c.double.delete('services', 'shop', 'ratings');
  await waitFor('ratings gone', () => !s.services().some((x) => x.name === 'ratings'));
});

test('the incrementally maintained view equals a full mapping after a random series of changes', async (t) => {
  const c = await cluster(t, 'east');
  const s = source(t, c, 'east');
  await s.start(() => {});
  await waitFor('watches open', () => c.double.activeWatches() === WATCHES);
  // A seeded generator: the same series on every run.
  let seed = 42;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    // The low bits of this LCG cycle; use the high ones.
    return Math.floor(seed / 2 ** 15) % n;
  };
  const names = ['a', 'b', 'c', 'd'];
  for (let i = 0; i < 150; i++) {
    const name = names[rand(names.length)]!;
    const ns = rand(2) === 0 ? 'default' : 'shop';
    switch (rand(8)) {
      case 0:
      case 1:
        c.double.apply(service(name, ns, [{ name: 'http', port: 80 + rand(2) }]));
        break;
      case 2:
        c.double.delete('services', ns, name);
        break;
      case 3:
      case 4:
      case 5:
        c.double.apply(endpointSlice(name, ns, [{ name: 'http', port: 8080 }], replicas(name, rand(5), { ipPrefix: `10.${rand(3)}.${rand(3)}`, nodes: NODES, ready: rand(3) > 0 }), { suffix: String(rand(2)) }));
        break;
      case 6:
        c.double.delete('endpointslices', ns, `${name}-${rand(2)}`);
        break;
      case 7:
        c.double.apply(node(NODES[rand(2)]!.name, { region: `r${rand(3)}`, zone: `z${rand(3)}` }));
        break;
    }
    if (rand(10) === 0) await new Promise((r) => setTimeout(r, 5));
  }
  const expected = () =>
    JSON.stringify(
      servicesFromObjects(
        c.double.store.list('services') as V1Service[],
        c.double.store.list('endpointslices') as V1EndpointSlice[],
        c.double.store.list('nodes') as V1Node[],
        'east',
        'net-east',
      ),
    );
  await waitFor('view converged', () => JSON.stringify(s.services()) === expected(), 5000);
  assert.ok(s.services().length >= 4 && s.status().endpoints >= 8, `a non-trivial view: ${s.services().length} services, ${s.status().endpoints} endpoints`);
});

test('410 Gone on resume relists: changes made meanwhile arrive, nothing lost or duplicated', async (t) => {
  const c = await cluster(t, 'east');
  const s = source(t, c, 'east');
  await s.start(() => {});
  await waitFor('watches open', () => c.double.activeWatches() === WATCHES);
  const listsBefore = c.double.count('list', 'endpointslices');
  // Take the double down so the change below is only visible to a fresh list.
  await c.double.down();
  c.double.setEndpoints('default', 'reviews-abcde', replicas('reviews', 4, { ipPrefix: '10.1.0', nodes: NODES }));
  c.double.apply(service('details', 'default', [{ name: 'http', port: 9080 }]), endpointSlice('details', 'default', [{ name: 'http', port: 9080 }], [{ ip: '10.1.9.1' }]));
  c.double.compact();
  await c.double.up();
  await waitFor('relist after 410', () => addresses(s).length === 4 && addresses(s, 'details').length === 1);
  assert.ok(c.double.count('list', 'endpointslices') > listsBefore, 'the slices were relisted');
  assert.deepEqual(addresses(s), ['10.1.0.1', '10.1.0.2', '10.1.0.3', '10.1.0.4']);
  // And the watch continues from the relist.
  c.double.setEndpoints('default', 'reviews-abcde', replicas('reviews', 2, { ipPrefix: '10.1.0' }));
  await waitFor('watch after relist', () => addresses(s).length === 2);
  assert.equal(s.status().connected, true);
});

test('bookmarks keep an idle watch resumable across compaction (no relist)', async (t) => {
  const c = await cluster(t, 'east');
  const s = source(t, c, 'east');
  await s.start(() => {});
  await waitFor('watches open', () => c.double.activeWatches() === WATCHES);
  // Writes to Services move the global resourceVersion past the Nodes watch's last event.
  for (let i = 0; i < 5; i++) c.double.apply(service(`filler-${i}`, 'other', [{ name: 'http', port: 80 }]));
  await waitFor('fillers', () => s.services().length === 6);
  c.double.sendBookmarks();
  await new Promise((r) => setTimeout(r, 100));
  const lists = () => ['services', 'endpointslices', 'nodes'].map((r) => c.double.count('list', r as 'nodes'));
  const before = lists();
  c.double.compact();
  c.double.disconnectWatches();
  await waitFor('watches re-opened', () => c.double.activeWatches() === WATCHES);
  c.double.apply(node('node-d', { region: 'us-east1', zone: 'us-east1-d' }));
  c.double.setEndpoints('default', 'reviews-abcde', [{ ip: '10.1.0.7', nodeName: 'node-d', zone: 'us-east1-d' }]);
  // Node and slice arrive on different watches, in either order.
  await waitFor('change after reconnect', () => addresses(s).join() === '10.1.0.7' && s.services().find((x) => x.name === 'reviews')!.endpoints[0]!.locality!.region === 'us-east1');
  assert.deepEqual(lists(), before, 'resumed from bookmarked resourceVersions without relisting');
});

test('a dropped watch reconnects and keeps following changes', async (t) => {
  const c = await cluster(t, 'east');
  const s = source(t, c, 'east');
  await s.start(() => {});
  await waitFor('watches open', () => c.double.activeWatches() === WATCHES);
  const watchesBefore = c.double.count('watch', 'endpointslices');
  assert.equal(c.double.disconnectWatches(), WATCHES);
  c.double.setEndpoints('default', 'reviews-abcde', replicas('reviews', 3, { ipPrefix: '10.1.0' }));
  await waitFor('change after reconnect', () => addresses(s).length === 3);
  assert.ok(c.double.count('watch', 'endpointslices') > watchesBefore);
  await waitFor('connected', () => s.status().connected);
});

test('API down: last endpoints kept, STALE after staleAfterMs with lastSync frozen; back up: fresh', async (t) => {
  const c = await cluster(t, 'east');
  const s = source(t, c, 'east', { staleAfterMs: 300 });
  let changes = 0;
  await s.start(() => changes++);
  await waitFor('watches open', () => c.double.activeWatches() === WATCHES);
  const downAt = Date.now();
  await c.double.down();
  await waitFor('disconnected', () => !s.status().connected);
  assert.deepEqual(healths(s), ['HEALTHY', 'HEALTHY'], 'not stale before staleAfterMs');
  await waitFor('stale', () => s.status().stale, 3000);
  assert.ok(Date.now() - downAt >= 300);
  const st = s.status();
  assert.equal(st.connected, false);
  assert.equal(st.endpoints, 2);
  assert.deepEqual(healths(s), ['STALE', 'STALE']);
  assert.match(st.error ?? '', /cannot reach https:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
  const lastSync = Date.parse(st.lastSync!);
  assert.ok(lastSync >= downAt - 50 && lastSync <= Date.now());
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(s.status().lastSync, st.lastSync, 'lastSync does not advance while down');

  const changesBefore = changes;
  await c.double.up();
  await waitFor('fresh again', () => s.status().connected && !s.status().stale && healths(s).every((h) => h === 'HEALTHY'), 5000);
  assert.ok(changes > changesBefore, 'onChange fired when the endpoints became fresh');
  assert.equal(s.status().error, undefined);
});

test('wrong token: error status naming server and kubeconfig, nothing served, no crash', async (t) => {
  const c = await cluster(t, 'east');
  const kubeconfig = writeKubeconfig(c.double, join(c.dir, 'wrong.kubeconfig'), { token: 'stolen-and-revoked' });
  const s = new KubernetesSource({ name: 'east', kubeconfig, network: 'net-east', logger: silentLogger(), ...FAST });
  t.after(() => s.close());
  const t0 = Date.now();
  await s.start(() => {});
  assert.ok(Date.now() - t0 < 3000, 'start resolves after the first failure');
  const st = s.status();
  assert.equal(st.connected, false);
  assert.equal(st.stale, false);
  assert.equal(st.lastSync, undefined);
  assert.equal(st.error, `credentials rejected by ${c.double.url}: check the token in ${kubeconfig}`);
  assert.deepEqual(s.services(), []);
  // The operator fixes the token: the source recovers on its own.
  c.double.addApiToken('stolen-and-revoked');
  await waitFor('recovered', () => s.status().connected && addresses(s).length === 2, 5000);
});

test('a TLS mismatch is reported as such', async (t) => {
  const c = await cluster(t, 'east');
  const other = await KubeApiDouble.start({ name: 'someone-else' });
  t.after(() => other.close());
  const kubeconfig = writeKubeconfig(c.double, join(c.dir, 'wrong-ca.kubeconfig'), { caPem: other.caPem });
  const s = new KubernetesSource({ name: 'east', kubeconfig, network: 'n', logger: silentLogger(), ...FAST });
  t.after(() => s.close());
  await s.start(() => {});
  assert.match(s.status().error ?? '', /TLS verification of https:\/\/127\.0\.0\.1:\d+ failed .*certificate-authority-data/);
});

test('garbage and hanging API servers: bounded start, clear errors, endpoints kept, recovery', async (t) => {
  const c = await cluster(t, 'east');
  for (const fault of [{ kind: 'garbage' }, { kind: 'not-http' }, { kind: 'hang' }, { kind: 'status', code: 503 }] as const) {
    c.double.setFault(fault);
    const s = new KubernetesSource({ name: 'east', kubeconfig: c.kubeconfig, network: 'n', logger: silentLogger(), ...FAST, requestTimeoutMs: 800 });
    const t0 = Date.now();
    await s.start(() => {});
    const took = Date.now() - t0;
    assert.ok(took < 3000, `${fault.kind}: start took ${took} ms`);
    const st = s.status();
    assert.equal(st.connected, false, fault.kind);
    assert.deepEqual(s.services(), []);
    const want = { garbage: /invalid answer/, 'not-http': /invalid answer|cannot reach/, hang: /did not answer list \w+ within 800 ms/, status: /HTTP 503/ }[fault.kind];
    assert.match(st.error ?? '', want, `${fault.kind}: ${st.error}`);
    t.diagnostic(`${fault.kind}: start resolved in ${took} ms, error: ${st.error}`);
    c.double.setFault(null);
    await waitFor(`${fault.kind}: recovery`, () => s.status().connected && addresses(s).length === 2, 5000);
    await s.close();
  }

  // The same faults after a good sync: the last endpoints stay (then STALE), no crash.
  const s = source(t, c, 'east');
  await s.start(() => {});
  await waitFor('watches open', () => c.double.activeWatches() === WATCHES);
  c.double.setFault({ kind: 'hang' });
  c.double.disconnectWatches();
  await waitFor('stale while hanging', () => s.status().stale, 5000);
  assert.deepEqual(addresses(s), ['10.1.0.1', '10.1.0.2']);
  c.double.setFault({ kind: 'garbage' });
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(addresses(s), ['10.1.0.1', '10.1.0.2']);
  assert.match(s.status().error ?? '', /invalid answer|closed the \w+ watch at once|did not answer|lost the connection/);
  c.double.setFault(null);
  await waitFor('fresh', () => s.status().connected && !s.status().stale, 8000);
});

test('a hanging API server holds start() for startWaitMs at most; the sync completes later', async (t) => {
  const c = await cluster(t, 'east');
  c.double.setFault({ kind: 'hang' });
  const s = source(t, c, 'east', { requestTimeoutMs: 1500, startWaitMs: 200 });
  const t0 = Date.now();
  await s.start(() => {});
  const took = Date.now() - t0;
  assert.ok(took < 1000, `start took ${took} ms`);
  assert.equal(s.status().connected, false);
  assert.deepEqual(s.services(), []);
  c.double.setFault(null);
  await waitFor('synced after the hung requests timed out', () => s.status().connected && addresses(s).length === 2, 8000);
});

test('unreadable or invalid kubeconfig: KEDGE_K8S_KUBECONFIG at construction, naming the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kedge-kubeconfig-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const missing = join(dir, 'missing.kubeconfig');
  const garbage = join(dir, 'garbage.kubeconfig');
  writeFileSync(garbage, 'clusters: [ {{{ not yaml');
  const noContext = join(dir, 'nocontext.kubeconfig');
  writeFileSync(noContext, 'apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n');
  for (const file of [missing, garbage, noContext]) {
    assert.throws(
      () => new KubernetesSource({ name: 'east', kubeconfig: file, network: 'n', logger: silentLogger() }),
      (err: unknown) => hasCode(err, K8S_ERRORS.KUBECONFIG) && (err as Error).message.includes(file),
    );
  }
});

test('two clusters (east and west) in one process stay separate', async (t) => {
  const east = await cluster(t, 'east', { ipPrefix: '10.1.0', replicas: 2, region: 'us-east1' });
  const west = await cluster(t, 'west', { ipPrefix: '10.2.0', replicas: 3, region: 'us-west1' });
  const se = source(t, east, 'east');
  const sw = source(t, west, 'west');
  await Promise.all([se.start(() => {}), sw.start(() => {})]);
  await waitFor('both synced', () => se.status().connected && sw.status().connected);
  assert.deepEqual(addresses(se), ['10.1.0.1', '10.1.0.2']);
  assert.deepEqual(addresses(sw), ['10.2.0.1', '10.2.0.2', '10.2.0.3']);
  const ep = sw.services()[0]!.endpoints[0]!;
  assert.deepEqual([ep.cluster, ep.network, ep.locality!.region], ['west', 'net-west', 'us-west1']);
  // West going down leaves east untouched.
  await west.double.down();
  await waitFor('west stale', () => sw.status().stale, 3000);
  east.double.setEndpoints('default', 'reviews-abcde', replicas('reviews', 1, { ipPrefix: '10.1.0' }));
  await waitFor('east follows', () => addresses(se).length === 1);
  assert.equal(se.status().connected, true);
  assert.equal(se.status().stale, false);
  assert.deepEqual(healths(sw), ['STALE', 'STALE', 'STALE']);
});

test('TokenReview: service account accepted, forged token, audience, non-SA user, forbidden caller, unreachable', async (t) => {
  const c = await cluster(t, 'east');
  const d = c.double;
  d.registerServiceAccountToken('pod-token', { namespace: 'shop', serviceAccount: 'cart', podName: 'cart-7d4b9-x1', podUid: '1f0c' });
  d.registerServiceAccountToken('aud-token', { namespace: 'shop', serviceAccount: 'cart', audiences: ['kedge'] });
  d.registerToken('user-token', { username: 'kubernetes-admin', groups: ['system:masters'] });

  assert.deepEqual(await reviewServiceAccountToken(c.kubeconfig, 'pod-token'), {
    namespace: 'shop',
    serviceAccount: 'cart',
    podName: 'cart-7d4b9-x1',
    podUid: '1f0c',
    username: 'system:serviceaccount:shop:cart',
    audiences: ['https://kubernetes.default.svc.cluster.local'],
  });
  const s = source(t, c, 'east');
  const viaSource = await s.reviewToken('aud-token', { audiences: ['kedge'] });
  assert.deepEqual([viaSource.namespace, viaSource.serviceAccount, viaSource.podName, viaSource.audiences], ['shop', 'cart', undefined, ['kedge']]);

  const rejects = async (p: Promise<unknown>, code: string, msg: RegExp) =>
    assert.rejects(p, (err: unknown) => {
      assert.ok(hasCode(err, code), `${code}: got ${(err as { code?: string }).code} ${(err as Error).message}`);
      assert.match((err as Error).message, msg);
      return true;
    });
  await rejects(reviewServiceAccountToken(c.kubeconfig, 'forged'), K8S_ERRORS.TOKEN_REJECTED, /rejected the service-account token: \[invalid bearer token/);
  await rejects(reviewServiceAccountToken(c.kubeconfig, ''), K8S_ERRORS.TOKEN_REJECTED, /no service-account token/);
  await rejects(s.reviewToken('pod-token', { audiences: ['kedge'] }), K8S_ERRORS.TOKEN_AUDIENCE, /cluster east .*audience \["kedge"\]/);
  await rejects(reviewServiceAccountToken(c.kubeconfig, 'user-token'), K8S_ERRORS.TOKEN_NOT_SERVICE_ACCOUNT, /"kubernetes-admin", not a service account/);

  d.addApiToken('no-auth-delegator', { canReviewTokens: false });
  const limited = writeKubeconfig(d, join(c.dir, 'limited.kubeconfig'), { token: 'no-auth-delegator' });
  await rejects(reviewServiceAccountToken(limited, 'pod-token'), K8S_ERRORS.FORBIDDEN, /forbids .* create tokenreviews.*system:auth-delegator/);
  const wrong = writeKubeconfig(d, join(c.dir, 'wrong.kubeconfig'), { token: 'nope' });
  await rejects(reviewServiceAccountToken(wrong, 'pod-token'), K8S_ERRORS.UNAUTHORIZED, /credentials rejected by .* check the token in .*wrong\.kubeconfig/);
  d.setFault({ kind: 'hang' });
  await rejects(reviewServiceAccountToken(c.kubeconfig, 'pod-token', { timeoutMs: 300 }), K8S_ERRORS.TIMEOUT, /did not answer create tokenreviews within 300 ms/);
  d.setFault(null);
  await d.down();
  await rejects(reviewServiceAccountToken(c.kubeconfig, 'pod-token'), K8S_ERRORS.UNREACHABLE, /ECONNREFUSED/);
  await rejects(reviewServiceAccountToken(join(c.dir, 'nope'), 'pod-token'), K8S_ERRORS.KUBECONFIG, /cannot read kubeconfig/);
});
