// The agent registry on a real (embedded) store with two replicas sharing
// it: one lease per replica, abandoned registrations deleted after the grace
// period unless the agent came back, lease loss healed by rewriting.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { AGENT_STATUS_PREFIX, AGENTS_PREFIX, AgentRegistry, type Registration } from '../../federation/sources/agents';
import type { AgentRecord, AgentStatus } from '../../federation/mesh/types';
import { openEmbeddedStore } from '../../federation/store/embedded';
import type { Store } from '../../federation/store/types';
import { silentLogger } from '../../proto/model/log';
import { waitFor } from '../support/store-conformance';

const GRACE_MS = 600;
const STATUS_MS = 100;

function status(ackedNonce: string, lastContact = '2026-01-01T00:00:01.000Z'): AgentStatus {
  return { ackedNonce, ackedAt: undefined, lastContact, certNotAfter: '2026-01-02T00:00:00.000Z', subscriptions: ['a.b'] };
}
const noStatus = () => status('');

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
  const r1 = new AgentRegistry(store, { replica: 'r1', gracePeriodMs: GRACE_MS, logger: silentLogger(), onChange: () => (changes.r1 += 1), statusIntervalMs: STATUS_MS });
  const r2 = new AgentRegistry(store, { replica: 'r2', gracePeriodMs: GRACE_MS, logger: silentLogger(), onChange: () => (changes.r2 += 1), statusIntervalMs: STATUS_MS });
  registries.push(r1, r2);
  await r1.start();
  await r2.start();
  return { store, r1, r2, changes };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('AgentRegistry', () => {
  it('puts every registration of a replica on one lease, and each replica sees the others\' agents', async () => {
    const { store, r1, r2 } = await twoReplicas();
    for (let i = 0; i < 20; i++) await r1.register(record(`a${i}`, 'r1'), noStatus);
    await r2.register(record('b0', 'r2'), noStatus);
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
    const lost = await r1.register(record('lost', 'r1'), noStatus);
    const leaving = await r1.register(record('leaving', 'r1'), noStatus);
    await waitFor(() => r2.all().length === 2, 2000, 'r2 sees both');
    const t0 = Date.now();
    lost.abandon();
    await leaving.remove();
    await waitFor(() => !r2.get('default/leaving'), 500, 'graceful stop removes at once');
    assert.ok(r2.get('default/lost'), 'a lost agent is kept during the grace period');
    await waitFor(() => !r2.get('default/lost'), GRACE_MS * 3, 'the lost agent goes after the grace period');
    assert.ok(Date.now() - t0 >= GRACE_MS - 50, `not before the grace period (${Date.now() - t0} ms)`);
    await waitFor(async () => (await store.list(AGENT_STATUS_PREFIX)).kvs.length === 0, 1000, 'no status document left for no agents');
  });

  it('never deletes an agent that came back, on another replica or the same one', async () => {
    const { store, r1, r2 } = await twoReplicas();
    const first = await r1.register(record('mover', 'r1'), noStatus);
    const second = await r1.register(record('returner', 'r1'), noStatus);
    first.abandon();
    second.abandon();
    await r2.register(record('mover', 'r2'), noStatus);
    await r1.register(record('returner', 'r1', '10.0.0.2'), noStatus);
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
    await r1.register(record('stays', 'r1'), noStatus);
    await r1.register(record('moves', 'r1'), noStatus);
    await waitFor(() => r2.all().length === 2, 2000, 'r2 sees both');
    r1.close(); // like kill -9: nothing is deleted, the lease is no longer renewed
    await r2.register(record('moves', 'r2'), noStatus);
    await sleep(GRACE_MS / 2);
    assert.ok(r2.get('default/stays'), 'still there inside the grace period');
    await waitFor(() => !r2.get('default/stays'), GRACE_MS * 3, 'gone once r1\'s lease expired');
    await sleep(300);
    assert.equal(r2.get('default/moves')?.replica, 'r2', 'the moved agent is on r2\'s lease and stays');
  });

  it('writes everything again under a new lease when the store lost the old one', async () => {
    const { store, r1, r2 } = await twoReplicas();
    await r1.register(record('x', 'r1'), noStatus);
    const y = await r1.register(record('y', 'r1'), () => status('3'));
    y.statusChanged();
    await waitFor(async () => (await r2.statuses()).get('default/y')?.ackedNonce === '3', 1000, 'status written');
    const lease = (await store.get(`${AGENTS_PREFIX}default/x`))!.lease!;
    await store.revokeLease(lease); // what a store that lost the lease looks like
    await waitFor(() => r2.all().length === 0, 1000, 'registrations gone with the lease');
    await waitFor(() => r2.all().length === 2, GRACE_MS * 2, 'written again under a new lease');
    const now = (await store.get(`${AGENTS_PREFIX}default/x`))!.lease;
    assert.notEqual(now, lease);
    await waitFor(async () => (await r2.statuses()).get('default/y')?.ackedNonce === '3', 1000, 'status written again');
  });

  it('shares status between replicas in batched documents, without waking the registry', async () => {
    const { store, r1, r2, changes } = await twoReplicas();
    const acked = new Map<string, number>();
    const regs: Registration[] = [];
    for (let i = 0; i < 300; i++) {
      const name = `s${String(i).padStart(3, '0')}`;
      regs.push(await r1.register(record(name, 'r1', `10.0.${i >> 8}.${i & 255}`), () => status(String(acked.get(name) ?? 0))));
    }
    await waitFor(() => r2.all().length === 300, 2000, 'r2 sees them');
    await sleep(100);
    const before = { ...changes };
    let writes = 0;
    const watch = store.watch(AGENT_STATUS_PREFIX, {}, (evs) => (writes += evs.length));
    for (let round = 1; round <= 5; round++) {
      regs.forEach((r, i) => {
        acked.set(`s${String(i).padStart(3, '0')}`, round);
        r.statusChanged();
      });
      await sleep(20);
    }
    await waitFor(async () => [...(await r2.statuses()).values()].filter((s) => s.ackedNonce === '5').length === 300, 2000, 'every agent\'s last status');
    watch.close();
    assert.deepEqual(changes, before, 'status writes trigger no rebuild');
    assert.ok(writes <= 8, `300 agents x 5 acks written as a few documents, not one write each (${writes} writes)`);
    assert.deepEqual((await store.list(AGENT_STATUS_PREFIX)).kvs.map((kv) => kv.key), [`${AGENT_STATUS_PREFIX}r1/0`, `${AGENT_STATUS_PREFIX}r1/1`]);
    // Agents leaving shrink the documents; an agent on r2 shows in r2's.
    for (const r of regs.slice(10)) await r.remove();
    await waitFor(async () => (await store.list(AGENT_STATUS_PREFIX)).kvs.length === 1, 2000, 'r1 needs one document now');
    (await r2.register(record('other', 'r2'), () => status('7'))).statusChanged();
    await waitFor(async () => (await r1.statuses()).get('default/other')?.ackedNonce === '7', 2000, 'r2\'s agent in r2\'s document');
    assert.equal((await r1.statuses()).size, 11);
    // A health change does rebuild.
    const rebuilds = changes.r2;
    await regs[0]!.update({ ...record('s000', 'r1', '10.0.0.0'), health: { reviews: { healthy: false, detail: 'probe failed' } } });
    await waitFor(() => changes.r2 > rebuilds, 1000, 'r2 rebuilds on a real change');
    assert.equal(r2.get('default/s000')?.health.reviews?.healthy, false);
  });

  it('shows the newer status of an agent that moved while the old replica\'s document still has it', async () => {
    const { r1, r2 } = await twoReplicas();
    (await r1.register(record('m', 'r1'), () => status('1', '2026-01-01T00:00:01.000Z'))).statusChanged();
    await waitFor(async () => (await r2.statuses()).get('default/m')?.ackedNonce === '1', 1000, 'r1 wrote it');
    (await r2.register(record('m', 'r2'), () => status('9', '2026-01-01T00:00:05.000Z'))).statusChanged();
    await waitFor(async () => (await r1.statuses()).get('default/m')?.ackedNonce === '9', 1000, 'the newer contact wins');
  });
});
