// VIP allocation: the pure pick, and the allocator on the embedded store
// (two allocators on one store stand in for two replicas).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseCidr4, pickVip, VipAllocator } from '../../federation/mesh/vips';
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
});
