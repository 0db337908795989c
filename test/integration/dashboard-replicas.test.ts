// The service graph across two federation replicas on one real etcd: the
// client agent reports its traffic to replica r1, and the dashboard feed of
// replica r2 (a real WebSocket client, as the page uses it) shows the edge,
// because r1 publishes its figures through the store. When r1 stops, its
// record goes with it.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import WebSocket from 'ws';
import { startEtcd, type EtcdServer } from '../support/etcd';
import { eventually } from '../support/procs';
import { agentSeesEndpoints, httpGet, startAgentProc, startFederationProc, startHttpApp, type AgentHandle, type FederationHandle } from '../support/mesh';
import { applySections, emptyState, type DashboardState, type FeedMessage } from '../../federation/ui/model/state';

/** The page's view of the feed: the state as sections and rows arrive. */
function openFeed(fed: FederationHandle): { state: () => DashboardState; close(): void } {
  let state = emptyState();
  const ws = new WebSocket(`${fed.httpsUrl.replace(/^https/, 'wss')}/api/v1/feed`, { ca: fs.readFileSync(fed.rootCertFile, 'utf8') });
  ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', token: fs.readFileSync(fed.adminTokenFile, 'utf8').trim() })));
  ws.on('message', (data) => {
    const msg = JSON.parse(String(data)) as FeedMessage;
    if (msg.type === 'sections') state = applySections(state, msg.sections, msg.rows);
  });
  return { state: () => state, close: () => ws.close() };
}

describe('service graph across replicas', () => {
  let etcd: EtcdServer;
  let r1: FederationHandle;
  let r2: FederationHandle;
  const agents: AgentHandle[] = [];
  const closers: (() => Promise<void> | void)[] = [];

  before(async () => {
    etcd = await startEtcd();
    const store = `etcd://${etcd.endpoint}`;
    r1 = await startFederationProc({ args: ['--store', store, '--replica', 'r1'] });
    r2 = await startFederationProc({ args: ['--store', store, '--replica', 'r2'] });
  });

  after(async () => {
    for (const c of closers) await c();
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await Promise.all([r1?.proc.stop('SIGKILL'), r2?.proc.stop('SIGKILL')]);
    await etcd?.destroy();
  });

  it('shows on one replica the traffic its agents never reported to it', async () => {
    const app = await startHttpApp('beta');
    closers.push(() => app.close());
    const telemetry = { statsInterval: '500ms' };
    agents.push(await startAgentProc(r2, {
      name: 'beta', namespace: 'default', serviceAccount: 'beta', address: '127.0.51.2', federationAddresses: [r2.grpc],
      services: [{ name: 'beta', ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] }], extra: { telemetry },
    }));
    const alpha = await startAgentProc(r1, {
      name: 'alpha', namespace: 'default', serviceAccount: 'alpha', address: '127.0.51.1', federationAddresses: [r1.grpc],
      services: [{ name: 'alpha', ports: [{ name: 'http', port: 9080 }] }], upstreams: [{ service: 'beta.default', port: 9080 }], extra: { telemetry },
    });
    agents.push(alpha);
    assert.equal(alpha.proc.logs.find((l) => l.msg === 'registered with the federation')?.replica, 'r1');
    await agentSeesEndpoints(alpha, 'beta.default', 1);
    for (let i = 0; i < 20; i++) await httpGet(alpha.upstreams[0]!);

    const onR2 = openFeed(r2);
    closers.push(() => onR2.close());
    const edge = await eventually(() => onR2.state().traffic.edges.find((e) => e.id === 'svc:alpha.default->svc:beta.default' && e.requests === 20), 30_000, 'r2 shows the 20 requests alpha reported to r1');
    assert.equal(edge.success, 1);
    assert.equal(edge.reporter, 'source');
    // r1 shows it too, from its own store, counted once.
    const onR1 = openFeed(r1);
    closers.push(() => onR1.close());
    await eventually(() => onR1.state().traffic.edges.find((e) => e.id === edge.id && e.requests === 20), 15_000, 'r1 shows the same 20 requests');

    // A replica that stops takes its figures with it.
    await r1.proc.stop('SIGTERM');
    await eventually(() => !onR2.state().traffic.edges.some((e) => e.id === edge.id), 30_000, 'r2 drops the edge r1 published');
  });
});
