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
