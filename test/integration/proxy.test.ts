// The data path end to end with real sockets and real TLS on 127.0.0.1:
// a client proxy's upstream listener, endpoint proxies' inbound listeners,
// and plain TCP/HTTP servers behind them that say who they are.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../policy/traffic-policy';
import { mulberry32 } from '../../agent/proxy/balancer/random';
import { Proxy } from '../../agent/proxy/proxy';
import type { EndpointView, LocalTarget, ProxySnapshot, UpstreamSpec } from '../../agent/proxy/types';
import { formatHostPort, type HostPort } from '../../proto/model/address';
import { parseLocality } from '../../proto/model/locality';
import { hasCode } from '../../proto/model/errors';
import { buildSni } from '../../proto/model/sni';
import { makeCa, makeLeaf, type TestLeaf, toTlsIdentity } from '../support/pki';
import { logCapture, type LogLine } from '../support/logs';
import { PROXY_CORES } from '../support/cores';
import type { ProxyCore } from '../../agent/proxy/proxy';

const TD = 'spiffe://kedge.test';
const CLIENT_ID = `${TD}/ns/shop/sa/frontend`;
const A_ID = `${TD}/ns/shop/sa/cart-a`;
const B_ID = `${TD}/ns/shop/sa/cart-b`;
const IMPOSTOR_ID = `${TD}/ns/shop/sa/impostor`;
const HOST = 'cart.shop.svc.cluster.local';
const TCP_PORT = 8080;
const HTTP_PORT = 80;
const SNI = buildSni(TCP_PORT, HOST);
const LOCAL = { host: '127.0.0.1', port: 0 };
const T = { timeout: 15_000 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, what: string, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function listening<S extends net.Server>(server: S): Promise<S> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const portOf = (s: net.Server): number => (s.address() as net.AddressInfo).port;
const closeServer = (s: net.Server): Promise<void> => new Promise((r) => s.close(() => r()));

/** A TCP server that writes its name, then echoes; counts connections. */
async function whoServer(name: string): Promise<{ server: net.Server; port: number; connections: () => number }> {
  let n = 0;
  const server = await listening(
    net.createServer((s) => {
      n++;
      s.on('error', () => undefined);
      s.write(`${name}\n`);
      s.pipe(s);
    }),
  );
  return { server, port: portOf(server), connections: () => n };
}

async function httpServer(name: string): Promise<http.Server> {
  return listening(http.createServer((_req, res) => res.end(`hello from ${name}\n`)));
}

/** Connects, sends `payload`, half-closes and collects everything until close. */
function exchange(port: number, payload: string | Buffer = 'ping\n', timeoutMs = 8_000): Promise<{ data: Buffer; error?: Error }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let error: Error | undefined;
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`exchange with port ${port} timed out`));
    }, timeoutMs);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (e) => (error = e));
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks), ...(error ? { error } : {}) });
    });
    s.end(payload);
  });
}

/** A direct TLS client to an inbound listener: sends a line and collects what comes back. */
function tlsProbe(at: HostPort, servername: string, leaf?: TestLeaf): Promise<{ data: string; serial?: string; error?: Error }> {
  return new Promise((resolve, reject) => {
    let data = '';
    let serial: string | undefined;
    let error: Error | undefined;
    const s = tls.connect({
      host: at.host,
      port: at.port,
      servername,
      rejectUnauthorized: false,
      ...(leaf ? { cert: leaf.certPem, key: leaf.keyPem } : {}),
    });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('tls probe timed out'));
    }, 5_000);
    s.on('secureConnect', () => {
      serial = s.getPeerCertificate().serialNumber?.toUpperCase();
      s.write('probe\n');
      // Long enough for the target's greeting to arrive; then hang up.
      setTimeout(() => s.end(), 150);
    });
    s.on('data', (d: Buffer) => (data += String(d)));
    s.on('error', (e) => (error = e));
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ data, ...(serial ? { serial } : {}), ...(error ? { error } : {}) });
    });
  });
}

interface Endpoint {
  proxy: Proxy;
  lines: LogLine[];
  view: (identity?: string, healthy?: boolean) => EndpointView;
}

async function endpoint(leaf: TestLeaf, tcpPort: number, httpPort: number, core: ProxyCore): Promise<Endpoint> {
  const { logger, lines } = logCapture();
  const targets: LocalTarget[] = [
    { hostname: HOST, servicePort: TCP_PORT, host: '127.0.0.1', targetPort: tcpPort },
    { hostname: HOST, servicePort: HTTP_PORT, host: '127.0.0.1', targetPort: httpPort },
  ];
  const proxy = new Proxy({ inboundListen: LOCAL, targets, upstreams: [], identity: toTlsIdentity(leaf), logger, core });
  await proxy.start();
  const at = proxy.inboundAddress();
  return { proxy, lines, view: (identity = leaf.spiffeId, healthy = true) => ({ address: at.host, mtlsPort: at.port, identity, workload: leaf.spiffeId.split('/').pop()!, healthy, ports: [] }) };
}

// The client runs in us-east/zone-a. Tests that need a fixed attempt order
// place endpoints in zones: the client's own zone is tried first, then the
// rest of its region, then other regions.
const CLIENT_TOPOLOGY = { locality: parseLocality('us-east/zone-a'), network: '', labels: {} };
const inZone = (e: EndpointView, locality: string): EndpointView => ({ ...e, locality: parseLocality(locality) });
const ROUND_ROBIN: TrafficPolicy = { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin' };

function snapshot(endpoints: EndpointView[], version = 'v1', policy?: TrafficPolicy): ProxySnapshot {
  const view = {
    key: 'cart.shop',
    hostname: HOST,
    vip: '10.0.0.10',
    ports: [
      { name: 'tcp', port: TCP_PORT, protocol: 'TCP' },
      { name: 'http', port: HTTP_PORT, protocol: 'HTTP' },
    ],
    endpoints,
    version,
    ...(policy ? { policy } : {}),
  };
  return { version, services: new Map([['cart.shop', view]]) };
}

const firstLine = (b: Buffer): string => String(b).split('\n')[0]!;
const failures = (p: Proxy, dir: 'inbound' | 'outbound', code: string): number => p.stats()[dir].failures[code] ?? 0;

// Every case runs against each forwarding core (test/support/cores.ts).
for (const core of PROXY_CORES) describe(`proxy data path (${core} core)`, () => {
  const ca = makeCa('mesh');
  const clientLeaf = makeLeaf(ca, CLIENT_ID);
  const closers: Array<() => Promise<void>> = [];
  let a: Endpoint;
  let b: Endpoint;
  let impostor: Endpoint;
  let client: Proxy;
  let clientLog: LogLine[];
  let tcpPort: number;
  let httpPortOf: number;
  let whoAPort: number;

  before(async () => {
    const [whoA, whoB, whoI] = await Promise.all([whoServer('a'), whoServer('b'), whoServer('impostor')]);
    const [httpA, httpB] = await Promise.all([httpServer('a'), httpServer('b')]);
    for (const s of [whoA.server, whoB.server, whoI.server, httpA, httpB]) closers.push(() => closeServer(s));
    whoAPort = whoA.port;
    a = await endpoint(makeLeaf(ca, A_ID), whoA.port, portOf(httpA), core);
    b = await endpoint(makeLeaf(ca, B_ID), whoB.port, portOf(httpB), core);
    impostor = await endpoint(makeLeaf(ca, IMPOSTOR_ID), whoI.port, portOf(httpA), core);
    const upstreams: UpstreamSpec[] = [
      { service: 'cart.shop', port: TCP_PORT, listen: LOCAL },
      { service: 'cart.shop', port: HTTP_PORT, listen: LOCAL },
    ];
    const log = logCapture();
    clientLog = log.lines;
    client = new Proxy({ inboundListen: LOCAL, targets: [], upstreams, identity: toTlsIdentity(clientLeaf), logger: log.logger, connectTimeoutMs: 500, client: CLIENT_TOPOLOGY, random: mulberry32(5), core });
    await client.start();
    [tcpPort, httpPortOf] = client.upstreamAddresses().map((x) => x.port) as [number, number];
    for (const p of [a.proxy, b.proxy, impostor.proxy, client]) closers.push(() => p.close(200));
  });

  after(async () => {
    await Promise.all(closers.map((c) => c()));
    // Every connection ended on its own; none had to be destroyed by the drain.
    for (const lines of [a.lines, b.lines, impostor.lines, clientLog]) {
      assert.deepEqual(lines.filter((l) => String(l.msg).includes('drain timed out')), []);
    }
  });

  it('round-robins over both endpoints over mTLS and records the client identity', T, async () => {
    client.setSnapshot(snapshot([a.view(), b.view()], 'v1', ROUND_ROBIN));
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) {
      const { data, error } = await exchange(tcpPort, `hello ${i}\n`);
      assert.equal(error, undefined);
      const [who, echo] = String(data).split('\n');
      seen.push(who!);
      assert.equal(echo, `hello ${i}`);
    }
    assert.deepEqual([...seen].sort(), ['a', 'a', 'b', 'b']);
    for (const ep of [a, b]) {
      await waitFor(() => ep.lines.filter((l) => l.msg === 'inbound').length >= 2, 'inbound access log');
      const logs = ep.lines.filter((l) => l.msg === 'inbound');
      for (const l of logs) {
        assert.equal(l.peer, CLIENT_ID);
        assert.equal(l.sni, SNI);
        assert.equal(l.bytesIn, 'hello 0\n'.length);
        assert.equal(typeof l.durationMs, 'number');
      }
      // The second connection to the same endpoint resumed the TLS session,
      // and the server still knows the client identity.
      assert.equal(logs.at(-1)!.resumed, true);
      const byPeer = ep.proxy.stats().inbound.byPeer[CLIENT_ID]!;
      assert.equal(byPeer.total, 2);
      assert.equal(byPeer.failed, 0);
    }
    await waitFor(() => client.stats().outbound.active === 0, 'outbound connections to close');
    const out = client.stats().outbound;
    assert.equal(out.byEndpoint[formatHostPort(a.proxy.inboundAddress())]!.total, 2);
    assert.equal(out.byEndpoint[formatHostPort(b.proxy.inboundAddress())]!.total, 2);
    assert.ok(clientLog.some((l) => l.msg === 'outbound' && l.peer === A_ID && l.bytesOut === 'hello 0\n'.length));
    // The core under test carried them, on both sides.
    const carried = (l: LogLine): boolean => (core === 'native' ? l.core === 'native' : l.core === undefined);
    assert.ok(clientLog.filter((l) => l.msg === 'outbound').every(carried));
    assert.ok(a.lines.filter((l) => l.msg === 'inbound').every(carried));
  });

  it('carries large transfers with backpressure and half-close', T, async () => {
    client.setSnapshot(snapshot([a.view()]));
    const payload = Buffer.alloc(8 * 1024 * 1024, 'kedge-');
    const { data, error } = await exchange(tcpPort, payload);
    assert.equal(error, undefined);
    const body = data.subarray('a\n'.length);
    assert.equal(body.length, payload.length);
    assert.equal(createHash('sha256').update(body).digest('hex'), createHash('sha256').update(payload).digest('hex'));
  });

  it('serves real curl through the upstream listener', T, async () => {
    client.setSnapshot(snapshot([a.view(), b.view()], 'v1', ROUND_ROBIN));
    const bodies: string[] = [];
    for (let i = 0; i < 2; i++) {
      bodies.push(
        await new Promise<string>((resolve, reject) =>
          execFile('curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${httpPortOf}/`], (err, stdout) => (err ? reject(err) : resolve(stdout))),
        ),
      );
    }
    assert.deepEqual(bodies.sort(), ['hello from a\n', 'hello from b\n']);
  });

  it('refuses clients with no certificate or one from another CA at the handshake', T, async () => {
    const at = a.proxy.inboundAddress();
    const before = failures(a.proxy, 'inbound', 'KEDGE_TLS_HANDSHAKE_FAILED');
    const other = makeLeaf(makeCa('other-mesh'), CLIENT_ID);
    for (const leaf of [undefined, other]) {
      const r = await tlsProbe(at, SNI, leaf);
      // TLS 1.3 clients finish their side of the handshake before the server
      // checks their certificate, so the refusal arrives as an alert or a
      // close right after; what matters is that nothing gets through.
      assert.equal(r.data, '', 'no byte from the target may reach an unauthenticated client');
    }
    await waitFor(() => failures(a.proxy, 'inbound', 'KEDGE_TLS_HANDSHAKE_FAILED') === before + 2, 'handshake failures counted');
    const reasons = a.lines.filter((l) => String(l.msg).includes('handshake refused')).map((l) => l.reason);
    assert.ok(reasons.includes('ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE'), `reasons: ${reasons.join(', ')}`);
    assert.ok(reasons.includes('UNABLE_TO_VERIFY_LEAF_SIGNATURE'), `reasons: ${reasons.join(', ')}`);
  });

  it('refuses unknown and non-mesh SNIs', T, async () => {
    const at = a.proxy.inboundAddress();
    const noTarget = failures(a.proxy, 'inbound', 'KEDGE_NO_LOCAL_TARGET');
    const badSni = failures(a.proxy, 'inbound', 'KEDGE_BAD_SNI');
    for (const sni of [buildSni(9999, HOST), buildSni(TCP_PORT, 'other.shop.svc.cluster.local'), 'cart.example.com']) {
      const r = await tlsProbe(at, sni, clientLeaf);
      assert.equal(r.data, '', `SNI ${sni} must not reach a target`);
    }
    await waitFor(() => failures(a.proxy, 'inbound', 'KEDGE_NO_LOCAL_TARGET') === noTarget + 2, 'no-target refusals');
    assert.equal(failures(a.proxy, 'inbound', 'KEDGE_BAD_SNI'), badSni + 1);
  });

  it('moves off an endpoint whose certificate is not its registered identity, and ejects it after three', T, async () => {
    // The impostor endpoint is registered as B but presents its own identity;
    // in the client's zone it is tried first until outlier detection ejects it.
    client.setSnapshot(snapshot([inZone(impostor.view(B_ID), 'us-east/zone-a'), inZone(a.view(), 'us-west/zone-a')]));
    const before = failures(client, 'outbound', 'KEDGE_PEER_IDENTITY_MISMATCH');
    for (let i = 0; i < 5; i++) {
      const { data, error } = await exchange(tcpPort);
      assert.equal(error, undefined);
      assert.equal(firstLine(data), 'a');
    }
    assert.equal(failures(client, 'outbound', 'KEDGE_PEER_IDENTITY_MISMATCH'), before + 3);
    assert.equal(client.stats().outbound.byEndpoint[formatHostPort(impostor.proxy.inboundAddress())]!.failed, 3);
    assert.ok(clientLog.some((l) => l.msg === 'endpoint ejected by outlier detection' && l.endpoint === formatHostPort(impostor.proxy.inboundAddress())));
    assert.equal(client.describeBalancers().services['cart.shop']!.endpoints[0]!.health, 'ejected');
    const warn = clientLog.find((l) => l.code === 'KEDGE_PEER_IDENTITY_MISMATCH')!;
    assert.match(String(warn.err), new RegExp(`presented ${IMPOSTOR_ID} but the endpoint is registered as ${B_ID}`));
  });

  it('closes the client when the only endpoint has the wrong identity', T, async () => {
    client.setSnapshot(snapshot([impostor.view(B_ID)]));
    const unavailable = failures(client, 'outbound', 'KEDGE_UPSTREAM_UNAVAILABLE');
    const { data } = await exchange(tcpPort);
    assert.equal(data.length, 0);
    assert.equal(failures(client, 'outbound', 'KEDGE_UPSTREAM_UNAVAILABLE'), unavailable + 1);
  });

  it('checks the identity on resumed TLS sessions too', T, async () => {
    client.setSnapshot(snapshot([a.view()]));
    for (let i = 0; i < 2; i++) assert.equal(firstLine((await exchange(tcpPort)).data), 'a');
    await waitFor(() => a.lines.at(-1)?.msg === 'inbound' && a.lines.at(-1)?.resumed === true, 'a resumed session');
    // Same address, session cached, but the registration now says B: a
    // resumed handshake skips Node's checkServerIdentity, ours must not be.
    client.setSnapshot(snapshot([a.view(B_ID)]));
    const before = failures(client, 'outbound', 'KEDGE_PEER_IDENTITY_MISMATCH');
    const { data } = await exchange(tcpPort);
    assert.equal(data.length, 0);
    assert.equal(failures(client, 'outbound', 'KEDGE_PEER_IDENTITY_MISMATCH'), before + 1);
  });

  it('retries a dead or stalled endpoint on the next one without the client noticing', T, async () => {
    const dead = await listening(net.createServer());
    const deadPort = portOf(dead);
    await closeServer(dead);
    // Accepts TCP but never speaks TLS: only the connect timeout gets us out.
    const stalledSockets: net.Socket[] = [];
    const stalled = await listening(net.createServer({ pauseOnConnect: true }, (s) => stalledSockets.push(s)));
    try {
      const view = (port: number, locality: string): EndpointView => inZone({ ...a.view(), mtlsPort: port, workload: `dead-${port}` }, locality);
      // Each connection tries the client's zone (dead), then the rest of the
      // region (stalled), then the other region (b): one attempt per priority.
      client.setSnapshot(snapshot([view(deadPort, 'us-east/zone-a'), view(portOf(stalled), 'us-east/zone-b'), inZone(b.view(), 'us-west/zone-a')]));
      const refused = failures(client, 'outbound', 'KEDGE_UPSTREAM_CONNECT_FAILED');
      const timedOut = failures(client, 'outbound', 'KEDGE_CONNECT_TIMEOUT');
      for (let i = 0; i < 3; i++) {
        const { data, error } = await exchange(tcpPort);
        assert.equal(error, undefined);
        assert.equal(firstLine(data), 'b');
      }
      assert.equal(failures(client, 'outbound', 'KEDGE_UPSTREAM_CONNECT_FAILED'), refused + 3);
      assert.equal(failures(client, 'outbound', 'KEDGE_CONNECT_TIMEOUT'), timedOut + 3);
      // Three failures each: both are ejected, and the next connection goes
      // straight to b: no new refusal, and no attempt that waits for the timeout.
      assert.equal(firstLine((await exchange(tcpPort)).data), 'b');
      assert.equal(failures(client, 'outbound', 'KEDGE_UPSTREAM_CONNECT_FAILED'), refused + 3);
      assert.equal(failures(client, 'outbound', 'KEDGE_CONNECT_TIMEOUT'), timedOut + 3);
    } finally {
      for (const s of stalledSockets) s.destroy();
      await closeServer(stalled);
    }
  });

  it('fails fast, without waiting for the timeout, on an endpoint that hangs up during the handshake', T, async () => {
    const hangup = await listening(net.createServer((s) => s.destroy()));
    try {
      client.setSnapshot(snapshot([inZone({ ...a.view(), mtlsPort: portOf(hangup), workload: 'hangup' }, 'us-east/zone-a'), inZone(b.view(), 'us-west/zone-a')]));
      const tlsFailed = failures(client, 'outbound', 'KEDGE_UPSTREAM_TLS_FAILED');
      const timedOut = failures(client, 'outbound', 'KEDGE_CONNECT_TIMEOUT');
      for (let i = 0; i < 2; i++) assert.equal(firstLine((await exchange(tcpPort)).data), 'b');
      assert.equal(failures(client, 'outbound', 'KEDGE_UPSTREAM_TLS_FAILED'), tlsFailed + 2);
      assert.equal(failures(client, 'outbound', 'KEDGE_CONNECT_TIMEOUT'), timedOut);
    } finally {
      await closeServer(hangup);
    }
  });

  it('closes the client when the service is unknown or has no endpoints', T, async () => {
    const unknown = failures(client, 'outbound', 'KEDGE_UNKNOWN_SERVICE');
    const none = failures(client, 'outbound', 'KEDGE_NO_ENDPOINTS');
    client.setSnapshot({ version: 'empty', services: new Map() });
    assert.equal((await exchange(tcpPort)).data.length, 0);
    client.setSnapshot(snapshot([]));
    assert.equal((await exchange(tcpPort)).data.length, 0);
    assert.equal(failures(client, 'outbound', 'KEDGE_UNKNOWN_SERVICE'), unknown + 1);
    assert.equal(failures(client, 'outbound', 'KEDGE_NO_ENDPOINTS'), none + 1);
  });

  it('rotates certificates without disturbing a streaming connection', T, async () => {
    client.setSnapshot(snapshot([a.view()]));
    const sock = net.connect({ host: '127.0.0.1', port: tcpPort });
    let received = '';
    let closed = false;
    sock.on('data', (d: Buffer) => (received += String(d)));
    sock.on('close', () => (closed = true));
    sock.on('error', () => undefined);
    try {
      await waitFor(() => received.startsWith('a\n'), 'the stream to open');
      const send = async (from: number, to: number): Promise<void> => {
        for (let i = from; i < to; i++) {
          sock.write(`tick ${i}\n`);
          await waitFor(() => received.endsWith(`tick ${i}\n`), `echo of tick ${i}`);
        }
      };
      await send(0, 5);
      const rotatedA = makeLeaf(ca, A_ID, 'rotated');
      a.proxy.setIdentity(toTlsIdentity(rotatedA));
      client.setIdentity(toTlsIdentity(makeLeaf(ca, CLIENT_ID, 'rotated')));
      await send(5, 10);
      assert.equal(closed, false, 'the old connection keeps flowing');
      const probe = await tlsProbe(a.proxy.inboundAddress(), SNI, clientLeaf);
      assert.equal(probe.serial, rotatedA.serial, 'new connections get the new certificate');
      assert.equal(firstLine(Buffer.from(probe.data)), 'a');
      // A new connection through the rotated client still verifies and works.
      assert.equal(firstLine((await exchange(tcpPort)).data), 'a');
      await send(10, 12);
      assert.equal(closed, false);
    } finally {
      sock.destroy();
    }
  });

  it('close() drains for the given time, then destroys open connections', T, async () => {
    const draining = await endpoint(makeLeaf(ca, A_ID), whoAPort, whoAPort, core);
    client.setSnapshot(snapshot([draining.view()]));
    const sock = net.connect({ host: '127.0.0.1', port: tcpPort });
    let received = '';
    let closed = false;
    sock.on('data', (d: Buffer) => (received += String(d)));
    sock.on('close', () => (closed = true));
    sock.on('error', () => undefined);
    try {
      await waitFor(() => received === 'a\n', 'the connection to open');
      const started = Date.now();
      await draining.proxy.close(300);
      const took = Date.now() - started;
      assert.ok(took >= 250 && took < 2_000, `close took ${took} ms`);
      assert.ok(draining.lines.some((l) => l.msg === 'proxy drain timed out; destroying open connections' && l.sockets === 2));
      await waitFor(() => closed, 'the client connection to be closed');
      assert.throws(() => draining.proxy.inboundAddress(), (err) => hasCode(err, 'KEDGE_NOT_LISTENING'));
    } finally {
      sock.destroy();
    }
  });

  it('leaves no connection open behind', T, async () => {
    for (const p of [a.proxy, b.proxy, impostor.proxy, client]) {
      await waitFor(() => p.stats().inbound.active === 0 && p.stats().outbound.active === 0, 'all connections to close');
    }
  });

  it('fails to start with KEDGE_LISTEN_FAILED on a bind conflict and closes what it bound', T, async () => {
    const taken = await listening(net.createServer());
    try {
      const proxy = new Proxy({
        inboundListen: LOCAL,
        targets: [],
        upstreams: [{ service: 'cart.shop', port: TCP_PORT, listen: { host: '127.0.0.1', port: portOf(taken) } }],
        identity: toTlsIdentity(clientLeaf),
        logger: logCapture().logger,
        core,
      });
      await assert.rejects(proxy.start(), (err) => {
        assert.ok(hasCode(err, 'KEDGE_LISTEN_FAILED'));
        assert.match((err as Error).message, new RegExp(`127\\.0\\.0\\.1:${portOf(taken)} \\(EADDRINUSE\\)`));
        return true;
      });
      assert.throws(() => proxy.inboundAddress(), (err) => hasCode(err, 'KEDGE_NOT_LISTENING'));
      await proxy.close(0);
    } finally {
      await closeServer(taken);
    }
  });
});
