// Issue 5 acceptance in the network-namespace lab: net-a holds a VM client
// (us-east/zone-a) and endpoints in zone-a and zone-b; net-b holds endpoints
// in us-west behind an east-west gateway, and net-a reaches net-b only
// through that gateway (no route). Servers are killed with SIGKILL and
// traffic must move zone-a -> zone-b -> us-west without failed requests.
// Needs root and iproute2; fails loudly without them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { LabHost, LabProcess, NetLab } from '../support/netlab';

const KEDGE = path.resolve(__dirname, '..', '..', 'bin', 'kedge.js');
assert.equal(spawnSync('sh', ['-c', 'command -v ip']).status, 0, 'iproute2 is required by the failover lab test');

function waitStderr(p: LabProcess, re: RegExp, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (re.test(p.stderr)) return resolve();
      if (Date.now() > deadline || p.child.exitCode !== null) return reject(new Error(`no ${re} within ${timeoutMs} ms; ${p.output().slice(-2000)}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

const APP = `const [name] = process.argv.slice(1); require('node:http').createServer((q, s) => s.end(name)).listen(9080, '127.0.0.1', () => console.log('ready'));`;
// N sequential requests on new connections; prints {name: count, failed: n}.
const LOAD = `
const http = require('node:http');
const [n] = process.argv.slice(1).map(Number);
(async () => {
  const counts = { failed: 0 };
  for (let i = 0; i < n; i++) {
    const body = await new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: 19080, agent: false, timeout: 8000 }, (res) => { let b = ''; res.on('data', (c) => (b += c)); res.on('end', () => resolve(b)); res.on('error', () => resolve('')); });
      req.on('timeout', () => req.destroy()); req.on('error', () => resolve(''));
    });
    if (body) counts[body] = (counts[body] || 0) + 1; else counts.failed += 1;
  }
  console.log(JSON.stringify(counts));
})();
`;

describe('failover across zones and networks (root, netlab)', () => {
  it('moves zone-a -> zone-b -> us-west through the gateway with no failed requests, follows the 1.4 rule, and comes back', async (t) => {
    const lab = await NetLab.create(t);
    const names = ['fed', 'client', 'za1', 'za2', 'zb1', 'gw', 'w1'] as const;
    const h = {} as Record<(typeof names)[number], LabHost>;
    for (const n of names) h[n] = await lab.host(n);
    await lab.network('ctl', names.map((n) => h[n]));
    await lab.network('neta', [h.client, h.za1, h.za2, h.zb1, h.gw]);
    await lab.network('netb', [h.gw, h.w1]);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-flab-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const fedDir = path.join(dir, 'fed');
    const fedIp = h.fed.ip('ctl');
    const fed = lab.spawn(h.fed, process.execPath, [KEDGE, 'federation', '--data-dir', fedDir, '--listen-grpc', `${fedIp}:15012`, '--listen-http', `${fedIp}:15014`, '--grace-period', '30s']);
    await waitStderr(fed, /federation ready/);
    const kedge = (...args: string[]) => lab.run(h.fed, process.execPath, [KEDGE, ...args, '--federation', `https://${fedIp}:15014`, '--admin-token-file', path.join(fedDir, 'admin-token')]);

    const agents = new Map<string, LabProcess>();
    const apps = new Map<string, LabProcess>();
    const startServer = async (name: 'za1' | 'za2' | 'zb1' | 'w1', locality: string, network: string, ip: string) => {
      const app = lab.spawn(h[name], process.execPath, ['-e', APP, name]);
      await app.waitFor(/ready/, 10_000);
      apps.set(name, app);
      agents.set(name, await startAgent(name, h[name], { workload: { address: ip, locality, network }, services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, protocol: 'http' }] }] }));
    };
    const startAgent = async (name: string, host: LabHost, cfg: Record<string, unknown>, args: string[] = []) => {
      const home = path.join(dir, name);
      fs.mkdirSync(home, { recursive: true });
      if (!fs.existsSync(path.join(home, 'token'))) {
        const ns = args.includes('gateway') ? 'mesh-gateways' : 'default';
        const wl0 = cfg.workload as { network?: string };
        const grants = args.includes('gateway') ? ['--gateway', String(wl0.network), '--new-network'] : ['--service', 'reviews'];
        fs.writeFileSync(path.join(home, 'token'), (await kedge('token', 'create', '--namespace', ns, '--service-account', name, ...grants)).stdout.trim());
      }
      const wl = cfg.workload as Record<string, unknown>;
      const config = {
        ...cfg,
        federation: { address: `${fedIp}:15012`, rootCert: path.join(fedDir, 'root-cert.pem'), tokenFile: path.join(home, 'token') },
        workload: { name, namespace: args.includes('gateway') ? 'mesh-gateways' : 'default', serviceAccount: name, ...wl },
        admin: { listen: '127.0.0.1:15000' },
        dataDir: path.join(home, 'data'),
      };
      fs.writeFileSync(path.join(home, 'agent.yaml'), YAML.stringify(config));
      const p = lab.spawn(host, process.execPath, [KEDGE, 'agent', '--config', path.join(home, 'agent.yaml'), ...args]);
      await waitStderr(p, /registered with the federation/);
      return p;
    };
    const kill = async (name: string) => {
      agents.get(name)!.kill();
      apps.get(name)!.kill();
      await Promise.all([agents.get(name)!.exited, apps.get(name)!.exited]);
    };
    const load = async (n: number) => JSON.parse((await lab.run(h.client, process.execPath, ['-e', LOAD, String(n)], { timeoutMs: 120_000 })).stdout) as Record<string, number>;

    await startServer('za1', 'us-east/zone-a', 'net-a', h.za1.ip('neta'));
    await startServer('za2', 'us-east/zone-a', 'net-a', h.za2.ip('neta'));
    await startServer('zb1', 'us-east/zone-b', 'net-a', h.zb1.ip('neta'));
    await startServer('w1', 'us-west/zone-w', 'net-b', h.w1.ip('netb'));
    agents.set('gw', await startAgent('gw', h.gw, { workload: { address: h.gw.ip('netb'), network: 'net-b', locality: 'us-west/zone-w' }, gateway: { listen: '0.0.0.0:15443', address: h.gw.ip('neta') } }, ['--mode', 'gateway']));
    // Short ejections so "bring them back" is quick; defaults otherwise.
    fs.writeFileSync(path.join(dir, 'policy.yaml'), 'kind: TrafficPolicy\nspec:\n  service: reviews.default\n  outlierDetection: { baseEjectionTime: 1s }\n');
    await kedge('apply', '-f', path.join(dir, 'policy.yaml'));
    const client = await startAgent('client', h.client, { workload: { address: h.client.ip('neta'), locality: 'us-east/zone-a', network: 'net-a' }, upstreams: [{ service: 'reviews.default', port: 9080, listen: '127.0.0.1:19080' }] });
    agents.set('client', client);
    // The client's view: zone-a, zone-b, and net-b only as its gateway.
    const view = JSON.parse((await kedge('get', 'endpoints', 'reviews.default', '--from', 'default/client', '-o', 'json')).stdout) as { endpoints: { address: string; priority: number }[] };
    assert.deepEqual(view.endpoints.map((e) => [e.address, e.priority]).sort(), [[h.gw.ip('neta'), 3], [h.za1.ip('neta'), 0], [h.za2.ip('neta'), 0], [h.zb1.ip('neta'), 2]].sort());

    // 1. Steady load stays in zone-a.
    const steady = await load(40);
    assert.deepEqual(Object.keys(steady).filter((k) => steady[k]).sort(), ['za1', 'za2'], JSON.stringify(steady));

    // 2. Half of zone-a down: zone-a keeps min(100, 50% x 1.4) = 70%, zone-b takes 30%.
    await kill('za1');
    const half = await load(300);
    assert.equal(half.failed, 0, JSON.stringify(half));
    const shareA = (half.za2 ?? 0) / 300;
    assert.ok(shareA > 0.6 && shareA < 0.8, `zone-a share ${shareA} should be about 0.7: ${JSON.stringify(half)}`);

    // 3. All of zone-a down: everything to zone-b, nothing fails.
    await kill('za2');
    const zoneB = await load(40);
    assert.deepEqual(zoneB, { failed: 0, zb1: 40 });

    // 4. Zone-b down too: us-west through the gateway, nothing fails, and the
    //    server proxy saw the client's own identity (the gateway never terminated TLS).
    await kill('zb1');
    const west = await load(40);
    assert.deepEqual(west, { failed: 0, w1: 40 });
    await waitStderr(agents.get('w1')!, /^(?=.*"msg":"inbound")(?=.*"peer":"spiffe:\/\/cluster\.local\/ns\/default\/sa\/client").*$/m);

    // 5. Bring zone-a back: traffic returns once the ejections end (policy: 1 s base).
    await startServer('za1', 'us-east/zone-a', 'net-a', h.za1.ip('neta'));
    await startServer('za2', 'us-east/zone-a', 'net-a', h.za2.ip('neta'));
    let back: Record<string, number> = {};
    for (let i = 0; i < 10; i++) {
      back = await load(20);
      if (!back.w1 && !back.zb1) break;
      await new Promise((r) => setTimeout(r, 1_000));
    }
    assert.equal(back.failed, 0, JSON.stringify(back));
    assert.deepEqual(Object.keys(back).filter((k) => back[k] && k !== 'failed').sort(), ['za1', 'za2'], JSON.stringify(back));

    // 6. A failoverPriority policy changes the order as written: by network
    //    and region only, zone-b ranks with zone-a and takes its share.
    await startServer('zb1', 'us-east/zone-b', 'net-a', h.zb1.ip('neta'));
    fs.writeFileSync(path.join(dir, 'policy.yaml'), 'kind: TrafficPolicy\nspec:\n  service: reviews.default\n  outlierDetection: { baseEjectionTime: 1s }\n  locality: { failoverPriority: [ network, region ] }\n');
    await kedge('apply', '-f', path.join(dir, 'policy.yaml'));
    let spread: Record<string, number> = {};
    for (let i = 0; i < 10; i++) {
      spread = await load(60);
      if (spread.zb1 && spread.za1 && spread.za2) break;
      await new Promise((r) => setTimeout(r, 1_000));
    }
    assert.equal(spread.failed, 0, JSON.stringify(spread));
    assert.ok(spread.zb1 && spread.za1 && spread.za2 && !spread.w1, `zone-a and zone-b share, us-west does not: ${JSON.stringify(spread)}`);
  });
});
