// The Kubernetes API double speaks the real wire protocol: checked through
// the real @kubernetes/client-node (typed lists, Watch, the client's own
// informer, TokenReview) and once on the raw wire.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { KubeApiDouble, writeKubeconfig } from '../support/kube-double';
import { endpointSlice, node, service } from '../support/fixtures/kube';

async function withDouble(fn: (d: KubeApiDouble, kc: k8s.KubeConfig, dir: string) => Promise<void>): Promise<void> {
  const d = await KubeApiDouble.start({ name: 'proto' });
  const dir = mkdtempSync(join(tmpdir(), 'kedge-kube-double-'));
  try {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(writeKubeconfig(d, join(dir, 'kubeconfig')));
    await fn(d, kc, dir);
  } finally {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function rawGet(d: KubeApiDouble, path: string, token = d.token): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: d.port, path, ca: d.caPem, headers: { authorization: `Bearer ${token}` } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('typed lists through the real client: items, resourceVersion, 401 for a wrong token', async () => {
  await withDouble(async (d, kc, dir) => {
    d.apply(service('reviews', 'default', [{ name: 'http', port: 9080 }]), node('n1', { region: 'r1', zone: 'z1' }));
    d.apply(endpointSlice('reviews', 'default', [{ name: 'http', port: 9080 }], [{ ip: '10.0.0.1', pod: 'reviews-1' }]));
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const list = await core.listServiceForAllNamespaces();
    assert.equal(list.items.length, 1);
    assert.equal(list.items[0]!.metadata!.name, 'reviews');
    assert.equal(list.metadata!.resourceVersion, String(d.store.rv));
    const slices = await kc.makeApiClient(k8s.DiscoveryV1Api).listEndpointSliceForAllNamespaces({ labelSelector: 'kubernetes.io/service-name=reviews' });
    assert.equal(slices.items[0]!.endpoints[0]!.conditions!.ready, true);
    assert.equal((await core.listNode()).items[0]!.metadata!.labels!['topology.kubernetes.io/region'], 'r1');

    const bad = new k8s.KubeConfig();
    bad.loadFromFile(writeKubeconfig(d, join(dir, 'bad'), { token: 'nope' }));
    await assert.rejects(bad.makeApiClient(k8s.CoreV1Api).listNode(), (err: { code?: number }) => err.code === 401);
  });
});

test('watch: replay from a resourceVersion, live events, bookmarks, 410 Gone after compaction', async () => {
  await withDouble(async (d, kc) => {
    const first = d.apply(service('a', 'default', [{ name: 'http', port: 80 }]))[0]!;
    d.apply(service('b', 'default', [{ name: 'http', port: 80 }]));
    const events: { type: string; name?: string; rv?: string; code?: number }[] = [];
    let done: (err: unknown) => void = () => {};
    const ended = new Promise((resolve) => (done = resolve));
    const w = new k8s.Watch(kc);
    const ctl = await w.watch(
      '/api/v1/services',
      { resourceVersion: first.metadata!.resourceVersion!, allowWatchBookmarks: true },
      (type: string, obj: { metadata?: { name?: string; resourceVersion?: string }; code?: number }) => events.push({ type, name: obj.metadata?.name, rv: obj.metadata?.resourceVersion, code: obj.code }),
      (err: unknown) => done(err),
    );
    const until = async (n: number) => {
      for (let i = 0; i < 200 && events.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    };
    await until(1);
    assert.deepEqual(events.map((e) => [e.type, e.name]), [['ADDED', 'b']]);
    d.apply(service('a', 'default', [{ name: 'http', port: 81 }]));
    d.delete('services', 'default', 'b');
    d.sendBookmarks();
    await until(4);
    assert.deepEqual(
      events.map((e) => [e.type, e.name]),
      [
        ['ADDED', 'b'],
        ['MODIFIED', 'a'],
        ['DELETED', 'b'],
        ['BOOKMARK', undefined],
      ],
    );
    assert.equal(events[3]!.rv, String(d.store.rv));
    ctl.abort();
    await ended;

    // After compaction, resuming from the old resourceVersion is 410 Gone inside the stream.
    d.compact();
    const gone: { type: string; code?: number }[] = [];
    await new Promise<void>((resolve) => {
      void w.watch('/api/v1/services', { resourceVersion: first.metadata!.resourceVersion! }, (type: string, obj: { code?: number }) => gone.push({ type, code: obj.code }), () => resolve());
    });
    assert.deepEqual(gone, [{ type: 'ERROR', code: 410 }]);
  });
});

test("the client's own informer (ListWatch) lists and follows the double", async () => {
  await withDouble(async (d, kc) => {
    d.apply(node('n1'));
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const informer = k8s.makeInformer(kc, '/api/v1/nodes', () => core.listNode());
    const seen: string[] = [];
    informer.on('add', (n: k8s.V1Node) => seen.push(`add ${n.metadata!.name}`));
    informer.on('update', (n: k8s.V1Node) => seen.push(`update ${n.metadata!.name}`));
    await informer.start();
    d.apply(node('n2'));
    d.apply(node('n1', { region: 'r9' }));
    for (let i = 0; i < 300 && seen.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    await informer.stop();
    assert.deepEqual(seen, ['add n1', 'add n2', 'update n1']);
  });
});

test('raw wire: list items carry no kind, watch streams JSON lines with kind and apiVersion', async () => {
  await withDouble(async (d) => {
    d.apply(endpointSlice('web', 'shop', [{ name: 'http', port: 80 }], [{ ip: '10.0.0.1' }]));
    const list = await rawGet(d, '/apis/discovery.k8s.io/v1/endpointslices');
    assert.equal(list.status, 200);
    const body = JSON.parse(list.body) as { kind: string; apiVersion: string; metadata: { resourceVersion: string }; items: Record<string, unknown>[] };
    assert.equal(body.kind, 'EndpointSliceList');
    assert.equal(body.apiVersion, 'discovery.k8s.io/v1');
    assert.equal(body.items[0]!.kind, undefined);
    assert.equal(body.items[0]!.addressType, 'IPv4');
    const watch = await rawGet(d, '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices?watch=true&resourceVersion=0&timeoutSeconds=1');
    const lines = watch.body.trim().split('\n').map((l) => JSON.parse(l) as { type: string; object: { kind: string; apiVersion: string } });
    assert.deepEqual(lines.map((l) => [l.type, l.object.kind, l.object.apiVersion]), [['ADDED', 'EndpointSlice', 'discovery.k8s.io/v1']]);
    const unauth = await rawGet(d, '/api/v1/nodes', 'wrong');
    assert.equal(unauth.status, 401);
    assert.equal((JSON.parse(unauth.body) as { reason: string }).reason, 'Unauthorized');
  });
});

test('TokenReview through the real client: authenticated service account, unknown token', async () => {
  await withDouble(async (d, kc) => {
    d.registerServiceAccountToken('pod-token', { namespace: 'shop', serviceAccount: 'cart', podName: 'cart-1', podUid: 'uid-1' });
    const api = kc.makeApiClient(k8s.AuthenticationV1Api);
    const ok = await api.createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token: 'pod-token' } } });
    assert.equal(ok.status!.authenticated, true);
    assert.equal(ok.status!.user!.username, 'system:serviceaccount:shop:cart');
    assert.deepEqual(ok.status!.user!.extra!['authentication.kubernetes.io/pod-name'], ['cart-1']);
    const no = await api.createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token: 'forged' } } });
    assert.notEqual(no.status!.authenticated, true);
    assert.match(no.status!.error!, /invalid bearer token/);
  });
});
