// install/install.sh: one command joins a host. Run into a staging root (no
// systemd here), then the installed agent is started from what it wrote.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { KedgeProcess, tempDir } from '../support/procs';
import { FederationHandle, createToken, federationEndpoints, startFederationProc } from '../support/mesh';
import { eventually } from '../support/procs';

const run = promisify(execFile);
const SCRIPT = path.resolve(__dirname, '..', '..', '..', 'install', 'install.sh');

describe('install.sh', () => {
  let fed: FederationHandle;
  let agent: KedgeProcess | undefined;
  after(async () => {
    await agent?.stop('SIGKILL');
    await fed?.proc.stop('SIGKILL');
  });

  it('installs the agent, its config, token and unit, and the installed agent joins', async () => {
    fed = await startFederationProc();
    const token = await createToken(fed, 'shop', 'payments', ['--workload', 'vm-1', '--service', 'payments']);
    const root = tempDir('install-root');
    const { stdout } = await run('bash', [SCRIPT, '--root', root, '--no-systemd', '--federation', fed.grpc, '--root-cert', fed.rootCertFile, '--token', token,
      '--name', 'vm-1', '--namespace', 'shop', '--service-account', 'payments', '--address', '127.0.30.1', '--locality', 'us-east1/us-east1-b',
      '--service', 'payments:9080:18080:http'], { timeout: 60_000 });
    assert.match(stdout, /installed into/);
    const etc = path.join(root, 'etc', 'kedge');
    assert.equal(fs.statSync(path.join(etc, 'token')).mode & 0o777, 0o600);
    assert.equal(fs.readFileSync(path.join(etc, 'token'), 'utf8').trim(), token);
    const unit = fs.readFileSync(path.join(root, 'etc', 'systemd', 'system', 'kedge-agent.service'), 'utf8');
    assert.match(unit, /ExecStart=\/usr\/bin\/kedge agent --config \/etc\/kedge\/agent\.yaml/);
    assert.match(unit, /User=kedge\n/);

    // Point the installed config's absolute paths into the staging root, then run the installed copy.
    const cfg = fs.readFileSync(path.join(etc, 'agent.yaml'), 'utf8')
      .replaceAll('/etc/kedge', etc).replaceAll('/var/lib/kedge', path.join(root, 'var', 'lib', 'kedge'))
      .concat('proxy: { inboundListen: 127.0.30.1:0 }\nadmin: { listen: 127.0.0.1:0 }\n');
    const staged = path.join(etc, 'agent.staged.yaml');
    fs.writeFileSync(staged, cfg);
    agent = new KedgeProcess('installed-agent', spawn(process.execPath, [path.join(root, 'opt', 'kedge', 'dist', 'bin', 'kedge.js'), 'agent', '--config', staged], { stdio: ['ignore', 'pipe', 'pipe'] }));
    await agent.waitForMsg('registered with the federation', 20_000);
    await eventually(async () => (await federationEndpoints(fed, 'payments.shop')).length === 1, 5_000, 'installed agent endpoint');
  });

  it('refuses missing or bad arguments with a clear message', async () => {
    await assert.rejects(run('bash', [SCRIPT, '--root', tempDir('x'), '--name', 'a']), (err: { code: number; stderr: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr, /missing --federation/);
      return true;
    });
    const notPem = path.join(tempDir('y'), 'root.pem');
    fs.writeFileSync(notPem, 'hello');
    await assert.rejects(
      run('bash', [SCRIPT, '--root', tempDir('z'), '--federation', 'h:1', '--root-cert', notPem, '--token', 't', '--name', 'a', '--namespace', 'b', '--service-account', 'c']),
      /holds no PEM certificate/,
    );
    await assert.rejects(run('bash', [SCRIPT, '--bogus']), /unknown option --bogus/);
  });
});
