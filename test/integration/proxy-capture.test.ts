// Transparent capture's proxy side on loopback, without root: the original
// destination is injected (keyed by the client's source address, one per
// case) in place of SO_ORIGINAL_DST; everything else is real: the outbound
// listener, mesh mTLS to endpoint proxies, the inbound capture front, HTTP
// and TLS apps behind them.
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import type { OriginalDst } from '../../agent/native';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../policy/traffic-policy';
import { Proxy, type ProxyOptions } from '../../agent/proxy/proxy';
import type { EndpointView, ProxySnapshot, ServiceView } from '../../agent/proxy/types';
import { type HostPort } from '../../proto/model/address';
import { KedgeError } from '../../proto/model/errors';
import { buildSni } from '../../proto/model/sni';
import { makeCa, makeLeaf, type TestLeaf, toTlsIdentity } from '../support/pki';
import { logCapture, type LogLine } from '../support/logs';

const TD = 'spiffe://kedge.test';
const CLIENT_ID = `${TD}/ns/default/sa/productpage`;
const B_ID = `${TD}/ns/default/sa/reviews-b`;
const C_ID = `${TD}/ns/default/sa/reviews-c`;
const S_ID = `${TD}/ns/default/sa/strict`;
const REVIEWS = 'reviews.default.svc.cluster.local';
const STRICT = 'strict.default.svc.cluster.local';
const PORT = 9080;
const REVIEWS_VIP = '240.240.0.10';
const STRICT_VIP = '240.240.0.20';
const T = { timeout: 15_000 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, what: string, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function listening<S extends net.Server>(server: S, host = '127.0.0.1'): Promise<S> {
  return new Promise((resolve) => server.listen(0, host, () => resolve(server)));
}
const portOf = (s: net.Server): number => (s.address() as net.AddressInfo).port;
const closeServer = (s: net.Server): Promise<void> => new Promise((r) => s.close(() => r()));

/**
 * Stands in for SO_ORIGINAL_DST: each test client connects from its own
 * loopback source address, registered here with the destination it "meant".
 * An unregistered source fails as a connection iptables did not redirect.
 */
class FakeCapture {
  private readonly routes = new Map<string, OriginalDst>();
  readonly reader = (socket: net.Socket): OriginalDst => {
    const dst = this.routes.get(socket.remoteAddress ?? '');
    if (dst === undefined) throw new KedgeError('KEDGE_ORIGINAL_DST_UNAVAILABLE', 'cannot read the original destination (ENOENT): not redirected');
    return dst;
  };
  /** Registers `source` as a client that meant `address:port`; returns the source for connect's localAddress. */
  route(source: string, address: string, port: number): string {
    this.routes.set(source, { address, port, family: net.isIP(address) === 6 ? 6 : 4 });
    return source;
  }
}

function httpGet(port: number, localAddress: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, localAddress, agent: false, path: '/', timeout: 8_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('http timeout')));
  });
}

/**
 * Connects to `at` from `localAddress`, sends `payload`, half-closes (at once,
 * or when `end` is false after the first answer), and collects everything
 * until close.
 */
function exchange(at: HostPort, localAddress: string, payload?: string, end = true): Promise<{ data: string; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve, reject) => {
    let data = '';
    let error: NodeJS.ErrnoException | undefined;
    const { host, port } = at;
    const s = net.connect({ host, port, localAddress, allowHalfOpen: true });
    const timer = setTimeout(() => (s.destroy(), reject(new Error(`exchange with ${port} timed out; got ${JSON.stringify(data)}`))), 8_000);
    s.on('data', (d: Buffer) => (data += String(d)));
    s.on('error', (e) => (error = e));
    s.on('close', () => (clearTimeout(timer), resolve({ data, ...(error ? { error } : {}) })));
    if (payload !== undefined) s.write(payload);
    if (end) s.end();
    else s.once('data', () => setTimeout(() => s.end(), 50));
  });
}

/** A TCP app that greets first (server-speaks-first), then echoes. */
async function greeter(name: string): Promise<net.Server> {
  return listening(
    net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => undefined);
      s.write(`${name}\n`);
      s.pipe(s);
    }),
  );
}

/** A TLS client: the serial of the certificate the server presented, and what came back for one line. */
function tlsTalk(at: HostPort, localAddress: string, opts: tls.ConnectionOptions): Promise<{ serial?: string; data: string; error?: Error }> {
  return new Promise((resolve) => {
    let data = '';
    let serial: string | undefined;
    let error: Error | undefined;
    // localAddress reaches the TCP socket though @types/node's ConnectionOptions lacks it.
    const options: tls.ConnectionOptions & { localAddress: string } = { host: at.host, port: at.port, localAddress, rejectUnauthorized: false, ...opts };
    const s = tls.connect(options);
    const timer = setTimeout(() => s.destroy(new Error('tls talk timed out')), 5_000);
    s.on('secureConnect', () => {
      serial = s.getPeerCertificate().serialNumber?.toUpperCase();
      s.write('line\n');
      setTimeout(() => s.end(), 150);
    });
    s.on('data', (d: Buffer) => (data += String(d)));
    s.on('error', (e) => (error = e));
    s.on('close', () => (clearTimeout(timer), resolve({ data, ...(serial ? { serial } : {}), ...(error ? { error } : {}) })));
  });
}

interface Node {
  proxy: Proxy;
  lines: LogLine[];
  capture: FakeCapture;
}

async function proxyNode(leaf: TestLeaf, extra: (capture: FakeCapture) => Partial<ProxyOptions>, inboundHost = '127.0.0.1'): Promise<Node> {
  const { logger, lines } = logCapture();
  const capture = new FakeCapture();
  const proxy = new Proxy({ inboundListen: { host: inboundHost, port: 0 }, targets: [], upstreams: [], identity: toTlsIdentity(leaf), logger, connectTimeoutMs: 1_000, ...extra(capture) });
  await proxy.start();
  return { proxy, lines, capture };
}

function endpointView(n: Node, identity: string, appPort: number): EndpointView {
  const at = n.proxy.inboundAddress();
  return { address: at.host, mtlsPort: at.port, identity, workload: identity.split('/').pop()!, healthy: true, ports: [{ name: 'http', port: appPort }] };
}

function serviceView(key: string, hostname: string, vip: string, endpoints: EndpointView[], policy?: TrafficPolicy): ServiceView {
  return { key, hostname, vip, ports: [{ name: 'http', port: PORT, protocol: 'HTTP' }], endpoints, version: '1', ...(policy ? { policy } : {}) };
}

const failures = (p: Proxy, dir: 'inbound' | 'outbound', code: string): number => p.stats()[dir].failures[code] ?? 0;

describe('proxy with transparent capture', () => {
  const ca = makeCa('capture-mesh');
  const closers: Array<() => Promise<void>> = [];
  let client: Node; // allow-any, outbound capture
  let strictClient: Node; // registry-only
  let b: Node;
  let c: Node;
  let s: Node;
  let apps: Record<'b' | 'c' | 's', number>;
  let outPort: number;
  let out: HostPort;
  let strictOutPort: number;
  let snapshot: ProxySnapshot;

  before(async () => {
    const servers = await Promise.all(['b', 'c', 's'].map((n) => listening(http.createServer((_q, r) => r.end(`hello from ${n}\n`)))));
    for (const srv of servers) closers.push(() => closeServer(srv));
    apps = { b: portOf(servers[0]!), c: portOf(servers[1]!), s: portOf(servers[2]!) };
    const target = (hostname: string, app: number) => [{ hostname, servicePort: PORT, host: '127.0.0.1', targetPort: app }];
    // Distinct loopback addresses, so an endpoint's address:targetPort is its own.
    b = await proxyNode(makeLeaf(ca, B_ID), (fc) => ({ targets: target(REVIEWS, apps.b), inboundCapture: { mode: 'PERMISSIVE', originalDst: fc.reader } }), '127.0.0.2');
    c = await proxyNode(makeLeaf(ca, C_ID), (fc) => ({ targets: target(REVIEWS, apps.c), inboundCapture: { mode: 'PERMISSIVE', originalDst: fc.reader } }), '127.0.0.3');
    s = await proxyNode(makeLeaf(ca, S_ID), (fc) => ({ targets: target(STRICT, apps.s), inboundCapture: { mode: 'STRICT', originalDst: fc.reader } }), '127.0.0.4');
    const outbound = { outboundListen: [{ host: '127.0.0.1', port: 0 }] };
    client = await proxyNode(makeLeaf(ca, CLIENT_ID), (fc) => ({ ...outbound, originalDst: fc.reader }));
    strictClient = await proxyNode(makeLeaf(ca, CLIENT_ID), (fc) => ({ ...outbound, outboundPolicy: 'registry-only', originalDst: fc.reader }));
    out = client.proxy.outboundAddresses()[0]!;
    outPort = out.port;
    strictOutPort = strictClient.proxy.outboundAddresses()[0]!.port;
    // Round robin, so four requests land two and two.
    const roundRobin: TrafficPolicy = { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin' };
    const reviews = serviceView('reviews.default', REVIEWS, REVIEWS_VIP, [endpointView(b, B_ID, apps.b), endpointView(c, C_ID, apps.c)], roundRobin);
    const strict = serviceView('strict.default', STRICT, STRICT_VIP, [endpointView(s, S_ID, apps.s)]);
    snapshot = { version: 'v1', services: new Map([[reviews.key, reviews], [strict.key, strict]]) };
    for (const n of [client, strictClient]) n.proxy.setSnapshot(snapshot);
    for (const n of [client, strictClient, b, c, s]) closers.push(() => n.proxy.close(200));
  });

  after(async () => {
    await Promise.all(closers.map((f) => f()));
    for (const n of [client, strictClient, b, c, s]) {
      assert.deepEqual(n.lines.filter((l) => String(l.msg).includes('drain timed out')), []);
    }
  });

  describe('outbound (15001)', () => {
    it('routes a VIP destination over mTLS to an endpoint proxy and on to the HTTP app, round robin', T, async () => {
      const src = client.capture.route('127.0.0.11', REVIEWS_VIP, PORT);
      const bodies: string[] = [];
      for (let i = 0; i < 4; i++) bodies.push((await httpGet(outPort, src)).body);
      assert.deepEqual(bodies.sort(), ['hello from b\n', 'hello from b\n', 'hello from c\n', 'hello from c\n']);
      await waitFor(() => client.lines.filter((l) => l.msg === 'outbound' && String(l.source).startsWith('127.0.0.11')).length === 4, 'access log');
      const line = client.lines.find((l) => l.msg === 'outbound' && l.route === 'vip')!;
      assert.equal(line.originalDst, `${REVIEWS_VIP}:${PORT}`);
      assert.equal(line.service, 'reviews.default');
      assert.equal(line.sni, buildSni(PORT, REVIEWS));
      assert.ok([B_ID, C_ID].includes(String(line.peer)));
      await waitFor(() => b.lines.some((l) => l.msg === 'inbound' && l.peer === CLIENT_ID), 'b to see the client identity');
    });

    it('sends an endpoint address:targetPort destination to that very endpoint', T, async () => {
      const toB = client.capture.route('127.0.0.12', '127.0.0.2', apps.b);
      const toC = client.capture.route('127.0.0.13', '127.0.0.3', apps.c);
      for (let i = 0; i < 3; i++) {
        assert.equal((await httpGet(outPort, toB)).body, 'hello from b\n');
        assert.equal((await httpGet(outPort, toC)).body, 'hello from c\n');
      }
      const line = client.lines.find((l) => l.msg === 'outbound' && l.route === 'endpoint')!;
      assert.equal(line.service, 'reviews.default');
      assert.equal(line.attempts, 1);
    });

    it('falls back to another endpoint when the addressed one is down', T, async () => {
      const dead = await listening(net.createServer(), '127.0.0.5');
      const deadView: EndpointView = { address: '127.0.0.5', mtlsPort: portOf(dead), identity: B_ID, workload: 'dead', healthy: true, ports: [{ name: 'http', port: 7777 }] };
      await closeServer(dead);
      const reviews = snapshot.services.get('reviews.default')!;
      client.proxy.setSnapshot({ version: 'v2', services: new Map([[reviews.key, { ...reviews, endpoints: [deadView, ...reviews.endpoints] }]]) });
      try {
        const src = client.capture.route('127.0.0.14', '127.0.0.5', 7777);
        assert.match((await httpGet(outPort, src)).body, /^hello from [bc]\n$/);
        // The access log line is written when both sides have closed.
        await waitFor(() => client.lines.some((l) => l.msg === 'outbound' && String(l.source).startsWith('127.0.0.14') && l.attempts === 2), 'a second attempt');
        assert.ok(client.lines.some((l) => l.code === 'KEDGE_UPSTREAM_CONNECT_FAILED' && l.endpoint === `127.0.0.5:${deadView.mtlsPort}` && l.attempt === 1));
      } finally {
        client.proxy.setSnapshot(snapshot);
      }
    });

    it('passes an unknown destination straight through under allow-any', T, async () => {
      const app = await greeter('outside');
      closers.push(() => closeServer(app));
      const src = client.capture.route('127.0.0.15', '127.0.0.1', portOf(app));
      const before = client.proxy.stats().outbound.passthrough.total;
      const { data, error } = await exchange(out, src, 'ping\n', false);
      assert.equal(error, undefined);
      assert.equal(data, 'outside\nping\n');
      assert.equal(client.proxy.stats().outbound.passthrough.total, before + 1);
      await waitFor(() => client.lines.some((l) => l.msg === 'outbound' && l.route === 'passthrough'), 'passthrough access log');
      const line = client.lines.find((l) => l.msg === 'outbound' && l.route === 'passthrough')!;
      assert.equal(line.originalDst, `127.0.0.1:${portOf(app)}`);
      assert.equal(line.target, `127.0.0.1:${portOf(app)}`);
      assert.equal(line.bytesIn, 'ping\n'.length);
    });

    it('resets the client when a passed-through destination refuses', T, async () => {
      const gone = await listening(net.createServer());
      const port = portOf(gone);
      await closeServer(gone);
      const src = client.capture.route('127.0.0.16', '127.0.0.1', port);
      const before = failures(client.proxy, 'outbound', 'KEDGE_PASSTHROUGH_CONNECT_FAILED');
      const { data, error } = await exchange(out, src, 'x');
      assert.equal(data, '');
      assert.equal(error?.code, 'ECONNRESET');
      assert.equal(failures(client.proxy, 'outbound', 'KEDGE_PASSTHROUGH_CONNECT_FAILED'), before + 1);
    });

    it('refuses an unknown destination under registry-only and says why, but still routes the mesh', T, async () => {
      const app = await greeter('outside');
      closers.push(() => closeServer(app));
      const dst = strictClient.capture.route('127.0.0.17', '127.0.0.1', portOf(app));
      const { data, error } = await exchange({ host: '127.0.0.1', port: strictOutPort }, dst, 'ping\n');
      assert.equal(data, '');
      assert.equal(error?.code, 'ECONNRESET');
      assert.equal(failures(strictClient.proxy, 'outbound', 'KEDGE_OUTBOUND_NOT_IN_REGISTRY'), 1);
      const line = strictClient.lines.find((l) => l.code === 'KEDGE_OUTBOUND_NOT_IN_REGISTRY')!;
      assert.equal(line.msg, 'outbound connection refused');
      assert.equal(line.originalDst, `127.0.0.1:${portOf(app)}`);
      assert.equal(line.policy, 'registry-only');
      assert.match(String(line.err), /neither a service VIP:port nor an endpoint address:port/);
      const vip = strictClient.capture.route('127.0.0.18', STRICT_VIP, PORT);
      assert.equal((await httpGet(strictOutPort, vip)).body, 'hello from s\n', 'mTLS to a STRICT endpoint works');
    });

    it('closes, logs and survives when the original destination cannot be read or is the listener itself', T, async () => {
      const unread = failures(client.proxy, 'outbound', 'KEDGE_ORIGINAL_DST_UNAVAILABLE');
      const r1 = await exchange(out, '127.0.0.19', 'x'); // not registered: "not redirected"
      assert.equal(r1.data, '');
      assert.equal(failures(client.proxy, 'outbound', 'KEDGE_ORIGINAL_DST_UNAVAILABLE'), unread + 1);
      const self = client.capture.route('127.0.0.20', '127.0.0.1', outPort);
      const r2 = await exchange(out, self, 'x');
      assert.equal(r2.data, '');
      assert.equal(failures(client.proxy, 'outbound', 'KEDGE_ORIGINAL_DST_LOOP'), 1);
      assert.ok(client.lines.some((l) => l.code === 'KEDGE_ORIGINAL_DST_LOOP' && /outbound listener itself/.test(String(l.err))));
      assert.equal((await httpGet(outPort, client.capture.route('127.0.0.21', REVIEWS_VIP, PORT))).status, 200);
    });

    it('uses the native addon by default and refuses a connection that was not redirected', T, async () => {
      const n = await proxyNode(makeLeaf(ca, CLIENT_ID), () => ({ outboundListen: [{ host: '127.0.0.1', port: 0 }] }));
      try {
        const r = await exchange(n.proxy.outboundAddresses()[0]!, '127.0.0.1', 'x');
        assert.equal(r.data, '');
        // No NAT entry (ENOENT), or conntrack reporting the listener itself.
        const f = n.proxy.stats().outbound.failures;
        assert.equal((f.KEDGE_ORIGINAL_DST_UNAVAILABLE ?? 0) + (f.KEDGE_ORIGINAL_DST_LOOP ?? 0), 1, JSON.stringify(f));
      } finally {
        await n.proxy.close(100);
      }
    });
  });

  describe('inbound (15006) with capture', () => {
    it('PERMISSIVE: serves captured plaintext from the app on the original port, and mTLS on the same port', T, async () => {
      const port = b.proxy.inboundAddress().port;
      const src = b.capture.route('127.0.0.31', '198.18.0.2', apps.b);
      const before = b.proxy.stats().inbound.passthrough.total;
      const r = await new Promise<string>((resolve, reject) => {
        http.get({ host: '127.0.0.2', port, localAddress: src, agent: false }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += String(d)));
          res.on('end', () => resolve(body));
        }).on('error', reject);
      });
      assert.equal(r, 'hello from b\n');
      assert.equal(b.proxy.stats().inbound.passthrough.total, before + 1);
      await waitFor(() => b.lines.some((l) => l.msg === 'inbound' && l.route === 'plaintext'), 'plaintext access log');
      const line = b.lines.find((l) => l.msg === 'inbound' && l.route === 'plaintext')!;
      assert.equal(line.mode, 'PERMISSIVE');
      assert.equal(line.originalDst, `198.18.0.2:${apps.b}`);
      assert.equal(line.target, `127.0.0.1:${apps.b}`);
      // Mesh mTLS through the same front, via the client proxy.
      const toB = client.capture.route('127.0.0.32', '127.0.0.2', apps.b);
      assert.equal((await httpGet(outPort, toB)).body, 'hello from b\n');
    });

    it('PERMISSIVE: forwards a server-speaks-first client after the silence timeout, and a client that half-closes at once', T, async () => {
      const app = await greeter('smtp');
      closers.push(() => closeServer(app));
      const port = b.proxy.inboundAddress().port;
      const src = b.capture.route('127.0.0.33', '198.18.0.2', portOf(app));
      const started = Date.now();
      const quiet = await new Promise<string>((resolve, reject) => {
        const sock = net.connect({ host: '127.0.0.2', port, localAddress: src });
        sock.once('data', (d: Buffer) => (sock.destroy(), resolve(String(d))));
        sock.on('error', reject);
      });
      assert.equal(quiet, 'smtp\n');
      assert.ok(Date.now() - started >= 150, 'waited for the client to speak first');
      // Sent and half-closed before the proxy decided: nothing is lost, the answer still comes back.
      const r = await exchange(b.proxy.inboundAddress(), src, 'EHLO x\n');
      assert.equal(r.error, undefined);
      assert.equal(r.data, 'smtp\nEHLO x\n');
    });

    it('STRICT: refuses captured plaintext and logs it; mesh mTLS still works', T, async () => {
      const port = s.proxy.inboundAddress().port;
      const src = s.capture.route('127.0.0.41', '198.18.0.4', apps.s);
      const r = await new Promise<{ data: string; code?: string }>((resolve) => {
        let data = '';
        const sock = net.connect({ host: '127.0.0.4', port, localAddress: src });
        sock.on('connect', () => sock.write('GET / HTTP/1.1\r\nHost: s\r\n\r\n'));
        sock.on('data', (d: Buffer) => (data += String(d)));
        sock.on('error', (e: NodeJS.ErrnoException) => resolve({ data, code: e.code ?? 'error' }));
        sock.on('close', () => resolve({ data }));
      });
      assert.equal(r.data, '');
      assert.equal(failures(s.proxy, 'inbound', 'KEDGE_INBOUND_PLAINTEXT_REFUSED'), 1);
      const line = s.lines.find((l) => l.code === 'KEDGE_INBOUND_PLAINTEXT_REFUSED')!;
      assert.equal(line.mode, 'STRICT');
      assert.equal(line.originalDst, `198.18.0.4:${apps.s}`);
      assert.equal((await httpGet(outPort, client.capture.route('127.0.0.42', STRICT_VIP, PORT))).body, 'hello from s\n');
    });

    it('PERMISSIVE: passes a non-mesh TLS client through to a TLS app untouched, with or without SNI', T, async () => {
      // The app's own certificate, from a CA the mesh does not know.
      const appLeaf = makeLeaf(makeCa('app-own-ca'), 'spiffe://app.example/tls-app');
      const seen: Array<string | false | null> = [];
      const app = await listening(
        tls.createServer({ cert: appLeaf.certPem, key: appLeaf.keyPem }, (sock) => {
          seen.push(sock.servername);
          sock.on('error', () => undefined);
          sock.on('data', (d: Buffer) => sock.write(`app got ${String(d)}`));
        }),
      );
      closers.push(() => closeServer(app));
      const src = b.capture.route('127.0.0.34', '198.18.0.2', portOf(app));
      for (const servername of ['app.example.com', undefined]) {
        const r = await tlsTalk(b.proxy.inboundAddress(), src, servername ? { servername } : {});
        assert.equal(r.error, undefined);
        assert.equal(r.serial, appLeaf.serial, 'the app, not the proxy, terminated TLS');
        assert.equal(r.data, 'app got line\n');
      }
      assert.deepEqual(seen, ['app.example.com', false]);
      await waitFor(() => b.lines.filter((l) => l.msg === 'inbound' && l.route === 'tls-passthrough').length === 2, 'tls passthrough access logs');
      const line = b.lines.find((l) => l.msg === 'inbound' && l.route === 'tls-passthrough')!;
      assert.equal(line.sni, 'app.example.com');
      assert.equal(line.originalDst, `198.18.0.2:${portOf(app)}`);
    });

    it('hands mesh TLS to the TLS server with the current certificate after rotation, and refuses clients without one', T, async () => {
      const at = c.proxy.inboundAddress();
      const sni = buildSni(PORT, REVIEWS);
      const rotated = makeLeaf(ca, C_ID, 'rotated');
      c.proxy.setIdentity(toTlsIdentity(rotated));
      const clientLeaf = makeLeaf(ca, CLIENT_ID);
      const ok = await tlsTalk(at, '127.0.0.35', { servername: sni, cert: clientLeaf.certPem, key: clientLeaf.keyPem });
      assert.equal(ok.serial, rotated.serial);
      assert.match(ok.data, /^HTTP\/1\.1 400/, 'reached the HTTP app behind the mesh target');
      const before = failures(c.proxy, 'inbound', 'KEDGE_TLS_HANDSHAKE_FAILED');
      const refused = await tlsTalk(at, '127.0.0.36', { servername: sni });
      assert.equal(refused.data, '');
      await waitFor(() => failures(c.proxy, 'inbound', 'KEDGE_TLS_HANDSHAKE_FAILED') === before + 1, 'handshake refusal counted');
    });

    it('drops a client that hangs up in the middle of its ClientHello at once', T, async () => {
      const before = failures(b.proxy, 'inbound', 'KEDGE_TLS_HANDSHAKE_FAILED');
      const started = Date.now();
      const r = await exchange(b.proxy.inboundAddress(), '127.0.0.37', '\x16\x03\x01\x02\x00\x01');
      assert.equal(r.data, '');
      assert.ok(Date.now() - started < 1_000);
      await waitFor(() => failures(b.proxy, 'inbound', 'KEDGE_TLS_HANDSHAKE_FAILED') === before + 1, 'refusal counted');
    });

    it('closes a mesh handshake at once when the client hangs up after its ClientHello (not half-open)', T, async () => {
      const hello = await new Promise<Buffer>((resolve) => {
        const grab = net.createServer((sock) => sock.once('data', (d: Buffer) => (resolve(d), sock.destroy(), grab.close())));
        grab.listen(0, '127.0.0.1', () => {
          const t = tls.connect({ host: '127.0.0.1', port: portOf(grab), servername: buildSni(PORT, REVIEWS), rejectUnauthorized: false });
          t.on('error', () => undefined);
        });
      });
      const started = Date.now();
      const closed = await new Promise<number>((resolve) => {
        const sock = net.connect({ ...b.proxy.inboundAddress(), localAddress: '127.0.0.30', allowHalfOpen: true });
        sock.on('error', () => undefined);
        sock.on('data', () => undefined);
        // Hang up once the front has handed the socket to the TLS server.
        sock.on('connect', () => (sock.write(hello), setTimeout(() => sock.end(), 100)));
        sock.on('close', () => resolve(Date.now() - started));
      });
      assert.ok(closed < 2_000, `closed after ${closed} ms; the handshake timeout is 10 s`);
    });

    it('refuses plaintext that was not redirected (dialled straight at the inbound port)', T, async () => {
      const before = failures(b.proxy, 'inbound', 'KEDGE_ORIGINAL_DST_UNAVAILABLE');
      const r = await exchange(b.proxy.inboundAddress(), '127.0.0.38', 'GET / HTTP/1.0\r\n\r\n');
      assert.equal(r.data, '');
      assert.equal(failures(b.proxy, 'inbound', 'KEDGE_ORIGINAL_DST_UNAVAILABLE'), before + 1);
      const loop = b.capture.route('127.0.0.39', '198.18.0.2', b.proxy.inboundAddress().port);
      assert.equal((await exchange(b.proxy.inboundAddress(), loop, 'GET / HTTP/1.0\r\n\r\n')).data, '');
      assert.ok(failures(b.proxy, 'inbound', 'KEDGE_ORIGINAL_DST_LOOP') >= 1);
    });

    it('without inbound capture, plaintext never reaches the app', T, async () => {
      const fc = new FakeCapture();
      const n = await proxyNode(makeLeaf(ca, B_ID), () => ({ targets: [{ hostname: REVIEWS, servicePort: PORT, host: '127.0.0.1', targetPort: apps.b }] }));
      try {
        fc.route('127.0.0.40', '198.18.0.2', apps.b);
        const r = await exchange(n.proxy.inboundAddress(), '127.0.0.40', 'GET / HTTP/1.0\r\n\r\n');
        assert.doesNotMatch(r.data, /hello/);
        assert.equal(n.proxy.stats().inbound.passthrough.total, 0);
      } finally {
        await n.proxy.close(100);
      }
    });
  });

  it('leaves no connection open behind', T, async () => {
    // Pooled HTTP connections between proxies stay open while idle, by
    // design; every other connection, and every request, is over.
    const open = (d: { active: number; http: { active: number } }): number => d.active - d.http.active;
    for (const n of [client, strictClient, b, c, s]) {
      await waitFor(() => open(n.proxy.stats().inbound) === 0 && open(n.proxy.stats().outbound) === 0, 'all connections to close');
    }
    // The application side of each HTTP exchange is closed too: only pooled mesh connections remain.
    for (const n of [client, strictClient]) assert.equal(n.proxy.stats().outbound.http.active, 0);
  });
});
