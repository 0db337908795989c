// The agent registry on a real (embedded) store with two replicas sharing
// it: one lease per replica, abandoned registrations deleted after the grace
// period unless the agent came back, lease loss healed by rewriting.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { AGENT_STATUS_PREFIX, AGENTS_PREFIX, AgentRegistry, type Registration } from '../../federation/sources/agents';
import type { AgentRecord } from '../../federation/mesh/types';
import { openEmbeddedStore } from '../../federation/store/embedded';
import type { Store } from '../../federation/store/types';
import { silentLogger } from '../../proto/model/log';
import { waitFor } from '../support/store-conformance';

const GRACE_MS = 600;

function record(name: string, replica: string, address = '10.0.0.1'): AgentRecord {
  return {
    id: `default/${name}`,
    identity: `spiffe://cluster.local/ns/default/sa/${name}`,
    workload: { name, namespace: 'default', serviceAccount: name, address, locality: { region: 'r', zone: 'z', subzone: '' }, network: 'n', labels: {}, inboundPort: 15006 },
    services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: 18080, protocol: 'http' }] }],
    health: {},
    host: null,
    replica,
    connectedAt: '2026-01-01T00:00:00.000Z',
    agentVersion: 't',
  };
}

const stores: Store[] = [];
const registries: AgentRegistry[] = [];
after(async () => {
  for (const r of registries) r.close();
  for (const s of stores) await s.close();
});

async function twoReplicas(): Promise<{ store: Store; r1: AgentRegistry; r2: AgentRegistry; changes: { r1: number; r2: number } }> {
  const store = await openEmbeddedStore(fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-registry-')), { logger: silentLogger() });
  stores.push(store);
  const changes = { r1: 0, r2: 0 };
  const r1 = new AgentRegistry(store, { gracePeriodMs: GRACE_MS, logger: silentLogger(), onChange: () => (changes.r1 += 1) });
  const r2 = new AgentRegistry(store, { gracePeriodMs: GRACE_MS, logger: silentLogger(), onChange: () => (changes.r2 += 1) });
  registries.push(r1, r2);
  await r1.start();
  await r2.start();
  return { store, r1, r2, changes };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('AgentRegistry', () => {
  it('puts every registration of a replica on one lease, and each replica sees the others\' agents', async () => {
    const { store, r1, r2 } = await twoReplicas();
    for (let i = 0; i < 20; i++) await r1.register(record(`a${i}`, 'r1'));
    await r2.register(record('b0', 'r2'));
    await waitFor(() => r1.all().length === 21 && r2.all().length === 21, 2000, 'both replicas see 21 agents');
    const { kvs } = await store.list(AGENTS_PREFIX);
    const leases = new Set(kvs.map((kv) => kv.lease));
    assert.equal(leases.size, 2, `one lease per replica, got ${[...leases].join(',')}`);
    assert.ok(!leases.has(undefined));
    // Renewal keeps them well past the grace period.
    await sleep(GRACE_MS * 2.5);
    assert.equal((await store.list(AGENTS_PREFIX)).kvs.length, 21);
  });

  it('deletes a lost agent after the grace period, at once on a graceful stop', async () => {
    const { store, r1, r2 } = await twoReplicas();
    const lost = await r1.register(record('lost', 'r1'));
    const leaving = await r1.register(record('leaving', 'r1'));
    await waitFor(() => r2.all().length === 2, 2000, 'r2 sees both');
    const t0 = Date.now();
    lost.abandon();
    await leaving.remove();
    await waitFor(() => !r2.get('default/leaving'), 500, 'graceful stop removes at once');
    assert.ok(r2.get('default/lost'), 'a lost agent is kept during the grace period');
    await waitFor(() => !r2.get('default/lost'), GRACE_MS * 3, 'the lost agent goes after the grace period');
    assert.ok(Date.now() - t0 >= GRACE_MS - 50, `not before the grace period (${Date.now() - t0} ms)`);
    assert.equal((await store.list(AGENT_STATUS_PREFIX)).kvs.length, 0);
  });

  it('never deletes an agent that came back, on another replica or the same one', async () => {
    const { store, r1, r2 } = await twoReplicas();
    const first = await r1.register(record('mover', 'r1'));
    const second = await r1.register(record('returner', 'r1'));
    first.abandon();
    second.abandon();
    await r2.register(record('mover', 'r2'));
    await r1.register(record('returner', 'r1', '10.0.0.2'));
    await sleep(GRACE_MS * 2);
    assert.equal(r1.get('default/mover')?.replica, 'r2');
    assert.equal(r2.get('default/returner')?.workload.address, '10.0.0.2');
    // The stale handles do nothing any more.
    await first.update({ ...record('mover', 'r1'), health: { reviews: { healthy: false, detail: 'stale' } } });
    await first.remove();
    assert.equal((await store.get(`${AGENTS_PREFIX}default/mover`))?.value.includes('"replica":"r2"'), true);
  });

  it('keeps registrations of a replica that stopped until its lease expires, unless the agents moved', async () => {
    const { r1, r2 } = await twoReplicas();
    await r1.register(record('stays', 'r1'));
    await r1.register(record('moves', 'r1'));
    await waitFor(() => r2.all().length === 2, 2000, 'r2 sees both');
    r1.close(); // like kill -9: nothing is deleted, the lease is no longer renewed
    await r2.register(record('moves', 'r2'));
    await sleep(GRACE_MS / 2);
    assert.ok(r2.get('default/stays'), 'still there inside the grace period');
    await waitFor(() => !r2.get('default/stays'), GRACE_MS * 3, 'gone once r1\'s lease expired');
    await sleep(300);
    assert.equal(r2.get('default/moves')?.replica, 'r2', 'the moved agent is on r2\'s lease and stays');
  });

  it('writes everything again under a new lease when the store lost the old one', async () => {
    const { store, r1, r2 } = await twoReplicas();
    await r1.register(record('x', 'r1'));
    const y = await r1.register(record('y', 'r1'));
    await y.setStatus({ ackedNonce: '3', ackedAt: undefined, lastContact: '2026-01-01T00:00:01.000Z', certNotAfter: '2026-01-02T00:00:00.000Z', subscriptions: ['a.b'] });
    const lease = (await store.get(`${AGENTS_PREFIX}default/x`))!.lease!;
    await store.revokeLease(lease); // what a store that lost the lease looks like
    await waitFor(() => r2.all().length === 0, 1000, 'registrations gone with the lease');
    await waitFor(() => r2.all().length === 2, GRACE_MS * 2, 'written again under a new lease');
    const now = (await store.get(`${AGENTS_PREFIX}default/x`))!.lease;
    assert.notEqual(now, lease);
    assert.equal((await r2.statuses()).get('default/y')?.ackedNonce, '3');
  });

  it('shares status between replicas without waking the registry', async () => {
    const { r1, r2, changes } = await twoReplicas();
    const reg: Registration = await r1.register(record('s', 'r1'));
    await waitFor(() => r2.all().length === 1, 1000, 'r2 sees it');
    await sleep(100);
    const before = { ...changes };
    for (let i = 1; i <= 5; i++) await reg.setStatus({ ackedNonce: String(i), ackedAt: undefined, lastContact: 'x', certNotAfter: 'y', subscriptions: [] });
    await sleep(200);
    assert.deepEqual(changes, before, 'status writes trigger no rebuild');
    assert.equal((await r2.statuses()).get('default/s')?.ackedNonce, '5');
    // A health change does.
    await reg.update({ ...record('s', 'r1'), health: { reviews: { healthy: false, detail: 'probe failed' } } });
    await waitFor(() => changes.r2 > before.r2, 1000, 'r2 rebuilds on a real change');
    assert.equal(r2.get('default/s')?.health.reviews?.healthy, false);
  });
});
