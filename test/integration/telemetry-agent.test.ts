// The agent's Prometheus endpoint with real processes: kedge_* and process
// metrics next to istio_build, Istio's scrape path, and a metrics port that
// is taken (a clear error; the agent still joins and serves its data path).
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
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

  it('access log: one line per request and per TCP connection, none for the connection HTTP rode on; errors-only keeps the failures', async () => {
    const app = await startHttpApp('reviews');
    closers.push(() => app.close());
    const tcpApp = net.createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => tcpApp.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => tcpApp.close(() => resolve())));
    const spec = (name: string, address: string, accessLog: Record<string, unknown>, n: number) => ({
      name, namespace: 'default', serviceAccount: 'reviews', address,
      services: [{ name: 'reviews', ports: [{ name: 'http', port: 9082, targetPort: app.port, protocol: 'http' }, { name: 'tcp', port: 9083, targetPort: (tcpApp.address() as net.AddressInfo).port, protocol: 'tcp' }] }],
      upstreams: [{ service: 'reviews.default', port: 9082, listen: `127.0.14.${n}:0` }, { service: 'reviews.default', port: 9083, listen: `127.0.14.${n + 1}:0` }, { service: 'nowhere.default', port: 9084, listen: `127.0.14.${n + 2}:0` }],
      extra: { telemetry: { accessLog } },
    });
    const all = await startAgentProc(fed, spec('reviews-v1', '127.0.13.3', { level: 'info' }, 1));
    agents.push(all);
    await eventually(async () => (await httpGet(all.upstreams[0]!).catch(() => '')) === 'reviews', 15_000, 'reviews through the mesh');
    const access = (a: AgentHandle, msg: string) => a.proc.logs.filter((l) => l.component === 'access' && l.msg === msg);
    // Three requests on one keep-alive connection, then one TCP connection.
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const [host, port] = all.upstreams[0]!.split(':') as [string, string];
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve, reject) => http.get({ host, port: Number(port), path: `/r/${i}`, agent: keepAlive }, (res) => res.resume().on('end', resolve)).on('error', reject));
    }
    keepAlive.destroy();
    const echoed = await new Promise<string>((resolve, reject) => {
      const [h, p] = all.upstreams[1]!.split(':') as [string, string];
      const s = net.connect({ host: h, port: Number(p) }, () => s.end('ping'));
      let got = '';
      s.setEncoding('utf8').on('data', (d: string) => (got += d)).on('end', () => resolve(got)).on('error', reject);
    });
    assert.equal(echoed, 'ping');
    // Both reporters: 3 requests each (plus the first one), and the TCP connection once each.
    await eventually(() => access(all, 'connection').filter((l) => l.protocol === 'tcp' && l.kedge_error === null).length === 2, 15_000, 'the TCP connection logged by both reporters');
    const reqs = await eventually(() => {
      const r = access(all, 'request').filter((l) => String(l.path).startsWith('/r/'));
      return r.length >= 6 ? r : undefined;
    }, 15_000, 'six request lines');
    assert.deepEqual(reqs.map((l) => `${String(l.reporter)} ${String(l.path)}`).sort(), ['destination /r/0', 'destination /r/1', 'destination /r/2', 'source /r/0', 'source /r/1', 'source /r/2']);
    for (const l of reqs) {
      assert.equal(l.response_code, 200);
      assert.match(String(l.upstream_cluster), l.reporter === 'source' ? /^outbound\|9082\|\|reviews\.default\.svc\.cluster\.local$/ : /^inbound\|9082\|\|$/);
    }
    const conns = access(all, 'connection');
    assert.ok(conns.every((l) => l.protocol === 'tcp'), `no connection line for HTTP: ${JSON.stringify(conns.filter((l) => l.protocol !== 'tcp'))}`);
    // Nothing more for the three requests once the keep-alive connection has closed on both sides.
    await eventually(() => access(all, 'connection').filter((l) => l.protocol === 'tcp').length >= 2, 15_000, 'TCP lines');
    assert.equal(access(all, 'request').filter((l) => String(l.path).startsWith('/r/')).length, 6, 'one line per request and reporter');

    // errors only: the successes go uncounted in the log, the failure is written.
    const errs = await startAgentProc(fed, spec('reviews-v2', '127.0.13.4', { filter: 'errors' }, 4));
    agents.push(errs);
    await eventually(async () => (await httpGet(errs.upstreams[0]!).catch(() => '')) === 'reviews', 15_000, 'reviews through the second agent');
    for (let i = 0; i < 3; i++) assert.equal(await httpGet(errs.upstreams[0]!), 'reviews');
    await httpGet(errs.upstreams[2]!).then(() => assert.fail('an unknown service answered'), () => undefined);
    const refused = await eventually(() => access(errs, 'connection').find((l) => l.kedge_error === 'KEDGE_UNKNOWN_SERVICE'), 15_000, 'the refused connection logged');
    assert.equal(refused.reporter, 'source');
    const hostPort = errs.metricsUrl.slice('http://'.length, -'/metrics'.length);
    const s = await eventually(async () => {
      const s = parseExposition(await httpGet(hostPort, '/metrics'));
      // At least the four requests as the client (the server side is shared with reviews-v1, the other endpoint).
      return total(s, 'kedge_access_log_lines_total', { outcome: 'filtered' }) >= 4 ? s : undefined;
    }, 15_000, 'the successes counted as filtered');
    assert.ok(access(errs, 'request').every((l) => l.response_code !== 200), 'no successful request written');
    assert.ok(total(s, 'kedge_access_log_lines_total', { outcome: 'written' }) >= 1);
  });

  it('an unreachable OTLP endpoint: spans are dropped and counted, traffic goes on', async () => {
    const dead = net.createServer();
    await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
    const deadPort = (dead.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    const app = await startHttpApp('traced');
    closers.push(() => app.close());
    const agent = await startAgentProc(fed, {
      name: 'traced-v1', namespace: 'default', serviceAccount: 'traced', address: '127.0.13.5',
      services: [{ name: 'traced', ports: [{ name: 'http', port: 9085, targetPort: app.port, protocol: 'http' }] }],
      upstreams: [{ service: 'traced.default', port: 9085 }],
      extra: { telemetry: { tracing: { otlpEndpoint: `http://127.0.0.1:${deadPort}/v1/traces`, sample: 1 } } },
    });
    agents.push(agent);
    await eventually(async () => (await httpGet(agent.upstreams[0]!).catch(() => '')) === 'traced', 15_000, 'traffic through the mesh');
    for (let i = 0; i < 10; i++) assert.equal(await httpGet(agent.upstreams[0]!), 'traced');
    const hostPort = agent.metricsUrl.slice('http://'.length, -'/metrics'.length);
    // The batch goes out within the SDK's 5 s schedule and is refused at once.
    const dropped = await eventually(async () => {
      const n = total(parseExposition(await httpGet(hostPort, '/metrics')), 'kedge_tracing_spans_dropped_total');
      return n >= 20 ? n : undefined;
    }, 30_000, 'spans of both hops counted as dropped');
    assert.ok(dropped >= 20);
    // Still serving after the failed exports.
    assert.equal(await httpGet(agent.upstreams[0]!), 'traced');
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
