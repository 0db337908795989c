// HTTP/2 and gRPC through the mesh with unmodified clients and servers:
// grpc-js client -> client proxy (upstream listener on a `grpc` port, h2c)
// -> one multiplexed mTLS session per endpoint (ALPN h2) -> server proxies
// -> grpc-js servers (h2c); h2load and curl with prior knowledge against an
// `http2` port. Streams are balanced one by one; trailers, status codes,
// metadata, deadlines and cancellation pass end to end.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProto } from 'grpc-health-check';
import { compileServiceRoutes, validateRouteDocument, type RouteObject } from '../../policy/routes';
import { TRAFFIC_POLICY_DEFAULTS } from '../../policy/traffic-policy';
import { Proxy } from '../../agent/proxy/proxy';
import type { RequestRecord, TrafficRecord } from '../../agent/proxy/record';
import type { EndpointView, ServiceView } from '../../agent/proxy/types';
import { logCapture } from '../support/logs';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';
import { eventually } from '../support/procs';
import { establishedTo, startServerProxy } from '../support/proxies';
import { BIG, type EchoClient, type EchoServer, type Msg, echoClient, echoServer, h2App, loadEcho } from '../support/grpc-echo';

const TD = 'spiffe://kedge.test';
const HOST = 'echo.shop.svc.cluster.local';
const GRPC_PORT = 9090;
const H2_PORT = 8080;
const T = { timeout: 60_000 };

describe('HTTP/2 and gRPC through the mesh', () => {
  const ca = makeCa('grpc-mesh');
  const pkg = loadEcho();
  const Echo = echoClient(pkg);
  const servers: EchoServer[] = [];
  const h2apps: Awaited<ReturnType<typeof h2App>>[] = [];
  const proxies: Proxy[] = [];
  const views: EndpointView[] = [];
  const records: TrafficRecord[] = [];
  let client: Proxy;
  let grpcPort: number;
  let h2Port: number;
  let echo: EchoClient;
  const service = (extra: Partial<ServiceView> = {}): ServiceView => ({
    key: 'echo.shop',
    hostname: HOST,
    vip: '',
    ports: [
      { name: 'grpc', port: GRPC_PORT, protocol: 'grpc' },
      { name: 'h2', port: H2_PORT, protocol: 'http2' },
    ],
    endpoints: views,
    version: String(Math.random()),
    policy: { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin' },
    ...extra,
  });
  const set = (s: ServiceView): void => client.setSnapshot({ version: String(Math.random()), services: new Map([[s.key, s]]) });
  const unary = (m: Msg, opts: grpc.CallOptions = {}, md = new grpc.Metadata()): Promise<{ err: grpc.ServiceError | null; res?: Msg; md?: grpc.Metadata; trailers?: grpc.Metadata }> =>
    new Promise((resolve) => {
      let headers: grpc.Metadata | undefined;
      let trailers: grpc.Metadata | undefined;
      const call = echo.Unary(m, md, opts, (err, res) => setImmediate(() => resolve({ err, ...(res ? { res } : {}), ...(headers ? { md: headers } : {}), ...(trailers ? { trailers } : {}) })));
      call.on('metadata', (h: grpc.Metadata) => (headers = h));
      call.on('status', (s: grpc.StatusObject) => (trailers = s.metadata));
    });

  before(async () => {
    for (const name of ['a', 'b']) {
      const s = await echoServer(name, pkg);
      const h = await h2App(name);
      servers.push(s);
      h2apps.push(h);
      const { proxy, view } = await startServerProxy(ca, `${TD}/ns/shop/sa/echo-${name}`, `echo-${name}`, [
        { hostname: HOST, servicePort: GRPC_PORT, host: '127.0.0.1', targetPort: s.port },
        { hostname: HOST, servicePort: H2_PORT, host: '127.0.0.1', targetPort: h.port },
      ], records);
      proxies.push(proxy);
      views.push(view);
    }
    client = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [],
      upstreams: [
        { service: 'echo.shop', port: GRPC_PORT, listen: { host: '127.0.0.1', port: 0 } },
        { service: 'echo.shop', port: H2_PORT, listen: { host: '127.0.0.1', port: 0 } },
      ],
      identity: toTlsIdentity(makeLeaf(ca, `${TD}/ns/shop/sa/frontend`)),
      logger: logCapture().logger,
      records: { open: () => undefined, finish: (r) => records.push(r) },
    });
    await client.start();
    [grpcPort, h2Port] = client.upstreamAddresses().map((a) => a.port) as [number, number];
    set(service());
    echo = new Echo(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': BIG, 'grpc.max_send_message_length': BIG });
  });

  after(async () => {
    echo.close();
    await client.close(300);
    for (const p of proxies) await p.close(300);
    for (const s of servers) s.server.forceShutdown();
    for (const h of h2apps) await new Promise<void>((r) => h.server.close(() => r()));
  });

  it('unary calls on one channel are balanced per call, with metadata and trailers (text and -bin) end to end', T, async () => {
    const md = new grpc.Metadata();
    md.set('x-bin-bin', Buffer.from([9, 8, 7]));
    const by: Record<string, number> = {};
    for (let i = 0; i < 20; i++) {
      const r = await unary({ text: `hi ${i}` }, {}, md);
      assert.equal(r.err, null);
      const who = String(r.md!.get('x-server')[0]);
      by[who] = (by[who] ?? 0) + 1;
      assert.equal(r.res!.text, `${who}:hi ${i}`);
      assert.deepEqual(r.md!.get('x-echo-bin')[0], Buffer.from([9, 8, 7]));
      assert.equal(r.trailers!.get('x-trailer')[0], `t-${who}`);
      assert.deepEqual(r.trailers!.get('x-bin-bin')[0], Buffer.from([0, 1, 2, 255]));
    }
    assert.deepEqual(by, { a: 10, b: 10 });
    const rec = records.filter((x): x is RequestRecord => x.kind === 'request' && x.reporter === 'source' && x.protocol === 'grpc');
    assert.ok(rec.length >= 20 && rec.every((x) => x.grpcStatus === 0 && x.httpVersion === 'HTTP/2' && x.path === '/kedge.test.Echo/Unary' && x.requestMessages === 1 && x.responseMessages === 1));
  });

  it('passes all 16 status codes unchanged', T, async () => {
    for (let code = 1; code <= 16; code++) {
      const r = await unary({ code });
      assert.equal(r.err?.code, code, `code ${code}: ${r.err?.message}`);
      assert.equal(r.err?.details, `failing with ${code}`);
    }
    assert.equal((await unary({ text: 'ok' })).err, null);
  });

  it('100 concurrent calls on one channel, and a large message', T, async () => {
    const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => unary({ text: `c${i}` })));
    assert.ok(rs.every((r) => r.err === null));
    const data = Buffer.alloc(6 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = i & 0xff;
    const big = await unary({ data });
    assert.equal(big.err, null);
    assert.ok(Buffer.compare(Buffer.from(big.res!.data!), data) === 0, 'the 6 MiB message came back intact');
  });

  it('server streaming and a 10,000-message bidi stream', T, async () => {
    const got: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const s = echo.Stream({ count: 500 });
      s.on('data', (m: Msg) => got.push(m.text ?? ''));
      s.on('end', resolve);
      s.on('error', reject);
    });
    assert.equal(got.length, 500);
    const bidi = echo.Bidi();
    let n = 0;
    const done = new Promise<void>((resolve, reject) => {
      bidi.on('data', () => n++);
      bidi.on('end', resolve);
      bidi.on('error', reject);
    });
    for (let i = 0; i < 10_000; i++) if (!bidi.write({ text: `m${i}` })) await new Promise((r) => bidi.once('drain', r));
    bidi.end();
    await done;
    assert.equal(n, 10_000);
  });

  it('a deadline that expires gives DEADLINE_EXCEEDED and the server sees the cancellation', T, async () => {
    const before = servers[0]!.cancelled + servers[1]!.cancelled;
    const r = await unary({ text: 'slow', delayMs: 3_000 }, { deadline: Date.now() + 300 });
    assert.equal(r.err?.code, grpc.status.DEADLINE_EXCEEDED);
    await eventually(() => servers[0]!.cancelled + servers[1]!.cancelled > before, 5_000, 'the server to see the cancellation');
  });

  it('a client cancellation reaches the server', T, async () => {
    const before = servers[0]!.cancelled + servers[1]!.cancelled;
    const bidi = echo.Bidi();
    bidi.on('error', () => undefined);
    await new Promise<void>((r) => {
      bidi.once('data', () => r());
      bidi.write({ text: 'first' });
    });
    bidi.cancel();
    await eventually(() => servers[0]!.cancelled + servers[1]!.cancelled > before, 5_000, 'the server to see the cancellation');
  });

  it('a route timeout gives DEADLINE_EXCEEDED, and UNAVAILABLE is retried by the route', T, async () => {
    const doc = {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'GRPCRoute',
      metadata: { name: 'echo', namespace: 'shop' },
      spec: { parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: GRPC_PORT }], rules: [{ backendRefs: [{ name: 'echo', port: GRPC_PORT }] }] },
    };
    const v = validateRouteDocument(doc);
    assert.ok(v.ok, v.ok ? '' : v.errors.join('\n'));
    const compiled = compileServiceRoutes({ key: 'echo.shop', namespace: 'shop', ports: [{ name: 'grpc', port: GRPC_PORT }] }, [v.value as RouteObject], new Map(), 'shop')!;
    // The compiled target's timeouts and retry, as a route with them would compile.
    const target = compiled.targets[0]!;
    const withPolicy = {
      ...compiled,
      forPort: (p: number) => {
        const table = compiled.forPort(p);
        return table && { kind: table.kind, match: () => ({ ...target, timeouts: { requestMs: 250, backendRequestMs: undefined }, retry: { httpCodes: new Set<number>(), grpcCodes: new Set([14]), attempts: 3, backoffMs: 0 } }) };
      },
    };
    set(service({ routes: withPolicy }));
    try {
      const slow = await unary({ text: 'slow', delayMs: 3_000 });
      assert.equal(slow.err?.code, grpc.status.DEADLINE_EXCEEDED);
      assert.match(slow.err?.details ?? '', /no answer within 250 ms/, 'the proxy, not the client, ended the call at the route timeout');
      const before = servers[0]!.calls + servers[1]!.calls;
      const unavailable = await unary({ code: grpc.status.UNAVAILABLE });
      assert.equal(unavailable.err?.code, grpc.status.UNAVAILABLE);
      assert.equal(servers[0]!.calls + servers[1]!.calls - before, 4, 'the first attempt and three retries');
    } finally {
      set(service());
    }
  });

  it('grpc.health.v1 Check and Watch (grpc-node\'s own health service) pass through the pair', T, async () => {
    const hpkg = grpc.loadPackageDefinition(protoLoader.loadSync(healthProto, { keepCase: true, enums: String, defaults: true }));
    type HealthClient = grpc.Client & {
      Check(r: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
      Watch(r: { service: string }): grpc.ClientReadableStream<{ status: string }>;
    };
    const Health = (((hpkg.grpc as grpc.GrpcObject).health as grpc.GrpcObject).v1 as grpc.GrpcObject).Health as unknown as new (a: string, c: grpc.ChannelCredentials) => HealthClient;
    const health = new Health(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
    const check = (service: string): Promise<{ err: grpc.ServiceError | null; status?: string }> => new Promise((r) => health.Check({ service }, (err, res) => r({ err, ...(res ? { status: res.status } : {}) })));
    try {
      assert.deepEqual(await check(''), { err: null, status: 'SERVING' });
      assert.deepEqual(await check('kedge.test.Echo'), { err: null, status: 'SERVING' });
      const unknown = await check('no.such.Service');
      assert.equal(unknown.err?.code, grpc.status.NOT_FOUND, 'the server\'s NOT_FOUND passes unchanged');
      const watch = health.Watch({ service: 'kedge.test.Echo' });
      const seen: string[] = [];
      watch.on('data', (m: { status: string }) => seen.push(m.status));
      watch.on('error', () => undefined);
      await eventually(() => seen[0] === 'SERVING', 5_000, 'the first Watch answer');
      // The watch stream rides one endpoint; both change, so whichever it is tells the client.
      for (const s of servers) s.health.setStatus('kedge.test.Echo', 'NOT_SERVING');
      await eventually(() => seen.includes('NOT_SERVING'), 5_000, 'the Watch stream to carry the change');
      assert.deepEqual(seen, ['SERVING', 'NOT_SERVING']);
      const ended = new Promise<grpc.StatusObject>((r) => watch.on('status', r));
      watch.cancel();
      assert.equal((await ended).code, grpc.status.CANCELLED);
    } finally {
      for (const s of servers) s.health.setStatus('kedge.test.Echo', 'SERVING');
      health.close();
    }
  });

  it('h2load and curl with prior knowledge: no errors, and one session per endpoint between proxies', T, async () => {
    const out = await new Promise<string>((resolve, reject) =>
      execFile('h2load', ['-n', '2000', '-c', '50', '-m', '4', `http://127.0.0.1:${h2Port}/load`], { timeout: 30_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    assert.match(out, /requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored/);
    // Fifty client connections, but between the proxies one HTTP/2 session
    // per endpoint and service port (the SNI names the port): 2 x 2 here.
    const meshConnections = proxies.reduce((n, p) => n + p.stats().inbound.http.active, 0);
    assert.ok(meshConnections <= 4, `${meshConnections} mesh connections`);
    const body = await new Promise<string>((resolve, reject) =>
      execFile('curl', ['-sS', '--http2-prior-knowledge', '--max-time', '5', `http://127.0.0.1:${h2Port}/curl`], (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    assert.match(body, /^[ab] \/curl\n$/);
  });

  it('1,000 HTTP/2 client connections (h2load) ride at most one session per endpoint and port between the proxies, counted with ss', T, async () => {
    const meshPorts = views.map((v) => v.mtlsPort);
    const acceptedBefore = proxies.reduce((n, p) => n + p.stats().inbound.http.total, 0);
    let most = await establishedTo(meshPorts);
    const h2load = spawn('h2load', ['-n', '2000', '-c', '1000', '-m', '1', `http://127.0.0.1:${h2Port}/many`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let sampling = Promise.resolve();
    // Sampled at each of h2load's progress lines, all through the run.
    h2load.stdout.on('data', (d: Buffer) => {
      out += String(d);
      sampling = sampling.then(async () => void (most = Math.max(most, await establishedTo(meshPorts))));
    });
    const code = await new Promise<number | null>((resolve) => h2load.on('close', resolve));
    await sampling;
    assert.equal(code, 0, out);
    assert.match(out, /requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored/);
    assert.match(out, /1000 total client\(s\)/);
    // 2 endpoints x 2 service ports (grpc, http2): the SNI names the port.
    assert.ok(most >= 2 && most <= 4, `${most} mesh connections seen by ss for 1,000 client connections`);
    const accepted = proxies.reduce((n, p) => n + p.stats().inbound.http.total, 0) - acceptedBefore;
    assert.ok(accepted <= 4, `${accepted} mesh connections accepted during the run`);
  });
});
