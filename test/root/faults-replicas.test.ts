// Fault suite, the replicated control plane: two federation replicas on a
// real three-member etcd cluster (Debian etcd-server). The etcd leader is
// SIGKILLed while tokens are written and restored on its data dir; then
// every federation replica is SIGKILLed, left down for a while, and
// restarted. HTTP runs all along through a client agent (on one replica) to
// a server agent (on the other). Each case reports what was lost, how many
// requests and writes failed and the time to recover (`# fault` lines;
// docs/RELIABILITY.md).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type EtcdCluster, type EtcdServer, startEtcdCluster } from '../support/etcd';
import { type FederationHandle, restartFederationProc, startFederationProc } from '../support/mesh';
import { type MeshPair, SteadyLoad, countLogs, durableState, lostKeys, reportFault, startMeshPair } from '../support/faults';
import { eventually } from '../support/procs';
import { fedFetch } from '../support/fed-fetch';

const DOWN_MS = 5_000;

/** Is this member the leader? (etcd's own gauge on its client port.) */
async function isLeader(m: EtcdServer): Promise<boolean> {
  const text = await (await fetch(`http://${m.endpoint}/metrics`, { signal: AbortSignal.timeout(2_000) })).text();
  return /^etcd_server_is_leader 1$/m.test(text);
}

/** Every key this member holds, read from its own copy (a serializable range, no leader involved). */
async function memberKeys(m: EtcdServer): Promise<Set<string>> {
  const res = await fetch(`http://${m.endpoint}/v3/kv/range`, {
    method: 'POST', signal: AbortSignal.timeout(5_000),
    body: JSON.stringify({ key: Buffer.from('\0').toString('base64'), range_end: Buffer.from('\0').toString('base64'), serializable: true, keys_only: true }),
  });
  const body = (await res.json()) as { kvs?: { key: string }[] };
  return new Set((body.kvs ?? []).map((kv) => Buffer.from(kv.key, 'base64').toString('utf8')));
}

describe('fault: replicas on a three-member etcd', () => {
  let etcd: EtcdCluster;
  let r1: FederationHandle;
  let r2: FederationHandle;
  let pair: MeshPair;
  let load: SteadyLoad;
  before(async () => {
    etcd = await startEtcdCluster(3);
    const store = `etcd://${etcd.endpoints}`;
    r1 = await startFederationProc({ args: ['--store', store, '--replica', 'r1', '--grace-period', '5s'] });
    r2 = await startFederationProc({ args: ['--store', store, '--replica', 'r2', '--grace-period', '5s'] });
    pair = await startMeshPair(r1, { name: 'rep', net: '127.0.67', federationAddresses: [r1.grpc, r2.grpc] });
    load = new SteadyLoad(pair.upstream, { expectBody: 'rep' });
    await load.moreOk(10);
  });
  after(async () => {
    await load?.stop();
    await pair?.close();
    await Promise.all([r1?.proc.stop('SIGKILL'), r2?.proc.stop('SIGKILL')]);
    await etcd?.destroy();
  });

  const createToken = (fed: FederationHandle, sa: string) => fedFetch(fed, '/api/v1/tokens', {
    method: 'POST', admin: true, headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ namespace: 'default', serviceAccount: sa, ttl: '1h' }),
  });

  it('the etcd leader SIGKILLed and restored: nothing lost, no request fails, writes go on', { timeout: 120_000 }, async () => {
    const before = await durableState(r1);
    const failedBefore = load.failed.length;
    const requestsBefore = load.outcomes.length;
    const leader = await eventually(async () => {
      for (const m of etcd.members) if (await isLeader(m)) return m;
      return undefined;
    }, 10_000, 'an etcd leader');
    await leader.kill9();
    // Writes while the member is gone: the other two are a quorum.
    const writes: number[] = [];
    for (let i = 0; i < 10; i++) writes.push((await createToken(i % 2 ? r1 : r2, `etcd-${i}`)).status);
    const tokensWritten = writes.filter((s) => s === 200).length;
    await load.moreOk(20);
    const restartedAt = Date.now();
    await leader.restart();
    // Caught up: the restored member's own copy holds every key the others do.
    const others = etcd.members.filter((m) => m !== leader);
    await eventually(async () => {
      const [mine, theirs] = await Promise.all([memberKeys(leader), memberKeys(others[0]!)]);
      return theirs.size > 0 && [...theirs].every((k) => mine.has(k));
    }, 30_000, 'the restored member to hold every key');
    const recoverMs = Date.now() - restartedAt;
    await load.moreOk(20);
    const lost = lostKeys(before, await durableState(r2));
    const failed = load.failed.length - failedBefore;
    reportFault({
      fault: 'etcd leader SIGKILL (1 of 3), restore', lost, requests: load.outcomes.length - requestsBefore, failed, recoverMs,
      recoveredWhen: 'the restored member held every key', writes: writes.length, writesFailed: writes.length - tokensWritten, writeStatuses: writes,
    });
    assert.deepEqual(lost, []);
    assert.equal(failed, 0);
    assert.deepEqual(writes.filter((s) => s !== 200 && s !== 503), [], 'a write is acknowledged or refused with 503, nothing else');
  });

  it('every replica SIGKILLed, down 5 s, restarted: nothing lost, no request fails', { timeout: 120_000 }, async () => {
    const before = await durableState(r1);
    const failedBefore = load.failed.length;
    const requestsBefore = load.outcomes.length;
    const agents = [...pair.servers, pair.client];
    const registered = agents.map((a) => countLogs(a, 'registered with the federation'));
    await Promise.all([r1.proc.stop('SIGKILL'), r2.proc.stop('SIGKILL')]);
    // No control plane at all: agents serve from what they hold.
    await new Promise((r) => setTimeout(r, DOWN_MS));
    const restartedAt = Date.now();
    [r1, r2] = await Promise.all([restartFederationProc(r1), restartFederationProc(r2)]);
    await eventually(() => agents.every((a, i) => countLogs(a, 'registered with the federation') > registered[i]!), 40_000, 'every agent re-registered');
    const recoverMs = Date.now() - restartedAt;
    await load.moreOk(20);
    const lost = lostKeys(before, await durableState(r2));
    const failed = load.failed.length - failedBefore;
    reportFault({ fault: 'every federation replica SIGKILL, down 5 s, restart', lost, requests: load.outcomes.length - requestsBefore, failed, recoverMs, recoveredWhen: 'every agent re-registered' });
    assert.deepEqual(lost, []);
    assert.equal(failed, 0);
  });
});
