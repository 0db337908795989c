// The east-west gateway with real sockets and real TLS on 127.0.0.1. The
// gateway runs in its own process, so "it holds no TLS context" is checked
// on a process that carried the traffic: Node's TLS implementation was never
// even loaded there. Clients do real mTLS through it to Node TLS servers
// standing in for endpoint proxies, and, last, a real client proxy reaches a
// real server proxy through it with the views the federation computes.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import type { GatewayStats } from '../../agent/gateway/gateway';
import { Proxy } from '../../agent/proxy/proxy';
import type { EndpointView, ProxySnapshot, ServiceView } from '../../agent/proxy/types';
import { toProxySnapshot } from '../../agent/registration/updates';
import { type GatewayInfo, gatewayView, substituteGateways } from '../../federation/mesh/gateways';
import { serviceVersion } from '../../federation/mesh/merge';
import type { MeshEndpoint, MeshService } from '../../federation/mesh/types';
import type { HostPort } from '../../proto/model/address';
import { buildSni } from '../../proto/model/sni';
import { uriSans } from '../../proto/model/spiffe';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';

const TD = 'spiffe://cluster.local';
const CLIENT_ID = `${TD}/ns/default/sa/productpage`;
const REVIEWS_ID = `${TD}/ns/default/sa/reviews`;
const HOST = 'reviews.default.svc.cluster.local';
const PORT = 9080;
const SNI = buildSni(PORT, HOST); // outbound_.9080_._.reviews.default.svc.cluster.local
const HELLO_TIMEOUT_MS = 1_500;
const T = { timeout: 30_000 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- the gateway process -----------------------------------------------------

// Runs an EastWestGateway from the compiled tree; takes snapshots and
// questions over IPC. The gateway gets no certificate or key: it has none.
const CHILD = `
const { EastWestGateway } = require(process.env.GATEWAY_JS);
const pino = require(require.resolve('pino', { paths: [process.env.REPO] }));
let snapshot = { version: '', services: new Map() };
const gw = new EastWestGateway({
  listen: { host: '127.0.0.1', port: 0 },
  snapshot: () => snapshot,
  logger: pino({ level: process.env.KEDGE_TEST_VERBOSE ? 'debug' : 'silent' }, pino.destination(2)),
  helloTimeoutMs: Number(process.env.HELLO_TIMEOUT_MS),
  connectTimeoutMs: 1000,
});
process.on('message', (m) => {
  if (m.type === 'snapshot') snapshot = { version: m.version, services: new Map(m.services.map((s) => [s.key, s])) };
  const reply = { id: m.id };
  if (m.type === 'stats') reply.stats = gw.stats();
  if (m.type === 'modules') reply.modules = process.moduleLoadList;
  process.send(reply);
});
process.on('disconnect', () => process.exit(0));
gw.start().then(() => process.send({ ready: gw.address() }), (err) => { console.error(err); process.exit(1); });
`;

class GatewayProcess {
  private nextId = 0;
  private readonly waiting = new Map<number, (m: Record<string, unknown>) => void>();
  address!: HostPort;

  constructor(readonly child: ChildProcess) {
    child.on('message', (m: Record<string, unknown>) => {
      const w = this.waiting.get(m.id as number);
      if (w) {
        this.waiting.delete(m.id as number);
        w(m);
      }
    });
  }

  static async start(): Promise<GatewayProcess> {
    const repo = path.resolve(__dirname, '..', '..', '..');
    const child = spawn(process.execPath, ['-e', CHILD], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, GATEWAY_JS: path.resolve(__dirname, '..', '..', 'agent', 'gateway', 'gateway.js'), REPO: repo, HELLO_TIMEOUT_MS: String(HELLO_TIMEOUT_MS) },
    });
    children.add(child);
    child.once('exit', () => children.delete(child));
    const g = new GatewayProcess(child);
    g.address = await new Promise<HostPort>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`gateway process exited with ${code}`)));
      child.on('message', (m: { ready?: HostPort }) => m.ready && resolve(m.ready));
    });
    return g;
  }

  private ask(m: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.child.send({ ...m, id });
    });
  }

  async setSnapshot(s: ProxySnapshot): Promise<void> {
    await this.ask({ type: 'snapshot', version: s.version, services: [...s.services.values()] });
  }

  async stats(): Promise<GatewayStats> {
    return (await this.ask({ type: 'stats' })).stats as GatewayStats;
  }

  async modules(): Promise<string[]> {
    return (await this.ask({ type: 'modules' })).modules as string[];
  }
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

// ---- endpoints and clients -----------------------------------------------------

/**
 * A Node TLS server standing in for an endpoint's proxy: presents the
 * reviews identity, requires a mesh client certificate, and answers each
 * connection with who it is, whom it saw and the SNI it got.
 */
async function serverProxy(name: string): Promise<{ server: tls.Server; port: number; seen: string[] }> {
  const ca = makeCa('gw-mesh');
  const leaf = makeLeaf(ca, REVIEWS_ID);
  const seen: string[] = [];
  const server = tls.createServer({ cert: leaf.certPem, key: leaf.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true }, (s) => {
    const peer = uriSans(s.getPeerCertificate().subjectaltname)[0] ?? '';
    seen.push(peer);
    s.on('error', () => undefined);
    s.once('data', () => s.end(JSON.stringify({ server: name, peer, sni: s.servername })));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as net.AddressInfo).port, seen };
}

interface MeshReply {
  server: string;
  peer: string;
  sni: string;
  /** The SPIFFE ID the client saw on the server's certificate. */
  serverId: string;
  protocol: string | null;
}

/** A mesh client: mTLS with the productpage identity to `at`, with `servername` (null: none); verifies the server is reviews. */
function meshClient(at: HostPort, servername: string | null = SNI): Promise<MeshReply> {
  const ca = makeCa('gw-mesh');
  const leaf = makeLeaf(ca, CLIENT_ID);
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: at.host,
      port: at.port,
      ...(servername === null ? {} : { servername }),
      cert: leaf.certPem,
      key: leaf.keyPem,
      ca: ca.certPem,
      rejectUnauthorized: true,
      // The mesh names peers by SPIFFE ID: check it instead of a DNS name.
      checkServerIdentity: (_host, cert) => {
        const ids = uriSans(cert.subjectaltname);
        return ids.length === 1 && ids[0] === REVIEWS_ID ? undefined : new Error(`server presented ${ids.join(',')}`);
      },
    });
    let data = '';
    let serverId = '';
    const timer = setTimeout(() => (s.destroy(), reject(new Error('mesh client timed out'))), 8_000);
    s.on('secureConnect', () => {
      serverId = uriSans(s.getPeerCertificate().subjectaltname)[0] ?? '';
      s.write('hello');
    });
    s.on('data', (d: Buffer) => (data += String(d)));
    s.on('error', (err) => (clearTimeout(timer), reject(err)));
    s.on('end', () => {
      clearTimeout(timer);
      s.end();
      if (serverId === '') return reject(new Error('closed before the TLS handshake completed'));
      try {
        resolve({ ...(JSON.parse(data) as { server: string; peer: string; sni: string }), serverId, protocol: s.getProtocol() });
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

/** Sends raw bytes to `at` and resolves when the gateway closes the connection, with how long that took and what came back. */
function rawProbe(at: HostPort, bytes: Buffer): Promise<{ ms: number; data: Buffer }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const chunks: Buffer[] = [];
    const s = net.connect(at, () => s.write(bytes));
    const timer = setTimeout(() => (s.destroy(), reject(new Error('the gateway kept a bad connection open for 10 s'))), 10_000);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ ms: performance.now() - started, data: Buffer.concat(chunks) });
    });
  });
}

/** The first record a real Node TLS client sends (its ClientHello) with the given SNI. */
function realClientHello(servername: string): Promise<Buffer> {
  return new Promise((resolve) => {
    const server = net.createServer((sock) => {
      let buf = Buffer.alloc(0);
      sock.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          sock.destroy();
          client.destroy();
          server.close();
          resolve(buf.subarray(0, 5 + buf.readUInt16BE(3)));
        }
      });
      sock.on('error', () => undefined);
    });
    let client: tls.TLSSocket;
    server.listen(0, '127.0.0.1', () => {
      client = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, servername, rejectUnauthorized: false });
      client.on('error', () => undefined);
    });
  });
}

function view(endpoints: EndpointView[]): ProxySnapshot {
  const svc: ServiceView = { key: 'reviews.default', hostname: HOST, vip: '', ports: [{ name: 'http', port: PORT, protocol: 'http' }], endpoints, version: 'v1' };
  return { version: String(Math.random()), services: new Map([[svc.key, svc]]) };
}

const endpointAt = (port: number, workload: string): EndpointView => ({ address: '127.0.0.1', mtlsPort: port, identity: REVIEWS_ID, workload, healthy: true, ports: [{ name: 'http', port: PORT }] });

async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

// ---- tests -----------------------------------------------------------------

describe('east-west gateway', T, () => {
  let gw: GatewayProcess;
  let a: Awaited<ReturnType<typeof serverProxy>>;
  let b: Awaited<ReturnType<typeof serverProxy>>;

  before(async () => {
    [gw, a, b] = await Promise.all([GatewayProcess.start(), serverProxy('a'), serverProxy('b')]);
  });

  after(async () => {
    gw.child.kill('SIGTERM');
    await Promise.all([a, b].map((s) => new Promise<void>((r) => s.server.close(() => r()))));
  });

  it('carries mTLS end to end: the client sees the server identity, the server sees the client certificate and the SNI', T, async () => {
    await gw.setSnapshot(view([endpointAt(a.port, 'a')]));
    const r = await meshClient(gw.address);
    assert.deepEqual(r, { server: 'a', peer: CLIENT_ID, sni: SNI, serverId: REVIEWS_ID, protocol: 'TLSv1.3' });
    assert.deepEqual(a.seen.slice(-1), [CLIENT_ID]);
    const stats = await gw.stats();
    assert.equal(stats.forwarded, 1);
    assert.equal(stats.byRoute[`${PORT}/${HOST}`]?.total, 1);
  });

  it('round-robins across two endpoints', T, async () => {
    await gw.setSnapshot(view([endpointAt(a.port, 'a'), endpointAt(b.port, 'b')]));
    const servers: string[] = [];
    for (let i = 0; i < 6; i++) servers.push((await meshClient(gw.address)).server);
    assert.equal(servers.filter((s) => s === 'a').length, 3, servers.join(','));
    for (let i = 1; i < servers.length; i++) assert.notEqual(servers[i], servers[i - 1], `alternates: ${servers.join(',')}`);
  });

  it('retries a dead endpoint on another one; no client connection fails', T, async () => {
    const dead = await deadPort();
    await gw.setSnapshot(view([endpointAt(dead, 'dead'), endpointAt(a.port, 'a')]));
    for (let i = 0; i < 4; i++) assert.equal((await meshClient(gw.address)).server, 'a');
    const stats = await gw.stats();
    const deadStats = stats.byEndpoint[`127.0.0.1:${dead}`]!;
    assert.ok(deadStats.attempts >= 2, JSON.stringify(deadStats));
    assert.equal(deadStats.failed, deadStats.attempts);
    assert.equal(stats.attemptFailures.KEDGE_UPSTREAM_CONNECT_FAILED, deadStats.attempts);
    assert.equal(stats.refusals.KEDGE_UPSTREAM_UNAVAILABLE, undefined);
  });

  it('refuses a service with only dead endpoints after trying each, without crashing', T, async () => {
    await gw.setSnapshot(view([endpointAt(await deadPort(), 'dead1'), endpointAt(await deadPort(), 'dead2')]));
    await assert.rejects(meshClient(gw.address));
    assert.equal((await gw.stats()).refusals.KEDGE_UPSTREAM_UNAVAILABLE, 1);
  });

  it('passes bytes through untouched both ways, with half-close and backpressure', T, async () => {
    // A raw TCP endpoint: the gateway does not care what speaks behind it, so
    // the bytes it forwards can be compared one for one.
    const hello = await realClientHello(SNI);
    const up = randomBytes(8 * 1024 * 1024);
    const down = randomBytes(8 * 1024 * 1024);
    const sent = Buffer.concat([hello, up]);
    const got = createHash('sha256');
    let endpointGot = 0;
    const endpoint = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('data', (d: Buffer) => {
        got.update(d);
        endpointGot += d.length;
      });
      // Only after the client's FIN: the answer flows over the half-closed connection.
      s.on('end', () => s.end(down));
    });
    await new Promise<void>((r) => endpoint.listen(0, '127.0.0.1', () => r()));
    await gw.setSnapshot(view([endpointAt((endpoint.address() as net.AddressInfo).port, 'raw')]));

    const received = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const s = net.connect({ ...gw.address, allowHalfOpen: true }, () => s.end(sent));
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('error', reject);
      s.on('end', () => {
        s.end();
        resolve(Buffer.concat(chunks));
      });
    });
    assert.equal(endpointGot, sent.length);
    assert.equal(got.digest('hex'), createHash('sha256').update(sent).digest('hex'), 'the endpoint got exactly what the client sent');
    assert.ok(received.equals(down), 'the client got exactly what the endpoint sent');
    await new Promise<void>((r) => endpoint.close(() => r()));
  });

  describe('bad input', () => {
    before(async () => gw.setSnapshot(view([endpointAt(a.port, 'a')])));

    it('closes garbage at once', T, async () => {
      const r = await rawProbe(gw.address, Buffer.from('GET / HTTP/1.1\r\nHost: reviews\r\n\r\n'));
      assert.ok(r.ms < HELLO_TIMEOUT_MS / 2, `closed after ${r.ms} ms`);
      assert.equal(r.data.length, 0);
    });

    it('closes a huge ClientHello at once, on its header', T, async () => {
      // A record header and a handshake header announcing 64 KiB; nothing more is sent.
      const r = await rawProbe(gw.address, Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x00]));
      assert.ok(r.ms < HELLO_TIMEOUT_MS / 2, `closed after ${r.ms} ms`);
    });

    it('closes a truncated ClientHello after the hello timeout, not before', T, async () => {
      const hello = await realClientHello(SNI);
      const r = await rawProbe(gw.address, hello.subarray(0, 60));
      assert.ok(r.ms >= HELLO_TIMEOUT_MS - 100 && r.ms < HELLO_TIMEOUT_MS + 2_000, `closed after ${r.ms} ms`);
    });

    it('closes at once when the client hangs up or resets mid-hello', T, async () => {
      const hello = await realClientHello(SNI);
      const started = performance.now();
      await new Promise<void>((resolve) => {
        const s = net.connect({ ...gw.address, allowHalfOpen: true }, () => s.end(hello.subarray(0, 60)));
        s.on('error', () => undefined);
        s.on('close', () => resolve());
        s.resume();
      });
      assert.ok(performance.now() - started < HELLO_TIMEOUT_MS / 2);
      const s = net.connect(gw.address, () => s.write(hello.subarray(0, 60), () => setTimeout(() => s.resetAndDestroy(), 50)));
      s.on('error', () => undefined);
      const deadline = Date.now() + 3_000;
      while (((await gw.stats()).refusals.KEDGE_GATEWAY_HELLO_TRUNCATED ?? 0) < 2 && Date.now() < deadline) await sleep(20);
      assert.equal((await gw.stats()).refusals.KEDGE_GATEWAY_HELLO_TRUNCATED, 2);
    });

    it('closes a silent client after the hello timeout', T, async () => {
      const r = await rawProbe(gw.address, Buffer.alloc(0));
      assert.ok(r.ms >= HELLO_TIMEOUT_MS - 100, `closed after ${r.ms} ms`);
    });

    it('refuses an SNI naming no known service with an unrecognized_name alert', T, async () => {
      await assert.rejects(meshClient(gw.address, buildSni(PORT, 'ratings.default.svc.cluster.local')), /unrecognized name|alert number 112/i);
      await assert.rejects(meshClient(gw.address, buildSni(8080, HOST)), /unrecognized name|alert number 112/i);
    });

    it('refuses a non-mesh SNI and a ClientHello without SNI the same way', T, async () => {
      await assert.rejects(meshClient(gw.address, 'example.com'), /unrecognized name|alert number 112/i);
      await assert.rejects(meshClient(gw.address, null), /unrecognized name|alert number 112/i);
    });

    it('counts every refusal by code and still serves good clients', T, async () => {
      assert.equal((await meshClient(gw.address)).server, 'a');
      const stats = await gw.stats();
      for (const code of ['KEDGE_GATEWAY_BAD_HELLO', 'KEDGE_GATEWAY_HELLO_TOO_LARGE', 'KEDGE_UNKNOWN_SERVICE', 'KEDGE_UNKNOWN_SERVICE_PORT', 'KEDGE_BAD_SNI', 'KEDGE_GATEWAY_NO_SNI']) {
        assert.equal(stats.refusals[code], 1, `${code}: ${JSON.stringify(stats.refusals)}`);
      }
      assert.equal(stats.refusals.KEDGE_GATEWAY_HELLO_TIMEOUT, 2);
      // The last connection closes on the gateway shortly after the client saw its end.
      const deadline = Date.now() + 3_000;
      while ((await gw.stats()).active !== 0 && Date.now() < deadline) await sleep(20);
      assert.equal((await gw.stats()).active, 0);
    });
  });

  it('never loaded TLS in the gateway process: it holds no TLS context and no key', T, async () => {
    const modules = await gw.modules();
    const tlsModules = modules.filter((m) => /\b_?tls\b|tls_wrap|_tls_common|_tls_wrap/.test(m));
    assert.deepEqual(tlsModules, [], 'the gateway process loaded TLS');
    // Sanity: the list is real (the gateway's own modules are in it).
    assert.ok(modules.some((m) => m === 'NativeModule net'));
  });
});

describe('east-west gateway between real proxies, with the views the federation computes', T, () => {
  const closers: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of closers.reverse()) await c();
  });

  it('a client proxy on net-a reaches a server proxy on net-b through the gateway, verifying the server workload end to end', T, async () => {
    const ca = makeCa('gw-mesh');
    const logger = pino({ level: 'silent' });
    // The app behind the server proxy, and the server proxy (net-b).
    const app = net.createServer((s) => {
      s.on('error', () => undefined);
      s.end('reviews says hi\n');
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    closers.push(() => new Promise((r) => app.close(() => r())));
    const server = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: (app.address() as net.AddressInfo).port }],
      upstreams: [],
      identity: toTlsIdentity(makeLeaf(ca, REVIEWS_ID)),
      logger,
    });
    await server.start();
    closers.push(() => server.close(100));

    // The merged service as the federation has it, and the gateway of net-b.
    const inbound = server.inboundAddress();
    const ep: MeshEndpoint = {
      address: inbound.host, ports: [{ name: 'http', port: PORT }], mtlsPort: inbound.port, locality: { region: 'us-west', zone: 'a', subzone: '' }, cluster: 'west',
      network: 'net-b', health: 'HEALTHY', weight: 1, labels: {}, identity: REVIEWS_ID, meshed: true, workload: 'default/reviews-1',
    };
    const svc: MeshService = {
      key: 'reviews.default', name: 'reviews', namespace: 'default', hostname: HOST, vip: '', ports: [{ name: 'http', port: PORT, targetPort: PORT, protocol: 'tcp' }],
      endpoints: [ep], version: '', warnings: [], trafficPolicy: '', routes: '',
    };
    svc.version = serviceVersion(svc);
    const gw = await GatewayProcess.start();
    closers.push(async () => void gw.child.kill('SIGTERM'));
    const info: GatewayInfo = { network: 'net-b', address: gw.address.host, port: gw.address.port };
    await gw.setSnapshot(toProxySnapshot(new Map([[svc.key, gatewayView(svc, 'net-b')]]), '1'));

    // The client proxy (net-a) sees the gateway in place of the endpoint.
    const forClient = substituteGateways(svc, 'net-a', [info]);
    assert.deepEqual(forClient.endpoints.map((e) => [e.address, e.mtlsPort, e.identity]), [[gw.address.host, gw.address.port, REVIEWS_ID]]);
    const client = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [],
      upstreams: [{ service: 'reviews.default', port: PORT, listen: { host: '127.0.0.1', port: 0 } }],
      identity: toTlsIdentity(makeLeaf(ca, CLIENT_ID)),
      logger,
    });
    await client.start();
    closers.push(() => client.close(100));
    client.setSnapshot(toProxySnapshot(new Map([[svc.key, forClient]]), '1'));

    const viaClient = (): Promise<string> =>
      new Promise<string>((resolve) => {
        let data = '';
        const s = net.connect(client.upstreamAddresses()[0]!, () => s.end());
        s.on('data', (d: Buffer) => (data += String(d)));
        s.on('error', () => undefined);
        s.on('close', () => resolve(data));
      });
    assert.equal(await viaClient(), 'reviews says hi\n');
    assert.equal(client.stats().outbound.failures.KEDGE_PEER_IDENTITY_MISMATCH, undefined);
    assert.equal(server.stats().inbound.total, 1);
    assert.equal((await gw.stats()).forwarded, 1);

    // Two server proxies with the same identity behind the gateway: the
    // client proxy keeps one TLS session per gateway address and SNI, so a
    // resumption offered to the other proxy falls back to a full handshake
    // (whose certificate is checked); every connection succeeds.
    const server2 = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: (app.address() as net.AddressInfo).port }],
      upstreams: [],
      identity: toTlsIdentity(makeLeaf(ca, REVIEWS_ID, 'second')),
      logger,
    });
    await server2.start();
    closers.push(() => server2.close(100));
    const in2 = server2.inboundAddress();
    const two = { ...svc, endpoints: [ep, { ...ep, mtlsPort: in2.port, workload: 'default/reviews-2' }] };
    await gw.setSnapshot(toProxySnapshot(new Map([[svc.key, gatewayView(two, 'net-b')]]), '2'));
    for (let i = 0; i < 4; i++) assert.equal(await viaClient(), 'reviews says hi\n');
    assert.equal(server.stats().inbound.total, 3);
    assert.equal(server2.stats().inbound.total, 2);

    // A gateway in front of the wrong workload cannot fool the client: a
    // server with another identity behind it fails the client's check.
    const impostor = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: (app.address() as net.AddressInfo).port }],
      upstreams: [],
      identity: toTlsIdentity(makeLeaf(ca, `${TD}/ns/default/sa/impostor`)),
      logger,
    });
    await impostor.start();
    closers.push(() => impostor.close(100));
    const imp = impostor.inboundAddress();
    await gw.setSnapshot(toProxySnapshot(new Map([[svc.key, { ...svc, endpoints: [{ ...ep, mtlsPort: imp.port }] }]]), '3'));
    assert.equal(await viaClient(), '');
    assert.ok((client.stats().outbound.failures.KEDGE_PEER_IDENTITY_MISMATCH ?? 0) >= 1);
  });
});
