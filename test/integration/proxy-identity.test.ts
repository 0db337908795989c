// The inbound listener accepts a peer only as one SPIFFE ID of the mesh's
// trust domain (issue 9): a certificate that merely chains to the bundle
// (no URI SAN, two URI SANs, another trust domain, a URI that is not a
// workload ID) never reaches the app. Serials the snapshot marks revoked
// are refused on new handshakes, and open connections from them close when
// a snapshot adds them. Real TLS, real sockets on 127.0.0.1.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { Proxy } from '../../agent/proxy/proxy';
import type { ProxySnapshot } from '../../agent/proxy/types';
import { buildSni } from '../../proto/model/sni';
import { logCapture, type LogLine } from '../support/logs';
import { makeCa, makeLeaf, makeLeafWithSan, type TestLeaf, toTlsIdentity } from '../support/pki';
import { eventually } from '../support/procs';
import { PROXY_CORES } from '../support/cores';

const TD = 'spiffe://kedge.test';
const SERVER_ID = `${TD}/ns/shop/sa/cart`;
const CLIENT_ID = `${TD}/ns/shop/sa/frontend`;
const HOST = 'cart.shop.svc.cluster.local';
const PORT = 8080;
const SNI = buildSni(PORT, HOST);
const T = { timeout: 20_000 };

/** mTLS to the inbound port with `leaf`; resolves with what the app sent back before the close, and the socket while open. */
function connect(at: { host: string; port: number }, leaf: TestLeaf): { socket: tls.TLSSocket; done: Promise<{ data: string }> } {
  const socket = tls.connect({ host: at.host, port: at.port, servername: SNI, cert: leaf.certPem, key: leaf.keyPem, rejectUnauthorized: false });
  let data = '';
  socket.on('data', (d: Buffer) => (data += String(d)));
  socket.on('error', () => undefined);
  socket.once('secureConnect', () => socket.write('hello\n'));
  const done = new Promise<{ data: string }>((resolve) => socket.once('close', () => resolve({ data })));
  return { socket, done };
}

// Every case runs against each forwarding core (test/support/cores.ts).
for (const core of PROXY_CORES) describe(`inbound peer identity (${core} core)`, () => {
  const ca = makeCa('identity-mesh');
  const client = makeLeaf(ca, CLIENT_ID);
  let app: net.Server;
  let proxy: Proxy;
  let lines: LogLine[];
  const snapshot = (revoked: string[] = []): ProxySnapshot => ({ version: String(revoked.length), services: new Map(), revokedSerials: new Set(revoked) });

  before(async () => {
    app = net.createServer((s) => {
      s.on('error', () => undefined);
      s.write('app\n');
      s.pipe(s);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    const log = logCapture();
    lines = log.lines;
    proxy = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: (app.address() as net.AddressInfo).port }],
      upstreams: [],
      identity: toTlsIdentity(makeLeaf(ca, SERVER_ID)),
      logger: log.logger,
      federatedTrustDomains: ['partner.test'],
      core,
    });
    await proxy.start();
  });

  after(async () => {
    await proxy.close(200);
    await new Promise<void>((r) => app.close(() => r()));
  });

  it('accepts one SPIFFE ID of the mesh or a federated trust domain', T, async () => {
    for (const leaf of [client, makeLeaf(ca, 'spiffe://partner.test/ns/shop/sa/frontend')]) {
      const c = connect(proxy.inboundAddress(), leaf);
      await Promise.race([c.done, new Promise<void>((r) => c.socket.once('data', () => r()))]);
      c.socket.end();
      const { data } = await c.done;
      assert.match(data, /^app\n/, leaf.spiffeId);
    }
  });

  it('refuses certificates that chain to the bundle but are not one mesh SPIFFE ID', T, async () => {
    const before = proxy.stats().inbound.failures.KEDGE_PEER_IDENTITY_REFUSED ?? 0;
    const cases: Array<[string, TestLeaf, RegExp]> = [
      ['no URI SAN', makeLeafWithSan(ca, 'DNS:frontend.shop'), /no URI SAN/],
      ['two URI SANs', makeLeafWithSan(ca, `URI:${CLIENT_ID},URI:${TD}/ns/shop/sa/other`), /2 URI SANs/],
      ['another trust domain', makeLeaf(ca, 'spiffe://evil.test/ns/shop/sa/frontend'), /trust domain evil\.test is not the mesh's/],
      ['not a workload ID', makeLeafWithSan(ca, `URI:${TD}/some/path`), /is not a workload SPIFFE ID/],
    ];
    for (const [what, leaf, reason] of cases) {
      const { data } = await connect(proxy.inboundAddress(), leaf).done;
      assert.equal(data, '', `${what}: nothing from the app may reach it`);
      const line = await eventually(() => lines.find((l) => l.code === 'KEDGE_PEER_IDENTITY_REFUSED' && reason.test(String(l.err))), 5_000, `the refusal of ${what}`);
      assert.equal(line.msg, 'inbound connection refused');
    }
    assert.equal(proxy.stats().inbound.failures.KEDGE_PEER_IDENTITY_REFUSED, before + cases.length);
  });

  it('closes open connections when a snapshot revokes their serial, and refuses new handshakes from it', T, async () => {
    const victim = makeLeaf(ca, CLIENT_ID, 'to-revoke');
    const other = makeLeaf(ca, CLIENT_ID, 'kept');
    const open = connect(proxy.inboundAddress(), victim);
    const kept = connect(proxy.inboundAddress(), other);
    for (const c of [open, kept]) await new Promise<void>((r) => c.socket.once('data', () => r()));
    proxy.setSnapshot(snapshot([victim.serial]));
    await open.done; // closed by the proxy, not by us
    assert.equal(kept.socket.destroyed, false, 'a connection from a serial that is not revoked stays open');
    assert.ok(lines.some((l) => l.msg === 'inbound connections closed: the peer certificate was revoked' && l.serial === victim.serial));
    const again = await connect(proxy.inboundAddress(), victim).done;
    assert.equal(again.data, '');
    await eventually(() => lines.some((l) => l.code === 'KEDGE_PEER_CERT_REVOKED'), 5_000, 'the revoked handshake refused');
    // The same identity with a fresh certificate still gets in.
    const fresh = connect(proxy.inboundAddress(), makeLeaf(ca, CLIENT_ID, 'reissued'));
    await new Promise<void>((r) => fresh.socket.once('data', () => r()));
    fresh.socket.end();
    kept.socket.end();
    await Promise.all([fresh.done, kept.done]);
    proxy.setSnapshot(snapshot());
  });
});
