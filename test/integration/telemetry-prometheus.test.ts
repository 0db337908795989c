// A real Prometheus scrapes a running mesh, configured by
// deploy/prometheus/prometheus.yml (agents found through the federation's
// HTTP service discovery), and the PromQL of Istio's service and workload
// dashboards' TCP panels returns what was sent, errors included.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import YAML from 'yaml';
import { eventually } from '../support/procs';
import { type AgentHandle, type FederationHandle, httpGet, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import { type PrometheusHandle, startPrometheus } from '../support/prometheus';

const RATINGS = 'ratings.default.svc.cluster.local';
const BROKEN = 'broken.default.svc.cluster.local';

/** The shipped scrape config, pointed at this test's federation and scraping every second. */
function scrapeConfig(fed: FederationHandle): unknown {
  const file = path.resolve(__dirname, '..', '..', '..', 'deploy', 'prometheus', 'prometheus.yml');
  const doc = YAML.parse(fs.readFileSync(file, 'utf8')) as { global: Record<string, string>; scrape_configs: Record<string, unknown>[] };
  const fedHost = fed.httpUrl.replace('http://', '');
  doc.global.scrape_interval = '1s';
  doc.global.evaluation_interval = '1s';
  const text = YAML.stringify(doc).replaceAll('kedge-federation:15014', fedHost).replaceAll('/etc/prometheus/kedge-admin-token', fed.adminTokenFile).replaceAll('refresh_interval: 30s', 'refresh_interval: 1s');
  return YAML.parse(text);
}

describe('Prometheus scraping a Kedge mesh', () => {
  let fed: FederationHandle;
  let prom: PrometheusHandle | undefined;
  const agents: AgentHandle[] = [];
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    await prom?.stop();
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    for (const c of closers) await c();
  });

  it('finds the agents through the federation and scrapes them and the federation', async () => {
    fed = await startFederationProc();
    const app = await startHttpApp('ratings');
    closers.push(() => app.close());
    // A port with nothing behind it: the server proxy cannot reach its app.
    const dead = net.createServer();
    await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
    const deadPort = (dead.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    agents.push(await startAgentProc(fed, {
      name: 'ratings-v1', namespace: 'default', serviceAccount: 'ratings', address: '127.0.15.1',
      services: [{ name: 'ratings', ports: [{ name: 'tcp', port: 9080, targetPort: app.port }] }, { name: 'broken', ports: [{ name: 'tcp', port: 9090, targetPort: deadPort }] }],
      // Prometheus reaches an agent at its workload address.
      extra: { admin: { listen: '127.0.0.1:0', metricsListen: '127.0.15.1:0' } },
    }));
    agents.push(await startAgentProc(fed, {
      name: 'productpage-v1', namespace: 'default', serviceAccount: 'productpage', address: '127.0.15.2',
      upstreams: [{ service: 'ratings.default', port: 9080, listen: '127.0.15.2:0' }, { service: 'broken.default', port: 9090, listen: '127.0.15.3:0' }],
      extra: { admin: { listen: '127.0.0.1:0', metricsListen: '127.0.15.2:0' } },
    }));
    prom = await startPrometheus(scrapeConfig(fed));
    let last: unknown;
    const up = await eventually(async () => {
      const r = await prom!.query('up');
      last = r;
      return r.length === 3 && r.every((x) => x.value === 1) ? r : undefined;
    }, 30_000, 'federation and both agents up').catch((err: Error) => {
      throw new Error(`${err.message}; last up: ${JSON.stringify(last)}`);
    });
    assert.deepEqual(up.map((x) => `${x.metric.job}/${x.metric.kedge_workload ?? ''}`).sort(), ['kedge-agents/productpage-v1', 'kedge-agents/ratings-v1', 'kedge-federation/']);
    const connected = await prom.query('sum(kedge_federation_connected_agents)');
    assert.equal(connected[0]?.value, 2);
  });

  it("Istio's dashboard queries return the TCP traffic sent and the failures injected", async () => {
    const client = agents[1]!;
    // The counters as Prometheus stored them are exact, once each target's next scrape has happened.
    const until = async (expr: string, expected: number) => {
      let got: number | undefined;
      await eventually(async () => (got = (await prom!.query(expr))[0]?.value) === expected, 20_000, expr).catch((err: Error) => {
        throw new Error(`${err.message}: last ${got}, expected ${expected}`);
      });
    };
    const closedAtServer = `sum(istio_tcp_connections_closed_total{reporter="destination",destination_service="${RATINGS}"})`;
    // Two rounds: a counter's first sample is its start, so rate() sees only what comes after it.
    const send = async (n: number) => {
      for (let i = 0; i < n; i++) assert.equal(await httpGet(client.upstreams[0]!), 'ratings');
    };
    await send(20);
    await until(closedAtServer, 20);
    await send(20);
    const sent = 40;
    const failed = 10;
    for (let i = 0; i < failed; i++) await httpGet(client.upstreams[1]!).then(() => assert.fail('the broken service answered'), () => undefined);
    await until(closedAtServer, sent);
    await until(`sum(istio_tcp_connections_opened_total{reporter="source",destination_service="${RATINGS}"})`, sent);
    await until(`sum(istio_tcp_connections_closed_total{reporter="source",destination_service="${RATINGS}",response_flags="-"})`, sent);
    // The server proxy could not reach the broken service's app: Envoy's UF flag.
    await until(`sum(istio_tcp_connections_closed_total{reporter="destination",destination_service="${BROKEN}",response_flags="UF"})`, failed);

    // Istio service dashboard, "TCP Received Bytes" by source (its own PromQL, $service and $qrep filled in).
    // rate() needs two samples of a series: wait for the next scrapes.
    const nonEmpty = (expr: string) => eventually(async () => {
      const r = await prom!.query(expr);
      return r.length > 0 ? r : undefined;
    }, 20_000, expr);
    const received = await nonEmpty(`round(sum(rate(istio_tcp_received_bytes_total{reporter=~"destination", connection_security_policy="mutual_tls", destination_service="${RATINGS}", source_workload=~".*", source_workload_namespace=~".*"}[1m])) by (source_workload, source_workload_namespace), 0.001)`);
    assert.equal(received.length, 1, JSON.stringify(received));
    assert.equal(received[0]!.metric.source_workload_namespace, 'default');
    assert.ok(received[0]!.value > 0);
    // Istio workload dashboard, "TCP Sent Bytes" to the destination workload.
    const sentBytes = await nonEmpty(`sum(rate(istio_tcp_sent_bytes_total{reporter=~"destination", destination_workload_namespace=~"default", destination_workload=~"ratings-v1"}[1m])) by (destination_workload, destination_workload_namespace)`);
    assert.equal(sentBytes.length, 1);
    assert.ok(sentBytes[0]!.value > 0);
    // Client side: the destination workload and its labels from the mesh view.
    const byDest = await prom!.query(`sum(istio_tcp_connections_opened_total{reporter="source",source_workload="productpage-v1"}) by (destination_workload, destination_app, destination_cluster, destination_service_name)`);
    const ratings = byDest.find((x) => x.metric.destination_service_name === 'ratings');
    assert.deepEqual(ratings?.metric, { destination_workload: 'ratings-v1', destination_app: 'ratings-v1', destination_cluster: 'vms', destination_service_name: 'ratings' });
  });
});
