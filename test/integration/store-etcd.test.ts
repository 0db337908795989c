// The etcd store against a real etcd (Debian etcd-server): the shared
// conformance suite, then what only a remote store has to survive: etcd
// restarts, etcd going away, etcd refusing writes, and two stores (two
// federation replicas) on one etcd.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { openEtcdStore, type EtcdStoreOptions } from '../../federation/store/etcd';
import type { Store, WatchEvent } from '../../federation/store/types';
import { hasCode } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';
import { startEtcd, type EtcdServer } from '../support/etcd';
import { storeConformance, waitFor } from '../support/store-conformance';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let etcd: EtcdServer;
const open = (server: EtcdServer = etcd, extra: Partial<EtcdStoreOptions> = {}) => openEtcdStore([server.endpoint], { logger: silentLogger(), prefix: '/kedge-test/', ...extra });

/** Collects what a watch delivers, and its errors. */
function collect(store: Store, prefix: string, fromRevision?: number) {
  const events: WatchEvent[] = [];
  const errors: Error[] = [];
  const watch = store.watch(prefix, fromRevision === undefined ? {} : { fromRevision }, (b) => events.push(...b), (e) => errors.push(e));
  const brief = () => events.map((e) => (e.type === 'put' ? `put ${e.kv.key}=${e.kv.value}` : `delete ${e.key}`));
  return { events, errors, watch, brief };
}

function expectCode(code: string, ...mentions: string[]) {
  return (err: unknown) => {
    assert.ok(hasCode(err, code), `expected ${code}, got ${String(err)}`);
    for (const m of mentions) assert.ok((err as Error).message.includes(m), `message "${(err as Error).message}" should mention ${m}`);
    return true;
  };
}

before(async () => {
  etcd = await startEtcd();
});
after(async () => {
  await etcd?.destroy();
});

storeConformance('etcd', async () => {
  const store = await open();
  return { store, cleanup: () => store.close() };
});

describe('etcd store on a real etcd', () => {
  it('keeps durable keys across an etcd restart, and a watch opened before it continues without a gap', { timeout: 30_000 }, async () => {
    const server = await startEtcd();
    try {
      const store = await open(server);
      const { revision: r0 } = await store.put('/d/before', '1');
      const w = collect(store, '/d/', r0);
      await store.put('/d/a', 'x');
      await waitFor(() => w.events.length === 1, 5000, 'the first live event');

      await server.stop();
      await server.restart();

      assert.equal((await store.get('/d/before'))?.value, '1', 'durable key survived');
      await store.put('/d/b', 'y');
      await store.delete('/d/a');
      await waitFor(() => w.events.length === 3, 10_000, 'events written after the restart');
      await sleep(200);
      assert.deepEqual(w.brief(), ['put /d/a=x', 'put /d/b=y', 'delete /d/a'], 'no gap and no repeat');
      assert.deepEqual(w.errors, []);
      w.watch.close();
      await store.close();
    } finally {
      await server.destroy();
    }
  });

  it('delivers changes made while etcd was away from a watch that was cut by a kill -9', { timeout: 30_000 }, async () => {
    const server = await startEtcd();
    try {
      const watcher = await open(server);
      const { revision } = await watcher.put('/k9/start', '0');
      const w = collect(watcher, '/k9/', revision);
      await server.kill9();
      await server.restart();
      // Another replica writes while the first one's watch is still reconnecting.
      const writer = await open(server);
      for (let i = 1; i <= 5; i++) await writer.put(`/k9/${i}`, String(i));
      await waitFor(() => w.events.length === 5, 10_000, 'the five writes');
      await sleep(200);
      assert.deepEqual(w.brief(), [1, 2, 3, 4, 5].map((i) => `put /k9/${i}=${i}`));
      w.watch.close();
      await writer.close();
      await watcher.close();
    } finally {
      await server.destroy();
    }
  });

  it('keeps a leased key through a short etcd restart while keepAlive continues', { timeout: 30_000 }, async () => {
    const server = await startEtcd();
    try {
      const store = await open(server, { requestTimeoutMs: 1000 });
      const lease = await store.grantLease(2000);
      await store.put('/agents/a', 'here', { lease });
      let renewals = 0;
      let failures = 0;
      let stop = false;
      const refresher = (async () => {
        while (!stop) {
          try {
            if (await store.keepAlive(lease)) renewals++;
            else assert.fail('the lease was reported gone');
          } catch (err) {
            assert.ok(hasCode(err, 'KEDGE_STORE_UNAVAILABLE'), `keepAlive while etcd is down rejects with UNAVAILABLE, got ${String(err)}`);
            failures++;
          }
          await sleep(300);
        }
      })();
      await sleep(500);
      await server.stop();
      await sleep(700);
      await server.restart();
      await sleep(3000); // past the TTL: only renewals after the restart keep it
      stop = true;
      await refresher;
      assert.equal((await store.get('/agents/a'))?.value, 'here');
      assert.equal(await store.keepAlive(lease), true);
      assert.ok(renewals >= 5 && failures >= 1, `renewals ${renewals}, failures ${failures}`);
      await store.revokeLease(lease);
      await store.close();
    } finally {
      await server.destroy();
    }
  });

  it('rejects with KEDGE_STORE_UNAVAILABLE within the request timeout while etcd is down or hung, and recovers', { timeout: 30_000 }, async () => {
    const server = await startEtcd();
    try {
      const store = await open(server, { requestTimeoutMs: 1000 });
      await store.put('/u/k', 'v');
      const ops = [
        ['get', () => store.get('/u/k')],
        ['put', () => store.put('/u/k', 'w')],
        ['guarded put', () => store.put('/u/k', 'w', { expectRevision: 1 })],
        ['delete', () => store.delete('/u/k')],
        ['list', () => store.list('/u/')],
        ['grantLease', () => store.grantLease(5000)],
        ['keepAlive', () => store.keepAlive('12345')],
      ] as const;
      const allRejectInTime = async (state: string) => {
        const t0 = Date.now();
        // All at once: each is bounded by its own deadline, so the batch takes one timeout.
        await Promise.all(ops.map(([what, op]) => assert.rejects(op(), expectCode('KEDGE_STORE_UNAVAILABLE', server.endpoint), `${what} while etcd is ${state}`)));
        const took = Date.now() - t0;
        assert.ok(took < 2500, `operations against a ${state} etcd took ${took} ms to reject`);
      };
      // The writes that timed out may or may not have been applied (a hung
      // etcd reads them once it resumes), so "works" means answers at all.
      const works = () => waitFor(() => store.get('/u/k').then(() => true, () => false), 5000, 'the store to work again');

      server.pause(); // a hung etcd: connections stay open, nothing answers
      await allRejectInTime('hung');
      server.resume();
      await works();

      await server.stop();
      await allRejectInTime('stopped');
      await assert.rejects(openEtcdStore([server.endpoint], { logger: silentLogger(), dialTimeoutMs: 500 }), expectCode('KEDGE_STORE_UNAVAILABLE', server.endpoint));
      await server.restart();
      await works();
      await store.put('/u/k', 'after');
      assert.equal((await store.get('/u/k'))?.value, 'after');
      await store.close();
    } finally {
      await server.destroy();
    }
  });

  it('rejects writes with a clear KedgeError when etcd raised its NOSPACE alarm, and still reads', { timeout: 30_000 }, async () => {
    const server = await startEtcd({ args: [`--quota-backend-bytes=${512 * 1024}`] });
    try {
      const store = await open(server);
      await store.put('/small', 'kept');
      const chunk = 'x'.repeat(100 * 1024);
      let refused: unknown;
      for (let i = 0; i < 40 && refused === undefined; i++) {
        await store.put(`/fill/${i}`, chunk).catch((err: unknown) => (refused = err));
      }
      assert.ok(refused !== undefined, 'etcd refused a write before 4 MB');
      expectCode('KEDGE_STORE_UNAVAILABLE', server.endpoint, 'NOSPACE', 'alarm disarm')(refused);
      await assert.rejects(store.put('/small', 'x'), expectCode('KEDGE_STORE_UNAVAILABLE', 'NOSPACE'));
      assert.equal((await store.get('/small'))?.value, 'kept', 'reads keep working');
      assert.ok((await store.list('/fill/')).kvs.length > 0);
      await store.close();
    } finally {
      await server.destroy();
    }
  });

  it('lets two stores on one etcd (two replicas) see each other through watches, leases included', { timeout: 30_000 }, async () => {
    const a = await open();
    const b = await open();
    const p = `/replicas/${Date.now()}/`;
    const wa = collect(a, p);
    const wb = collect(b, p);
    await a.put(`${p}from-a`, '1');
    const lease = await b.grantLease(60_000);
    await b.put(`${p}from-b`, '2', { lease });
    await waitFor(() => wa.events.length === 2 && wb.events.length === 2, 5000, 'both writes at both replicas');
    await b.revokeLease(lease);
    await waitFor(() => wa.events.length === 3, 5000, 'the revoke seen by the other replica');
    assert.deepEqual(wa.brief(), [`put ${p}from-a=1`, `put ${p}from-b=2`, `delete ${p}from-b`]);
    assert.deepEqual(wb.brief().slice(0, 2), wa.brief().slice(0, 2));
    // A guard written by one replica conflicts at the other.
    const cur = await b.get(`${p}from-a`);
    await a.put(`${p}from-a`, '3');
    await assert.rejects(b.put(`${p}from-a`, '4', { expectRevision: cur!.modRevision }), expectCode('KEDGE_STORE_CONFLICT', `${p}from-a`));
    wa.watch.close();
    wb.watch.close();
    await a.close();
    await b.close();
  });

  it('rejects a value larger than etcd accepts as an invalid request', async () => {
    const store = await open();
    await assert.rejects(store.put('/big', 'x'.repeat(2 << 20)), expectCode('KEDGE_STORE_INVALID_REQUEST', '/big', 'max-request-bytes'));
    await store.close();
  });

  it('refuses malformed lease IDs like unknown ones', async () => {
    const store = await open();
    assert.equal(await store.keepAlive('not-a-lease'), false);
    assert.equal(await store.keepAlive('1234567'), false);
    await assert.rejects(store.put('/l/k', 'v', { lease: 'not-a-lease' }), expectCode('KEDGE_STORE_LEASE_NOT_FOUND', '/l/k'));
    await assert.rejects(store.put('/l/k', 'v', { lease: '1234567' }), expectCode('KEDGE_STORE_LEASE_NOT_FOUND', '/l/k'));
    await store.revokeLease('1234567');
    await store.close();
  });

  it('lists in pages read at one revision', async () => {
    const store = await open(etcd, { listPageSize: 3 });
    const keys = Array.from({ length: 10 }, (_, i) => `/pages/${String(i).padStart(2, '0')}`);
    for (const k of keys) await store.put(k, k);
    const { kvs, revision } = await store.list('/pages/');
    assert.deepEqual(kvs.map((kv) => kv.key), keys);
    assert.equal(revision, Math.max(...kvs.map((kv) => kv.modRevision)));
    assert.equal((await store.list('/pages/0')).kvs.length, 10);
    assert.equal((await store.list('/pages/09')).kvs.length, 1);
    await store.close();
  });

  it('refuses endpoints that are not host:port', async () => {
    for (const bad of [[], ['etcd://127.0.0.1:2379'], ['127.0.0.1'], [''], ['http://127.0.0.1:2379/path']]) {
      await assert.rejects(openEtcdStore(bad, { logger: silentLogger() }), expectCode('KEDGE_STORE_INVALID_REQUEST'), JSON.stringify(bad));
    }
  });

  it('namespaces keys under its prefix', async () => {
    const one = await open(etcd, { prefix: '/mesh-one/' });
    const two = await open(etcd, { prefix: '/mesh-two/' });
    await one.put('/k', 'one');
    assert.equal(await two.get('/k'), undefined);
    assert.deepEqual((await one.list('')).kvs.map((kv) => kv.key), ['/k']);
    await one.close();
    await two.close();
  });

  it('reports a watch from a compacted revision with KEDGE_STORE_COMPACTED', async () => {
    const store = await open();
    const { revision: old } = await store.put('/c/k', '1');
    await store.put('/c/k', '2');
    const compactor = await import('etcd3');
    const client = new compactor.Etcd3({ hosts: etcd.endpoint });
    try {
      await client.kv.compact({ revision: old + 1, physical: true });
    } finally {
      client.close();
    }
    const w = collect(store, '/c/', old - 1);
    await waitFor(() => w.errors.length === 1, 5000, 'the compacted error');
    expectCode('KEDGE_STORE_COMPACTED', '/c/')(w.errors[0]);
    assert.deepEqual(w.events, []);
    await store.close();
  });
});
