// The agent's Prometheus endpoint with real processes: kedge_* and process
// metrics next to istio_build, Istio's scrape path, and a metrics port that
// is taken (a clear error; the agent still joins and serves its data path).
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { eventually } from '../support/procs';
import { type AgentHandle, type FederationHandle, httpGet, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import { parseExposition, select, total } from '../support/prom-text';

describe('agent /metrics', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  const closers: (() => Promise<void> | void)[] = [];
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    for (const c of closers) await c();
  });

  it('serves istio_build, kedge_* and process metrics at /metrics and /stats/prometheus', async () => {
    fed = await startFederationProc();
    const app = await startHttpApp('ratings');
    closers.push(() => app.close());
    const agent = await startAgentProc(fed, {
      name: 'ratings-v1', namespace: 'default', serviceAccount: 'ratings', address: '127.0.13.1',
      services: [{ name: 'ratings', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }],
      upstreams: [{ service: 'ratings.default', port: 9080 }],
    });
    agents.push(agent);
    assert.match(agent.metricsUrl, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const hostPort = agent.metricsUrl.slice('http://'.length, -'/metrics'.length);
    const samples = await eventually(async () => {
      const s = parseExposition(await httpGet(hostPort, '/metrics'));
      // Connected and holding the service it subscribed to.
      return total(s, 'kedge_federation_connected') === 1 && select(s, 'kedge_config_service_version', { service: 'ratings.default' }).length === 1 ? s : undefined;
    }, 15_000, 'connected and holding ratings.default');
    assert.deepEqual(select(samples, 'istio_build').map((s) => s.labels.component), ['proxy']);
    const expiry = select(samples, 'kedge_certificate_expiration_timestamp_seconds')[0];
    assert.equal(expiry?.labels.spiffe_id, 'spiffe://cluster.local/ns/default/sa/ratings');
    assert.ok(expiry!.value > Date.now() / 1000, 'expiry in the future');
    assert.ok(total(samples, 'kedge_certificate_last_renewal_timestamp_seconds') > 0);
    assert.equal(total(samples, 'kedge_config_nacks_total'), 0);
    assert.equal(total(samples, 'kedge_capture_enabled'), 0);
    assert.ok(total(samples, 'process_resident_memory_bytes') > 0);
    assert.ok(select(samples, 'nodejs_eventloop_lag_seconds').length === 1);
    // Istio's sidecars are scraped at /stats/prometheus; existing scrape configs keep working.
    const istioPath = await httpGet(hostPort, '/stats/prometheus');
    assert.match(istioPath, /^istio_build\{component="proxy",tag="[^"]+"\} 1$/m);
  });

  it('counts TCP connections through the mesh as both reporters, with Istio labels', async () => {
    const agent = agents[0]!;
    const hostPort = agent.metricsUrl.slice('http://'.length, -'/metrics'.length);
    for (let i = 0; i < 3; i++) assert.equal(await httpGet(agent.upstreams[0]!), 'ratings');
    const svc = { destination_service: 'ratings.default.svc.cluster.local' };
    const s = await eventually(async () => {
      const s = parseExposition(await httpGet(hostPort, '/metrics'));
      const closed = (reporter: string) => total(s, 'istio_tcp_connections_closed_total', { ...svc, reporter });
      return closed('source') === 3 && closed('destination') === 3 ? s : undefined;
    }, 15_000, 'three closed connections from each reporter');
    const client = select(s, 'istio_tcp_connections_opened_total', { ...svc, reporter: 'source' });
    assert.equal(client.length, 1, JSON.stringify(client));
    assert.equal(client[0]!.value, 3);
    assert.deepEqual({ ...client[0]!.labels }, {
      reporter: 'source', source_workload: 'ratings-v1', source_canonical_service: 'ratings-v1', source_canonical_revision: 'latest',
      source_workload_namespace: 'default', source_principal: 'spiffe://cluster.local/ns/default/sa/ratings', source_app: 'ratings-v1',
      source_version: 'unknown', source_cluster: 'vms',
      destination_workload: 'ratings-v1', destination_workload_namespace: 'default', destination_principal: 'spiffe://cluster.local/ns/default/sa/ratings',
      // From the endpoint in the mesh view: its labels (app) and cluster.
      destination_app: 'ratings-v1', destination_version: 'unknown',
      destination_service: 'ratings.default.svc.cluster.local', destination_canonical_service: 'ratings-v1',
      destination_canonical_revision: 'latest', destination_service_name: 'ratings',
      destination_service_namespace: 'default', destination_cluster: 'vms',
      request_protocol: 'tcp', response_flags: '-', connection_security_policy: 'unknown',
    });
    const server = select(s, 'istio_tcp_connections_opened_total', { ...svc, reporter: 'destination' });
    assert.equal(server.length, 1);
    assert.equal(server[0]!.labels.connection_security_policy, 'mutual_tls');
    assert.equal(server[0]!.labels.source_principal, 'spiffe://cluster.local/ns/default/sa/ratings');
    assert.equal(server[0]!.labels.source_workload_namespace, 'default');
    assert.equal(server[0]!.labels.destination_workload, 'ratings-v1');
    // The app answers 'ratings' (7 bytes of body plus headers) to each request.
    for (const reporter of ['source', 'destination']) {
      assert.ok(total(s, 'istio_tcp_sent_bytes_total', { ...svc, reporter }) > 3 * 7, reporter);
      assert.ok(total(s, 'istio_tcp_received_bytes_total', { ...svc, reporter }) > 3 * 14, reporter);
    }
  });

  it('a taken metrics port is a clear error and the agent still joins and forwards', async () => {
    const squatter = net.createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
    const taken = `127.0.0.1:${(squatter.address() as net.AddressInfo).port}`;
    const app = await startHttpApp('details');
    closers.push(() => app.close());
    const agent = await startAgentProc(fed, {
      name: 'details-v1', namespace: 'default', serviceAccount: 'details', address: '127.0.13.2',
      services: [{ name: 'details', ports: [{ name: 'http', port: 9081, targetPort: app.port }] }],
      upstreams: [{ service: 'details.default', port: 9081 }],
      extra: { admin: { listen: '127.0.0.1:0', metricsListen: taken } },
    });
    agents.push(agent);
    const err = await agent.proc.waitForMsg('metrics endpoint not started; the data path runs without it');
    assert.equal(err.code, 'KEDGE_LISTEN_FAILED');
    assert.match(String(err.err), new RegExp(`metrics cannot listen on ${taken.replace(/\./g, '\\.')} \\(EADDRINUSE\\).*admin\\.metricsListen`));
    assert.equal(agent.metricsUrl, '');
    // The data path is up: traffic through its own upstream reaches the app.
    const body = await eventually(async () => httpGet(agent.upstreams[0]!).catch(() => undefined), 15_000, 'a response through the upstream');
    assert.equal(body, 'details');
  });
});
