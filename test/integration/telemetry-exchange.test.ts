// Metadata exchange and trace context between two real proxies: an app's
// HTTP/1.1 request and a grpc-js call go app -> client proxy -> mTLS ->
// server proxy -> app. Each proxy's own Istio metrics must name the other
// side's workload (the request carries the client's metadata, the response
// the server's), no app ever sees (or can forge) the metadata header, and
// with tracing on each hop exports a span to a real OTLP/HTTP receiver, in
// the caller's trace, the server proxy's span a child of the client's.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Proxy } from '../../agent/proxy/proxy';
import { fanOut, type PeerWorkload } from '../../agent/proxy/record';
import type { EndpointView, ServiceView } from '../../agent/proxy/types';
import { TRAFFIC_POLICY_DEFAULTS } from '../../policy/traffic-policy';
import { IstioMetrics } from '../../agent/telemetry/istio-metrics';
import { SpanSink } from '../../agent/telemetry/tracing';
import { PEER_HEADER } from '../../agent/telemetry/peer-metadata';
import { logCapture } from '../support/logs';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';
import { eventually } from '../support/procs';
import { parseExposition, select } from '../support/prom-text';
import { startMetricsServer } from '../../agent/telemetry/server';
import { buildSni } from '../../proto/model/sni';

const TD = 'spiffe://cluster.local';
const HOST = 'reviews.default.svc.cluster.local';
const HTTP_PORT = 9080;
const GRPC_PORT = 9090;
const TCP_PORT = 9100;
const PP: PeerWorkload = Object.freeze({ principal: '', workload: 'productpage-v1', namespace: 'default', app: 'productpage', version: 'v1', canonicalService: 'productpage', canonicalRevision: 'v1', cluster: 'vms' });
const RV: PeerWorkload = Object.freeze({ principal: '', workload: 'reviews-v2', namespace: 'default', app: 'reviews', version: 'v2', canonicalService: 'reviews', canonicalRevision: 'v2', cluster: 'east' });
/** A claim an app makes about itself in the proxies' header: never to be believed. */
const FORGED = 'v1;w=admin-console;n=default;a=admin;v=v9';

const PROTO = `
syntax = "proto3";
package kedge.test;
message Msg { string text = 1; int32 count = 2; int32 code = 3; }
service Reviews {
  rpc Get(Msg) returns (Msg);
  rpc List(Msg) returns (stream Msg);
}
`;

interface OtlpSpan { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number }

/** A real OTLP/HTTP receiver (JSON encoding, as the SDK's OTLP HTTP exporter sends it). */
async function otlpReceiver(): Promise<{ url: string; spans: OtlpSpan[]; services: Set<string>; close(): Promise<void> }> {
  const spans: OtlpSpan[] = [];
  const services = new Set<string>();
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
      assert.equal(req.url, '/v1/traces');
      assert.match(String(req.headers['content-type']), /^application\/json/);
      const doc = JSON.parse(body) as { resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: OtlpSpan[] }[] }[] };
      for (const rs of doc.resourceSpans) {
        const name = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue;
        for (const ss of rs.scopeSpans) for (const s of ss.spans) {
          spans.push(s);
          if (name) services.add(`${s.spanId}=${name}`);
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/v1/traces`, spans, services, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('metadata exchange and trace context between two proxies', () => {
  const ca = makeCa('exchange-mesh');
  const ppLeaf = makeLeaf(ca, `${TD}/ns/default/sa/productpage`);
  const rvLeaf = makeLeaf(ca, `${TD}/ns/default/sa/reviews`);
  const clientMetrics = new IstioMetrics({ local: { ...PP, principal: ppLeaf.spiffeId }, version: 'test' });
  const serverMetrics = new IstioMetrics({ local: { ...RV, principal: rvLeaf.spiffeId }, version: 'test' });
  /** What the HTTP app received: its request headers. */
  const seenByApp: http.IncomingHttpHeaders[] = [];
  const seenByGrpc: grpc.Metadata[] = [];
  const closers: (() => Promise<void> | void)[] = [];
  let client: Proxy;
  let server: Proxy;
  let clientSpans: SpanSink;
  let serverSpans: SpanSink;
  let otlp: Awaited<ReturnType<typeof otlpReceiver>>;
  let httpAt: string;
  let grpcAt: string;
  let tcpAt: string;
  let Reviews: grpc.ServiceClientConstructor;

  before(async () => {
    otlp = await otlpReceiver();
    closers.push(() => otlp.close());
    const app = http.createServer((req, res) => {
      seenByApp.push(req.headers);
      req.resume();
      // The server app claims to be someone else in the proxies' header.
      res.writeHead(req.url === '/fail' ? 503 : 200, { 'content-type': 'text/plain', [PEER_HEADER]: FORGED }).end('reviews');
    });
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => { app.close(() => resolve()); app.closeAllConnections(); }));
    const tcpApp = net.createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => tcpApp.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => tcpApp.close(() => resolve())));
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-exchange-')), 'reviews.proto');
    fs.writeFileSync(file, PROTO);
    const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(file, { keepCase: false, defaults: true }));
    Reviews = ((pkg.kedge as grpc.GrpcObject).test as grpc.GrpcObject).Reviews as grpc.ServiceClientConstructor;
    const g = new grpc.Server();
    g.addService(Reviews.service, {
      Get: (call: grpc.ServerUnaryCall<{ text: string; code: number }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        seenByGrpc.push(call.metadata);
        const md = new grpc.Metadata();
        md.set(PEER_HEADER, FORGED);
        call.sendMetadata(md);
        if (call.request.code) return cb({ code: call.request.code, details: 'failing on purpose' } as grpc.ServiceError);
        cb(null, { text: `reviews:${call.request.text}` });
      },
      List: (call: grpc.ServerWritableStream<{ count: number }, unknown>) => {
        seenByGrpc.push(call.metadata);
        for (let i = 0; i < call.request.count; i++) call.write({ text: String(i) });
        call.end();
      },
    });
    const grpcPort = await new Promise<number>((resolve, reject) => g.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    closers.push(() => g.forceShutdown());

    clientSpans = new SpanSink({ ...PP, principal: ppLeaf.spiffeId }, { endpoint: otlp.url, scheduledDelayMillis: 50 });
    serverSpans = new SpanSink({ ...RV, principal: rvLeaf.spiffeId }, { endpoint: otlp.url, scheduledDelayMillis: 50 });
    server = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [
        { hostname: HOST, servicePort: HTTP_PORT, host: '127.0.0.1', targetPort: (app.address() as net.AddressInfo).port },
        { hostname: HOST, servicePort: GRPC_PORT, host: '127.0.0.1', targetPort: grpcPort },
        { hostname: HOST, servicePort: TCP_PORT, host: '127.0.0.1', targetPort: (tcpApp.address() as net.AddressInfo).port },
      ],
      upstreams: [],
      identity: toTlsIdentity(rvLeaf),
      logger: logCapture().logger,
      records: fanOut(serverMetrics, serverSpans),
      workload: RV,
      traceSample: 1,
    });
    await server.start();
    closers.push(() => server.close(300));
    client = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [],
      upstreams: [HTTP_PORT, GRPC_PORT, TCP_PORT].map((port) => ({ service: 'reviews.default', port, listen: { host: '127.0.0.1', port: 0 } })),
      identity: toTlsIdentity(ppLeaf),
      logger: logCapture().logger,
      records: fanOut(clientMetrics, clientSpans),
      workload: PP,
      traceSample: 1,
    });
    await client.start();
    closers.push(() => client.close(300));
    const at = server.inboundAddress();
    // The endpoint as the federation would push it, with no labels: what the
    // client reports beyond name and namespace comes from the server's header.
    const view: EndpointView = { address: at.host, mtlsPort: at.port, identity: rvLeaf.spiffeId, workload: 'default/reviews-v2', healthy: true, ports: [], cluster: 'east' };
    const service: ServiceView = {
      key: 'reviews.default', hostname: HOST, vip: '', version: '1', endpoints: [view],
      ports: [{ name: 'http', port: HTTP_PORT, protocol: 'http' }, { name: 'grpc', port: GRPC_PORT, protocol: 'grpc' }, { name: 'tcp', port: TCP_PORT, protocol: 'tcp' }],
      policy: TRAFFIC_POLICY_DEFAULTS,
    };
    client.setSnapshot({ version: '1', services: new Map([[service.key, service]]) });
    [httpAt, grpcAt, tcpAt] = client.upstreamAddresses().map((a) => `${a.host}:${a.port}`) as [string, string, string];
  });

  after(async () => {
    await clientSpans?.close();
    await serverSpans?.close();
    for (const c of closers.reverse()) await c();
  });

  const get = (pathName: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders }> =>
    new Promise((resolve, reject) => {
      const [host, port] = httpAt.split(':') as [string, string];
      http.get({ host, port: Number(port), path: pathName, headers, agent: false }, (res) => {
        res.resume().on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      }).on('error', reject);
    });

  it('HTTP/1.1: each reporter names the other workload; apps neither see nor forge the header', async () => {
    for (let i = 0; i < 3; i++) {
      // The client app claims to be admin-console; the header it sent must not arrive or count.
      const r = await get(i === 2 ? '/fail' : '/reviews/1', { [PEER_HEADER]: FORGED });
      assert.equal(r.status, i === 2 ? 503 : 200);
      assert.equal(r.headers[PEER_HEADER], undefined, 'the client app sees no peer header in the response');
    }
    assert.equal(seenByApp.length, 3);
    for (const h of seenByApp) assert.equal(h[PEER_HEADER], undefined, 'the server app sees no peer header');

    const reqs = (m: IstioMetrics, reporter: string) => select(parseExposition(m.render()), 'istio_requests_total', { reporter, request_protocol: 'http' });
    const server = reqs(serverMetrics, 'destination');
    assert.deepEqual(server.map((s) => `${s.labels.response_code}:${s.value}`).sort(), ['200:2', '503:1']);
    for (const s of server) {
      assert.deepEqual(pick(s.labels, 'source_'), {
        source_workload: 'productpage-v1', source_workload_namespace: 'default', source_principal: ppLeaf.spiffeId,
        source_app: 'productpage', source_version: 'v1', source_canonical_service: 'productpage', source_canonical_revision: 'v1', source_cluster: 'vms',
      });
      assert.equal(s.labels.destination_workload, 'reviews-v2');
      assert.equal(s.labels.connection_security_policy, 'mutual_tls');
    }
    const client = reqs(clientMetrics, 'source');
    assert.deepEqual(client.map((s) => `${s.labels.response_code}:${s.value}`).sort(), ['200:2', '503:1']);
    for (const s of client) {
      assert.deepEqual(pick(s.labels, 'destination_'), {
        destination_workload: 'reviews-v2', destination_workload_namespace: 'default', destination_principal: rvLeaf.spiffeId,
        // app, version and canonical labels are in no endpoint label: they came in the server proxy's header.
        destination_app: 'reviews', destination_version: 'v2', destination_canonical_service: 'reviews', destination_canonical_revision: 'v2', destination_cluster: 'east',
        destination_service: HOST, destination_service_name: 'reviews', destination_service_namespace: 'default',
      });
      assert.equal(s.labels.source_workload, 'productpage-v1');
    }
  });

  it('gRPC: both reporters, with grpc_response_status and message counts', async () => {
    const c = new Reviews(grpcAt, grpc.credentials.createInsecure()) as unknown as {
      Get(m: object, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, r?: { text: string }) => void): grpc.ClientUnaryCall;
      List(m: object, md: grpc.Metadata): grpc.ClientReadableStream<{ text: string }>;
      close(): void;
    };
    try {
      const forged = new grpc.Metadata();
      forged.set(PEER_HEADER, FORGED);
      const unary = (code: number) => new Promise<{ err: grpc.ServiceError | null; md: grpc.Metadata | undefined }>((resolve) => {
        let md: grpc.Metadata | undefined;
        const call = c.Get({ text: 'x', code }, forged, (err) => setImmediate(() => resolve({ err, md })));
        call.on('metadata', (m: grpc.Metadata) => (md = m));
      });
      const ok = await unary(0);
      assert.equal(ok.err, null);
      assert.deepEqual(ok.md?.get(PEER_HEADER) ?? [], [], 'the client app sees no peer header');
      const failed = await unary(grpc.status.NOT_FOUND);
      assert.equal(failed.err?.code, grpc.status.NOT_FOUND);
      const got: string[] = [];
      await new Promise<void>((resolve, reject) => c.List({ count: 4 }, new grpc.Metadata()).on('data', (m: { text: string }) => got.push(m.text)).on('end', resolve).on('error', reject));
      assert.deepEqual(got, ['0', '1', '2', '3']);
    } finally {
      c.close();
    }
    for (const md of seenByGrpc) assert.deepEqual(md.get(PEER_HEADER), [], 'the server app sees no peer header');
    for (const [m, reporter, other] of [[serverMetrics, 'destination', 'source'], [clientMetrics, 'source', 'destination']] as const) {
      const s = parseExposition(m.render());
      const reqs = select(s, 'istio_requests_total', { reporter, request_protocol: 'grpc' });
      assert.deepEqual(reqs.map((x) => `${x.labels.response_code}/${x.labels.grpc_response_status}:${x.value}`).sort(), ['200/0:2', '200/5:1'], reporter);
      for (const x of reqs) {
        assert.equal(x.labels[`${other}_version`], other === 'source' ? 'v1' : 'v2', `${reporter} names the ${other} version`);
        assert.equal(x.labels[`${other}_app`], other === 'source' ? 'productpage' : 'reviews');
      }
      const msgs = (name: string, status: string) => select(s, name, { reporter, grpc_response_status: status }).reduce((a, x) => a + x.value, 0);
      // Two unary calls and one stream succeeded: 1 + 1 requests, 1 + 4 responses.
      assert.equal(msgs('istio_request_messages_total', '0'), 2, reporter);
      assert.equal(msgs('istio_response_messages_total', '0'), 5, reporter);
      assert.equal(msgs('istio_request_messages_total', '5'), 1, reporter);
    }
  });

  it('opaque TCP: the client knows the destination from its mesh view, the server the client only by its certificate', async () => {
    const echo = await new Promise<string>((resolve, reject) => {
      const [host, port] = tcpAt.split(':') as [string, string];
      const s = net.connect({ host, port: Number(port) }, () => s.end('ping'));
      let got = '';
      s.setEncoding('utf8').on('data', (d: string) => (got += d)).on('end', () => resolve(got)).on('error', reject);
    });
    assert.equal(echo, 'ping');
    const closed = (m: IstioMetrics, reporter: string) => select(parseExposition(m.render()), 'istio_tcp_connections_closed_total', { reporter, destination_service: HOST });
    const server = await eventually(() => closed(serverMetrics, 'destination').find((x) => x.value === 1), 10_000, 'the server reporter closed the connection');
    // No metadata crosses an opaque connection (see docs/telemetry.md): the certificate gives principal and namespace.
    assert.deepEqual(pick(server.labels, 'source_'), {
      source_workload: 'unknown', source_workload_namespace: 'default', source_principal: ppLeaf.spiffeId,
      source_app: 'unknown', source_version: 'unknown', source_canonical_service: 'unknown', source_canonical_revision: 'latest', source_cluster: 'unknown',
    });
    const client = await eventually(() => closed(clientMetrics, 'source').find((x) => x.value === 1), 10_000, 'the client reporter closed the connection');
    // The endpoint in the mesh view: name, namespace (SPIFFE ID) and cluster; its labels have no app or version.
    assert.equal(client.labels.destination_workload, 'reviews-v2');
    assert.equal(client.labels.destination_cluster, 'east');
    assert.equal(client.labels.destination_version, 'unknown');
  });

  it('bad input: a peer\'s metadata with quotes, newlines and raw non-UTF-8 bytes is escaped in the exposition, and promtool parses the page', async () => {
    const raw = meshClient(ppLeaf, server.inboundAddress());
    try {
      // Percent-encoded quote, newline and backslash, and two raw bytes that are no UTF-8 (sent as latin1).
      assert.equal(await raw.get('v1;w=we%22ird%0Aname;a=%5C;v=\u00ff\u00fe'), 200);
      // Percent-encoded bytes that are no UTF-8: the claim is refused whole, the certificate stays.
      assert.equal(await raw.get('v1;w=bad%FF%FE'), 200);
    } finally {
      raw.close();
    }
    const text = serverMetrics.render();
    const s = select(parseExposition(text), 'istio_requests_total', { reporter: 'destination', source_principal: ppLeaf.spiffeId });
    const odd = s.find((x) => x.labels.source_workload === 'we"ird\nname');
    assert.ok(odd, JSON.stringify(s.map((x) => x.labels.source_workload)));
    assert.equal(odd.labels.source_app, '\\');
    assert.equal(odd.labels.source_version, '\u00ff\u00fe');
    assert.ok(s.some((x) => x.labels.source_workload === 'unknown' && x.value >= 1), 'the undecodable claim counted under the certificate only');
    assert.ok(!text.includes('bad'), 'nothing of the refused claim reached a label');
    // The exposition stays valid UTF-8 and one sample a line.
    assert.match(text, /source_workload="we\\"ird\\nname"/);
    assert.equal(spawnSync('promtool', ['--version']).error, undefined, 'promtool is missing: apt-get install -y prometheus');
    const r = spawnSync('promtool', ['check', 'metrics'], { input: Buffer.from(text, 'utf8') });
    assert.doesNotMatch(String(r.stderr) + String(r.stdout), /parse|unexpected|invalid/i, String(r.stderr));
  });

  it('bad input: scrapes during a burst of new series always parse, and no count goes back', async () => {
    // Streamed as the agent streams it (a slice of series at a time, the event loop free between).
    const metrics = await startMetricsServer({ host: '127.0.0.1', port: 0 }, () => serverMetrics.stream(), 'test metrics');
    const raw = meshClient(ppLeaf, server.inboundAddress(), 16);
    const seen = new Map<string, number>();
    let scrapes = 0;
    let done = false;
    const scrape = async (): Promise<void> => {
      const body = await new Promise<string>((resolve, reject) => {
        http.get({ host: metrics.address.host, port: metrics.address.port, path: '/metrics' }, (res) => {
          let b = '';
          res.setEncoding('utf8').on('data', (c: string) => (b += c)).on('end', () => resolve(b));
        }).on('error', reject);
      });
      // A whole page every time: each family declared once, istio_build last.
      for (const family of ['istio_requests_total', 'istio_request_duration_milliseconds', 'istio_response_bytes']) {
        assert.equal(body.split(`# TYPE ${family} `).length, 2, `${family} declared once`);
      }
      assert.match(body, /\nistio_build\{component="proxy",tag="test"\} 1\n$/);
      const counters = body.split('\n').filter((l) => l.startsWith('istio_requests_total{')).join('\n');
      for (const x of select(parseExposition(counters), 'istio_requests_total')) {
        const key = JSON.stringify(x.labels);
        assert.ok(x.value >= (seen.get(key) ?? 0), `a counter went back: ${key}`);
        seen.set(key, x.value);
      }
      scrapes++;
    };
    const scraper = (async () => {
      while (!done) await scrape();
    })();
    const burst = 300;
    try {
      let next = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (next < burst) {
          const i = next++;
          assert.equal(await raw.get(`v1;w=burst-${i};n=default`), 200);
        }
      }));
    } finally {
      done = true;
      await scraper;
      raw.close();
    }
    await scrape();
    // The last page parses whole.
    assert.ok(select(parseExposition(serverMetrics.render()), 'istio_request_duration_milliseconds_count').length >= burst);
    const burstSeries = [...seen.keys()].filter((k) => k.includes('"source_workload":"burst-'));
    assert.equal(burstSeries.length, burst, 'one series per new peer');
    assert.ok(scrapes > 2, `scrapes ${scrapes}`);
    console.log(`# ${scrapes} scrapes during a burst of ${burst} new series`);
    await metrics.close();
  });

  it('tracing: each hop exports a span in the caller\'s trace, the server hop a child of the client hop; the app sees the server hop as parent', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpan = '00f067aa0ba902b7';
    const before = seenByApp.length;
    assert.equal((await get('/traced', { traceparent: `00-${traceId}-${callerSpan}-01`, tracestate: 'vendor=opaque' })).status, 200);
    // B3 single header, 64-bit trace id, sampled.
    assert.equal((await get('/b3', { b3: '80f198ee56343ba8-e457b5a2e4d86bd1-1' })).status, 200);
    // No context at all: a new trace (sampled at 1 here).
    assert.equal((await get('/fresh')).status, 200);
    const [traced, b3, fresh] = seenByApp.slice(before) as [http.IncomingHttpHeaders, http.IncomingHttpHeaders, http.IncomingHttpHeaders];
    await clientSpans.flush();
    await serverSpans.flush();
    const spansOf = (id: string) => eventually(() => {
      const s = otlp.spans.filter((x) => x.traceId === id);
      return s.length >= 2 ? s : undefined;
    }, 10_000, `two spans of trace ${id}`);

    const w3c = await spansOf(traceId);
    assert.equal(w3c.length, 2);
    const cSpan = w3c.find((s) => s.kind === 3)!;
    const sSpan = w3c.find((s) => s.kind === 2)!;
    assert.ok(cSpan && sSpan, JSON.stringify(w3c));
    assert.equal(cSpan.parentSpanId, callerSpan, 'the client hop is a child of the caller');
    assert.equal(sSpan.parentSpanId, cSpan.spanId, 'the server hop is a child of the client hop');
    assert.ok(otlp.services.has(`${cSpan.spanId}=productpage.default`) && otlp.services.has(`${sSpan.spanId}=reviews.default`), [...otlp.services].join(' '));
    assert.equal(cSpan.name, `${HOST}:${HTTP_PORT}/*`);
    assert.equal(traced.traceparent, `00-${traceId}-${sSpan.spanId}-01`, 'the app sees the server hop as its parent');
    assert.equal(traced.tracestate, 'vendor=opaque');

    const b3Trace = '000000000000000080f198ee56343ba8';
    const b3Spans = await spansOf(b3Trace);
    const b3Client = b3Spans.find((s) => s.kind === 3)!;
    const b3Server = b3Spans.find((s) => s.kind === 2)!;
    assert.equal(b3Client.parentSpanId, 'e457b5a2e4d86bd1');
    assert.equal(b3Server.parentSpanId, b3Client.spanId);
    assert.equal(b3.b3, `${b3Trace}-${b3Server.spanId}-1-${b3Client.spanId}`, 'B3 goes on in the form it came in');
    assert.equal(b3.traceparent, `00-${b3Trace}-${b3Server.spanId}-01`);

    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(fresh.traceparent));
    assert.ok(m, String(fresh.traceparent));
    const freshSpans = await spansOf(m[1]!);
    const root = freshSpans.find((s) => s.kind === 3)!;
    assert.ok(!root.parentSpanId, 'the client hop started the trace');
    assert.equal(freshSpans.find((s) => s.kind === 2)?.parentSpanId, root.spanId);
    assert.deepEqual(clientSpans.stats().dropped, 0);
  });
});

/**
 * A hand-made client proxy: HTTP/1.1 over mesh mTLS with productpage's
 * certificate, straight to the server proxy, writing its own x-kedge-peer.
 */
function meshClient(leaf: { certPem: string; keyPem: string; ca: { certPem: string } }, at: { host: string; port: number }, sockets = 8) {
  const agent = new https.Agent({ keepAlive: true, maxSockets: sockets, cert: leaf.certPem, key: leaf.keyPem, ca: leaf.ca.certPem, servername: buildSni(HTTP_PORT, HOST), ALPNProtocols: ['http/1.1'], checkServerIdentity: () => undefined });
  const get = (peerHeader: string): Promise<number> =>
    new Promise((resolve, reject) => {
      https.get({ host: at.host, port: at.port, path: '/raw', agent, headers: { [PEER_HEADER]: peerHeader } }, (res) => res.resume().on('end', () => resolve(res.statusCode ?? 0))).on('error', reject);
    });
  return { get, close: () => agent.destroy() };
}

function pick(labels: Record<string, string>, prefix: string): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).filter(([k]) => k.startsWith(prefix)));
}
