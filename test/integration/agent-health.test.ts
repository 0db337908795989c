// Agent health probes end to end: a VM service's probe result reaches the
// federation and changes that endpoint's health for every agent.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { eventually } from '../support/procs';
import { AgentHandle, FederationHandle, federationEndpoints, getJson, startAgentProc, startFederationProc } from '../support/mesh';

describe('agent health probes', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  let server: http.Server;
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    server?.close();
  });

  it('an http probe turning red marks the endpoint UNHEALTHY everywhere, and green again', async () => {
    let status = 200;
    server = http.createServer((req, res) => {
      res.writeHead(req.url === '/healthz' ? status : 200);
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    fed = await startFederationProc();
    agents.push(await startAgentProc(fed, {
      name: 'probed', namespace: 'default', serviceAccount: 'probed', address: '127.0.80.1',
      services: [{ name: 'probed', ports: [{ name: 'http', port: 9080, targetPort: port }], health: { http: { path: '/healthz', port }, period: '200ms', timeout: '500ms', unhealthyThreshold: 2 } } as never],
    }));
    const client = await startAgentProc(fed, { name: 'watcher', namespace: 'default', serviceAccount: 'watcher', address: '127.0.80.2', upstreams: [{ service: 'probed.default', port: 9080 }] });
    agents.push(client);
    const healthAt = async () => (await getJson<{ services: { key: string; endpoints: { health: string }[] }[] }>(`${client.adminUrl}/config`)).services.find((s) => s.key === 'probed.default')?.endpoints[0]?.health;
    await eventually(async () => (await federationEndpoints(fed, 'probed.default'))[0]?.health === 'HEALTHY', 10_000, 'healthy at first');
    status = 500;
    await eventually(async () => (await federationEndpoints(fed, 'probed.default'))[0]?.health === 'UNHEALTHY', 10_000, 'unhealthy in the federation');
    await eventually(async () => (await healthAt()) === 'UNHEALTHY', 5_000, 'unhealthy at the other agent');
    status = 200;
    await eventually(async () => (await healthAt()) === 'HEALTHY', 10_000, 'healthy again');
    assert.ok(agents[0]!.proc.logs.some((l) => l.msg === 'service unhealthy' && l.service === 'probed'));
  });
});
