// Issue 3 acceptance in the network-namespace lab: a federation and two VM
// hosts, each in its own namespace. VM A has capture installed and its agent
// running as an unprivileged proxy user; VM B serves reviews.default on 9080
// (a plain HTTP server bound to 127.0.0.1); the federation's host also serves
// billing-db.default, a service entry with no Kedge proxy. Needs root,
// iptables, iproute2 and curl, and fails loudly without them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { LabHost, LabProcess, NetLab } from '../support/netlab';

const KEDGE = path.resolve(__dirname, '..', '..', 'bin', 'kedge.js');
const PROXY_UID = 1337; // the agents' user: its own traffic is never captured
const USER_UID = 1338; // an ordinary user running unmodified programs

for (const tool of ['curl', 'iptables-restore', 'ip']) {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`]);
  assert.equal(r.status, 0, `${tool} is required by the transparent-mesh root test (apt-get install curl iptables iproute2)`);
}

/** Resolves once `re` appears in the process's stderr (pino logs). */
function waitStderr(p: LabProcess, re: RegExp, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (re.test(p.stderr)) return resolve();
      if (Date.now() > deadline || p.child.exitCode !== null) return reject(new Error(`no ${re} within ${timeoutMs} ms; ${p.output().slice(-3000)}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

// A tiny upstream DNS server for names outside the mesh, and plain TCP/HTTP listeners.
const OUTSIDE = `
const dgram = require('node:dgram'), http = require('node:http'), net = require('node:net'), packet = require('dns-packet');
const [ip] = process.argv.slice(1);
const udp = dgram.createSocket('udp4');
udp.on('message', (m, r) => {
  const q = packet.decode(m);
  const name = q.questions[0].name;
  const answers = name === 'outside.test' && q.questions[0].type === 'A' ? [{ type: 'A', name, ttl: 5, data: ip }] : [];
  udp.send(packet.encode({ id: q.id, type: 'response', flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE, questions: q.questions, answers, rcode: answers.length ? 'NOERROR' : 'NXDOMAIN' }), r.port, r.address);
});
udp.bind(53, ip);
http.createServer((q, s) => s.end('outside')).listen(8080, ip);
// billing-db.default, a service entry: no Kedge proxy in front, reached in plain TCP.
http.createServer((q, s) => s.end('billing-db')).listen(5432, ip);
net.createServer((c) => c.end('SSH-2.0-lab\\r\\n')).listen(22, ip, () => console.log('ready'));
`;

const APP = `require('node:http').createServer((q, s) => s.end('reviews from vm-b')).listen(9080, '127.0.0.1', () => console.log('ready'));`;

describe('transparent capture across two VMs (root, netlab)', () => {
  it('meshes an unmodified curl by name, keeps outside traffic working, and serves or refuses plaintext by mode', async (t) => {
    const lab = await NetLab.create(t);
    const fed = await lab.host('fed');
    const a = await lab.host('vma');
    const b = await lab.host('vmb');
    await lab.network('lan', [fed, a, b]);
    const [ipF, ipA, ipB] = [fed.ip(), a.ip(), b.ip()];
    // VIPs must leave through the lab's interface, not lo (capture leaves lo alone).
    await lab.route(a, '240.240.0.0/16', ipF);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-tmesh-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.chmodSync(dir, 0o755);
    // ip netns exec bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
    for (const h of [a, b]) {
      fs.mkdirSync(`/etc/netns/${h.ns}`, { recursive: true });
      fs.writeFileSync(`/etc/netns/${h.ns}/resolv.conf`, `nameserver ${ipF}\n`);
      t.after(() => fs.rmSync(`/etc/netns/${h.ns}`, { recursive: true, force: true }));
    }

    const outside = lab.node(fed, OUTSIDE, [ipF]);
    await outside.waitFor(/ready/, 10_000);
    const fedDir = path.join(dir, 'fed');
    const fedConfig = path.join(dir, 'federation.yaml');
    fs.writeFileSync(fedConfig, YAML.stringify({ serviceEntries: [{ name: 'billing-db', namespace: 'default', ports: [{ name: 'http', port: 5432, protocol: 'http' }], endpoints: [{ address: ipF }] }] }));
    const fedProc = lab.spawn(fed, process.execPath, [KEDGE, 'federation', '--config', fedConfig, '--data-dir', fedDir, '--listen-grpc', `${ipF}:15012`, '--listen-http', `${ipF}:15014`]);
    await waitStderr(fedProc, /federation ready/);
    const token = async (ns: string, sa: string, ...grants: string[]) =>
      (await lab.run(fed, process.execPath, [KEDGE, 'token', 'create', '--namespace', ns, '--service-account', sa, ...grants, '--federation', `https://${ipF}:15014`, '--admin-token-file', path.join(fedDir, 'admin-token')])).stdout.trim();

    const agentConfig = (name: string, h: LabHost, ip: string, extra: Record<string, unknown>) => {
      const home = path.join(dir, name);
      fs.mkdirSync(path.join(home, 'data'), { recursive: true });
      const cfg = {
        federation: { address: `${ipF}:15012`, rootCert: path.join(home, 'root-cert.pem'), tokenFile: path.join(home, 'token') },
        proxy: { inboundListen: '0.0.0.0:15006' },
        admin: { listen: '127.0.0.1:15000' },
        dataDir: path.join(home, 'data'),
        ...extra,
        workload: { name, namespace: 'default', serviceAccount: name, address: ip, ...(extra.workload as object) },
      };
      fs.writeFileSync(path.join(home, 'agent.yaml'), YAML.stringify(cfg));
      // The federation's data dir is 0700: hand the agent its own copy of the root, as install.sh does.
      fs.copyFileSync(path.join(fedDir, 'root-cert.pem'), path.join(home, 'root-cert.pem'));
      spawnSync('chown', ['-R', `${PROXY_UID}:${PROXY_UID}`, home]);
      void h;
      return path.join(home, 'agent.yaml');
    };
    const startAgent = async (h: LabHost, file: string) => {
      const p = lab.spawn(h, process.execPath, [KEDGE, 'agent', '--config', file], { uid: PROXY_UID });
      await waitStderr(p, /registered with the federation/);
      return p;
    };

    // VM B: reviews on 9080, plaintext capture of inbound 9080 (PERMISSIVE first).
    const app = lab.spawn(b, process.execPath, ['-e', APP]);
    await app.waitFor(/ready/, 10_000);
    const bFile = agentConfig('vm-b', b, ipB, {
      services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, protocol: 'http' }] }],
      capture: { proxyUser: PROXY_UID, inboundPorts: [9080], dns: false },
    });
    fs.writeFileSync(path.join(dir, 'vm-b', 'token'), await token('default', 'vm-b', '--service', 'reviews'));
    const aFile = agentConfig('vm-a', a, ipA, { capture: { proxyUser: PROXY_UID } });
    fs.writeFileSync(path.join(dir, 'vm-a', 'token'), await token('default', 'vm-a'));

    const saveA = async () => (await lab.run(a, 'iptables-save')).stdout.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]$/, '')).join('\n');
    // A host that already uses NAT (as most do) and has another tool's rule:
    // remove must give back exactly this. (A host with no nat table at all keeps
    // an empty one after remove: iptables cannot delete a table; see docs/capture.md.)
    await lab.run(a, 'iptables-restore', ['--noflush'], { input: '*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' });
    await lab.run(a, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', '-d', '203.0.113.0/24', '-j', 'RETURN']);
    const beforeA = await saveA();
    await lab.run(a, process.execPath, [KEDGE, 'capture', 'install', '--config', aFile]);
    await lab.run(b, process.execPath, [KEDGE, 'capture', 'install', '--config', bFile]);
    let agentB = await startAgent(b, bFile);
    let agentA = await startAgent(a, aFile);

    const curl = (...args: string[]) => lab.run(a, 'curl', ['-sS', '--max-time', '8', ...args], { uid: USER_UID, allowFailure: true });
    // The proxy user's traffic is exempt from A's capture: a plaintext client from outside the mesh, as B sees it.
    const uncaptured = (...args: string[]) => lab.run(a, 'curl', ['-sS', '--max-time', '8', ...args], { uid: PROXY_UID, allowFailure: true });

    // 1. An ordinary user's curl by service name reaches VM B over mTLS.
    const byName = await curl('http://reviews.default.svc.cluster.local:9080/');
    assert.equal(byName.stdout, 'reviews from vm-b', byName.stderr);
    await waitStderr(agentB, /^(?=.*"msg":"inbound")(?=.*"peer":"spiffe:\/\/cluster\.local\/ns\/default\/sa\/vm-a").*$/m);
    const short = await curl('http://reviews.default:9080/');
    assert.equal(short.stdout, 'reviews from vm-b', short.stderr);

    // 2. Names and addresses outside the mesh still work (allow-any), SSH's port is untouched.
    const out = await curl('http://outside.test:8080/');
    assert.equal(out.stdout, 'outside', out.stderr);
    const ssh = await curl(`telnet://${ipF}:22`, '--max-time', '2');
    assert.match(ssh.stdout, /SSH-2\.0-lab/);

    // 3. Plaintext from outside the mesh to B's app port is captured on B and served (PERMISSIVE).
    const plain = await uncaptured(`http://${ipB}:9080/`);
    assert.equal(plain.stdout, 'reviews from vm-b', plain.stderr);
    // And an ordinary user on A dialling B's address directly is meshed (B's endpoint address:port).
    const direct = await curl(`http://${ipB}:9080/`);
    assert.equal(direct.stdout, 'reviews from vm-b', direct.stderr);

    // 3b. Auto mTLS: a service entry's name (no Kedge proxy at its endpoint)
    // is captured on A and sent in plain TCP to the entry's address.
    const db = await curl('http://billing-db.default:5432/');
    assert.equal(db.stdout, 'billing-db', db.stderr);
    await waitStderr(agentA, /^(?=.*"msg":"outbound")(?=.*"service":"billing-db\.default")(?=.*"plaintext":true).*$/m);

    // 4. registry-only on A refuses outside destinations; STRICT on B refuses plaintext.
    agentA.kill();
    agentB.kill();
    await Promise.all([agentA.exited, agentB.exited]);
    const aCfg = YAML.parse(fs.readFileSync(aFile, 'utf8'));
    aCfg.proxy.outboundPolicy = 'registry-only';
    fs.writeFileSync(aFile, YAML.stringify(aCfg));
    const bCfg = YAML.parse(fs.readFileSync(bFile, 'utf8'));
    bCfg.proxy.inboundMode = 'STRICT';
    fs.writeFileSync(bFile, YAML.stringify(bCfg));
    agentB = await startAgent(b, bFile);
    agentA = await startAgent(a, aFile);
    const refused = await curl('http://outside.test:8080/');
    assert.notEqual(refused.code, 0, 'registry-only refuses destinations outside the mesh');
    const meshStill = await curl('http://reviews.default.svc.cluster.local:9080/');
    assert.equal(meshStill.stdout, 'reviews from vm-b', meshStill.stderr);
    agentA.kill();
    await agentA.exited;
    aCfg.proxy.outboundPolicy = 'allow-any';
    fs.writeFileSync(aFile, YAML.stringify(aCfg));
    agentA = await startAgent(a, aFile);
    const strict = await uncaptured(`http://${ipB}:9080/`);
    assert.notEqual(strict.stdout, 'reviews from vm-b', 'STRICT refuses plaintext from outside the mesh');

    // 5. kedge capture remove restores iptables-save exactly.
    agentA.kill();
    await lab.run(a, process.execPath, [KEDGE, 'capture', 'remove']);
    assert.equal(await saveA(), beforeA);
    assert.match(beforeA, /203\.0\.113\.0\/24/);
  });
});
