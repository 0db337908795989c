// The federation's HTTP API port speaks HTTPS only by default: plain HTTP is
// answered with a 400 naming what to do. --insecure-http (or
// `insecureHttp: true` in the config file) lets plain HTTP in from loopback
// peers only, for development.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as os from 'node:os';
import { runKedge } from '../support/procs';
import { fedFetch, startFederationProc, writeFederationConfig, type FederationHandle } from '../support/mesh';

/** One plain-HTTP GET; resolves with the status and body. */
function plainGet(host: string, port: number, route: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host, port, path: route, agent: false, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** A non-loopback IPv4 address of this host, if it has one. */
function externalAddress(): string | undefined {
  return Object.values(os.networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
}

describe('federation HTTPS only by default', () => {
  const feds: FederationHandle[] = [];
  after(async () => {
    await Promise.all(feds.map((f) => f.proc.stop('SIGKILL')));
  });

  it('answers plain HTTP with a 400 that says to use https://, and HTTPS verified by its root', async () => {
    const fed = await startFederationProc();
    feds.push(fed);
    const port = Number(fed.httpAddress.split(':')[1]);
    const plain = await plainGet('127.0.0.1', port, '/healthz');
    assert.equal(plain.status, 400);
    assert.deepEqual(JSON.parse(plain.body), { code: 'KEDGE_HTTPS_ONLY', message: 'this Kedge federation serves HTTPS only: use https:// (plain HTTP is only for loopback development, with kedge federation --insecure-http)' });
    const secure = await fedFetch(fed, '/healthz');
    assert.equal(secure.status, 200);
    assert.ok(secure.headers.get('x-kedge-federation'));
    // The CLI asked for plain HTTP gets the federation's refusal, by code.
    const cli = await runKedge(['get', 'services', '--insecure-http', '--federation', `http://${fed.httpAddress}`, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /serves HTTPS only.*\[KEDGE_HTTPS_ONLY\]/);
  });

  it('with --insecure-http serves plain HTTP to loopback peers only', async (t) => {
    const fed = await startFederationProc({ host: '0.0.0.0', args: ['--insecure-http'] });
    feds.push(fed);
    await fed.proc.waitForMsg('plain HTTP is on for loopback peers (--insecure-http): development only, the admin token crosses in clear', 5_000);
    const port = Number(fed.httpAddress.split(':')[1]);
    assert.equal((await plainGet('127.0.0.1', port, '/healthz')).status, 200);
    const cli = await runKedge(['get', 'services', '-o', 'json', '--insecure-http', '--federation', `http://127.0.0.1:${port}`, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.deepEqual(JSON.parse(cli.stdout), []);
    // HTTPS still works beside it.
    assert.equal((await fedFetch({ ...fed, httpsUrl: `https://127.0.0.1:${port}` }, '/healthz')).status, 200);
    const ext = externalAddress();
    if (!ext) {
      t.skip('this host has no non-loopback IPv4 address to connect from');
      return;
    }
    // The same host dialled at a non-loopback address: the peer is not loopback, so plain HTTP is refused.
    const remote = await plainGet(ext, port, '/healthz');
    assert.equal(remote.status, 400);
    assert.match(remote.body, /KEDGE_HTTPS_ONLY/);
  });

  it('reads insecureHttp from the config file, and refuses a value that is not true or false', async () => {
    const file = writeFederationConfig({ insecureHttp: true });
    const fed = await startFederationProc({ args: ['--config', file] });
    feds.push(fed);
    assert.equal((await plainGet('127.0.0.1', Number(fed.httpAddress.split(':')[1]), '/healthz')).status, 200);
    const bad = await runKedge(['federation', '--config', writeFederationConfig({ insecureHttp: 'yes' }), '--listen-grpc', '127.0.0.1:0', '--listen-http', '127.0.0.1:0']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /insecureHttp.*must be true or false/);
  });
});
