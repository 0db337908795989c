// Capture rules against real iptables in lab namespaces (needs root, and both
// the nft and legacy iptables backends: Debian's iptables package ships both).
// Each backend gets its own namespaces: mixing them in one would apply both.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { IptablesTools, installCapture, installCaptureRules, iptablesTools, readCaptureState, removeCapture, showCapture } from '../../agent/capture/apply';
import { captureOptions } from '../../agent/capture/options';
import { buildCaptureRules, captureState } from '../../agent/capture/rules';
import { staticUserDb } from '../../agent/capture/users';
import { hasCode } from '../../proto/model/errors';
import { LabHost, NetLab } from '../support/netlab';

const BACKENDS = ['nft', 'legacy'] as const;
const PROXY_UID = 1337; // numeric, so no passwd entry is needed
const users = staticUserDb({});
const opts = (v: Record<string, unknown> = {}) => captureOptions({ proxyUser: PROXY_UID, ...v }, users);

for (const b of BACKENDS) {
  for (const tool of [`iptables-${b}-save`, `iptables-${b}-restore`, `ip6tables-${b}-save`, `ip6tables-${b}-restore`]) {
    const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
    assert.ok(!r.error && r.status === 0, `${tool} is required by the capture root tests (apt-get install iptables): ${r.error?.message ?? r.stderr}`);
  }
}

/** Both families' full iptables-save output, without comments and with counters zeroed. */
async function saveAll(lab: NetLab, h: LabHost, t: IptablesTools): Promise<string> {
  const v4 = await lab.run(h, t.v4.save);
  const v6 = await lab.run(h, t.v6.save);
  const norm = (s: string) => s.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => `${l.replace(/\[\d+:\d+\]$/, '[0:0]')}\n`).join('');
  return `${norm(v4.stdout)}--- v6\n${norm(v6.stdout)}`;
}

/** Drops tables holding nothing but built-in chains with ACCEPT policies. */
function dropEmptyTables(save: string): string {
  return save.replace(/^\*\w+\n(?::[A-Z]+ ACCEPT \[0:0\]\n)*COMMIT\n/gm, '');
}

// Touches the nat tables the way any NAT user (docker, libvirt) would have, so "before" has them.
async function instantiateNat(lab: NetLab, h: LabHost, t: IptablesTools): Promise<void> {
  // A bare "*nat COMMIT" does not create the table on nf_tables; declaring a built-in chain does.
  await lab.run(h, t.v4.restore, ['--noflush'], { input: '*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' });
  await lab.run(h, t.v6.restore, ['--noflush'], { input: '*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' });
}

async function foreignRules(lab: NetLab, h: LabHost, b: string): Promise<void> {
  for (const args of [
    ['-t', 'nat', '-A', 'OUTPUT', '-d', '203.0.113.0/24', '-j', 'RETURN'],
    ['-t', 'nat', '-N', 'FOREIGN'],
    ['-t', 'nat', '-A', 'FOREIGN', '-p', 'udp', '-j', 'RETURN'],
    ['-t', 'nat', '-A', 'PREROUTING', '-j', 'FOREIGN'],
    ['-A', 'INPUT', '-p', 'tcp', '--dport', '9', '-j', 'DROP'],
  ]) {
    await lab.run(h, `iptables-${b}`, args);
  }
  await lab.run(h, `ip6tables-${b}`, ['-t', 'nat', '-A', 'OUTPUT', '-d', '2001:db8::/32', '-j', 'RETURN']);
}

for (const backend of BACKENDS) {
  const tools = iptablesTools(backend);
  const env = { tools, hasIpv6: true };

  describe(`capture on iptables-${backend}`, () => {
    it('iptables-save before install equals after remove, and show reads back exactly the built rules', async (t) => {
      const lab = await NetLab.create(t);
      const h = await lab.host('vm');
      await instantiateNat(lab, h, tools);
      const before = await saveAll(lab, h, tools);
      const o = opts({ inboundPorts: '*', proxyGroup: 1338, ipv6: true, excludeOutboundCidrs: ['10.96.0.0/12', 'fd00::/8'] });
      await installCapture(o, lab.runner(h), env);
      const state = await readCaptureState(lab.runner(h), env);
      assert.deepEqual(state, { v4: captureState(o, 4), v6: captureState(o, 6) });
      const rules = buildCaptureRules(o);
      assert.equal(await showCapture(lab.runner(h), env), `# ${tools.v4.save} -t nat (Kedge chains and jumps only)\n${rules.v4}# ${tools.v6.save} -t nat (Kedge chains and jumps only)\n${rules.v6}`);
      assert.equal(await removeCapture(lab.runner(h), env), true);
      assert.equal(await saveAll(lab, h, tools), before);
    });

    it('installs every golden variant and reads each back byte for byte, replacing the one before', async (t) => {
      const lab = await NetLab.create(t);
      const h = await lab.host('vm');
      const dir = join(__dirname, '..', '..', '..', 'test', 'golden', 'capture');
      const files = readdirSync(dir).filter((f) => f.endsWith('.golden'));
      assert.ok(files.length >= 8, `golden files in ${dir}`);
      for (const f of files) {
        const [v4, v6] = readFileSync(join(dir, f), 'utf8').replace('# iptables-restore --noflush\n', '').split('# ip6tables-restore --noflush\n') as [string, string?];
        await installCaptureRules(v6 === undefined ? { v4 } : { v4, v6 }, lab.runner(h), env);
        const shown = await showCapture(lab.runner(h), env);
        const want6 = v6 ?? '# no Kedge rules\n';
        assert.equal(shown, `# ${tools.v4.save} -t nat (Kedge chains and jumps only)\n${v4}# ${tools.v6.save} -t nat (Kedge chains and jumps only)\n${want6}`, f);
      }
    });

    it('in a namespace that never had a nat table, remove leaves at most an empty nat table (documented)', async (t) => {
      const lab = await NetLab.create(t);
      const h = await lab.host('vm');
      const before = await saveAll(lab, h, tools);
      await installCapture(opts({ ipv6: true }), lab.runner(h), env);
      await removeCapture(lab.runner(h), env);
      const after = await saveAll(lab, h, tools);
      assert.equal(dropEmptyTables(after), dropEmptyTables(before));
      assert.ok(!after.includes('KEDGE'));
    });

    it('a second install replaces, never duplicates; a different install replaces the first', async (t) => {
      const lab = await NetLab.create(t);
      const h = await lab.host('vm');
      await foreignRules(lab, h, backend);
      const first = opts({ ipv6: true });
      await installCapture(first, lab.runner(h), env);
      const once = await saveAll(lab, h, tools);
      await installCapture(first, lab.runner(h), env);
      assert.equal(await saveAll(lab, h, tools), once);
      assert.equal(once.split('\n').filter((l) => l === '-A OUTPUT -j KEDGE_OUTPUT').length, 2, 'one jump per family');

      // Another tool appends after Kedge's jump; a reinstall keeps Kedge's jump in front of it.
      await lab.run(h, `iptables-${backend}`, ['-t', 'nat', '-A', 'OUTPUT', '-d', '198.51.100.0/24', '-j', 'RETURN']);
      await installCapture(opts({ ipv6: true, excludeOutboundPorts: [22, 25] }), lab.runner(h), env);
      const output = (await lab.run(h, tools.v4.save, ['-t', 'nat'])).stdout.split('\n').filter((l) => l.startsWith('-A OUTPUT '));
      assert.deepEqual(output, ['-A OUTPUT -d 203.0.113.0/24 -j RETURN', '-A OUTPUT -j KEDGE_OUTPUT', '-A OUTPUT -d 198.51.100.0/24 -j RETURN']);

      const second = opts({ ipv6: false, inboundPorts: [9080], dns: false });
      await installCapture(second, lab.runner(h), env);
      assert.deepEqual(await readCaptureState(lab.runner(h), env), { v4: captureState(second, 4), v6: { chains: [], rules: [] } });
    });

    it("keeps other software's rules, including ones added after install, and removes only Kedge's", async (t) => {
      const lab = await NetLab.create(t);
      const h = await lab.host('vm');
      const twin = await lab.host('twin');
      await foreignRules(lab, h, backend);
      await foreignRules(lab, twin, backend);
      await installCapture(opts({ inboundPorts: '*', ipv6: true }), lab.runner(h), env);
      // Appended after Kedge's jump, by some other tool, while capture is installed.
      for (const x of [h, twin]) await lab.run(x, `iptables-${backend}`, ['-t', 'nat', '-A', 'OUTPUT', '-d', '198.51.100.0/24', '-j', 'RETURN']);
      await removeCapture(lab.runner(h), env);
      assert.equal(await saveAll(lab, h, tools), await saveAll(lab, twin, tools));
    });

    it('a rule iptables-restore cannot parse leaves nothing behind and the error names the line and the rule', async (t) => {
      const lab = await NetLab.create(t);
      const h = await lab.host('vm');
      await instantiateNat(lab, h, tools);
      const before = await saveAll(lab, h, tools);
      const rules = buildCaptureRules(opts());
      const bad = { v4: rules.v4.replace('COMMIT\n', '-A KEDGE_OUTPUT -m nosuchmatch -j RETURN\nCOMMIT\n') };
      await assert.rejects(installCaptureRules(bad, lab.runner(h), { tools, hasIpv6: false }), (err: unknown) => {
        assert.ok(hasCode(err, 'KEDGE_CAPTURE_APPLY_FAILED'), String(err));
        assert.match((err as Error).message, /rejected the Kedge rules at line \d+ \(-A KEDGE_OUTPUT -m nosuchmatch -j RETURN\): Couldn't load match `nosuchmatch'/);
        return true;
      });
      assert.equal(await saveAll(lab, h, tools), before);
    });

    it('a rule the kernel refuses (as with a missing module) leaves nothing behind and says why', async (t) => {
      const lab = await NetLab.create(t);
      const h = await lab.host('vm');
      await instantiateNat(lab, h, tools);
      const before = await saveAll(lab, h, tools);
      const rules = buildCaptureRules(opts({ inboundPorts: '*' }));
      // The owner match is invalid on packets arriving through PREROUTING; only the kernel knows.
      const bad = { v4: rules.v4.replace('COMMIT\n', '-A KEDGE_INBOUND -m owner --uid-owner 1 -j RETURN\nCOMMIT\n') };
      await assert.rejects(installCaptureRules(bad, lab.runner(h), { tools, hasIpv6: false }), (err: unknown) => {
        assert.ok(hasCode(err, 'KEDGE_CAPTURE_APPLY_FAILED'), String(err));
        const m = (err as Error).message;
        assert.match(m, backend === 'nft' ? /line \d+ \(-A KEDGE_INBOUND -m owner --uid-owner 1 -j RETURN\): RULE_APPEND failed/ : /line \d+ \(COMMIT\): the kernel refused the table; a netfilter module is probably missing/);
        return true;
      });
      assert.equal(await saveAll(lab, h, tools), before);
    });

    it('when IPv6 fails after IPv4 applied, IPv4 goes back to what it was (nothing, or the previous install)', async (t) => {
      const lab = await NetLab.create(t);
      const h = await lab.host('vm');
      await instantiateNat(lab, h, tools);
      const empty = await saveAll(lab, h, tools);
      const rules = buildCaptureRules(opts({ ipv6: true }));
      const bad = { v4: rules.v4, v6: (rules.v6 as string).replace('COMMIT\n', '-A KEDGE_OUTPUT -m nosuchmatch -j RETURN\nCOMMIT\n') };
      const check = (err: unknown) => hasCode(err, 'KEDGE_CAPTURE_APPLY_FAILED') && /IPv4 rules already applied were rolled back/.test((err as Error).message);
      await assert.rejects(installCaptureRules(bad, lab.runner(h), env), check);
      assert.equal(await saveAll(lab, h, tools), empty);

      await installCapture(opts({ ipv6: true, inboundPorts: [8080] }), lab.runner(h), env);
      const previous = await saveAll(lab, h, tools);
      await assert.rejects(installCaptureRules(bad, lab.runner(h), env), check);
      assert.equal(await saveAll(lab, h, tools), previous);
    });
  });
}

// Replies "<tag>:<original destination>" (read with the native addon) to every TCP connection on argv[1].
const PROXY = `
const net = require('net');
const { originalDst } = require(${JSON.stringify(join(__dirname, '..', '..', 'agent', 'native', 'index.js'))});
const [port, tag] = process.argv.slice(1);
net.createServer((c) => {
  let d; try { const o = originalDst(c); d = o.address + ':' + o.port; } catch (e) { d = e.code; }
  c.end(tag + ':' + d);
}).listen(Number(port), '0.0.0.0', () => console.log('ready'));
`;
// Replies argv[2] to every TCP connection and UDP datagram on port argv[1].
const SERVER = `
const net = require('net'), dgram = require('dgram');
const [port, reply] = process.argv.slice(1);
let n = 0; const up = () => ++n === 2 && console.log('ready');
net.createServer((c) => c.end(reply)).listen(Number(port), '0.0.0.0', up);
const u = dgram.createSocket('udp4'); u.on('message', (m, r) => u.send(reply, r.port, r.address)); u.bind(Number(port), '0.0.0.0', up);
`;
// tcp|udp host port: prints the reply or the error code.
const CLIENT = `
const [proto, host, port] = process.argv.slice(1);
const done = (s) => { console.log(s); process.exit(0); };
setTimeout(() => done('timeout'), 3000);
if (proto === 'udp') {
  const u = require('dgram').createSocket('udp4');
  u.on('message', (m) => done(String(m))); u.send('q', Number(port), host);
} else {
  let got = ''; const s = require('net').connect(Number(port), host);
  s.on('data', (d) => (got += d)); s.on('end', () => done(got)); s.on('error', (e) => done(e.code));
}
`;

describe('capture redirects real traffic (default iptables backend)', () => {
  it("sends an ordinary user's TCP and DNS to the proxy, but not the proxy's own, SSH's or loopback traffic", async (t) => {
    const lab = await NetLab.create(t);
    const vm = await lab.host('vm');
    const other = await lab.host('other');
    await lab.network('lan', [vm, other]);
    const env = { hasIpv6: false };
    await installCapture(opts({ ipv6: false }), lab.runner(vm), env);

    const servers = [
      lab.node(other, SERVER, ['8080', 'real:8080']),
      lab.node(other, SERVER, ['22', 'real:22']),
      lab.node(other, SERVER, ['53', 'real-dns']),
      lab.node(vm, SERVER, ['9000', 'local']),
      lab.node(vm, SERVER, ['15053', 'kedge-dns']),
      lab.node(vm, PROXY, ['15001', 'proxy']),
    ];
    for (const s of servers) await s.waitFor(/ready/);
    const client = async (uid: number, ...args: string[]) => (await lab.run(vm, process.execPath, ['-e', CLIENT, '--', ...args], { uid })).stdout.trim();

    assert.equal(await client(65534, 'tcp', other.ip(), '8080'), `proxy:${other.ip()}:8080`, 'captured, with the original destination');
    assert.equal(await client(PROXY_UID, 'tcp', other.ip(), '8080'), 'real:8080', "the proxy's own traffic is not captured");
    assert.equal(await client(65534, 'tcp', other.ip(), '22'), 'real:22', 'SSH is excluded');
    assert.equal(await client(65534, 'tcp', '127.0.0.1', '9000'), 'local', 'loopback is not captured');
    assert.equal(await client(65534, 'udp', other.ip(), '53'), 'kedge-dns', "an ordinary user's DNS goes to the agent");
    assert.equal(await client(PROXY_UID, 'udp', other.ip(), '53'), 'real-dns', "the agent's upstream DNS is not captured");

    await removeCapture(lab.runner(vm), env);
    assert.equal(await client(65534, 'tcp', other.ip(), '8080'), 'real:8080', 'after remove nothing is captured');
  });

  it('sends inbound TCP on captured ports to the inbound port, leaving excluded ports alone', async (t) => {
    const lab = await NetLab.create(t);
    const vm = await lab.host('vm');
    const peer = await lab.host('peer');
    await lab.network('lan', [vm, peer]);
    await installCapture(opts({ ipv6: false, inboundPorts: '*' }), lab.runner(vm), { hasIpv6: false });
    const servers = [lab.node(vm, PROXY, ['15006', 'inbound']), lab.node(vm, SERVER, ['22', 'ssh']), lab.node(vm, SERVER, ['9080', 'app'])];
    for (const s of servers) await s.waitFor(/ready/);
    const client = async (...args: string[]) => (await lab.run(peer, process.execPath, ['-e', CLIENT, '--', ...args])).stdout.trim();
    assert.equal(await client('tcp', vm.ip(), '9080'), `inbound:${vm.ip()}:9080`);
    assert.equal(await client('tcp', vm.ip(), '22'), 'ssh');
  });
});
