// The join end to end in a lab: a federation in one namespace serves
// join.sh, its root and the package it was handed; a namespace playing a
// bare VM runs the one command `kedge token create --join` printed (into a
// root of its own, starting nothing: CI has no systemd as init), then the
// agent is started as the unit's ExecStart would (packaged launcher,
// packaged runtime, the kedge user) and serves mesh traffic to a client in
// the federation's namespace. The VM then restarts with no token.
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { buildPackages } from '../../install/package';
import { NetLab, type LabHost, type LabProcess } from '../support/netlab';
import { KEDGE_JS, eventually, tempDir } from '../support/procs';

const REPO = path.resolve(__dirname, '..', '..', '..');

/** Waits until a lab process logged (stderr, where pino writes) a line matching `re`. */
function logged(p: LabProcess, re: RegExp, timeoutMs: number): Promise<unknown> {
  return eventually(() => {
    if (p.child.exitCode !== null) throw new Error(`${p.label} exited ${p.child.exitCode} before logging ${re}; ${p.output()}`);
    return re.test(p.stderr);
  }, timeoutMs, `${p.label} logging ${re}`);
}

function scratchRoot(): string {
  const root = tempDir('join-vm-root');
  // The agent runs as the kedge user: it must reach into this tree.
  fs.chmodSync(root, 0o755);
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(root, 'etc', 'group'), 'root:x:0:\n');
  fs.writeFileSync(path.join(root, 'etc', 'shadow'), 'root:*:19000:0:99999:7:::\n', { mode: 0o600 });
  fs.writeFileSync(path.join(root, 'etc', 'gshadow'), 'root:*::\n', { mode: 0o600 });
  return root;
}

describe('join a bare VM with one command', () => {
  let packageDir: string;
  before(() => {
    packageDir = tempDir('join-packages');
    buildPackages({ repo: REPO, outDir: packageDir });
  });

  it('fetches script and package from the federation, installs, joins, serves mesh traffic, and restarts with no token', async (t) => {
    const lab = await NetLab.create(t);
    const fed = await lab.host('jfed');
    const vm = await lab.host('jvm');
    await lab.network('jnet', [fed, vm]);
    const fedDir = tempDir('join-fed');
    const fedProc = lab.spawn(fed, process.execPath, [KEDGE_JS, 'federation', '--data-dir', fedDir, '--listen-grpc', '0.0.0.0:15012', '--listen-http', '0.0.0.0:15014', '--package-dir', packageDir]);
    await logged(fedProc, /federation ready/, 20_000);
    const admin = ['--federation', 'https://127.0.0.1:15014', '--admin-token-file', path.join(fedDir, 'admin-token')];

    // The app on the VM, behind the agent's inbound port.
    const app = lab.node(vm, `require('http').createServer((q, s) => s.end('payments on the vm')).listen(18080, '127.0.0.1', () => console.log('app ready'))`);
    await app.waitFor(/app ready/);

    const made = await lab.run(fed, process.execPath, [KEDGE_JS, 'token', 'create', '-n', 'shop', '--service-account', 'payments', '--join', '--advertise', fed.ip(), '--serve', 'payments:9080:18080:http', ...admin]);
    const command = made.stdout.trim();
    assert.match(command, /^f=\$\(mktemp\) && curl -fsSk https:\/\/198\.18\.0\.1:15014\/join\/root-cert\.pem/);
    assert.match(command, / \| sudo sh -s -- --federation https:\/\/198\.18\.0\.1:15014 --root-sha256 [0-9a-f]{64} 'kedge1\.[^']+'$/);

    // The bare VM: its own root, no systemd; as root already, so no sudo.
    const root = scratchRoot();
    const onVm = command.replace('sudo sh -s -- ', `sh -s -- --root ${root} --no-start --no-capture --name vm-1 --address ${vm.ip()} `);
    const joined = await lab.run(vm, 'bash', ['-c', onVm], { timeoutMs: 120_000 });
    assert.match(joined.stdout, /downloading kedge_[0-9.]+_amd64\.deb from https:\/\/198\.18\.0\.1:15014/);
    assert.match(joined.stdout, /joined shop\/vm-1 \(service account payments\)/);
    const tokenFile = path.join(root, 'var', 'lib', 'kedge', 'agent', 'join-token');
    assert.equal(fs.statSync(tokenFile).mode & 0o777, 0o600);
    const passwd = /^kedge:x:(\d+):(\d+):/m.exec(fs.readFileSync(path.join(root, 'etc', 'passwd'), 'utf8'));
    assert.ok(passwd, 'the package made the kedge user');
    const [uid, gid] = [Number(passwd[1]), Number(passwd[2])];
    assert.equal(fs.statSync(tokenFile).uid, uid);

    // As the unit's ExecStart would: /usr/bin/kedge agent --config
    // /etc/kedge/agent.yaml as the kedge user, here with the config's
    // absolute paths pointed into the VM's root.
    const staged = path.join(root, 'etc', 'kedge', 'agent.staged.yaml');
    const config = YAML.parse(fs.readFileSync(path.join(root, 'etc', 'kedge', 'agent.yaml'), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(staged, YAML.stringify(config).replaceAll('/etc/kedge', path.join(root, 'etc', 'kedge')).replaceAll('/var/lib/kedge', path.join(root, 'var', 'lib', 'kedge')));
    const startAgent = (): LabProcess => lab.spawn(vm, path.join(root, 'opt', 'kedge', 'bin', 'kedge'), ['agent', '--config', staged], { uid, gid, env: { PATH: '/usr/bin:/bin' } });
    let agent = startAgent();
    await logged(agent, /registered with the federation/, 30_000);
    await eventually(() => !fs.existsSync(tokenFile), 5_000, 'the used join token removed');

    // A client in the federation's namespace reaches the VM over the mesh.
    const clientHome = tempDir('join-client');
    const clientToken = await lab.run(fed, process.execPath, [KEDGE_JS, 'token', 'create', '-n', 'web', '--service-account', 'web', ...admin]);
    fs.writeFileSync(path.join(clientHome, 'token'), clientToken.stdout.trim());
    fs.writeFileSync(path.join(clientHome, 'agent.yaml'), YAML.stringify({
      federation: { address: '127.0.0.1:15012', rootCert: path.join(fedDir, 'root-cert.pem'), tokenFile: path.join(clientHome, 'token') },
      workload: { name: 'web', namespace: 'web', serviceAccount: 'web', address: fed.ip() },
      upstreams: [{ service: 'payments.shop', port: 9080, listen: '127.0.0.1:19080' }],
      proxy: { inboundListen: `${fed.ip()}:15006` },
      admin: { listen: '127.0.0.1:15000' },
      dataDir: path.join(clientHome, 'data'),
    }));
    const client = lab.spawn(fed, process.execPath, [KEDGE_JS, 'agent', '--config', path.join(clientHome, 'agent.yaml')]);
    await logged(client, /registered with the federation/, 30_000);
    const viaMesh = (host: LabHost) => lab.run(host, 'curl', ['-sS', '--max-time', '3', 'http://127.0.0.1:19080/'], { allowFailure: true });
    await eventually(async () => (await viaMesh(fed)).stdout === 'payments on the vm', 20_000, 'payments on the VM through the mesh');

    // Reboot: the agent comes back from its saved identity, with no token.
    agent.kill();
    await eventually(() => agent.child.exitCode !== null || agent.child.signalCode !== null, 10_000, 'agent stopped');
    assert.ok(!fs.existsSync(tokenFile));
    agent = startAgent();
    await logged(agent, /registered with the federation/, 30_000);
    await eventually(async () => (await viaMesh(fed)).stdout === 'payments on the vm', 20_000, 'payments through the mesh after the restart');
  });

  it('refuses a federation whose root is not the pinned one, before the token leaves the VM', async (t) => {
    const lab = await NetLab.create(t);
    const fed = await lab.host('jfed2');
    const vm = await lab.host('jvm2');
    await lab.network('jnet2', [fed, vm]);
    const fedDir = tempDir('join-fed2');
    const fedProc = lab.spawn(fed, process.execPath, [KEDGE_JS, 'federation', '--data-dir', fedDir, '--listen-grpc', '0.0.0.0:15012', '--listen-http', '0.0.0.0:15014', '--package-dir', packageDir]);
    await logged(fedProc, /federation ready/, 20_000);
    const made = await lab.run(fed, process.execPath, [KEDGE_JS, 'token', 'create', '-n', 'shop', '--service-account', 'payments', '--join', '--advertise', fed.ip(), '--federation', 'https://127.0.0.1:15014', '--admin-token-file', path.join(fedDir, 'admin-token')]);
    const pin = /--root-sha256 ([0-9a-f]{64})/.exec(made.stdout)![1]!;
    // The same command with another pin: the one-liner stops at sha256sum,
    // and join.sh run by hand with it refuses before installing anything.
    const root = scratchRoot();
    const wrongPin = 'e'.repeat(64);
    const r = await lab.run(vm, 'bash', ['-c', made.stdout.trim().replaceAll(pin, wrongPin).replace('sudo sh -s -- ', `sh -s -- --root ${root} --no-start --no-capture `)], { allowFailure: true, timeoutMs: 60_000 });
    assert.notEqual(r.code, 0);
    const script = path.join(REPO, 'install', 'join.sh');
    const joinString = /'(kedge1\.[^']+)'/.exec(made.stdout)![1]!;
    const direct = await lab.run(vm, 'sh', [script, '--federation', `https://${fed.ip()}:15014`, '--root-sha256', wrongPin, '--root', root, '--no-start', '--no-capture', joinString], { allowFailure: true, timeoutMs: 60_000 });
    assert.equal(direct.code, 1);
    assert.match(direct.stderr, /is not the one this join string was made for: its root's SHA-256 is [0-9a-f]{64}, the join string pins e{64}\. Nothing was sent or installed/);
    assert.ok(!fs.existsSync(path.join(root, 'opt', 'kedge')), 'nothing installed');
    // kedge join itself re-checks: a root that does not match the string's pin is refused.
    const other = path.join(tempDir('other-root'), 'root.pem');
    fs.writeFileSync(other, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    const j = await lab.run(vm, process.execPath, [KEDGE_JS, 'join', '--root', root, '--root-cert', other, joinString], { allowFailure: true });
    assert.equal(j.code, 1);
    assert.match(j.stderr, /not the one this join string was made for.*\[KEDGE_ROOT_MISMATCH\]/s);
    assert.ok(!fs.existsSync(path.join(root, 'var', 'lib', 'kedge', 'agent', 'join-token')), 'no token written');
  });
});
