// The HTTP/1.1 stack end to end with real clients (Node's keep-alive
// agent, curl, a WebSocket client, raw sockets for bad input): an app ->
// client proxy (upstream listener on an `http` port) -> pooled mTLS ->
// server proxies -> HTTP apps on 127.0.0.1. Balancing is per request,
// bodies pass unchanged, pooled mesh connections are reused.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { TRAFFIC_POLICY_DEFAULTS } from '../../policy/traffic-policy';
import { compileServiceRoutes, validateRouteDocument, type RouteObject } from '../../policy/routes';
import { mulberry32 } from '../../agent/proxy/balancer/random';
import { PROXY_CORES } from '../support/cores';
import type { ProxyCore } from '../../agent/proxy/proxy';
import { Proxy } from '../../agent/proxy/proxy';
import type { RequestRecord, TrafficRecord } from '../../agent/proxy/record';
import type { EndpointView, ProxySnapshot, ServiceView } from '../../agent/proxy/types';
import { logCapture } from '../support/logs';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';
import { eventually } from '../support/procs';
import { establishedTo } from '../support/proxies';

const TD = 'spiffe://kedge.test';
const CLIENT_ID = `${TD}/ns/shop/sa/frontend`;
const HOST = 'cart.shop.svc.cluster.local';
const PORT = 80;
const T = { timeout: 60_000 };

interface App {
  server: http.Server;
  port: number;
  /** Requests seen, with the headers the app got. */
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders; bodyHash: string; bytes: number }[];
  /** Distinct TCP connections the proxy opened to the app. */
  connections: () => number;
  /** Makes the app answer `status` for the next requests (0: normal). */
  mode: { status: number; delayMs: number };
}

async function app(name: string): Promise<App> {
  const seen: App['seen'] = [];
  let conns = 0;
  const mode = { status: 0, delayMs: 0 };
  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (d: Buffer) => {
      hash.update(d);
      bytes += d.length;
    });
    req.on('end', () => {
      const bodyHash = hash.digest('hex');
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyHash, bytes });
      const reply = (): void => {
        res.statusCode = mode.status || 200;
        res.setHeader('x-app', name);
        res.end(JSON.stringify({ app: name, url: req.url, bodyHash, bytes }));
      };
      if (mode.delayMs > 0) setTimeout(reply, mode.delayMs);
      else reply();
    });
  });
  server.on('connection', () => conns++);
  // Upgrade: a WebSocket echo on the same server.
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (m, binary) => ws.send(binary ? m : `${name}:${String(m)}`)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as net.AddressInfo).port, seen, connections: () => conns, mode };
}

interface Ep {
  proxy: Proxy;
  app: App;
  view: EndpointView;
}

async function endpoint(name: string, ca: ReturnType<typeof makeCa>, records: TrafficRecord[], core: ProxyCore): Promise<Ep> {
  const a = await app(name);
  const leaf = makeLeaf(ca, `${TD}/ns/shop/sa/cart-${name}`);
  const proxy = new Proxy({
    inboundListen: { host: '127.0.0.1', port: 0 },
    targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: a.port }],
    upstreams: [],
    identity: toTlsIdentity(leaf),
    logger: logCapture().logger,
    records: { open: () => undefined, finish: (r) => records.push(r) },
    core,
  });
  await proxy.start();
  const at = proxy.inboundAddress();
  return { proxy, app: a, view: { address: at.host, mtlsPort: at.port, identity: leaf.spiffeId, workload: `cart-${name}`, healthy: true, ports: [] } };
}

function service(endpoints: EndpointView[], extra: Partial<ServiceView> = {}): ServiceView {
  return { key: 'cart.shop', hostname: HOST, vip: '', ports: [{ name: 'http', port: PORT, protocol: 'http' }], endpoints, version: String(Math.random()), ...extra };
}

const snap = (...services: ServiceView[]): ProxySnapshot => ({ version: String(Math.random()), services: new Map(services.map((s) => [s.key, s])) });

/** Routes compiled for cart.shop, as the federation pushes them. */
function routes(rules: unknown[]): ServiceView['routes'] {
  const doc = {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'cart', namespace: 'shop' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'cart', port: PORT }], rules },
  };
  const r = validateRouteDocument(doc);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return compileServiceRoutes({ key: 'cart.shop', namespace: 'shop', ports: [{ name: 'http', port: PORT }] }, [r.value as RouteObject], new Map(), 'shop');
}

/** One request on `agent` (a keep-alive agent reuses its socket). */
function request(port: number, opts: { path?: string; method?: string; headers?: http.OutgoingHttpHeaders; body?: Buffer | (() => AsyncIterable<Buffer>); agent?: http.Agent } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; socketPort: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: opts.path ?? '/', method: opts.method ?? 'GET', headers: opts.headers, agent: opts.agent ?? false, timeout: 30_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, socketPort: (req.socket as net.Socket).localPort ?? 0 }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    const b = opts.body;
    if (b === undefined) req.end();
    else if (Buffer.isBuffer(b)) req.end(b);
    else
      void (async () => {
        for await (const chunk of b()) if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
        req.end();
      })();
  });
}

/** Raw bytes to `port`; resolves with everything until the proxy closes. */
function raw(port: number, bytes: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    const s = net.connect({ host: '127.0.0.1', port }, () => s.write(bytes));
    const timer = setTimeout(() => (s.destroy(), reject(new Error(`no close; got ${JSON.stringify(data.slice(0, 200))}`))), 8_000);
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

// Every case runs against each forwarding core (test/support/cores.ts): on
// the native core HTTP connections are handed to the TypeScript stacks.
for (const core of PROXY_CORES) describe(`HTTP/1.1 through the mesh (${core} core)`, () => {
  const ca = makeCa('http1-mesh');
  const serverRecords: TrafficRecord[] = [];
  const clientRecords: TrafficRecord[] = [];
  let a: Ep;
  let b: Ep;
  let client: Proxy;
  let port: number;

  before(async () => {
    [a, b] = await Promise.all([endpoint('a', ca, serverRecords, core), endpoint('b', ca, serverRecords, core)]);
    client = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [],
      upstreams: [{ service: 'cart.shop', port: PORT, listen: { host: '127.0.0.1', port: 0 } }],
      identity: toTlsIdentity(makeLeaf(ca, CLIENT_ID)),
      logger: logCapture().logger,
      random: mulberry32(7),
      records: { open: () => undefined, finish: (r) => clientRecords.push(r) },
      core,
    });
    await client.start();
    port = client.upstreamAddresses()[0]!.port;
    client.setSnapshot(snap(service([a.view, b.view], { policy: { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin' } })));
  });

  after(async () => {
    await client.close(200);
    for (const e of [a, b]) {
      await e.proxy.close(200);
      e.app.server.closeAllConnections();
      await new Promise<void>((r) => e.app.server.close(() => r()));
    }
  });

  it('balances 100 requests on one keep-alive client connection over both endpoints', T, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<number>();
    const by: Record<string, number> = {};
    for (let i = 0; i < 100; i++) {
      const r = await request(port, { agent, path: `/item/${i}` });
      assert.equal(r.status, 200);
      sockets.add(r.socketPort);
      const who = String(r.headers['x-app']);
      by[who] = (by[who] ?? 0) + 1;
    }
    agent.destroy();
    assert.equal(sockets.size, 1, 'one client connection');
    assert.deepEqual(by, { a: 50, b: 50 });
    const reqs = clientRecords.filter((r): r is RequestRecord => r.kind === 'request' && r.path.startsWith('/item/'));
    assert.equal(reqs.length, 100, 'one record per request');
    assert.ok(reqs.every((r) => r.responseCode === 200 && r.reporter === 'source' && r.protocol === 'http' && r.httpVersion === 'HTTP/1.1'));
    assert.equal(new Set(reqs.map((r) => r.upstreamHost)).size, 2);
  });

  it('reuses a few pooled mTLS connections for 100 short client connections', T, async () => {
    const before = a.proxy.stats().inbound.http.total + b.proxy.stats().inbound.http.total;
    for (let i = 0; i < 100; i++) assert.equal((await request(port, { path: `/short/${i}` })).status, 200);
    const after = a.proxy.stats().inbound.http.total + b.proxy.stats().inbound.http.total;
    assert.ok(after - before <= 2, `${after - before} new mesh connections for 100 client connections`);
    // What the kernel holds: a few pooled mTLS connections, not one per client connection.
    const established = await establishedTo([a.view.mtlsPort, b.view.mtlsPort]);
    assert.ok(established >= 1 && established <= 4, `${established} mesh connections established (ss)`);
    assert.equal(client.stats().outbound.http.total >= 100, true);
  });

  it('adds x-request-id when absent, sets x-forwarded-proto, drops hop-by-hop headers and keeps Host', T, async () => {
    const r = await request(port, { path: '/headers', headers: { host: 'cart.example', connection: 'keep-alive, x-secret', 'x-secret': '1', 'keep-alive': 'timeout=5', 'x-forwarded-proto': 'https', te: 'trailers' } });
    assert.equal(r.status, 200);
    const seen = [...a.app.seen, ...b.app.seen].find((s) => s.url === '/headers')!;
    assert.match(String(seen.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    assert.equal(seen.headers['x-forwarded-proto'], 'http');
    assert.equal(seen.headers['x-secret'], undefined, 'a header named in Connection is hop-by-hop');
    assert.equal(seen.headers['keep-alive'], undefined);
    assert.equal(seen.headers.te, undefined);
    assert.equal(seen.headers.host, 'cart.example');
    const kept = await request(port, { path: '/rid', headers: { 'x-request-id': 'given-1' } });
    assert.equal(kept.status, 200);
    assert.equal([...a.app.seen, ...b.app.seen].find((s) => s.url === '/rid')!.headers['x-request-id'], 'given-1');
    await eventually(() => serverRecords.some((x) => x.kind === 'request' && x.requestId === 'given-1' && x.reporter === 'destination' && x.source.principal === CLIENT_ID), 5_000, 'the server record');
  });

  it('carries a 50 MB chunked upload intact', T, async () => {
    const chunk = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31) & 0xff;
    const want = createHash('sha256');
    for (let i = 0; i < 50; i++) want.update(chunk);
    const r = await request(port, {
      method: 'POST',
      path: '/upload',
      body: async function* () {
        for (let i = 0; i < 50; i++) yield chunk;
      },
    });
    assert.equal(r.status, 200);
    const got = JSON.parse(r.body) as { bodyHash: string; bytes: number };
    assert.equal(got.bytes, 50 * 1024 * 1024);
    assert.equal(got.bodyHash, want.digest('hex'));
    const rec = clientRecords.find((x): x is RequestRecord => x.kind === 'request' && x.path === '/upload')!;
    assert.equal(rec.requestBytes, 50 * 1024 * 1024);
  });

  it('serves curl, with Expect: 100-continue', T, async () => {
    const body = Buffer.alloc(2 * 1024 * 1024, 'k');
    const out = await new Promise<string>((resolve, reject) => {
      const p = execFile('curl', ['-sS', '--max-time', '10', '-H', 'Expect: 100-continue', '--data-binary', '@-', '-w', '\n%{http_code}', `http://127.0.0.1:${port}/curl`], (err, stdout) => (err ? reject(err) : resolve(stdout)));
      p.stdin!.end(body);
    });
    const [json, code] = out.split('\n');
    assert.equal(code, '200');
    assert.equal((JSON.parse(json!) as { bytes: number }).bytes, body.length);
  });

  it('tunnels a WebSocket through the upstream listener', T, async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    const got: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.on('open', () => ws.send('ping'));
      ws.on('message', (m) => {
        got.push(String(m));
        if (got.length === 1) ws.send('pong');
        else ws.close();
      });
      ws.on('close', () => resolve());
      ws.on('error', reject);
    });
    assert.equal(got.length, 2);
    assert.match(got[0]!, /^[ab]:ping$/);
    await eventually(() => clientRecords.some((x) => x.kind === 'request' && x.path === '/ws' && x.responseCode === 101), 5_000, 'the upgrade record');
  });

  it('answers malformed requests with 400, 414 and 431 and keeps serving', T, async () => {
    assert.match(await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab'), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, 'BAD LINE\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, `GET /${'x'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`), /^HTTP\/1\.1 414 /);
    assert.match(await raw(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'y'.repeat(70 * 1024)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
    assert.match(await raw(port, 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.equal((await request(port, { path: '/after-bad' })).status, 200);
  });

  it('answers 503 with a response flag when the service has no endpoints', T, async () => {
    client.setSnapshot(snap(service([])));
    try {
      const r = await request(port, { path: '/none' });
      assert.equal(r.status, 503);
      assert.equal(r.headers['x-kedge-response-flags'], 'UH');
    } finally {
      client.setSnapshot(snap(service([a.view, b.view], { policy: { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin' } })));
    }
  });

  it('mirrors a request to another service and drops the mirror\'s answer', T, async () => {
    const v2: ServiceView = { ...service([b.view]), key: 'cart-v2.shop', hostname: 'cart-v2.shop.svc.cluster.local' };
    b.proxy.setTargets([
      { hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: b.app.port },
      { hostname: v2.hostname, servicePort: PORT, host: '127.0.0.1', targetPort: b.app.port },
    ]);
    const table = routes([{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'cart-v2', port: PORT } } }], backendRefs: [{ name: 'cart', port: PORT }] }]);
    client.setSnapshot(snap({ ...service([a.view]), routes: table }, v2));
    try {
      const r = await request(port, { method: 'POST', path: '/mirrored', body: Buffer.from('copy me') });
      assert.equal(r.headers['x-app'], 'a', 'the client gets the real backend\'s answer');
      const copy = await eventually(() => b.app.seen.find((x) => x.url === '/mirrored'), 5_000, 'the mirrored copy');
      assert.equal(copy.bytes, 'copy me'.length);
    } finally {
      client.setSnapshot(snap(service([a.view, b.view], { policy: { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin' } })));
    }
  });

  it('routes by header, splits by weight, rewrites and redirects as the Gateway API says', T, async () => {
    const v2: ServiceView = { ...service([b.view]), key: 'cart-v2.shop', hostname: 'cart-v2.shop.svc.cluster.local' };
    const table = routes([
      { matches: [{ headers: [{ name: 'x-canary', value: '1' }] }], backendRefs: [{ name: 'cart-v2', port: PORT }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/old' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' }, statusCode: 301 } }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/api' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v1' } } }], backendRefs: [{ name: 'cart', port: PORT }] },
      { backendRefs: [{ name: 'cart', port: PORT, weight: 90 }, { name: 'cart-v2', port: PORT, weight: 10 }] },
    ]);
    // v2 needs its own server target on b: b serves both hostnames.
    b.proxy.setTargets([
      { hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: b.app.port },
      { hostname: v2.hostname, servicePort: PORT, host: '127.0.0.1', targetPort: b.app.port },
    ]);
    client.setSnapshot(snap(service([a.view]), v2, { ...service([a.view]), routes: table }));
    try {
      for (let i = 0; i < 5; i++) assert.equal((await request(port, { path: '/c', headers: { 'x-canary': '1' } })).headers['x-app'], 'b');
      const r = await request(port, { path: '/old/x?q=1', headers: { host: 'cart.shop' } });
      assert.equal(r.status, 301);
      assert.equal(r.headers.location, 'http://cart.shop/new/x?q=1');
      assert.equal(JSON.parse((await request(port, { path: '/api/items' })).body).url, '/v1/items');
      let v2n = 0;
      const N = 2000;
      const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
      const all = await Promise.all(Array.from({ length: N }, () => request(port, { path: '/split', agent })));
      agent.destroy();
      for (const x of all) if (x.headers['x-app'] === 'b') v2n++;
      // 10% of 2000 = 200, sd ~13.4: within 4 sd.
      assert.ok(Math.abs(v2n - 200) < 54, `v2 got ${v2n} of ${N}`);
    } finally {
      client.setSnapshot(snap(service([a.view, b.view], { policy: { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin' } })));
    }
  });
});
