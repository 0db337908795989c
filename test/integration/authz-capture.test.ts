// Captured plaintext on the inbound port (PERMISSIVE) is authorized as a TCP
// connection without a principal, as Istio does for plaintext: an ALLOW that
// needs a mesh identity closes it, ipBlocks see the client's address. Real
// sockets on loopback; SO_ORIGINAL_DST is stood in for by a table keyed by
// the client's source address.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { OriginalDst } from '../../agent/native';
import { Proxy } from '../../agent/proxy/proxy';
import { KedgeError } from '../../proto/model/errors';
import { compileAuthorization, parseAuthorizationPolicy } from '../../policy/authz';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';
import { logCapture } from '../support/logs';
import { eventually } from '../support/procs';

const T = { timeout: 30_000 };
const HOST = '127.0.75.1';

class FakeCapture {
  private readonly routes = new Map<string, OriginalDst>();
  readonly reader = (socket: net.Socket): OriginalDst => {
    const dst = this.routes.get(socket.remoteAddress ?? '');
    if (dst === undefined) throw new KedgeError('KEDGE_ORIGINAL_DST_UNAVAILABLE', 'not redirected');
    return dst;
  };
  route(source: string, address: string, port: number): string {
    this.routes.set(source, { address, port, family: 4 });
    return source;
  }
}

/** Connects from `source`; resolves with what the app sent before the connection closed. */
function talk(port: number, source: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port, localAddress: source });
    let got = '';
    const t = setTimeout(() => s.destroy(), 5_000);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      got += d;
      s.end();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(t);
      resolve(got);
    });
  });
}

const policy = (name: string, spec: Record<string, unknown>) => parseAuthorizationPolicy({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: 'shop' }, spec });
const workload = { namespace: 'shop', labels: { app: 'web' } };

describe('authorization of captured plaintext (PERMISSIVE)', () => {
  let proxy: Proxy;
  let app: net.Server;
  let appPort = 0;
  const capture = new FakeCapture();
  const { logger, lines } = logCapture();

  before(async () => {
    app = net.createServer((s) => s.end('hello\n'));
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    appPort = (app.address() as net.AddressInfo).port;
    const ca = makeCa('authz-capture');
    proxy = new Proxy({
      inboundListen: { host: HOST, port: 0 },
      targets: [],
      upstreams: [],
      identity: toTlsIdentity(makeLeaf(ca, 'spiffe://kedge.test/ns/shop/sa/web')),
      logger,
      connectTimeoutMs: 1_000,
      inboundCapture: { mode: 'PERMISSIVE', originalDst: capture.reader },
    });
    await proxy.start();
  });
  after(async () => {
    await proxy.close(200);
    app.close();
  });

  const port = () => proxy.inboundAddress().port;
  const set = (...ps: ReturnType<typeof policy>[]) => proxy.setSnapshot({ version: 'v', services: new Map(), authorization: compileAuthorization(ps, workload) });

  it('passes plaintext when no policy selects the workload', T, async () => {
    assert.equal(await talk(port(), capture.route('127.0.75.11', '198.18.0.9', appPort)), 'hello\n');
  });

  it('closes plaintext when an ALLOW needs a mesh identity, and logs the denial', T, async () => {
    set(policy('mesh-only', { rules: [{ from: [{ source: { principals: ['*'] } }] }] }));
    assert.equal(await talk(port(), capture.route('127.0.75.12', '198.18.0.9', appPort)), '');
    const line = await eventually(() => lines.find((l) => l.msg === 'denied by authorization policy'), 5_000, 'the denial log line');
    assert.equal(line.peer, '(no mesh identity)');
    assert.equal(line.policy, '(none matched)');
    assert.equal(line.port, appPort);
  });

  it('a DENY on the client address closes it; another address passes', T, async () => {
    set(policy('deny-ip', { action: 'DENY', rules: [{ from: [{ source: { ipBlocks: ['127.0.75.13/32'] } }] }] }));
    assert.equal(await talk(port(), capture.route('127.0.75.13', '198.18.0.9', appPort)), '');
    assert.equal(await talk(port(), capture.route('127.0.75.14', '198.18.0.9', appPort)), 'hello\n');
    assert.ok(lines.some((l) => l.msg === 'denied by authorization policy' && l.policy === 'shop/deny-ip' && l.rule === 0));
  });
});
