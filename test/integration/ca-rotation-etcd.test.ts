// A CA rotation across two federation replicas on one real etcd: started on
// one replica, refused as in progress and re-issued on the other, finished
// for agents on both, with traffic between them throughout.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { startEtcd, EtcdServer } from '../support/etcd';
import { eventually, runKedge } from '../support/procs';
import { AgentHandle, FederationHandle, getJson, httpGet, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import type { CaStatusDoc } from '../../cli/ca';

const PEM_RE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g;
const fps = (s: string) => (s.match(PEM_RE) ?? []).map((p) => new X509Certificate(p).fingerprint256);
const ca = (fed: FederationHandle, args: string[]) => runKedge(['ca', ...args, '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
async function status(fed: FederationHandle): Promise<CaStatusDoc> {
  const r = await ca(fed, ['status', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as CaStatusDoc;
}

describe('CA rotation with two replicas on etcd', () => {
  let etcd: EtcdServer;
  let r1: FederationHandle;
  let r2: FederationHandle;
  const agents: AgentHandle[] = [];
  const apps: { close(): Promise<void> }[] = [];
  before(async () => {
    etcd = await startEtcd();
    const store = `etcd://${etcd.endpoint}`;
    r1 = await startFederationProc({ args: ['--store', store, '--replica', 'r1', '--grace-period', '4s'] });
    r2 = await startFederationProc({ args: ['--store', store, '--replica', 'r2', '--grace-period', '4s'] });
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await Promise.all([r1?.proc.stop('SIGKILL'), r2?.proc.stop('SIGKILL')]);
    await Promise.all(apps.map((a) => a.close()));
    await etcd?.destroy();
  });

  it('every replica sees one rotation; agents on both move to the new root; traffic between them never fails', async (t) => {
    const app = await startHttpApp('beta');
    apps.push(app);
    const beta = await startAgentProc(r2, { name: 'beta', namespace: 'default', serviceAccount: 'beta', address: '127.0.34.2', services: [{ name: 'beta', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }], federationAddresses: [r2.grpc, r1.grpc] });
    const alpha = await startAgentProc(r1, { name: 'alpha', namespace: 'default', serviceAccount: 'alpha', address: '127.0.34.1', upstreams: [{ service: 'beta.default', port: 9080 }], federationAddresses: [r1.grpc, r2.grpc] });
    agents.push(alpha, beta);
    await eventually(async () => (await getJson<{ services: { endpoints: unknown[] }[] }>(`${alpha.adminUrl}/config`)).services[0]?.endpoints.length === 1, 15_000, 'alpha to learn beta');
    const oldFp = fps(fs.readFileSync(r1.rootCertFile, 'utf8'))[0]!;

    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const traffic = (async () => {
      while (running) {
        const started = Date.now();
        try {
          assert.equal(await httpGet(alpha.upstreams[0]!), 'beta');
          ok += 1;
        } catch (err) {
          failures.push((err as Error).message);
        }
        await new Promise((r) => setTimeout(r, Math.max(0, 50 - (Date.now() - started))));
      }
    })();

    const started = await ca(r2, ['rotate']);
    assert.equal(started.code, 0, started.stderr);
    // r1 reads the same record: both roots trusted, and (once both agents,
    // one per replica, have the bundle) the new root signing.
    const mid = await eventually(async () => {
      const s = await status(r1);
      return s.rotation?.phase === 'reissuing' ? s : undefined;
    }, 40_000, 'r1 to see the new root signing');
    assert.equal(mid.rotation!.from, oldFp);
    assert.equal(mid.rotation!.agents, 2, 'r1 counts the agent on r2 too');
    assert.deepEqual((await status(r2)).rotation?.to, mid.rotation!.to);
    await eventually(() => fps(fs.readFileSync(r1.rootCertFile, 'utf8')).length === 2 && fps(fs.readFileSync(r2.rootCertFile, 'utf8')).length === 2, 10_000, 'both replicas to write both roots');

    const twice = await ca(r1, ['rotate']);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /KEDGE_CA_ROTATION_IN_PROGRESS/);
    const reissue = await ca(r1, ['rotate', '--reissue']);
    assert.equal(reissue.code, 0, reissue.stderr);

    await eventually(async () => {
      const [s1, s2] = await Promise.all([status(r1), status(r2)]);
      return !s1.rotation && !s2.rotation && s1.roots.length === 1 && s2.roots[0]?.fingerprint === s1.roots[0]?.fingerprint;
    }, 60_000, 'both replicas to see the rotation done');
    const newFp = mid.rotation!.to;
    for (const r of [r1, r2]) await eventually(() => fps(fs.readFileSync(r.rootCertFile, 'utf8')).join() === newFp, 10_000, `${r.proc.name} root-cert.pem`);
    for (const a of [alpha, beta]) {
      await eventually(async () => fps((await getJson<{ trustBundlePem: string }>(`${a.adminUrl}/certs`)).trustBundlePem).join() === newFp, 10_000, `${a.spec.name} to hold only the new root`);
    }
    const okAtEnd = ok;
    await eventually(() => ok >= okAtEnd + 10, 10_000, 'requests after the rotation');
    running = false;
    await traffic;
    t.diagnostic(`${ok} requests, ${failures.length} failed`);
    assert.deepEqual(failures, []);
  });
});
