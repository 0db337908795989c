// Fault suite, the federation process: SIGKILL and restart on the same data
// dir, and a federation whose clock is 5 minutes ahead of or behind the
// agents' (libfaketime from Debian's `faketime` package, LD_PRELOADed into
// the federation process only: its Date, its certificates' validity and its
// lease clocks all run off, as on a host whose NTP is broken). Each case runs
// HTTP on a new connection every 50 ms through a client agent to a server
// agent and reports what was lost, how many requests failed and how long
// recovery took (a `# fault` line; docs/RELIABILITY.md).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { type FederationHandle, restartFederationProc, startFederationProc } from '../support/mesh';
import { type MeshPair, SteadyLoad, countLogs, durableState, lostKeys, reportFault, startMeshPair } from '../support/faults';
import { eventually } from '../support/procs';

const FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
const DOWN_MS = 3_000;

describe('fault: the federation process', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('SIGKILL and restart on the same data dir: nothing lost, no request fails', { timeout: 120_000 }, async () => {
    let fed = await startFederationProc({ args: ['--grace-period', '10s'] });
    cleanups.push(() => fed.proc.stop('SIGKILL'));
    const pair = await startMeshPair(fed, { name: 'fk', net: '127.0.61' });
    cleanups.push(() => pair.close());
    const load = new SteadyLoad(pair.upstream, { expectBody: 'fk' });
    await load.moreOk(10);
    const before = await durableState(fed);
    const agents = [...pair.servers, pair.client];
    const registered = agents.map((a) => countLogs(a, 'registered with the federation'));

    await fed.proc.stop('SIGKILL');
    // Down for a while, as a crashed process is before its supervisor restarts it.
    await new Promise((r) => setTimeout(r, DOWN_MS));
    const restartedAt = Date.now();
    fed = await restartFederationProc(fed);
    await eventually(() => agents.every((a, i) => countLogs(a, 'registered with the federation') > registered[i]!), 30_000, 'every agent re-registered');
    const recoverMs = Date.now() - restartedAt;
    await load.moreOk(20);
    await load.stop();
    const lost = lostKeys(before, await durableState(fed));
    reportFault({ fault: 'federation SIGKILL, down 3 s, restart', lost, requests: load.outcomes.length, failed: load.failed.length, recoverMs, recoveredWhen: 'every agent re-registered' });
    assert.deepEqual(lost, []);
    assert.deepEqual(load.failed, []);
  });

  for (const offset of ['+5m', '-5m']) {
    it(`the federation's clock ${offset} off the agents': agents join and carry traffic`, { timeout: 120_000 }, async () => {
      assert.ok(fs.existsSync(FAKETIME_LIB), `${FAKETIME_LIB} is missing: apt-get install faketime`);
      // FAKETIME_DONT_FAKE_MONOTONIC: timers keep real intervals; only the wall clock is off.
      const env = { LD_PRELOAD: FAKETIME_LIB, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: '1' };
      const fed: FederationHandle = await startFederationProc({ env });
      cleanups.push(() => fed.proc.stop('SIGKILL'));
      const skew = Number(fed.proc.logs.find((l) => l.msg === 'federation ready')?.time) - Date.now();
      assert.ok(Math.abs(skew - (offset.startsWith('+') ? 300_000 : -300_000)) < 30_000, `the federation's log clock is ${skew} ms off, expected ${offset}`);
      const startedAt = Date.now();
      const pair: MeshPair = await startMeshPair(fed, { name: `clk${offset[0] === '+' ? 'a' : 'b'}`, net: offset[0] === '+' ? '127.0.62' : '127.0.63' });
      cleanups.push(() => pair.close());
      const joinedMs = Date.now() - startedAt;
      const load = new SteadyLoad(pair.upstream, { expectBody: pair.service.split('.')[0] });
      await load.moreOk(40);
      await load.stop();
      reportFault({ fault: `federation clock ${offset}`, lost: [], requests: load.outcomes.length, failed: load.failed.length, recoverMs: joinedMs, recoveredWhen: 'both agents joined and the client saw the server (from the first agent start)' });
      assert.deepEqual(load.failed, []);
    });
  }
});
