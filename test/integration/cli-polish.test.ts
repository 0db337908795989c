// What a new user hits first: a mistyped command, --federation pointing at
// something else, `kedge version`, and a second `kedge demo`.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { runKedge, tempDir } from '../support/procs';
import { startFederationProc, type FederationHandle } from '../support/mesh';

const VERSION = (JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string }).version;

describe('CLI for a new user', () => {
  let fed: FederationHandle | undefined;
  after(async () => {
    await fed?.proc.stop('SIGKILL');
  });

  it('suggests the nearest command for a typo', async () => {
    const r = await runKedge(['stauts']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "stauts"; did you mean "status"\?/);
    const far = await runKedge(['frobnicate']);
    assert.equal(far.code, 2);
    assert.doesNotMatch(far.stderr, /did you mean/);
  });

  it('says when --federation is not a Kedge federation', async () => {
    // Something that answers JSON on the port, as an agent's admin port does.
    const other = http.createServer((_q, s) => s.setHeader('content-type', 'application/json').end('[{"x":1}]'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const token = path.join(tempDir('not-fed'), 'admin-token');
    fs.writeFileSync(token, 'x');
    try {
      const url = `http://127.0.0.1:${(other.address() as { port: number }).port}`;
      const r = await runKedge(['get', 'services', '--insecure-http', '--federation', url, '--admin-token-file', token]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /is not a Kedge federation .*point --federation at the federation's HTTP port \(15014\) \[KEDGE_NOT_A_FEDERATION\]/);
      const v = await runKedge(['version', '--insecure-http', '--federation', url]);
      assert.equal(v.code, 1);
      assert.match(v.stderr, /KEDGE_NOT_A_FEDERATION/);
    } finally {
      other.close();
    }
  });

  it('prints the client version, and the federation version when it is reachable', async () => {
    fed ??= await startFederationProc();
    const r = await runKedge(['version', '--federation', fed.httpsUrl, '--root-cert', fed.rootCertFile]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `kedge ${VERSION}\nfederation ${VERSION} (${fed.httpsUrl})\n`);
    assert.equal((await runKedge(['--version'])).stdout, `kedge ${VERSION}\n`);
  });

  it('talks HTTPS, verified by the root beside the admin token, a given root or a pin; plain HTTP only when asked for', async () => {
    fed ??= await startFederationProc();
    const ok = await runKedge(['get', 'services', '-o', 'json', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout), []);
    const yaml = await runKedge(['status', '-o', 'yaml', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(yaml.stdout, '[]\n');

    // Plain HTTP: the CLI refuses it unless asked, and this federation (HTTPS only, the default) refuses it too.
    const plain = await runKedge(['get', 'services', '--federation', `http://${fed.httpAddress}`, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(plain.code, 2);
    assert.match(plain.stderr, /is plain HTTP, which sends the admin token in clear: use https:\/\/.*or add --insecure-http/);
    const refused = await runKedge(['get', 'services', '--insecure-http', '--federation', `http://${fed.httpAddress}`, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /serves HTTPS only: use https:\/\/ .*--insecure-http\) \[KEDGE_HTTPS_ONLY\]/);

    // A token file away from its root-cert.pem: a pin or --root-cert is needed.
    const lone = path.join(tempDir('lone-token'), 'admin-token');
    fs.copyFileSync(fed.adminTokenFile, lone);
    const noRoot = await runKedge(['get', 'services', '--federation', fed.httpsUrl, '--admin-token-file', lone], { env: { KEDGE_ROOT_CERT: '' } });
    assert.equal(noRoot.code, 2);
    assert.match(noRoot.stderr, /no root certificate to check https:\/\/.* against: pass --root-cert/);
    const pin = createHash('sha256').update(fs.readFileSync(fed.rootCertFile)).digest('hex');
    const pinned = await runKedge(['get', 'services', '--federation', fed.httpsUrl, '--admin-token-file', lone, '--root-sha256', pin]);
    assert.equal(pinned.code, 0, pinned.stderr);
    const wrongPin = await runKedge(['get', 'services', '--federation', fed.httpsUrl, '--admin-token-file', lone, '--root-sha256', 'a'.repeat(64)]);
    assert.equal(wrongPin.code, 1);
    assert.match(wrongPin.stderr, /does not have the pinned root .*nothing was sent \[KEDGE_ROOT_MISMATCH\]/);

    // Another mesh's root: the federation's certificate does not chain to it.
    const other = await startFederationProc();
    try {
      const r = await runKedge(['get', 'services', '--federation', fed.httpsUrl, '--admin-token-file', lone, '--root-cert', other.rootCertFile]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /presented a certificate that does not chain to the given root .*\[KEDGE_FEDERATION_UNTRUSTED\]/);
    } finally {
      await other.proc.stop('SIGKILL');
    }
    const v = await runKedge(['version', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(v.stdout, `kedge ${VERSION}\nfederation ${VERSION} (${fed.httpsUrl})\n`);
  });

  it('refuses a second demo on the directory of a running one, leaving it as it was', async () => {
    const base = tempDir('demo-running');
    const alive = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      fs.writeFileSync(path.join(base, 'demo.pid'), `${alive.pid}\n`);
      fs.writeFileSync(path.join(base, 'federation.log'), 'the running demo\n');
      const r = await runKedge(['demo', '--base-dir', base]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`a demo is already running from ${base} \\(pid ${alive.pid}\\)`));
      assert.equal(fs.readFileSync(path.join(base, 'federation.log'), 'utf8'), 'the running demo\n');
    } finally {
      alive.kill('SIGKILL');
    }
  });
});
