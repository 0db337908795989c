// The network-namespace lab itself (needs root): hosts reach each other over
// a lab network, nothing routes out, and teardown leaves nothing behind, also
// when the test process dies.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { NetLab } from '../support/netlab';

// Echoes one line back over TCP on argv[1]:argv[2]; prints "ready" once listening.
const ECHO_SERVER = `
const net = require('net');
const [host, port] = process.argv.slice(1);
net.createServer((c) => c.pipe(c)).listen(Number(port), host, () => console.log('ready'));
`;
// Connects to argv[1]:argv[2], sends "hello", prints what comes back (or the error code).
const CLIENT = `
const net = require('net');
const [host, port] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port), timeout: 3000 }, () => s.end('hello'));
let got = '';
s.on('data', (d) => (got += d));
s.on('end', () => console.log('got:' + got));
s.on('timeout', () => { console.log('error:ETIMEDOUT'); process.exit(0); });
s.on('error', (e) => { console.log('error:' + e.code); process.exit(0); });
`;

function namespaces(): string[] {
  return (spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '').split('\n').map((l) => l.split(' ')[0] ?? '').filter(Boolean);
}

describe('netlab', () => {
  it('connects two hosts on one network over IPv4 and IPv6 TCP', async (t) => {
    const lab = await NetLab.create(t);
    const a = await lab.host('a');
    const b = await lab.host('b');
    await lab.network('lan', [a, b]);
    assert.equal(a.ip(), '198.18.0.1');
    assert.equal(b.ip('lan'), '198.18.0.2');
    const server = lab.node(b, ECHO_SERVER, ['::', '7000']);
    await server.waitFor(/ready/);
    const v4 = await lab.run(a, process.execPath, ['-e', CLIENT, '--', b.ip(), '7000']);
    assert.equal(v4.stdout.trim(), 'got:hello');
    const v6 = await lab.run(a, process.execPath, ['-e', CLIENT, '--', b.ip6(), '7000']);
    assert.equal(v6.stdout.trim(), 'got:hello');
  });

  it('has no route out of the lab', async (t) => {
    const lab = await NetLab.create(t);
    const a = await lab.host('a');
    await lab.network('lan', [a]);
    const routes = await lab.run(a, 'ip', ['-4', 'route', 'show']);
    assert.equal(routes.stdout.trim(), '198.18.0.0/24 dev eth0 proto kernel scope link src 198.18.0.1');
    const get = await lab.run(a, 'ip', ['route', 'get', '1.1.1.1'], { allowFailure: true });
    assert.notEqual(get.code, 0);
    assert.match(get.stderr, /unreachable/i);
    const out = await lab.run(a, process.execPath, ['-e', CLIENT, '--', '1.1.1.1', '80']);
    assert.equal(out.stdout.trim(), 'error:ENETUNREACH');
    // The switch namespace has no addresses and no routes either.
    const sw = await lab.run(lab.switchNs, 'ip', ['-4', 'route', 'show']);
    assert.equal(sw.stdout.trim(), '');
  });

  it('routes between networks only through a lab router', async (t) => {
    const lab = await NetLab.create(t);
    const [a, r, b] = [await lab.host('a'), await lab.host('r'), await lab.host('b')];
    await lab.network('left', [a, r]);
    await lab.network('right', [r, b]);
    await lab.forwarding(r);
    await lab.route(a, '198.18.1.0/24', r.ip('left'));
    await lab.route(b, '198.18.0.0/24', r.ip('right'));
    const server = lab.node(b, ECHO_SERVER, ['0.0.0.0', '7001']);
    await server.waitFor(/ready/);
    const res = await lab.run(a, process.execPath, ['-e', CLIENT, '--', b.ip(), '7001']);
    assert.equal(res.stdout.trim(), 'got:hello');
  });

  it('runs commands as another user', async (t) => {
    const lab = await NetLab.create(t);
    const a = await lab.host('a');
    const res = await lab.run(a, 'id', ['-u'], { uid: 65534 });
    assert.equal(res.stdout.trim(), '65534');
  });

  it('bounds run() with a timeout', async (t) => {
    const lab = await NetLab.create(t);
    const a = await lab.host('a');
    await assert.rejects(lab.run(a, 'sleep', ['30'], { timeoutMs: 200 }), /did not finish within 200 ms/);
  });

  it('tears down: namespaces deleted and processes killed', async () => {
    const lab = await NetLab.create();
    const a = await lab.host('a');
    await lab.network('lan', [a]);
    const p = lab.spawn(a, 'sleep', ['300']);
    const pid = p.child.pid as number;
    assert.ok(namespaces().includes(a.ns));
    await lab.destroy();
    await p.exited;
    assert.deepEqual(namespaces().filter((n) => n.startsWith(lab.prefix)), []);
    assert.throws(() => process.kill(pid, 0), /ESRCH/);
    await lab.destroy(); // twice is fine
  });

  it('tears down when the test process dies from an uncaught error, and reaps labs of SIGKILLed processes', async () => {
    const netlab = join(__dirname, '..', 'support', 'netlab.js');
    const script = (then: string) => `
      const { NetLab } = require(${JSON.stringify(netlab)});
      NetLab.create().then(async (lab) => { await lab.host('x'); const p = lab.spawn(lab.prefix + 'x', 'sleep', ['300']); await new Promise((r) => setTimeout(r, 200)); if (p.child.exitCode !== null) throw new Error('sleep did not start'); console.log(lab.prefix); ${then} });`;
    const crashed = spawnSync(process.execPath, ['-e', script("throw new Error('boom');")], { encoding: 'utf8', timeout: 20_000 });
    assert.notEqual(crashed.status, 0);
    const prefix = crashed.stdout.trim();
    assert.match(prefix, /^klab-\d+-\d+-$/);
    assert.deepEqual(namespaces().filter((n) => n.startsWith(prefix)), [], 'the exit handler deleted the namespaces');

    const killed = spawnSync(process.execPath, ['-e', script("process.kill(process.pid, 'SIGKILL');")], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(killed.signal, 'SIGKILL');
    const stale = killed.stdout.trim();
    assert.ok(namespaces().some((n) => n.startsWith(stale)), 'a SIGKILLed lab leaves namespaces');
    const next = await NetLab.create();
    await next.destroy();
    assert.deepEqual(namespaces().filter((n) => n.startsWith(stale)), [], 'the next lab reaped them');
  });
});
