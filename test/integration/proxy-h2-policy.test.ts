// Route filters, per-attempt timeouts, circuit breaking and bad input on
// the HTTP/2 stack, end to end with unmodified grpc-js clients and servers
// (and Node's own HTTP/2 client, raw sockets and TLS for what no gRPC
// client sends): client proxy (upstream listener on a `grpc` port) ->
// multiplexed mTLS sessions -> server proxies -> grpc-js servers.
import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { compileServiceRoutes, validateRouteDocument, type RouteObject } from '../../policy/routes';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../policy/traffic-policy';
import { buildSni } from '../../proto/model/sni';
import { Proxy } from '../../agent/proxy/proxy';
import { GRPC_MAX_MESSAGE_BYTES } from '../../agent/proxy/http2/stream';
import type { EndpointView, ServiceView } from '../../agent/proxy/types';
import { type EchoClient, type EchoServer, type Msg, echoClient, echoServer, loadEcho } from '../support/grpc-echo';
import { logCapture } from '../support/logs';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';
import { eventually } from '../support/procs';
import { startServerProxy } from '../support/proxies';

const TD = 'spiffe://kedge.test';
const HOST = 'echo.shop.svc.cluster.local';
const MIRROR_HOST = 'echo-v2.shop.svc.cluster.local';
const PORT = 9090;
const T = { timeout: 60_000 };

/** A GRPCRoute on echo:9090 with `rules`, compiled as the federation pushes it. */
function routes(rules: unknown[]): ServiceView['routes'] {
  const doc = {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: { name: 'echo', namespace: 'shop' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: PORT }], rules },
  };
  const r = validateRouteDocument(doc);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return compileServiceRoutes({ key: 'echo.shop', namespace: 'shop', ports: [{ name: 'grpc', port: PORT }] }, [r.value as RouteObject], new Map(), 'shop');
}

/** HTTP/2 frames in `buf` (type, flags, stream, payload). */
function frames(buf: Buffer): { type: number; stream: number; payload: Buffer }[] {
  const out: { type: number; stream: number; payload: Buffer }[] = [];
  let i = 0;
  while (i + 9 <= buf.length) {
    const len = buf.readUIntBE(i, 3);
    if (i + 9 + len > buf.length) break;
    out.push({ type: buf[i + 3]!, stream: buf.readUInt32BE(i + 5) & 0x7fffffff, payload: buf.subarray(i + 9, i + 9 + len) });
    i += 9 + len;
  }
  return out;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const frame = (type: number, flags: number, stream: number, payload: Buffer): Buffer => {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
};
/** A connection preface, then DATA on stream 0, which RFC 9113 §6.1 makes a connection error PROTOCOL_ERROR. */
const VIOLATION = Buffer.concat([PREFACE, frame(0x4, 0, 0, Buffer.alloc(0)), frame(0x0, 0, 0, Buffer.from('x'))]);

/**
 * Sends `bytes` on `socket` and reads until a GOAWAY frame arrives or the
 * peer closes; resolves with what it got and closes the socket. (Node's
 * HTTP/2 sends GOAWAY and then waits for the peer to close.)
 */
function exchange(socket: net.Socket, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const done = (): void => {
      socket.destroy();
      resolve(got);
    };
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (frames(got).some((f) => f.type === 0x7)) done();
    });
    socket.on('error', () => undefined);
    socket.on('close', done);
    socket.write(bytes);
  });
}

/** The GOAWAY error code among `buf`'s frames, or undefined. */
function goawayCode(buf: Buffer): number | undefined {
  const g = frames(buf).find((f) => f.type === 0x7);
  return g === undefined ? undefined : g.payload.readUInt32BE(4);
}

describe('HTTP/2 route filters, attempt timeouts, circuit breaking and bad input', () => {
  const ca = makeCa('h2-policy');
  const pkg = loadEcho();
  const Echo = echoClient(pkg);
  const servers: EchoServer[] = [];
  const proxies: Proxy[] = [];
  const views: EndpointView[] = [];
  const clientLog = logCapture();
  const clientLeaf = makeLeaf(ca, `${TD}/ns/shop/sa/frontend`);
  let client: Proxy;
  let echo: EchoClient;
  let port: number;

  const echoView = (endpoints: EndpointView[], extra: Partial<ServiceView> = {}, policy: Partial<TrafficPolicy> = {}): ServiceView => ({
    key: 'echo.shop',
    hostname: HOST,
    vip: '',
    ports: [{ name: 'grpc', port: PORT, protocol: 'grpc' }],
    endpoints,
    version: String(Math.random()),
    policy: { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin', ...policy },
    ...extra,
  });
  const mirrorView = (endpoints: EndpointView[]): ServiceView => ({ ...echoView(endpoints), key: 'echo-v2.shop', hostname: MIRROR_HOST });
  const set = (...services: ServiceView[]): void => client.setSnapshot({ version: String(Math.random()), services: new Map(services.map((s) => [s.key, s])) });
  const reset = (): void => {
    for (const s of servers) s.mode.delayMs = 0;
    set(echoView(views), mirrorView([views[1]!]));
  };
  const unary = (m: Msg, opts: grpc.CallOptions = {}): Promise<{ err: grpc.ServiceError | null; res?: Msg }> =>
    new Promise((resolve) => echo.Unary(m, new grpc.Metadata(), opts, (err, res) => resolve({ err, ...(res ? { res } : {}) })));

  before(async () => {
    for (const name of ['a', 'b']) {
      const s = await echoServer(name, pkg);
      servers.push(s);
      // b also serves the mirror service.
      const { proxy, view } = await startServerProxy(ca, `${TD}/ns/shop/sa/echo-${name}`, `echo-${name}`, [
        { hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: s.port },
        ...(name === 'b' ? [{ hostname: MIRROR_HOST, servicePort: PORT, host: '127.0.0.1', targetPort: s.port }] : []),
      ]);
      proxies.push(proxy);
      views.push(view);
    }
    client = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [],
      upstreams: [{ service: 'echo.shop', port: PORT, listen: { host: '127.0.0.1', port: 0 } }],
      identity: toTlsIdentity(clientLeaf),
      logger: clientLog.logger,
    });
    await client.start();
    port = client.upstreamAddresses()[0]!.port;
    reset();
    echo = new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  after(async () => {
    echo.close();
    await client.close(300);
    for (const p of proxies) await p.close(300);
    for (const s of servers) s.server.forceShutdown();
  });

  it('RequestMirror: the mirror gets a copy of unary and bidi calls, the client only the primary\'s answer; a slow or missing mirror neither delays nor fails it', T, async () => {
    const table = routes([{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'echo-v2', port: PORT } } }], backendRefs: [{ name: 'echo', port: PORT }] }]);
    const [a, b] = servers as [EchoServer, EchoServer];
    try {
      set(echoView([views[0]!], { routes: table }), mirrorView([views[1]!]));
      const r = await unary({ text: 'm1' });
      assert.equal(r.err, null);
      assert.equal(r.res!.text, 'a:m1', 'the client gets the primary\'s answer');
      await eventually(() => b.texts.includes('m1'), 5_000, 'the mirrored copy of the unary call');
      assert.ok(a.texts.includes('m1'));

      const bidiBefore = b.bidiMessages;
      const bidi = echo.Bidi();
      let n = 0;
      const done = new Promise<void>((resolve, reject) => {
        bidi.on('data', () => n++);
        bidi.on('end', resolve);
        bidi.on('error', reject);
      });
      for (let i = 0; i < 50; i++) bidi.write({ text: `s${i}` });
      bidi.end();
      await done;
      assert.equal(n, 50, 'the client reads only the primary\'s 50 answers');
      await eventually(() => b.bidiMessages - bidiBefore === 50, 5_000, 'the mirror to receive all 50 messages');

      // A mirror that takes 30 s: the primary answers while the mirror still holds its copy.
      b.mode.delayMs = 30_000;
      const answeredBefore = b.answered;
      const slow = await unary({ text: 'm2' });
      assert.equal(slow.res?.text, 'a:m2');
      await eventually(() => b.texts.includes('m2'), 5_000, 'the slow mirror to get its copy');
      assert.equal(b.answered, answeredBefore, 'the primary did not wait for the mirror');

      // A mirror service with no endpoints: the client sees nothing of it; the proxy logs it.
      set(echoView([views[0]!], { routes: table }), mirrorView([]));
      const lone = await unary({ text: 'm3' });
      assert.equal(lone.err, null);
      assert.equal(lone.res!.text, 'a:m3');
      await eventually(() => clientLog.lines.some((l) => l.msg === 'request not mirrored' && /KEDGE_NO_ENDPOINTS/.test(String(l.reason))), 5_000, 'the log line for the missing mirror');
    } finally {
      reset();
    }
  });

  it('backendRequest bounds each attempt: a timed-out attempt is retried on another endpoint when the route retries DEADLINE_EXCEEDED, and answered DEADLINE_EXCEEDED naming the timeout when it does not', T, async () => {
    const [a] = servers as [EchoServer, EchoServer];
    try {
      a.mode.delayMs = 5_000;
      set(echoView(views, { routes: routes([{ backendRefs: [{ name: 'echo', port: PORT }], timeouts: { request: '10s', backendRequest: '300ms' }, retry: { codes: ['DEADLINE_EXCEEDED'], attempts: 1 } }]) }), mirrorView([views[1]!]));
      const cancelledBefore = a.cancelled;
      const rs = await Promise.all(Array.from({ length: 6 }, (_, i) => unary({ text: `t${i}` })));
      for (const r of rs) {
        assert.equal(r.err, null, r.err?.message);
        assert.match(r.res!.text!, /^b:/, 'the slow endpoint\'s attempts were retried on b');
      }
      await eventually(() => a.cancelled - cancelledBefore >= 1, 5_000, 'a to see its timed-out attempts cancelled');

      set(echoView([views[0]!], { routes: routes([{ backendRefs: [{ name: 'echo', port: PORT }], timeouts: { request: '10s', backendRequest: '300ms' } }]) }), mirrorView([views[1]!]));
      const r = await unary({ text: 'no-retry' });
      assert.equal(r.err?.code, grpc.status.DEADLINE_EXCEEDED);
      assert.match(r.err?.details ?? '', /backend request timeout of 300 ms/);
    } finally {
      reset();
    }
  });

  it('circuit breaking on HTTP/2 sessions: maxRequestsPerConnection retires a session, maxConnections 1 bounds them, and past maxPendingRequests 10 the excess gets UNAVAILABLE at once', T, async () => {
    const [a] = servers as [EchoServer, EchoServer];
    const sessionsBefore = proxies[0]!.stats().inbound.http.total;
    try {
      a.mode.delayMs = 100;
      set(echoView([views[0]!], {}, { circuitBreaker: { ...TRAFFIC_POLICY_DEFAULTS.circuitBreaker, maxConnections: 1, maxPendingRequests: 10, maxRequestsPerConnection: 1 } }), mirrorView([views[1]!]));
      a.maxInFlight = 0;
      const callsBefore = a.calls;
      const order: string[] = [];
      const rs = await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const r = await unary({ text: `cb${i}` });
          order.push(r.err === null ? 'ok' : 'refused');
          return r;
        }),
      );
      const refused = rs.filter((r) => r.err !== null);
      const served = rs.filter((r) => r.err === null);
      for (const r of refused) {
        assert.equal(r.err!.code, grpc.status.UNAVAILABLE);
        assert.match(r.err!.details, /maxPendingRequests \(10\)/);
      }
      // One stream in its session plus at most ten waiting when they came; the rest refused.
      assert.ok(refused.length > 0 && served.length >= 10, `${refused.length} refused, ${served.length} served`);
      assert.equal(a.maxInFlight, 1, 'the endpoint saw one call at a time');
      assert.equal(a.calls - callsBefore, served.length, 'the app saw only the admitted calls');
      assert.ok(order.lastIndexOf('refused') < order.lastIndexOf('ok'), 'refusals came before the last admitted call ended');
      // One session per stream (maxRequestsPerConnection 1), never two at a time (maxConnections 1).
      assert.equal(proxies[0]!.stats().inbound.http.total - sessionsBefore, served.length);
      assert.ok(proxies[0]!.stats().inbound.http.active <= 1);
    } finally {
      reset();
    }
  });

  it('an HTTP/2 peer that breaks the protocol gets GOAWAY PROTOCOL_ERROR, on the app side and the mesh side, and streams of other sessions go on', T, async () => {
    const bidi = echo.Bidi();
    const got: string[] = [];
    bidi.on('data', (m: Msg) => got.push(m.text ?? ''));
    bidi.on('error', () => undefined);
    bidi.write({ text: 'before' });
    await eventually(() => got.length === 1, 5_000, 'the first bidi echo');

    const app = await exchange(net.connect(port, '127.0.0.1'), VIOLATION);
    assert.equal(goawayCode(app), 0x1, 'GOAWAY with PROTOCOL_ERROR to the app');

    const at = proxies[1]!.inboundAddress();
    const mesh = tls.connect({ host: at.host, port: at.port, servername: buildSni(PORT, HOST), ALPNProtocols: ['h2'], ca: ca.certPem, cert: clientLeaf.certPem, key: clientLeaf.keyPem, rejectUnauthorized: false });
    await new Promise<void>((r) => mesh.once('secureConnect', () => r()));
    assert.equal(mesh.alpnProtocol, 'h2');
    assert.equal(goawayCode(await exchange(mesh, VIOLATION)), 0x1, 'GOAWAY with PROTOCOL_ERROR to a mesh peer');

    bidi.write({ text: 'after' });
    await eventually(() => got.length === 2, 5_000, 'the bidi stream to carry on');
    assert.deepEqual(got, ['before', 'after']);
    bidi.end();
    assert.equal((await unary({ text: 'still' })).err, null);
  });

  it('a gRPC message longer than the proxy allows gets RESOURCE_EXHAUSTED naming the limit, and the proxy serves on', T, async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    try {
      const callsBefore = servers[0]!.calls + servers[1]!.calls;
      const req = session.request({ ':method': 'POST', ':path': '/kedge.test.Echo/Unary', 'content-type': 'application/grpc', te: 'trailers' });
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(GRPC_MAX_MESSAGE_BYTES + 1, 1);
      req.write(Buffer.concat([prefix, Buffer.alloc(1024)]));
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => req.once('response', resolve));
      req.on('error', () => undefined);
      assert.equal(headers[':status'], 200);
      assert.equal(headers['grpc-status'], String(grpc.status.RESOURCE_EXHAUSTED));
      assert.match(decodeURIComponent(String(headers['grpc-message'])), new RegExp(`${GRPC_MAX_MESSAGE_BYTES + 1} bytes is over the proxy's limit of ${GRPC_MAX_MESSAGE_BYTES}`));
      assert.equal(headers['x-kedge-response-flags'], 'DPE');
      req.close();
      assert.equal(servers[0]!.calls + servers[1]!.calls, callsBefore, 'no app handled the over-long message');
    } finally {
      session.close();
    }
    assert.equal((await unary({ text: 'after-long' })).err, null);
  });
});
