// SO_ORIGINAL_DST for real (needs root): in a lab namespace with an iptables
// REDIRECT, the accepted socket reports where the client meant to go.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { NetLab } from '../support/netlab';

const WRAPPER = join(__dirname, '..', '..', 'agent', 'native', 'index.js');
// Listens on argv[1]:argv[2]; prints the original destination of the first connection as JSON.
const LISTENER = `
const net = require('net');
const { originalDst } = require(${JSON.stringify(WRAPPER)});
const [host, port] = process.argv.slice(1);
const srv = net.createServer((c) => {
  let out; try { out = originalDst(c); } catch (e) { out = { error: e.code, message: e.message }; }
  console.log('dst:' + JSON.stringify(out)); c.destroy(); srv.close();
}).listen(Number(port), host, () => console.log('ready'));
`;
const CONNECT = `require('net').connect(Number(process.argv[2]), process.argv[1]).on('connect', function () { this.destroy(); }).on('error', (e) => { console.error(e.code); process.exit(1); });`;

describe('originalDst in a namespace', () => {
  it('reads IPv4, IPv6, and IPv4 on a dual-stack listener', async (t) => {
    const lab = await NetLab.create(t);
    const vm = await lab.host('vm');
    const peer = await lab.host('peer');
    await lab.network('lan', [vm, peer]);
    await lab.run(vm, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', peer.ip(), '--dport', '80', '-j', 'REDIRECT', '--to-ports', '15001']);
    await lab.run(vm, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', peer.ip(), '--dport', '81', '-j', 'REDIRECT', '--to-ports', '15003']);
    await lab.run(vm, 'ip6tables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', peer.ip6(), '--dport', '443', '-j', 'REDIRECT', '--to-ports', '15002']);

    const cases: Array<[string, string, string, string, object]> = [
      ['0.0.0.0', '15001', peer.ip(), '80', { address: peer.ip(), port: 80, family: 4 }],
      ['::', '15002', peer.ip6(), '443', { address: peer.ip6(), port: 443, family: 6 }],
      ['::', '15003', peer.ip(), '81', { address: peer.ip(), port: 81, family: 4 }],
    ];
    for (const [listenHost, listenPort, dstHost, dstPort, want] of cases) {
      const l = lab.node(vm, LISTENER, [listenHost, listenPort]);
      await l.waitFor(/ready/);
      await lab.run(vm, process.execPath, ['-e', CONNECT, '--', dstHost, dstPort]);
      const out = await l.waitFor(/dst:.*\n/);
      assert.deepEqual(JSON.parse(/dst:(.*)/.exec(out)?.[1] ?? 'null'), want, `${dstHost}:${dstPort} via ${listenHost}:${listenPort}`);
    }
  });

  it('reports inbound traffic redirected in PREROUTING', async (t) => {
    const lab = await NetLab.create(t);
    const vm = await lab.host('vm');
    const peer = await lab.host('peer');
    await lab.network('lan', [vm, peer]);
    await lab.run(vm, 'iptables', ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '9080', '-j', 'REDIRECT', '--to-ports', '15006']);
    const l = lab.node(vm, LISTENER, ['0.0.0.0', '15006']);
    await l.waitFor(/ready/);
    await lab.run(peer, process.execPath, ['-e', CONNECT, '--', vm.ip(), '9080']);
    const out = await l.waitFor(/dst:.*\n/);
    assert.deepEqual(JSON.parse(/dst:(.*)/.exec(out)?.[1] ?? 'null'), { address: vm.ip(), port: 9080, family: 4 });
  });
});
