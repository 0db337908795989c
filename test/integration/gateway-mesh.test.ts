// An east-west gateway between two networks, with real agents: a client on
// net-a receives net-b's endpoints replaced by net-b's gateway, and its
// mTLS session runs end to end through the gateway to the server proxy.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runKedge, eventually, startKedge, tempDir } from '../support/procs';
import { AgentHandle, FederationHandle, createToken, grantFlags, getJson, httpGet, startAgentProc, startFederationProc, startHttpApp, writeAgentConfig } from '../support/mesh';

describe('east-west gateway with real agents', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  const apps: { close(): Promise<void> }[] = [];
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    await Promise.all(apps.map((a) => a.close()));
  });

  it('routes a client on net-a through net-b\'s gateway, verifying the server identity end to end', async () => {
    fed = await startFederationProc();
    const app = await startHttpApp('reviews-west');
    apps.push(app);
    const server = await startAgentProc(fed, { name: 'reviews-w', namespace: 'default', serviceAccount: 'reviews', address: '127.0.90.1', network: 'net-b', locality: 'us-west/zone-w', services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }] });
    agents.push(server);
    const gw = await startGateway(fed);
    agents.push(gw);
    const client = await startAgentProc(fed, { name: 'web', namespace: 'shop', serviceAccount: 'web', address: '127.0.90.9', network: 'net-a', locality: 'us-east/zone-a', upstreams: [{ service: 'reviews.default', port: 9080 }] });
    agents.push(client);

    const gwPort = Number(String(gw.proc.logs.find((l) => l.msg === 'agent started')!.listen).split(':').pop());
    const eps = await eventually(async () => {
      const cfg = await getJson<{ services: { key: string; endpoints: { address: string; mtlsPort: number; identity: string }[] }[] }>(`${client.adminUrl}/config`);
      const e = cfg.services.find((s) => s.key === 'reviews.default')?.endpoints;
      return e && e.length === 1 && e[0]!.address === '127.0.90.5' ? e : undefined;
    }, 10_000, 'the client to see net-b through its gateway');
    assert.deepEqual(eps, [{ ...eps[0], address: '127.0.90.5', mtlsPort: gwPort, identity: 'spiffe://cluster.local/ns/default/sa/reviews' }]);

    assert.equal(await httpGet(client.upstreams[0]!), 'reviews-west');
    // The server proxy terminated the client's mTLS: it saw the client's identity, not the gateway's.
    const seen = await server.proc.waitForLog((l) => l.msg === 'inbound' && typeof l.peer === 'string', 5_000);
    assert.equal(seen.peer, 'spiffe://cluster.local/ns/shop/sa/web');
    const stats = await getJson<{ gateway: { forwarded: number } }>(`${gw.adminUrl}/stats`);
    assert.ok(stats.gateway.forwarded >= 1);

    // The federation computes the same view for `kedge get endpoints --from`.
    const from = JSON.parse((await runKedge(['get', 'endpoints', 'reviews.default', '--from', 'shop/web', '-o', 'json', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile])).stdout) as { endpoints: { address: string; share: number }[] };
    assert.deepEqual(from.endpoints.map((e) => [e.address, e.share]), [['127.0.90.5', 100]]);
  });
});

async function startGateway(fed: FederationHandle): Promise<AgentHandle> {
  const dir = tempDir('gateway');
  const tokenFile = path.join(dir, 'token');
  const spec = { name: 'gw-b', namespace: 'mesh-gateways', serviceAccount: 'east-west-gateway', address: '127.0.90.5', network: 'net-b', extra: { gateway: { listen: '127.0.90.5:0' } } };
  fs.writeFileSync(tokenFile, await createToken(fed, spec.namespace, spec.serviceAccount, grantFlags(spec)));
  const file = writeAgentConfig(fed, spec, path.join(dir, 'data'), tokenFile);
  const proc = startKedge('gateway', ['agent', '--mode', 'gateway', '--config', file]);
  const started = await proc.waitForMsg('agent started', 20_000);
  await proc.waitForMsg('registered with the federation', 20_000);
  return { proc, spec, dataDir: path.join(dir, 'data'), configFile: file, inbound: '', upstreams: [], adminUrl: `http://${String(started.admin)}`, metricsUrl: typeof started.metrics === 'string' ? `http://${started.metrics}/metrics` : '' };
}
