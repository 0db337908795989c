// Behaviour every Store implementation must have, registered as node:test
// cases. It talks only through the Store interface and assumes nothing about
// the backend: each case works under its own random prefix and compares
// revisions instead of expecting exact numbers, so the etcd implementation can
// run it against one shared server. Lease waits are bounded but generous,
// because etcd rounds TTLs up to seconds and checks expiry every 500 ms.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { hasCode } from '../../proto/model/errors';
import type { KeyValue, Store, Watch, WatchEvent } from '../../federation/store/types';

/** A store under test and how to dispose of it. */
export interface OpenedStore { store: Store; cleanup: () => Promise<void> }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms until it is true or `timeoutMs` passes. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

const eventKey = (e: WatchEvent) => (e.type === 'put' ? e.kv.key : e.key);
const eventRev = (e: WatchEvent) => (e.type === 'put' ? e.kv.modRevision : e.modRevision);
const brief = (e: WatchEvent) => (e.type === 'put' ? `put ${e.kv.key}=${e.kv.value}` : `delete ${e.key}`);

/** Records what one watch delivers. */
function record(store: Store, prefix: string, fromRevision?: number) {
  const events: WatchEvent[] = [];
  const errors: Error[] = [];
  let batches = 0;
  const watch: Watch = store.watch(prefix, fromRevision === undefined ? {} : { fromRevision }, (batch) => {
    assert.ok(Array.isArray(batch) && batch.length > 0, 'watch batches are non-empty arrays');
    batches++;
    events.push(...batch);
  }, (err) => errors.push(err));
  return {
    events, errors, watch,
    get batches() { return batches; },
    until: (n: number, what: string) => waitFor(() => events.length >= n, 5000, `${n} watch events (${what})`),
  };
}

async function rejectsWithCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(hasCode(err, code), `expected ${code}, got ${String((err as { code?: string }).code)}: ${String(err)}`);
    return true;
  });
}

/** Increments a counter key with a get + guarded put loop, as tokens and allocators do. */
async function casIncrement(store: Store, key: string): Promise<number> {
  for (let attempts = 0; ; attempts++) {
    assert.ok(attempts < 1000, 'CAS increment made no progress');
    const cur: KeyValue | undefined = await store.get(key);
    try {
      await store.put(key, String(Number(cur?.value ?? '0') + 1), { expectRevision: cur?.modRevision ?? 0 });
      return attempts;
    } catch (err) {
      if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
    }
  }
}

/** Registers the conformance cases for one Store implementation. */
export function storeConformance(name: string, open: () => Promise<OpenedStore>): void {
  describe(`Store conformance: ${name}`, () => {
    // Each case gets a fresh store (or connection) and a prefix nobody else uses.
    const test = (title: string, fn: (store: Store, p: string) => Promise<void>) =>
      it(title, { timeout: 30_000 }, async () => {
        const { store, cleanup } = await open();
        try {
          await fn(store, `/conformance/${randomBytes(6).toString('hex')}/`);
        } finally {
          await cleanup();
        }
      });

    test('reports its kind', async (store) => {
      assert.ok(store.kind === 'embedded' || store.kind === 'etcd');
    });

    test('put then get returns the value with create and mod revisions', async (store, p) => {
      assert.equal(await store.get(`${p}k`), undefined);
      const r1 = await store.put(`${p}k`, 'v1');
      assert.deepEqual(await store.get(`${p}k`), { key: `${p}k`, value: 'v1', createRevision: r1.revision, modRevision: r1.revision });
      const r2 = await store.put(`${p}k`, 'v2');
      assert.ok(r2.revision > r1.revision, 'every write advances the revision');
      const kv = await store.get(`${p}k`);
      assert.equal(kv?.value, 'v2');
      assert.equal(kv?.createRevision, r1.revision, 'overwriting keeps createRevision');
      assert.equal(kv?.modRevision, r2.revision);
    });

    test('delete returns true once, then false; a re-created key gets a new createRevision', async (store, p) => {
      const r1 = await store.put(`${p}k`, 'v');
      assert.equal(await store.delete(`${p}k`), true);
      assert.equal(await store.get(`${p}k`), undefined);
      assert.equal(await store.delete(`${p}k`), false);
      assert.equal(await store.delete(`${p}never`), false);
      const r2 = await store.put(`${p}k`, 'again');
      assert.ok(r2.revision > r1.revision);
      assert.equal((await store.get(`${p}k`))?.createRevision, r2.revision);
    });

    test('values round-trip exactly, including JSON, newlines and unicode', async (store, p) => {
      const value = '{"a":[1,2]}\nline two\t\u00e9\u4e2d\ud83d\ude00';
      await store.put(`${p}k`, value);
      assert.equal((await store.get(`${p}k`))?.value, value);
      await store.put(`${p}empty`, '');
      assert.equal((await store.get(`${p}empty`))?.value, '');
    });

    test('list returns keys under the prefix sorted by key, and only those', async (store, p) => {
      for (const k of ['a/2', 'a/10', 'a/1', 'ab/1', 'a', 'b/1']) await store.put(`${p}${k}`, k);
      const last = await store.put(`${p}a/3`, 'a/3');
      const { kvs, revision } = await store.list(`${p}a/`);
      assert.deepEqual(kvs.map((kv) => kv.key), ['a/1', 'a/10', 'a/2', 'a/3'].map((k) => `${p}${k}`));
      assert.ok(revision >= last.revision, 'list reports a revision at least as new as the last write');
      assert.deepEqual((await store.list(`${p}ab/`)).kvs.map((kv) => kv.value), ['ab/1']);
      assert.equal((await store.list(`${p}a`)).kvs.length, 6, 'a plain prefix matches a, a/… and ab/…');
      assert.deepEqual((await store.list(`${p}zz/`)).kvs, []);
    });

    test('expectRevision 0 creates only when the key is absent', async (store, p) => {
      await store.put(`${p}k`, 'first', { expectRevision: 0 });
      await rejectsWithCode(store.put(`${p}k`, 'second', { expectRevision: 0 }), 'KEDGE_STORE_CONFLICT');
      assert.equal((await store.get(`${p}k`))?.value, 'first');
    });

    test('expectRevision n writes only when the key is still at revision n', async (store, p) => {
      const { revision: r1 } = await store.put(`${p}k`, 'v1');
      const { revision: r2 } = await store.put(`${p}k`, 'v2', { expectRevision: r1 });
      await rejectsWithCode(store.put(`${p}k`, 'stale', { expectRevision: r1 }), 'KEDGE_STORE_CONFLICT');
      await rejectsWithCode(store.put(`${p}absent`, 'x', { expectRevision: r1 }), 'KEDGE_STORE_CONFLICT');
      assert.equal((await store.get(`${p}k`))?.value, 'v2');
      await rejectsWithCode(store.delete(`${p}k`, { expectRevision: r1 }), 'KEDGE_STORE_CONFLICT');
      assert.equal((await store.get(`${p}k`))?.value, 'v2', 'a failed guarded delete leaves the key');
      assert.equal(await store.delete(`${p}k`, { expectRevision: r2 }), true);
    });

    test('20 concurrent CAS writers incrementing one counter end at exactly 20', async (store, p) => {
      await Promise.all(Array.from({ length: 20 }, () => casIncrement(store, `${p}counter`)));
      assert.equal((await store.get(`${p}counter`))?.value, '20');
    });

    test('watch delivers puts and deletes under its prefix in revision order', async (store, p) => {
      const w = record(store, `${p}a/`);
      const r1 = await store.put(`${p}a/1`, 'x');
      await store.put(`${p}ab/1`, 'not mine');
      const r2 = await store.put(`${p}a/1`, 'y');
      await store.put(`${p}a/2`, 'z');
      await store.delete(`${p}a/1`);
      await w.until(4, 'two puts, an update and a delete');
      await sleep(100);
      w.watch.close();
      assert.deepEqual(w.events.map(brief), [`put ${p}a/1=x`, `put ${p}a/1=y`, `put ${p}a/2=z`, `delete ${p}a/1`]);
      const revs = w.events.map(eventRev);
      assert.deepEqual([...revs].sort((a, b) => a - b), revs, 'events come in revision order');
      assert.equal(revs[0], r1.revision);
      const update = w.events[1];
      assert.ok(update?.type === 'put' && update.kv.createRevision === r1.revision && update.kv.modRevision === r2.revision);
      assert.deepEqual(w.errors, []);
    });

    test('watch fromRevision replays changes after that revision, then continues live', async (store, p) => {
      const r1 = await store.put(`${p}k1`, 'one');
      await store.put(`${p}k2`, 'two');
      await store.delete(`${p}k1`);
      const w = record(store, p, r1.revision);
      await w.until(2, 'replayed put and delete');
      await store.put(`${p}k3`, 'three');
      await w.until(3, 'live put after the replay');
      w.watch.close();
      assert.deepEqual(w.events.map(brief), [`put ${p}k2=two`, `delete ${p}k1`, `put ${p}k3=three`]);
    });

    test('list then watch from the list revision misses and repeats nothing', async (store, p) => {
      await store.put(`${p}before`, '1');
      const listed = await store.list(p);
      const writes = Promise.all([store.put(`${p}after1`, '2'), store.put(`${p}after2`, '3')]);
      const w = record(store, p, listed.revision);
      await writes;
      await w.until(2, 'the two writes after the list');
      await sleep(100);
      w.watch.close();
      assert.deepEqual(w.events.map(eventKey).sort(), [`${p}after1`, `${p}after2`]);
    });

    test('a closed watch delivers nothing more', async (store, p) => {
      const w = record(store, p);
      await store.put(`${p}k`, '1');
      await w.until(1, 'the first put');
      w.watch.close();
      await store.put(`${p}k`, '2');
      await store.delete(`${p}k`);
      await sleep(300);
      assert.equal(w.events.length, 1);
    });

    test('a leased key lives while kept alive and is deleted, with an event, after expiry', async (store, p) => {
      const lease = await store.grantLease(500);
      await store.put(`${p}agent`, 'here', { lease });
      assert.equal((await store.get(`${p}agent`))?.lease, lease);
      const w = record(store, p);
      const keepUntil = Date.now() + 1500;
      while (Date.now() < keepUntil) {
        assert.equal(await store.keepAlive(lease), true);
        await sleep(150);
      }
      assert.equal((await store.get(`${p}agent`))?.value, 'here', 'keepAlive kept the key past its TTL');
      await waitFor(async () => (await store.get(`${p}agent`)) === undefined, 10_000, 'the leased key to expire');
      await w.until(1, 'the expiry delete event');
      w.watch.close();
      assert.deepEqual(w.events.map(brief), [`delete ${p}agent`]);
      assert.equal(await store.keepAlive(lease), false, 'an expired lease cannot be renewed');
      await rejectsWithCode(store.put(`${p}agent`, 'late', { lease }), 'KEDGE_STORE_LEASE_NOT_FOUND');
    });

    test('revoking a lease deletes its keys with events and leaves other keys', async (store, p) => {
      const lease = await store.grantLease(60_000);
      const other = await store.grantLease(60_000);
      await store.put(`${p}a`, '1', { lease });
      await store.put(`${p}b`, '2', { lease });
      await store.put(`${p}c`, '3', { lease: other });
      await store.put(`${p}durable`, '4');
      const w = record(store, p);
      await store.revokeLease(lease);
      assert.equal(await store.get(`${p}a`), undefined);
      assert.equal(await store.get(`${p}b`), undefined);
      assert.equal((await store.get(`${p}c`))?.value, '3');
      assert.equal((await store.get(`${p}durable`))?.value, '4');
      await w.until(2, 'two delete events');
      await sleep(100);
      w.watch.close();
      assert.deepEqual(w.events.map(brief).sort(), [`delete ${p}a`, `delete ${p}b`]);
      assert.equal(await store.keepAlive(lease), false);
      assert.equal(await store.keepAlive(other), true);
      await store.revokeLease(other);
    });

    test('re-putting a leased key without a lease detaches it from the lease', async (store, p) => {
      const lease = await store.grantLease(60_000);
      await store.put(`${p}k`, 'leased', { lease });
      await store.put(`${p}k`, 'plain');
      assert.equal((await store.get(`${p}k`))?.lease, undefined);
      await store.revokeLease(lease);
      assert.equal((await store.get(`${p}k`))?.value, 'plain');
    });
  });
}
