// Transparent capture end to end with real iptables REDIRECT and real
// SO_ORIGINAL_DST (needs root). Three lab hosts on one network:
//   vm   - outbound capture; its proxy runs as an unprivileged proxy user and
//          ordinary clients (uid 1000) are captured to 15001
//   peer - the endpoint of reviews.default: an HTTP app on 127.0.0.1:9080
//          behind its proxy's inbound 15006, with inbound capture of 9080
//   ext  - outside the mesh: a plain server, and a plaintext client of peer
// The VIP 240.240.0.10 is routed out of vm's veth, not lo: the capture rules
// leave traffic that leaves through lo alone.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { installCapture } from '../../agent/capture/apply';
import { captureOptions } from '../../agent/capture/options';
import { staticUserDb } from '../../agent/capture/users';
import type { ServiceView } from '../../agent/proxy/types';
import { buildSni } from '../../proto/model/sni';
import { type LabHost, type LabProcess, NetLab } from '../support/netlab';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';

const PROXY_UID = 1337;
const APP_UID = 1000;
const VIP = '240.240.0.10';
const PORT = 9080;
const HOSTNAME = 'reviews.default.svc.cluster.local';
const TD = 'spiffe://kedge.test';
const VM_ID = `${TD}/ns/default/sa/productpage`;
const PEER_ID = `${TD}/ns/default/sa/reviews`;
const T = { timeout: 60_000 };

for (const tool of ['iptables', 'iptables-save', 'iptables-restore']) {
  const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
  assert.ok(!r.error && r.status === 0, `${tool} is required by the outbound capture root test (apt-get install iptables): ${r.error?.message ?? r.stderr}`);
}

const PROXY_JS = join(__dirname, '..', '..', 'agent', 'proxy', 'proxy.js');
// Runs a Proxy from the JSON config on stdin, logging JSON lines to stdout.
const PROXY_SCRIPT = `
const pino = require(${JSON.stringify(require.resolve('pino'))});
const { Proxy } = require(${JSON.stringify(PROXY_JS)});
let input = '';
process.stdin.on('data', (d) => (input += d)).on('end', async () => {
  const cfg = JSON.parse(input);
  const logger = pino({ level: 'info' }, pino.destination({ dest: 1, sync: true }));
  const proxy = new Proxy({ ...cfg.options, identity: { ...cfg.identity, notAfter: new Date(cfg.identity.notAfter) }, logger });
  proxy.setSnapshot({ version: 'v1', services: new Map(cfg.services.map((s) => [s.key, s])) });
  await proxy.start();
});
`;
// An HTTP app that names itself.
const HTTP_APP = `require('http').createServer((q, r) => r.end('hello from ' + process.argv[3] + '\\n')).listen(Number(process.argv[2]), process.argv[1], () => console.log('ready'));`;
// A TCP server that greets, then echoes.
const GREETER = `require('net').createServer((s) => { s.on('error', () => {}); s.write(process.argv[3] + '\\n'); s.pipe(s); }).listen(Number(process.argv[2]), process.argv[1], () => console.log('ready'));`;
// Sends a line to host:port, prints everything until close (or the error code).
const CLIENT = `
const s = require('net').connect(Number(process.argv[2]), process.argv[1]);
let got = '';
s.on('connect', () => s.write(process.argv[3] + '\\n'));
s.on('data', (d) => { got += d; if (got.split('\\n').length > 2) s.end(); });
s.on('error', (e) => { console.log('error:' + e.code); process.exit(0); });
s.on('close', () => console.log('got:' + JSON.stringify(got)));
setTimeout(() => { console.log('timeout:' + JSON.stringify(got)); process.exit(0); }, 5000).unref();
`;
const HTTP_GET = `
require('http').get({ host: process.argv[1], port: Number(process.argv[2]), agent: false }, (res) => {
  let b = ''; res.on('data', (d) => (b += d)); res.on('end', () => console.log('body:' + JSON.stringify(b)));
}).on('error', (e) => console.log('error:' + e.code));
`;

type LogLine = Record<string, unknown> & { msg: string };
const logLines = (p: LabProcess): LogLine[] =>
  p.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);

async function waitForLog(p: LabProcess, pred: (l: LogLine) => boolean, what: string): Promise<LogLine> {
  const end = Date.now() + 5_000;
  for (;;) {
    const hit = logLines(p).find(pred);
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no log line for ${what}; ${p.output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const parsed = (out: string, key: string): string => {
  const m = new RegExp(`${key}:(.*)`).exec(out);
  assert.ok(m, `expected "${key}:" in ${JSON.stringify(out)}`);
  return m[1]!.startsWith('"') ? (JSON.parse(m[1]!) as string) : m[1]!;
};

describe('transparent capture in a lab', { timeout: 120_000 }, () => {
  let lab: NetLab;
  let vm: LabHost;
  let peer: LabHost;
  let ext: LabHost;
  let vmProxy: LabProcess;
  let peerProxy: LabProcess;

  after(() => lab?.destroy());

  before(async () => {
    lab = await NetLab.create();
    vm = await lab.host('vm');
    peer = await lab.host('peer');
    ext = await lab.host('ext');
    await lab.network('lan', [vm, peer, ext]);
    // The VIP range leaves through the veth, as it would through a VM's NIC.
    await lab.run(vm, 'ip', ['route', 'add', '240.240.0.0/16', 'dev', vm.links[0]!.iface]);

    const users = staticUserDb({});
    const env = { hasIpv6: false };
    await installCapture(captureOptions({ proxyUser: PROXY_UID, dns: false, ipv6: false }, users), lab.runner(vm), env);
    await installCapture(captureOptions({ proxyUser: PROXY_UID, dns: false, ipv6: false, inboundPorts: [PORT] }, users), lab.runner(peer), env);

    const app = lab.node(peer, HTTP_APP, ['127.0.0.1', String(PORT), 'peer'], { uid: APP_UID });
    const outside = lab.node(ext, GREETER, ['0.0.0.0', '8080', 'outside']);
    await Promise.all([app.waitFor(/ready/), outside.waitFor(/ready/)]);

    const ca = makeCa('lab-mesh');
    const reviews: ServiceView = {
      key: 'reviews.default',
      hostname: HOSTNAME,
      vip: VIP,
      ports: [{ name: 'http', port: PORT, protocol: 'HTTP' }],
      endpoints: [{ address: peer.ip(), mtlsPort: 15006, identity: PEER_ID, workload: 'reviews-1', healthy: true, ports: [{ name: 'http', port: PORT }] }],
      version: '1',
    };
    const config = (id: string, options: Record<string, unknown>) => JSON.stringify({ identity: toTlsIdentity(makeLeaf(ca, id)), services: [reviews], options });
    vmProxy = lab.node(vm, PROXY_SCRIPT, [], {
      uid: PROXY_UID,
      input: config(VM_ID, { inboundListen: { host: '0.0.0.0', port: 15006 }, targets: [], upstreams: [], outboundListen: [{ host: '127.0.0.1', port: 15001 }], outboundPolicy: 'allow-any' }),
    });
    peerProxy = lab.node(peer, PROXY_SCRIPT, [], {
      uid: PROXY_UID,
      input: config(PEER_ID, {
        inboundListen: { host: '0.0.0.0', port: 15006 },
        targets: [{ hostname: HOSTNAME, servicePort: PORT, host: '127.0.0.1', targetPort: PORT }],
        upstreams: [],
        inboundCapture: { mode: 'PERMISSIVE' },
      }),
    });
    await Promise.all([vmProxy.waitFor(/proxy listening/), peerProxy.waitFor(/proxy listening/)]);
  });

  it('routes a captured connection to a VIP over mesh mTLS, reading the real original destination', T, async () => {
    const r = await lab.run(vm, process.execPath, ['-e', HTTP_GET, '--', VIP, String(PORT)], { uid: APP_UID });
    assert.equal(parsed(r.stdout, 'body'), 'hello from peer\n');
    const out = await waitForLog(vmProxy, (l) => l.msg === 'outbound' && l.route === 'vip', 'the outbound access log');
    assert.equal(out.originalDst, `${VIP}:${PORT}`);
    assert.equal(out.service, 'reviews.default');
    assert.equal(out.sni, buildSni(PORT, HOSTNAME));
    assert.equal(out.peer, PEER_ID);
    const inbound = await waitForLog(peerProxy, (l) => l.msg === 'inbound' && l.peer === VM_ID, 'the peer to see the vm identity');
    assert.equal(inbound.sni, buildSni(PORT, HOSTNAME));
  });

  it('routes a captured connection to an endpoint address:port to that endpoint over the mesh', T, async () => {
    const r = await lab.run(vm, process.execPath, ['-e', HTTP_GET, '--', peer.ip(), String(PORT)], { uid: APP_UID });
    assert.equal(parsed(r.stdout, 'body'), 'hello from peer\n');
    const out = await waitForLog(vmProxy, (l) => l.msg === 'outbound' && l.route === 'endpoint', 'the endpoint route');
    assert.equal(out.originalDst, `${peer.ip()}:${PORT}`);
    assert.equal(out.endpoint, `${peer.ip()}:15006`);
    // Mesh, not plaintext: the peer's capture front handed it to mTLS.
    assert.ok(!logLines(peerProxy).some((l) => l.route === 'plaintext' && String(l.remote).startsWith(vm.ip())));
  });

  it('passes a destination outside the mesh through (allow-any)', T, async () => {
    const r = await lab.run(vm, process.execPath, ['-e', CLIENT, '--', ext.ip(), '8080', 'ping'], { uid: APP_UID });
    assert.equal(parsed(r.stdout, 'got'), 'outside\nping\n');
    const out = await waitForLog(vmProxy, (l) => l.msg === 'outbound' && l.route === 'passthrough', 'the passthrough log');
    assert.equal(out.originalDst, `${ext.ip()}:8080`);
  });

  it('serves captured plaintext from outside the mesh on the app port (PERMISSIVE)', T, async () => {
    const r = await lab.run(ext, process.execPath, ['-e', HTTP_GET, '--', peer.ip(), String(PORT)]);
    assert.equal(parsed(r.stdout, 'body'), 'hello from peer\n');
    const line = await waitForLog(peerProxy, (l) => l.msg === 'inbound' && l.route === 'plaintext', 'the plaintext log');
    assert.equal(line.originalDst, `${peer.ip()}:${PORT}`);
    assert.equal(line.target, `127.0.0.1:${PORT}`);
    assert.equal(line.mode, 'PERMISSIVE');
  });

  it('refuses a client that dials 15001 directly instead of being redirected', T, async () => {
    const r = await lab.run(vm, process.execPath, ['-e', CLIENT, '--', '127.0.0.1', '15001', 'x'], { uid: APP_UID });
    assert.match(r.stdout, /got:""|error:ECONNRESET/);
    // With NAT rules loaded conntrack tracks every connection, so an
    // unredirected one reports its own destination: the listener.
    const line = await waitForLog(vmProxy, (l) => l.msg === 'outbound connection refused', 'the refusal');
    assert.equal(line.code, 'KEDGE_ORIGINAL_DST_LOOP');
    assert.equal(line.originalDst, '127.0.0.1:15001');
  });
});
