// /readyz means something: a federation whose Consul source never synced is
// not ready, says why, and becomes ready once the source syncs; with
// --readiness-sources none it is ready at once. (A store that cannot write
// is the root test store-enospc.)
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { ConsulDouble } from '../support/consul-double';
import { fedFetch, startFederationProc, writeFederationConfig, type FederationHandle } from '../support/mesh';
import { eventually } from '../support/procs';

interface ReadyBody { status: string; checks: { name: string; ok: boolean; error?: string }[] }
async function readyz(fed: FederationHandle): Promise<{ status: number; body: ReadyBody }> {
  const res = await fedFetch(fed, `/readyz`, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: (await res.json()) as ReadyBody };
}

describe('federation readiness', () => {
  let consul: ConsulDouble | undefined;
  const feds: FederationHandle[] = [];
  after(async () => {
    await Promise.all(feds.map((f) => f.proc.stop('SIGKILL')));
    await consul?.close();
  });

  it('is not ready until a configured source has synced once, and names it', { timeout: 60_000 }, async () => {
    consul = await ConsulDouble.start({ datacenter: 'dc1' });
    consul.garbage('html'); // answers, but nothing a sync can use
    const config = writeFederationConfig({ clusters: [{ name: 'dc1', kind: 'consul', address: consul.address, datacenter: 'dc1' }] });
    const fed = await startFederationProc({ args: ['--config', config] });
    feds.push(fed);
    const before = await readyz(fed);
    assert.equal(before.status, 503);
    const src = before.body.checks.find((c) => c.name === 'source:dc1');
    assert.ok(src && !src.ok && /consul source dc1 has never synced/.test(src.error ?? ''), JSON.stringify(before.body));
    assert.ok(before.body.checks.find((c) => c.name === 'store')?.ok);
    assert.ok(before.body.checks.find((c) => c.name === 'ca')?.ok);

    consul.garbage(undefined);
    const afterSync = await eventually(async () => {
      const r = await readyz(fed);
      return r.status === 200 && r;
    }, 30_000, '/readyz 200 once Consul synced');
    assert.equal(afterSync.body.status, 'ready');

    // Losing the source later keeps the replica ready: it serves the last endpoints, marked stale.
    await consul.down();
    await eventually(async () => ((await fedFetch(fed, `/api/v1/clusters`, { headers: { authorization: `Bearer ${fs.readFileSync(fed.adminTokenFile, 'utf8').trim()}` } }).then((r) => r.json())) as { connected: boolean }[]).some((c) => !c.connected), 30_000, 'the source to notice Consul is gone');
    assert.equal((await readyz(fed)).status, 200);
  });

  it('with --readiness-sources none, does not wait for sources', async () => {
    const config = writeFederationConfig({ clusters: [{ name: 'dc2', kind: 'consul', address: 'http://127.0.0.1:1', datacenter: 'dc2' }] });
    const fed = await startFederationProc({ args: ['--config', config, '--readiness-sources', 'none'] });
    feds.push(fed);
    assert.equal((await readyz(fed)).status, 200);
  });
});
