// VIP allocation: the pure pick, and the allocator on the embedded store
// (two allocators on one store stand in for two replicas).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseCidr4, pickVip, VIP_INDEX_PREFIX, VipAllocator, VIPS_PREFIX } from '../../federation/mesh/vips';
import { openEmbeddedStore } from '../../federation/store/embedded';
import { silentLogger } from '../../proto/model/log';
import { hasCode } from '../../proto/model/errors';
import { eventually } from '../support/procs';

describe('pickVip', () => {
  it('stays inside the range, skipping network and broadcast addresses', () => {
    const cidr = parseCidr4('240.240.0.0/30');
    const got = new Set<string>();
    for (const k of ['a', 'b']) got.add(pickVip(cidr, k, got)!);
    assert.deepEqual([...got].sort(), ['240.240.0.1', '240.240.0.2']);
    assert.equal(pickVip(cidr, 'c', got), undefined);
  });
  it('is deterministic per key and avoids used addresses', () => {
    const cidr = parseCidr4('240.240.0.0/16');
    const a = pickVip(cidr, 'reviews.default', new Set())!;
    assert.equal(pickVip(cidr, 'reviews.default', new Set()), a);
    assert.notEqual(pickVip(cidr, 'reviews.default', new Set([a])), a);
    assert.match(a, /^240\.240\.\d+\.\d+$/);
  });
  it('rejects bad ranges', () => {
    for (const bad of ['240.240.0.0', '300.1.1.1/16', '10.0.0.0/31', 'x/8']) assert.throws(() => parseCidr4(bad), (e) => hasCode(e, 'KEDGE_BAD_CIDR'), bad);
  });
});

describe('VipAllocator', () => {
  it('gives every service one stable, unique VIP, also across allocators and restarts', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-vips-'));
    const store = await openEmbeddedStore(dir, { logger: silentLogger() });
    const cidr = parseCidr4('240.240.0.0/29'); // 6 usable: forces collisions
    const a = new VipAllocator(store, cidr, { logger: silentLogger(), onChange: () => undefined });
    const b = new VipAllocator(store, cidr, { logger: silentLogger(), onChange: () => undefined });
    await a.start();
    await b.start();
    const keys = ['s1.ns', 's2.ns', 's3.ns', 's4.ns', 's5.ns'];
    a.ensure(keys);
    b.ensure([...keys].reverse());
    await eventually(() => keys.every((k) => a.table().has(k) && b.table().has(k)), 5_000, 'all allocated');
    const ips = keys.map((k) => a.table().get(k));
    assert.equal(new Set(ips).size, keys.length, `unique: ${ips.join(',')}`);
    assert.deepEqual(keys.map((k) => b.table().get(k)), ips);
    a.close();
    b.close();
    await store.close();
    const reopened = await openEmbeddedStore(dir, { logger: silentLogger() });
    const c = new VipAllocator(reopened, cidr, { logger: silentLogger(), onChange: () => undefined });
    await c.start();
    assert.deepEqual(keys.map((k) => c.table().get(k)), ips);
    c.close();
    await reopened.close();
  });

  it('lets two replicas allocating the same services share the work without orphaned addresses or errors', async () => {
    const store = await openEmbeddedStore(fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-vips-')), { logger: silentLogger() });
    const cidr = parseCidr4('240.240.0.0/24');
    const errors: string[] = [];
    const logger = { ...silentLogger(), error: (o: unknown, msg?: string) => errors.push(`${msg} ${JSON.stringify(o)}`) } as unknown as ReturnType<typeof silentLogger>;
    const a = new VipAllocator(store, cidr, { logger, onChange: () => undefined });
    const b = new VipAllocator(store, cidr, { logger, onChange: () => undefined });
    await a.start();
    await b.start();
    // The same keys in the same order: both walks start at the same address.
    const keys = Array.from({ length: 100 }, (_, i) => `svc${i}.ns`);
    a.ensure(keys);
    b.ensure(keys);
    await eventually(() => keys.every((k) => a.table().has(k) && b.table().has(k)), 10_000, 'all allocated');
    assert.deepEqual(errors, []);
    const bound = new Map((await store.list(VIPS_PREFIX)).kvs.map((kv) => [kv.key.slice(VIPS_PREFIX.length), kv.value]));
    const claimed = new Map((await store.list(VIP_INDEX_PREFIX)).kvs.map((kv) => [kv.key.slice(VIP_INDEX_PREFIX.length), kv.value]));
    assert.equal(bound.size, keys.length);
    assert.equal(new Set(bound.values()).size, keys.length, 'unique');
    // Every claimed address belongs to the service bound to it: none leaked, none shared.
    assert.deepEqual([...claimed].sort(), [...bound].map(([k, ip]) => [ip, k]).sort());
    for (const k of keys) assert.equal(a.table().get(k), bound.get(k));
    a.close();
    b.close();
    await store.close();
  });

  it('completes a binding another replica claimed the address for but never bound', async () => {
    const store = await openEmbeddedStore(fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-vips-')), { logger: silentLogger() });
    const cidr = parseCidr4('240.240.0.0/24');
    const ip = pickVip(cidr, 'half.ns', new Set())!;
    await store.put(VIP_INDEX_PREFIX + ip, 'half.ns', { expectRevision: 0 }); // a replica died between its two writes
    const a = new VipAllocator(store, cidr, { logger: silentLogger(), onChange: () => undefined });
    await a.start();
    a.ensure(['half.ns']);
    await eventually(() => a.table().has('half.ns'), 5_000, 'allocated');
    assert.equal(a.table().get('half.ns'), ip);
    assert.equal((await store.list(VIP_INDEX_PREFIX)).kvs.length, 1);
    a.close();
    await store.close();
  });
});

describe('VipAllocator: freeing unused VIPs', () => {
  const HOUR = 60 * 60 * 1000;
  async function setup(cidr: string) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-vips-free-'));
    const store = await openEmbeddedStore(dir, { logger: silentLogger() });
    let now = 1_000_000;
    const mk = () => new VipAllocator(store, parseCidr4(cidr), { logger: silentLogger(), onChange: () => undefined, retentionMs: HOUR, clock: () => now });
    const a = mk();
    await a.start();
    return { store, a, mk, advance: (ms: number) => (now += ms), close: () => store.close().then(() => fs.rmSync(dir, { recursive: true, force: true })) };
  }
  const alloc = async (a: VipAllocator, key: string) => {
    a.ensure([key]);
    return eventually(() => a.table().get(key), 5_000, `a VIP for ${key}`);
  };

  it('frees a VIP only after a full retention period unused, and holds it back from other services for another', async () => {
    const t = await setup('240.240.0.0/30'); // 2 usable addresses
    try {
      const vipA = await alloc(t.a, 'a.default');
      const vipB = await alloc(t.a, 'b.default');
      const inUse = (k: string) => k === 'a.default';
      assert.deepEqual(await t.a.sweep(inUse), [], 'first seen unused: nothing freed yet');
      t.advance(HOUR - 1);
      assert.deepEqual(await t.a.sweep(inUse), [], 'not a full retention period yet');
      t.advance(1);
      assert.deepEqual(await t.a.sweep(inUse), ['b.default']);
      assert.equal(t.a.table().has('b.default'), false);
      assert.match((await t.store.get(VIP_INDEX_PREFIX + vipB))!.value, /^released b\.default \d+$/);
      // The freed address is held back from another service for a retention period, also by another replica.
      const other = t.mk();
      await other.start();
      other.ensure(['c.default']);
      await eventually(async () => (await t.store.get(VIPS_PREFIX + 'c.default')) === undefined, 2_000, 'no VIP for c');
      // b comes back within the period and gets its own address again.
      assert.equal(await alloc(other, 'b.default'), vipB);
      assert.equal(t.a.table().get('a.default') ?? other.table().get('a.default'), vipA);
      other.close();
    } finally {
      t.a.close();
      await t.close();
    }
  });

  it('a service in use again before the period ends keeps its VIP', async () => {
    const t = await setup('240.240.0.0/29');
    try {
      const vip = await alloc(t.a, 'a.default');
      await t.a.sweep(() => false);
      t.advance(HOUR / 2);
      await t.a.sweep(() => true);
      t.advance(HOUR);
      assert.deepEqual(await t.a.sweep(() => false), [], 'the idle clock started again');
      assert.equal(t.a.table().get('a.default'), vip);
    } finally {
      t.a.close();
      await t.close();
    }
  });

  it('after the hold-back period a freed address goes to another service', async () => {
    const t = await setup('240.240.0.0/30');
    try {
      await alloc(t.a, 'a.default');
      const vipB = await alloc(t.a, 'b.default');
      await t.a.sweep((k) => k === 'a.default');
      t.advance(HOUR);
      await t.a.sweep((k) => k === 'a.default');
      t.advance(HOUR);
      await t.a.sweep((k) => k === 'a.default');
      assert.equal(await alloc(t.a, 'c.default'), vipB);
    } finally {
      t.a.close();
      await t.close();
    }
  });
});
