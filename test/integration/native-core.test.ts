// What only the native forwarding core (agent/native) has to show, beyond
// the data-path suites that run against both cores (proxy, proxy-identity,
// proxy-http1): it picks up a rotated trust bundle and identity for new
// connections on both sides, a build without the addon still runs (auto
// falls back, native says what is missing), and a wrong core name is
// refused. Real TLS and sockets on 127.0.0.1.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Proxy } from '../../agent/proxy/proxy';
import type { ProxySnapshot } from '../../agent/proxy/types';
import { hasCode } from '../../proto/model/errors';
import { logCapture, type LogLine } from '../support/logs';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';
import { eventually } from '../support/procs';
import { PROXY_CORES } from '../support/cores';

const TD = 'spiffe://kedge.test';
const SERVER_ID = `${TD}/ns/shop/sa/cart`;
const CLIENT_ID = `${TD}/ns/shop/sa/frontend`;
const HOST = 'cart.shop.svc.cluster.local';
const PORT = 8080;
const LOCAL = { host: '127.0.0.1', port: 0 };
const T = { timeout: 20_000 };
const native = PROXY_CORES.includes('native');

/** One TCP exchange through the client proxy: what came back before the close. */
function exchange(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => s.end('ping\n'));
    let data = '';
    s.on('data', (d: Buffer) => (data += String(d)));
    s.on('error', () => undefined);
    s.on('close', () => resolve(data));
  });
}

describe('native forwarding core', { skip: native ? false : 'the native core is not built' }, () => {
  const oldCa = makeCa('native-old');
  const newCa = makeCa('native-new');
  let app: net.Server;
  let server: Proxy;
  let client: Proxy;
  let serverLines: LogLine[];
  let clientLines: LogLine[];
  let upstreamPort: number;
  const snapshotFor = (p: Proxy): ProxySnapshot => {
    const at = p.inboundAddress();
    return {
      version: '1',
      services: new Map([['cart.shop', { key: 'cart.shop', hostname: HOST, vip: '', version: '1', ports: [{ name: 'tcp', port: PORT, protocol: 'tcp' }], endpoints: [{ address: at.host, mtlsPort: at.port, identity: SERVER_ID, workload: 'cart', healthy: true, ports: [] }] }]]),
    };
  };

  before(async () => {
    app = net.createServer((s) => {
      s.on('error', () => undefined);
      s.write('app\n');
      s.pipe(s);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    const sl = logCapture();
    serverLines = sl.lines;
    server = new Proxy({ inboundListen: LOCAL, targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: (app.address() as net.AddressInfo).port }], upstreams: [], identity: toTlsIdentity(makeLeaf(oldCa, SERVER_ID)), logger: sl.logger, core: 'native' });
    await server.start();
    const cl = logCapture();
    clientLines = cl.lines;
    client = new Proxy({ inboundListen: LOCAL, targets: [], upstreams: [{ service: 'cart.shop', port: PORT, listen: LOCAL }], identity: toTlsIdentity(makeLeaf(oldCa, CLIENT_ID)), logger: cl.logger, connectTimeoutMs: 2_000, maxAttempts: 1, core: 'native' });
    await client.start();
    client.setSnapshot(snapshotFor(server));
    upstreamPort = client.upstreamAddresses()[0]!.port;
  });

  after(async () => {
    await Promise.all([client.close(200), server.close(200)]);
    await new Promise<void>((r) => app.close(() => r()));
  });

  it('picks up rotated certificates and trust bundles for new connections on both sides', T, async () => {
    assert.equal(await exchange(upstreamPort), 'app\nping\n');
    // The client moves to the new CA first: its certificate is not in the
    // server's bundle yet, so the server refuses it.
    client.setIdentity(toTlsIdentity(makeLeaf(newCa, CLIENT_ID), [oldCa, newCa]));
    const refusedBefore = server.stats().inbound.failures.KEDGE_TLS_HANDSHAKE_FAILED ?? 0;
    assert.equal(await exchange(upstreamPort), '');
    await eventually(() => (server.stats().inbound.failures.KEDGE_TLS_HANDSHAKE_FAILED ?? 0) === refusedBefore + 1, 5_000, 'the server to refuse the new CA');
    const reasons = serverLines.filter((l) => String(l.msg).includes('handshake refused')).map((l) => l.reason);
    assert.deepEqual(reasons, ['UNABLE_TO_VERIFY_LEAF_SIGNATURE']);
    // The server trusts both: the new client certificate gets through.
    server.setIdentity(toTlsIdentity(makeLeaf(newCa, SERVER_ID), [oldCa, newCa]));
    assert.equal(await exchange(upstreamPort), 'app\nping\n');
    // The client drops the old root: a server still presenting an old-CA
    // certificate is refused by the client's core.
    const stale = new Proxy({ inboundListen: LOCAL, targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: (app.address() as net.AddressInfo).port }], upstreams: [], identity: toTlsIdentity(makeLeaf(oldCa, SERVER_ID), [oldCa, newCa]), logger: logCapture().logger, core: 'native' });
    await stale.start();
    try {
      client.setIdentity(toTlsIdentity(makeLeaf(newCa, CLIENT_ID), [newCa]));
      client.setSnapshot(snapshotFor(stale));
      assert.equal(await exchange(upstreamPort), '');
      await eventually(() => clientLines.some((l) => l.code === 'KEDGE_UPSTREAM_TLS_FAILED' && /UNABLE_TO|unable to/i.test(String(l.err))), 5_000, 'the client core to refuse the old CA');
      client.setSnapshot(snapshotFor(server));
      assert.equal(await exchange(upstreamPort), 'app\nping\n');
    } finally {
      await stale.close(100);
    }
    // Every accepted connection was carried by the core.
    assert.ok(clientLines.filter((l) => l.msg === 'outbound').every((l) => l.core === 'native'));
  });

  it('refuses an identity that does not load, keeping the one it has', T, async () => {
    const good = toTlsIdentity(makeLeaf(newCa, CLIENT_ID), [newCa]);
    assert.throws(() => client.setIdentity({ ...good, keyPem: makeLeaf(newCa, CLIENT_ID, 'other').keyPem }), (err) => hasCode(err, 'KEDGE_TLS_IDENTITY_INVALID'));
    assert.equal(await exchange(upstreamPort), 'app\nping\n');
  });
});

describe('forwarding core selection', () => {
  const proxyJs = path.resolve(__dirname, '..', '..', 'agent', 'proxy', 'proxy.js');
  const probe = (core: string, env: NodeJS.ProcessEnv): { status: number | null; out: string } => {
    const script = `
      const { Proxy } = require(${JSON.stringify(proxyJs)});
      const { makeCa, makeLeaf, toTlsIdentity } = require(${JSON.stringify(path.resolve(__dirname, '..', 'support', 'pki.js'))});
      const lines = [];
      const logger = require('pino')({ level: 'info' }, { write: (l) => lines.push(JSON.parse(l)) });
      try {
        const p = new Proxy({ inboundListen: { host: '127.0.0.1', port: 0 }, targets: [], upstreams: [], identity: toTlsIdentity(makeLeaf(makeCa('sel'), 'spiffe://kedge.test/ns/a/sa/b')), logger, core: ${JSON.stringify(core)} });
        p.start().then(() => { console.log('core=' + lines.find((l) => l.msg === 'proxy listening').core); return p.close(0); });
      } catch (e) { console.log('error=' + e.code + ' ' + e.message); }`;
    const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8', cwd: path.resolve(__dirname, '..', '..', '..'), timeout: 15_000 });
    return { status: r.status, out: r.stdout + r.stderr };
  };
  const missing = { KEDGE_NATIVE_CORE_ADDON: '/nonexistent/kedge_core.node' };

  it('auto falls back to the TypeScript core when the addon is not built', T, () => {
    const r = probe('auto', missing);
    assert.match(r.out, /core=typescript/);
  });

  it('native without the addon is an error naming what to build and where it looked', T, () => {
    const r = probe('native', missing);
    assert.match(r.out, /error=KEDGE_NATIVE_CORE_MISSING .*npm run build:native.*\/nonexistent\/kedge_core\.node/);
  });

  it('a core name that does not exist is refused', T, () => {
    assert.match(probe('turbo', {}).out, /error=KEDGE_PROXY_CORE_INVALID proxy core "turbo" is not one of typescript, native, auto/);
  });

  it('auto uses the native core when it is built', { ...T, skip: native ? false : 'the native core is not built' }, () => {
    assert.match(probe('auto', {}).out, /core=native/);
  });
});
