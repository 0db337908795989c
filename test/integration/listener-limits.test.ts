// Connection limits and idle timeouts on real listeners. The issue's
// finding first: 1,099 idle TCP connections to the federation's HTTP port
// blocked /healthz and gRPC Sign for 90 s, all listeners sharing one
// descriptor limit. Here the federation runs under a 1,024-descriptor limit
// (prlimit) and 1,100 idle connections from one address no longer block
// either. Then the per-listener limit, the first-byte and idle timeouts of
// the HTTP and gRPC ports, and an agent's inbound mTLS port: authenticated
// connections that stay silent are closed after the idle timeout, busy ones
// are not, and a peer over its per-address limit is refused with a log line
// naming the setting.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { describe, it } from 'node:test';
import { federationClient, signOnce } from '../../agent/registration/client';
import { generateKeyAndCsr } from '../../agent/identity/csr';
import { parseHostPort } from '../../proto/model/address';
import { Proxy } from '../../agent/proxy/proxy';
import { buildSni } from '../../proto/model/sni';
import { LIMITS } from '../../proto/model/limits';
import { eventually } from '../support/procs';
import { createToken, startFederationProc, writeFederationConfig, type FederationHandle } from '../support/mesh';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';
import { logCapture } from '../support/logs';

/** A federation with at most `nofile` descriptors (soft and hard), as a container or `ulimit -n` would give it. */
const federationUnderLimit = (nofile: number, args: string[] = []): Promise<FederationHandle> => startFederationProc({ nofile, args: ['--insecure-http', ...args] });

/** Opens a TCP connection from `localAddress`; resolves once connected, with a promise of its close. */
function open(port: number, localAddress: string): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    socket.on('error', () => undefined);
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.once('connect', () => resolve({ socket, closed }));
    socket.once('close', () => reject(new Error(`connection from ${localAddress} closed before it connected`)));
  });
}

/** GET over plain HTTP from a given source address. */
function getFrom(url: string, localAddress: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { localAddress, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += String(d)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} from ${localAddress} timed out`)));
    req.on('error', reject);
  });
}

const refusals = (fed: FederationHandle, setting: string) => fed.proc.logs.filter((l) => String(l.msg).includes('connection refused') && l.setting === setting);

describe('federation listener limits', () => {
  it('1,100 idle TCP connections from one address to the HTTP port do not block /healthz or Sign (under a 1,024-descriptor limit)', { timeout: 90_000 }, async () => {
    const fed = await federationUnderLimit(1024);
    const token = await createToken(fed, 'shop', 'web');
    const port = Number(new URL(`http://${fed.httpAddress}`).port);
    const perPeer = LIMITS.federation.http.maxConnectionsPerPeer;
    const conns = await Promise.all(Array.from({ length: 1_100 }, () => open(port, '127.0.0.1').catch(() => undefined)));
    // Every connection over the per-address limit is closed at accept, freeing its descriptor.
    let closed = 0;
    for (const c of conns) if (c) void c.closed.then(() => closed++);
    const refusedAtOnce = conns.filter((c) => c === undefined).length;
    await eventually(() => closed + refusedAtOnce >= 1_100 - perPeer, 30_000, `${1_100 - perPeer} connections refused`);
    assert.equal(closed + refusedAtOnce, 1_100 - perPeer, 'exactly the per-address limit is held');

    const health = await getFrom(`http://${fed.httpAddress}/healthz`, '127.0.0.2');
    assert.equal(health.status, 200);
    const { csrPem } = await generateKeyAndCsr();
    const client = federationClient(parseHostPort(fed.grpc, 'grpc'), fs.readFileSync(fed.rootCertFile, 'utf8'), undefined, 'cluster.local');
    const signed = await signOnce(client, csrPem, token, 20_000);
    assert.equal(signed.spiffeId, 'spiffe://cluster.local/ns/shop/sa/web');
    client.close();

    // The refusals were logged at a bounded rate, naming the setting, with a count of the rest.
    const lines = refusals(fed, 'limits.http.maxConnectionsPerPeer');
    assert.ok(lines.length >= 1 && lines.length <= LIMITS.federation.log.linesPerWindow, `${lines.length} refusal lines`);
    assert.match(String(lines[0]!.reason), /127\.0\.0\.1 has 64 connections open, the limit per source address/);
    for (const c of conns) c?.socket.destroy();
    await fed.proc.stop('SIGKILL');
  });

  it('refuses over the listener and per-address limits, closes silent connections, and serves again', { timeout: 60_000 }, async () => {
    const config = writeFederationConfig({
      limits: {
        http: { maxConnections: 30, maxConnectionsPerPeer: 10, headersTimeout: '1500ms', idleTimeout: '1500ms' },
        grpc: { idleTimeout: '1500ms' },
        log: { linesPerWindow: 100, window: '10s' },
      },
    });
    const fed = await federationUnderLimit(4096, ['--config', config]);
    const port = Number(new URL(`http://${fed.httpAddress}`).port);
    const held: { socket: net.Socket; closed: Promise<void> }[] = [];
    for (let i = 0; i < 10; i++) held.push(await open(port, '127.0.0.2'));
    const eleventh = await open(port, '127.0.0.2');
    await eleventh.closed;
    await fed.proc.waitForLog((l) => l.setting === 'limits.http.maxConnectionsPerPeer', 5_000, 'per-address refusal');
    for (const from of ['127.0.0.3', '127.0.0.4']) for (let i = 0; i < 10; i++) held.push(await open(port, from));
    const over = await open(port, '127.0.0.5');
    await over.closed;
    const full = await fed.proc.waitForLog((l) => l.setting === 'limits.http.maxConnections', 5_000, 'listener refusal');
    assert.match(String(full.reason), /the listener has 30 connections open, its limit/);
    assert.equal(full.peer, '127.0.0.5');

    // None of the 30 sent a byte: each is closed after the first-byte timeout, and the port serves again.
    await Promise.all(held.map((h) => h.closed));
    assert.equal((await getFrom(`http://${fed.httpAddress}/healthz`, '127.0.0.5')).status, 200);

    // A silent connection to the gRPC port is closed after its idle timeout.
    const grpcConn = await open(Number(fed.grpc.split(':').pop()), '127.0.0.6');
    await grpcConn.closed;
    await fed.proc.waitForLog((l) => String(l.msg).includes('federation gRPC: idle connection closed'), 5_000, 'gRPC idle close');
    await fed.proc.stop('SIGKILL');
  });

  it('answers 431 to a head over maxHeaderBytes and 413 to a body over maxBodyBytes', { timeout: 30_000 }, async () => {
    const config = writeFederationConfig({ limits: { http: { maxHeaderBytes: 2048, maxBodyBytes: 1024 } } });
    const fed = await federationUnderLimit(4096, ['--config', config]);
    const big = await fetch(`http://${fed.httpAddress}/healthz`, { headers: { 'x-pad': 'x'.repeat(4096) } });
    assert.equal(big.status, 431);
    const token = fs.readFileSync(fed.adminTokenFile, 'utf8').trim();
    const body = await fetch(`http://${fed.httpAddress}/api/v1/tokens`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ namespace: 'shop', serviceAccount: 'web', pad: 'x'.repeat(2048) }) });
    assert.equal(body.status, 413);
    assert.match(((await body.json()) as { message: string }).message, /over 1024 bytes \(limits\.http\.maxBodyBytes\)/);
    await fed.proc.stop('SIGKILL');
  });
});

describe('agent inbound listener limits', () => {
  const TD = 'spiffe://kedge.test';
  const HOST = 'cart.shop.svc.cluster.local';
  const ca = makeCa('limits');
  const serverLeaf = makeLeaf(ca, `${TD}/ns/shop/sa/cart`);
  const clientLeaf = makeLeaf(ca, `${TD}/ns/shop/sa/frontend`);

  async function inbound(limits: { maxConnections: number; maxConnectionsPerPeer: number; idleTimeoutMs: number }) {
    const echo = net.createServer((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const { logger, lines } = logCapture();
    const proxy = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [{ hostname: HOST, servicePort: 8080, host: '127.0.0.1', targetPort: (echo.address() as net.AddressInfo).port }],
      upstreams: [],
      identity: toTlsIdentity(serverLeaf),
      logger,
      limits: { ...LIMITS.agent, inbound: limits },
    });
    await proxy.start();
    return { proxy, lines, port: proxy.inboundAddress().port, close: async () => (await proxy.close(200), echo.close()) };
  }

  /** An authenticated mTLS connection to the inbound port; resolves once the handshake is done. */
  function mtls(port: number, localAddress = '127.0.0.1'): Promise<{ socket: tls.TLSSocket; closed: Promise<void> }> {
    return new Promise((resolve, reject) => {
      const raw = net.connect({ host: '127.0.0.1', port, localAddress });
      raw.on('error', () => undefined);
      const socket = tls.connect({ socket: raw, servername: buildSni(8080, HOST), rejectUnauthorized: false, cert: clientLeaf.certPem, key: clientLeaf.keyPem });
      socket.on('error', () => undefined);
      const closed = new Promise<void>((r) => socket.once('close', () => r()));
      socket.once('secureConnect', () => resolve({ socket, closed }));
      socket.once('close', () => reject(new Error('closed before the handshake')));
    });
  }

  it('closes an idle authenticated connection after the idle timeout, and not a busy one', { timeout: 30_000 }, async () => {
    const ib = await inbound({ maxConnections: 100, maxConnectionsPerPeer: 100, idleTimeoutMs: 400 });
    const idle = await mtls(ib.port);
    const busy = await mtls(ib.port);
    let echoed = 0;
    busy.socket.on('data', (d: Buffer) => (echoed += d.length));
    let busyClosedEarly = false;
    void busy.closed.then(() => (busyClosedEarly = echoed < 20));
    // 20 round trips, each waiting for its echo, spaced so the whole takes longer than the idle timeout.
    for (let i = 0; i < 20; i++) {
      busy.socket.write('x');
      await eventually(() => echoed > i, 5_000, `echo ${i}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await idle.closed;
    assert.equal(busyClosedEarly, false, 'the busy connection stayed open');
    assert.equal(echoed, 20);
    assert.ok(!busy.socket.destroyed, 'busy connection still open after 20 round trips');
    await busy.closed; // and once it falls silent, it too is closed
    const st = await eventually(() => (ib.proxy.listenerStats().inbound!.open === 0 ? ib.proxy.listenerStats().inbound : undefined), 5_000, 'server side closed');
    assert.equal(st.idleClosed, 2);
    assert.ok(ib.lines.some((l) => l.msg === 'inbound: idle connection closed' && l.setting === 'limits.inbound.idleTimeout'));
    await ib.close();
  });

  it('refuses a peer over its per-address limit with a clear log line, and serves others', { timeout: 30_000 }, async () => {
    const ib = await inbound({ maxConnections: 100, maxConnectionsPerPeer: 3, idleTimeoutMs: 60_000 });
    const held = [await mtls(ib.port, '127.0.0.7'), await mtls(ib.port, '127.0.0.7'), await mtls(ib.port, '127.0.0.7')];
    await assert.rejects(mtls(ib.port, '127.0.0.7'), /closed before the handshake/);
    const line = ib.lines.find((l) => l.msg === 'inbound: connection refused');
    assert.ok(line, 'refusal logged');
    assert.equal(line.setting, 'limits.inbound.maxConnectionsPerPeer');
    assert.equal(line.peer, '127.0.0.7');
    assert.match(String(line.reason), /127\.0\.0\.7 has 3 connections open, the limit per source address/);
    const other = await mtls(ib.port, '127.0.0.8');
    other.socket.write('hi');
    await new Promise<void>((r) => other.socket.once('data', () => r()));
    assert.equal(ib.proxy.listenerStats().inbound!.refusedPeer, 1);
    for (const h of [...held, other]) h.socket.destroy();
    await ib.close();
  });
});
