// A real Prometheus scrapes a running mesh, configured by
// deploy/prometheus/prometheus.yml (agents found through the federation's
// HTTP service discovery), and the PromQL of Istio's service and workload
// dashboards' TCP panels returns what was sent, errors included.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import * as os from 'node:os';
import YAML from 'yaml';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { eventually } from '../support/procs';
import { type AgentHandle, type FederationHandle, httpGet, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import { type PrometheusHandle, startPrometheus } from '../support/prometheus';
import { ENVOY_DEFAULT_BUCKETS } from '../../agent/telemetry/istio-metrics';

const RATINGS = 'ratings.default.svc.cluster.local';
const REVIEWS = 'reviews.default.svc.cluster.local';
/** Every request to the reviews app waits this long; every fifth is a 503. */
const DELAY_MS = 100;
const ERROR_EVERY = 5;

/** The reviews app: a fixed delay, a 503 for every ERROR_EVERY-th request. */
async function startReviewsApp(): Promise<{ port: number; close(): Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    const status = ++n % ERROR_EVERY === 0 ? 503 : 200;
    setTimeout(() => res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'reviews' : 'unavailable'), DELAY_MS);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((resolve) => { server.close(() => resolve()); server.closeAllConnections(); }) };
}

/** `concurrency` keep-alive clients sending GETs to `hostPort` for `ms`; each response's end time and status. */
async function load(hostPort: string, concurrency: number, ms: number): Promise<{ at: number; status: number; ms: number }[]> {
  const [host, port] = [hostPort.slice(0, hostPort.lastIndexOf(':')), Number(hostPort.slice(hostPort.lastIndexOf(':') + 1))];
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const done: { at: number; status: number; ms: number }[] = [];
  const until = Date.now() + ms;
  const one = () => new Promise<void>((resolve, reject) => {
    const t0 = performance.now();
    http.get({ host, port, path: '/reviews/1', agent }, (res) => {
      res.resume().on('end', () => {
        done.push({ at: Date.now(), status: res.statusCode ?? 0, ms: performance.now() - t0 });
        resolve();
      });
    }).on('error', reject);
  });
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < until) await one();
  }));
  agent.destroy();
  return done;
}
const BROKEN = 'broken.default.svc.cluster.local';
const DETAILS = 'details.default.svc.cluster.local';

const DETAILS_PROTO = `
syntax = "proto3";
package kedge.test;
message Req { int32 id = 1; int32 count = 2; }
message Detail { string text = 1; }
service Details {
  rpc Get(Req) returns (Detail);
  rpc List(Req) returns (stream Detail);
}
`;

type DetailsClient = grpc.Client & {
  Get(r: { id: number }, cb: (err: grpc.ServiceError | null) => void): void;
  List(r: { count: number }): grpc.ClientReadableStream<{ text: string }>;
};

function detailsService(): grpc.ServiceClientConstructor {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-prom-grpc-')), 'details.proto');
  fs.writeFileSync(file, DETAILS_PROTO);
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(file, { defaults: true }));
  return ((pkg.kedge as grpc.GrpcObject).test as grpc.GrpcObject).Details as grpc.ServiceClientConstructor;
}

/** The details gRPC app: Get fails with NOT_FOUND for ids divisible by 4; List streams `count` messages. */
async function startDetailsApp(svc: grpc.ServiceClientConstructor): Promise<{ port: number; close(): void }> {
  const server = new grpc.Server();
  server.addService(svc.service, {
    Get: (call: grpc.ServerUnaryCall<{ id: number }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (call.request.id % 4 === 0) cb({ code: grpc.status.NOT_FOUND, details: `no detail ${call.request.id}` } as grpc.ServiceError);
      else cb(null, { text: `detail ${call.request.id}` });
    },
    List: (call: grpc.ServerWritableStream<{ count: number }, unknown>) => {
      for (let i = 0; i < call.request.count; i++) call.write({ text: String(i) });
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { port, close: () => server.forceShutdown() };
}

/** The shipped scrape config, pointed at this test's federation and scraping every second. */
function scrapeConfig(fed: FederationHandle): unknown {
  const file = path.resolve(__dirname, '..', '..', '..', 'deploy', 'prometheus', 'prometheus.yml');
  const doc = YAML.parse(fs.readFileSync(file, 'utf8')) as { global: Record<string, string>; scrape_configs: Record<string, unknown>[] };
  const fedHost = fed.httpAddress;
  doc.global.scrape_interval = '1s';
  doc.global.evaluation_interval = '1s';
  const text = YAML.stringify(doc).replaceAll('kedge-federation:15014', fedHost).replaceAll('/etc/prometheus/kedge-admin-token', fed.adminTokenFile).replaceAll('/etc/prometheus/kedge-root-cert.pem', fed.rootCertFile).replaceAll('refresh_interval: 30s', 'refresh_interval: 1s');
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
    const reviews = await startReviewsApp();
    closers.push(() => reviews.close());
    const details = await startDetailsApp(detailsService());
    closers.push(async () => details.close());
    // A port with nothing behind it: the server proxy cannot reach its app.
    const dead = net.createServer();
    await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
    const deadPort = (dead.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    agents.push(await startAgentProc(fed, {
      name: 'ratings-v1', namespace: 'default', serviceAccount: 'ratings', address: '127.0.15.1',
      services: [{ name: 'ratings', ports: [{ name: 'tcp', port: 9080, targetPort: app.port }] }, { name: 'broken', ports: [{ name: 'tcp', port: 9090, targetPort: deadPort }] }, { name: 'reviews', ports: [{ name: 'http', port: 9081, targetPort: reviews.port, protocol: 'http' }] }, { name: 'details', ports: [{ name: 'grpc', port: 9091, targetPort: details.port, protocol: 'grpc' }] }],
      // Prometheus reaches an agent at its workload address.
      extra: { admin: { listen: '127.0.0.1:0', metricsListen: '127.0.15.1:0' } },
    }));
    agents.push(await startAgentProc(fed, {
      name: 'productpage-v1', namespace: 'default', serviceAccount: 'productpage', address: '127.0.15.2',
      upstreams: [{ service: 'ratings.default', port: 9080, listen: '127.0.15.2:0' }, { service: 'broken.default', port: 9090, listen: '127.0.15.3:0' }, { service: 'reviews.default', port: 9081, listen: '127.0.15.4:0' }, { service: 'details.default', port: 9091, listen: '127.0.15.5:0' }],
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

  it("Istio's service dashboard: request rate within 10% of what was sent, success rate as injected, p99 consistent with the delay", async () => {
    const client = agents[1]!;
    const windowS = 8;
    // Warm-up first: a series' first sample is its start.
    await load(client.upstreams[2]!, 2, 1_500);
    await eventually(async () => (await prom!.query(`sum(istio_requests_total{reporter="destination",destination_service="${REVIEWS}"})`)).length > 0, 20_000, 'reviews series scraped');
    const done = await load(client.upstreams[2]!, 8, (windowS + 2) * 1000);
    const end = Date.now();
    // Until every target's next scrape has the last of them.
    await eventually(async () => {
      const total = (await prom!.query(`sum(istio_requests_total{reporter="source",destination_service="${REVIEWS}"})`))[0]?.value ?? 0;
      const server = (await prom!.query(`sum(istio_requests_total{reporter="destination",destination_service="${REVIEWS}"})`))[0]?.value ?? 0;
      return total >= done.length && server >= done.length;
    }, 20_000, 'all requests scraped');
    const at = (end / 1000).toFixed(3);
    const q = async (expr: string) => {
      const r = await prom!.queryAt(expr, at);
      assert.equal(r.length, 1, `${expr}: ${JSON.stringify(r)}`);
      return r[0]!.value;
    };
    const inWindow = done.filter((d) => d.at > end - windowS * 1000);
    const sentRate = inWindow.length / windowS;
    // The panels' PromQL, $service and $qrep filled in and $__rate_interval the window (rate for irate: a window, not the last two samples).
    const rate = await q(`round(sum(rate(istio_requests_total{reporter=~"destination",destination_service="${REVIEWS}"}[${windowS}s])), 0.001)`);
    console.log(`# sent ${sentRate.toFixed(1)} rps in the last ${windowS} s; Prometheus says ${rate}`);
    assert.ok(Math.abs(rate - sentRate) <= 0.1 * sentRate, `rate ${rate} vs sent ${sentRate}`);
    const clientRate = await q(`round(sum(rate(istio_requests_total{reporter=~"source",destination_service="${REVIEWS}"}[${windowS}s])), 0.001)`);
    assert.ok(Math.abs(clientRate - sentRate) <= 0.1 * sentRate, `client rate ${clientRate} vs sent ${sentRate}`);
    const success = await q(`sum(rate(istio_requests_total{reporter=~"destination",destination_service="${REVIEWS}",response_code!~"5.*"}[${windowS}s])) / (sum(rate(istio_requests_total{reporter=~"destination",destination_service="${REVIEWS}"}[${windowS}s])) or on () vector(1))`);
    const sentSuccess = inWindow.filter((d) => d.status < 500).length / inWindow.length;
    console.log(`# success: sent ${sentSuccess.toFixed(3)}, Prometheus ${success.toFixed(3)}`);
    assert.ok(Math.abs(success - (1 - 1 / ERROR_EVERY)) <= 0.03, `success ${success}`);
    const p99 = await q(`(histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=~"destination",destination_service="${REVIEWS}"}[${windowS}s])) by (le)) / 1000) or histogram_quantile(0.99, sum(rate(istio_request_duration_seconds_bucket{reporter=~"destination",destination_service="${REVIEWS}"}[${windowS}s])) by (le))`);
    // The client's own p99 bounds the server proxy's from above (its requests include the hops);
    // histogram_quantile interpolates inside Envoy's buckets, so the bound is the bucket holding it.
    const sorted = inWindow.map((d) => d.ms).sort((a, b) => a - b);
    const clientP99 = sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)]!;
    const bucketTop = ENVOY_DEFAULT_BUCKETS.find((b) => b >= clientP99) ?? Infinity;
    console.log(`# p99 ${(p99 * 1000).toFixed(1)} ms (server proxy, from Prometheus); client p99 ${clientP99.toFixed(1)} ms; app delay ${DELAY_MS} ms`);
    // Every request took at least DELAY_MS at the app.
    assert.ok(p99 >= DELAY_MS / 1000 && p99 * 1000 <= bucketTop, `p99 ${p99 * 1000} ms, client p99 ${clientP99} ms`);
    const p50 = await q(`histogram_quantile(0.50, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_service="${REVIEWS}"}[${windowS}s])) by (le)) / 1000`);
    assert.ok(p50 >= DELAY_MS / 1000, `p50 ${p50}`);
    // The 503s carry their code on both reporters.
    const codes = await prom!.queryAt(`sum(increase(istio_requests_total{destination_service="${REVIEWS}",request_protocol="http"}[${windowS}s])) by (reporter, response_code)`, at);
    assert.deepEqual(codes.map((c) => `${c.metric.reporter}/${c.metric.response_code}`).sort(), ['destination/200', 'destination/503', 'source/200', 'source/503']);
  });

  it("gRPC: request and response messages, grpc_response_status, and the workload dashboard's per-source panels with the client's metadata", async () => {
    const client = agents[1]!;
    const Details = detailsService();
    const c = new Details(client.upstreams[3]!, grpc.credentials.createInsecure()) as unknown as DetailsClient;
    const calls = 40;
    const streams = 5;
    const perStream = 3;
    const notFound = calls / 4;
    const more = async (n: number) => {
      for (let id = 1; id <= n; id++) assert.equal(await new Promise<grpc.ServiceError | null>((resolve) => c.Get({ id: id * 2 + 1 }, (e) => resolve(e))), null);
    };
    try {
      for (let id = 1; id <= calls; id++) {
        const err = await new Promise<grpc.ServiceError | null>((resolve) => c.Get({ id }, (e) => resolve(e)));
        assert.equal(err?.code, id % 4 === 0 ? grpc.status.NOT_FOUND : undefined, `call ${id}`);
      }
      for (let i = 0; i < streams; i++) {
        let n = 0;
        await new Promise<void>((resolve, reject) => c.List({ count: perStream }).on('data', () => n++).on('end', resolve).on('error', reject));
        assert.equal(n, perStream);
      }
    } catch (err) {
      c.close();
      throw err;
    }
    const exact = async (expr: string, expected: number) => {
      let got: number | undefined;
      await eventually(async () => (got = (await prom!.query(expr))[0]?.value) === expected, 20_000, expr).catch((err: Error) => {
        throw new Error(`${err.message}: last ${got}, expected ${expected}`);
      });
    };
    for (const reporter of ['source', 'destination']) {
      const sel = `reporter="${reporter}",destination_service="${DETAILS}",request_protocol="grpc"`;
      await exact(`sum(istio_requests_total{${sel}})`, calls + streams);
      // grpc_response_status as Istio writes it (NOT_FOUND = 5); HTTP status 200 for every call.
      await exact(`sum(istio_requests_total{${sel},grpc_response_status="5",response_code="200"})`, notFound);
      await exact(`sum(istio_requests_total{${sel},grpc_response_status="0"})`, calls - notFound + streams);
      await exact(`sum(istio_request_messages_total{${sel}})`, calls + streams);
      await exact(`sum(istio_response_messages_total{${sel}})`, calls - notFound + streams * perStream);
      // Kiali's gRPC error rate: the share of non-OK statuses.
      await exact(`sum(istio_requests_total{${sel},grpc_response_status!="0"}) / sum(istio_requests_total{${sel}})`, notFound / (calls + streams));
    }
    // rate() needs a second sample of each series: more calls after the scrape that saw the first.
    await more(8);
    c.close();
    // Istio workload dashboard, "Incoming Requests By Source And Response Code" ($workload, $namespace, $qrep filled in, irate as rate over a window):
    // the server proxy names the client workload it learned from the client proxy's metadata.
    const bySource = await eventually(async () => {
      const r = await prom!.query(`round(sum(rate(istio_requests_total{connection_security_policy="mutual_tls", destination_workload_namespace=~"default", destination_workload=~"ratings-v1", reporter=~"destination", request_protocol="grpc"}[1m])) by (source_workload, source_workload_namespace, response_code), 0.001)`);
      return r.length > 0 && r.every((x) => x.value > 0) ? r : undefined;
    }, 20_000, 'incoming gRPC requests by source');
    assert.deepEqual(bySource.map((x) => `${x.metric.source_workload}.${x.metric.source_workload_namespace} ${x.metric.response_code}`), ['productpage-v1.default 200']);
    // Its "Incoming Success Rate (non-5xx responses) By Source": gRPC errors ride on 200, so 1, as in Istio.
    const success = await prom!.query(`sum(rate(istio_requests_total{reporter=~"destination", connection_security_policy="mutual_tls", destination_workload_namespace=~"default", destination_workload=~"ratings-v1", request_protocol="grpc", response_code!~"5.*"}[1m])) by (source_workload, source_workload_namespace) / sum(rate(istio_requests_total{reporter=~"destination", connection_security_policy="mutual_tls", destination_workload_namespace=~"default", destination_workload=~"ratings-v1", request_protocol="grpc"}[1m])) by (source_workload, source_workload_namespace)`);
    assert.deepEqual(success.map((x) => [x.metric.source_workload, x.value]), [['productpage-v1', 1]]);
    // The client side's "Outgoing Requests By Destination" names the server's app and version from its response metadata.
    const out = await prom!.query(`sum(istio_requests_total{reporter="source", source_workload="productpage-v1", request_protocol="grpc"}) by (destination_workload, destination_app, destination_canonical_service)`);
    assert.deepEqual(out.map((x) => x.metric), [{ destination_workload: 'ratings-v1', destination_app: 'ratings-v1', destination_canonical_service: 'ratings-v1' }]);
  });

  it('every panel of the Kedge federation dashboard is valid PromQL, and the control-plane panels have data', async () => {
    const file = path.resolve(__dirname, '..', '..', '..', 'deploy', 'grafana', 'kedge-federation.json');
    const dash = JSON.parse(fs.readFileSync(file, 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
    const empty: string[] = [];
    for (const p of dash.panels) {
      for (const t of p.targets) {
        // Grafana's $__rate_interval, as it would fill it in for a 1 s scrape interval.
        const r = await prom!.query(t.expr.replaceAll('$__rate_interval', '1m'));
        if (r.length === 0) empty.push(p.title);
      }
    }
    // No store errors, NACKs-only or stale sources in this mesh: those panels may be empty; these must not be.
    for (const title of ['Connected agents', 'Push latency (change to ACK)', 'Certificates issued and refused', 'Federation memory', 'Agent certificates expiring soonest', 'Store operation latency (p99)']) {
      assert.ok(!empty.includes(title), `${title} has no data (empty: ${empty.join(', ')})`);
    }
  });
});
