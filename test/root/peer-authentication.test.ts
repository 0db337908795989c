// PeerAuthentication acceptance in the network-namespace lab (issue 12): a
// federation, VM B with inbound capture of its app ports 9080 and 9090 (real
// iptables), VM A in the mesh (an agent with an explicit upstream), and a
// host outside the mesh with nothing but curl. STRICT for B's namespace
// refuses plaintext from outside on both captured ports, while mesh mTLS
// from A still passes; a PERMISSIVE portLevelMtls for 9090 of B's workload
// lets plaintext in there only; deleting the namespace policy lets it in
// again on 9080. Needs root, iptables, iproute2 and curl.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { LabProcess, NetLab } from '../support/netlab';
import { eventually } from '../support/procs';

const KEDGE = path.resolve(__dirname, '..', '..', 'bin', 'kedge.js');
const PROXY_UID = 1337;

for (const tool of ['curl', 'iptables-restore', 'ip']) {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`]);
  assert.equal(r.status, 0, `${tool} is required by the peer-authentication root test (apt-get install curl iptables iproute2)`);
}

/** Resolves with the first stderr line (pino JSON) matching `pred`. */
function waitLog(p: LabProcess, pred: (l: Record<string, unknown>) => boolean, what: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      for (const line of p.stderr.split('\n')) {
        let l: Record<string, unknown>;
        try {
          l = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (pred(l)) return resolve(l);
      }
      if (Date.now() > deadline || p.child.exitCode !== null) return reject(new Error(`no ${what} within ${timeoutMs} ms; ${p.output().slice(-3000)}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

const APP = `let listening = 0;
for (const port of [9080, 9090]) require('node:http').createServer((q, s) => s.end('reviews ' + port)).listen(port, '127.0.0.1', () => ++listening === 2 && console.log('ready'));`;

const STRICT_NS = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: shop }
spec:
  mtls: { mode: STRICT }
`;
const PORT_9090 = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: reviews-metrics, namespace: shop }
spec:
  selector: { matchLabels: { app: reviews } }
  portLevelMtls:
    9090: { mode: PERMISSIVE }
`;

describe('PeerAuthentication in the netlab (root)', () => {
  it('STRICT for a namespace refuses plaintext from outside the mesh on captured ports; PERMISSIVE for one port of one workload still accepts it there', async (t) => {
    const lab = await NetLab.create(t);
    const fed = await lab.host('fed');
    const a = await lab.host('vma');
    const b = await lab.host('vmb');
    const ext = await lab.host('ext');
    await lab.network('lan', [fed, a, b, ext]);
    const [ipF, ipA, ipB] = [fed.ip(), a.ip(), b.ip()];

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-peerauth-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.chmodSync(dir, 0o755);
    const fedDir = path.join(dir, 'fed');
    const fedProc = lab.spawn(fed, process.execPath, [KEDGE, 'federation', '--data-dir', fedDir, '--listen-grpc', `${ipF}:15012`, '--listen-http', `${ipF}:15014`]);
    await waitLog(fedProc, (l) => l.msg === 'federation ready', 'the federation ready');
    const adminArgs = ['--federation', `https://${ipF}:15014`, '--admin-token-file', path.join(fedDir, 'admin-token')];
    const kedge = (...args: string[]) => lab.run(fed, process.execPath, [KEDGE, ...args, ...adminArgs], { allowFailure: true });
    const token = async (ns: string, sa: string, ...grants: string[]) => (await kedge('token', 'create', '--namespace', ns, '--service-account', sa, ...grants)).stdout.trim();

    const agentConfig = (name: string, ip: string, extra: Record<string, unknown>) => {
      const home = path.join(dir, name);
      fs.mkdirSync(path.join(home, 'data'), { recursive: true });
      const cfg = {
        federation: { address: `${ipF}:15012`, rootCert: path.join(home, 'root-cert.pem'), tokenFile: path.join(home, 'token') },
        proxy: { inboundListen: '0.0.0.0:15006' },
        admin: { listen: '127.0.0.1:15000' },
        dataDir: path.join(home, 'data'),
        ...extra,
        workload: { name, namespace: 'shop', serviceAccount: name, address: ip, ...(extra.workload as object) },
      };
      fs.writeFileSync(path.join(home, 'agent.yaml'), YAML.stringify(cfg));
      fs.copyFileSync(path.join(fedDir, 'root-cert.pem'), path.join(home, 'root-cert.pem'));
      return path.join(home, 'agent.yaml');
    };

    // VM B: reviews on 9080 and 9090 (127.0.0.1 only), both captured inbound; the agent's own default is PERMISSIVE.
    const app = lab.spawn(b, process.execPath, ['-e', APP]);
    await app.waitFor(/ready/, 10_000);
    const bFile = agentConfig('vm-b', ipB, {
      services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, protocol: 'http' }, { name: 'metrics', port: 9090, protocol: 'http' }] }],
      capture: { proxyUser: PROXY_UID, inboundPorts: [9080, 9090], dns: false },
      workload: { labels: { app: 'reviews' } },
    });
    fs.writeFileSync(path.join(dir, 'vm-b', 'token'), await token('shop', 'vm-b', '--service', 'reviews', '--labels', 'app=reviews'));
    // VM A: in the mesh through an explicit upstream, no capture.
    const aFile = agentConfig('vm-a', ipA, { upstreams: [{ service: 'reviews.shop', port: 9080, listen: '127.0.0.1:19080' }] });
    fs.writeFileSync(path.join(dir, 'vm-a', 'token'), await token('shop', 'vm-a'));
    spawnSync('chown', ['-R', `${PROXY_UID}:${PROXY_UID}`, path.join(dir, 'vm-a'), path.join(dir, 'vm-b')]);
    await lab.run(b, process.execPath, [KEDGE, 'capture', 'install', '--config', bFile]);
    const agentB = lab.spawn(b, process.execPath, [KEDGE, 'agent', '--config', bFile], { uid: PROXY_UID });
    const agentA = lab.spawn(a, process.execPath, [KEDGE, 'agent', '--config', aFile], { uid: PROXY_UID });
    await waitLog(agentB, (l) => l.msg === 'security policies in force', 'B\'s first policy push');
    await waitLog(agentA, (l) => l.msg === 'registered with the federation', 'A registered');

    const outside = (port: number) => lab.run(ext, 'curl', ['-sS', '--max-time', '8', `http://${ipB}:${port}/`], { allowFailure: true });
    const mesh = () => lab.run(a, 'curl', ['-sS', '--max-time', '8', 'http://127.0.0.1:19080/'], { allowFailure: true });
    const waitMesh = () => eventually(async () => (await mesh()).stdout === 'reviews 9080', 20_000, 'A reaching reviews over the mesh');

    // Before any policy: plaintext from outside is served on both captured ports.
    assert.equal((await outside(9080)).stdout, 'reviews 9080');
    assert.equal((await outside(9090)).stdout, 'reviews 9090');
    await waitMesh();

    // STRICT for the namespace, PERMISSIVE for 9090 of the reviews workload.
    const file = path.join(dir, 'peer-auth.yaml');
    fs.writeFileSync(file, `${STRICT_NS}---\n${PORT_9090}`);
    const applied = await kedge('apply', '-f', file);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /^peerauthentication\/default \(shop\) applied$/m);
    assert.match(applied.stdout, /^peerauthentication\/reviews-metrics \(shop\) applied$/m);
    await waitLog(agentB, (l) => l.msg === 'security policies in force' && l.peerAuthentication === 'STRICT, 9090=PERMISSIVE (shop/default < shop/reviews-metrics)', 'B enforcing STRICT with 9090 PERMISSIVE');

    const refused = await outside(9080);
    assert.notEqual(refused.code, 0, 'STRICT refuses plaintext from outside the mesh on 9080');
    assert.equal(refused.stdout, '');
    const line = await waitLog(agentB, (l) => l.code === 'KEDGE_INBOUND_PLAINTEXT_REFUSED', 'the refusal log line');
    assert.equal(line.originalDst, `${ipB}:9080`);
    assert.equal(line.modeFrom, 'PeerAuthentication shop/reviews-metrics');
    assert.equal((await outside(9090)).stdout, 'reviews 9090', 'PERMISSIVE on port 9090 of the reviews workload still accepts plaintext');
    assert.equal((await mesh()).stdout, 'reviews 9080', 'mesh mTLS from A passes STRICT');

    // kedge get shows both, and what they apply to.
    const got = await kedge('get', 'peerauthentications');
    assert.equal(got.code, 0, got.stderr);
    assert.match(got.stdout, /shop\s+default\s+\(namespace\)\s+STRICT\s+-\s+kedge apply\s+shop\/vm-a,shop\/vm-b/);
    assert.match(got.stdout, /shop\s+reviews-metrics\s+app=reviews\s+UNSET\s+9090=PERMISSIVE\s+kedge apply\s+shop\/vm-b/);

    // Deleting the namespace policy is pushed: 9080 takes plaintext again.
    const deleted = await kedge('delete', 'peerauthentication', 'shop/default');
    assert.equal(deleted.code, 0, deleted.stderr);
    await waitLog(agentB, (l) => l.msg === 'security policies in force' && l.peerAuthentication === 'PERMISSIVE (shop/reviews-metrics)', 'B back to PERMISSIVE');
    assert.equal((await outside(9080)).stdout, 'reviews 9080');

    agentA.kill();
    agentB.kill();
    await lab.run(b, process.execPath, [KEDGE, 'capture', 'remove']);
  });
});
