// The data path refuses what is not the mesh: clients without a mesh
// certificate or with one from another CA at the inbound port, and servers
// whose SPIFFE ID is not the identity their endpoint registered.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { type KedgeProcess, tempDir } from '../support/procs';
import { AgentHandle, FederationHandle, agentSeesEndpoints, httpGet, spawnAgentProc, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import { makeCa, makeLeaf } from '../support/pki';

const run = promisify(execFile);

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

describe('data path security with real agents', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  const procs: KedgeProcess[] = [];
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  before(async () => {
    fed = await startFederationProc();
    app = await startHttpApp('secret');
  });
  after(async () => {
    await Promise.all([...agents.map((a) => a.proc), ...procs].map((p) => p.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
    await app.close();
  });

  it('the inbound port refuses clients without a mesh certificate or from another CA', async () => {
    const server = await startAgentProc(fed, { name: 'vault', namespace: 'default', serviceAccount: 'vault', address: '127.0.40.5', services: [{ name: 'vault', ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] }] });
    agents.push(server);
    const sni = 'outbound_.9080_._.vault.default.svc.cluster.local';
    // curl speaks TLS and HTTP; without a client certificate the handshake is refused.
    const noCert = await run('curl', ['-sk', '--max-time', '5', '--resolve', `x:${server.inbound.split(':')[1]}:127.0.40.5`, `https://x:${server.inbound.split(':')[1]}/`, '-H', `Host: ${sni}`]).catch((e: { code: number }) => e);
    assert.notEqual((noCert as { code: number }).code ?? 0, 0, 'curl without a client certificate must fail');
    const dir = tempDir('foreign');
    const foreign = makeLeaf(makeCa('foreign-mesh'), 'spiffe://cluster.local/ns/default/sa/vault');
    fs.writeFileSync(path.join(dir, 'c.pem'), foreign.certPem);
    fs.writeFileSync(path.join(dir, 'k.pem'), foreign.keyPem);
    const r = await run('openssl', ['s_client', '-connect', server.inbound, '-servername', sni, '-cert', path.join(dir, 'c.pem'), '-key', path.join(dir, 'k.pem'), '-CAfile', fed.rootCertFile], { input: 'GET / HTTP/1.0\r\n\r\n', timeout: 10_000 } as never).catch((e: { stdout: string }) => e);
    assert.doesNotMatch(String((r as { stdout: string }).stdout), /secret/, 'the app answer must not leak to a foreign certificate');
    await server.proc.waitForLog((l) => l.msg !== undefined && /handshake|refused|certificate/i.test(String(l.msg) + String(l.err ?? l.code ?? '')), 5_000, 'a refused handshake in the logs');
    assert.equal(app.hits, 0, 'the app never saw a request');
  });

  it('refuses a server whose SPIFFE ID differs from the identity its endpoint registered', async () => {
    const port = await freePort('127.0.40.1');
    // "mirror" registers 127.0.40.1 as its address but listens elsewhere on
    // the same port number; then "impostor" really listens on 127.0.40.1:port
    // with its own identity. The federation refuses the impostor's claim to
    // that address (it is mirror's), but its proxy listens all the same: the
    // client's identity check is the second line of defence.
    const mirror = await startAgentProc(fed, { name: 'mirror', namespace: 'default', serviceAccount: 'mirror', address: '127.0.40.1', extra: { proxy: { inboundListen: `127.0.40.2:${port}` } }, services: [{ name: 'mirror', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }] });
    const impostorProc = (await spawnAgentProc(fed, { name: 'impostor', namespace: 'default', serviceAccount: 'impostor', address: '127.0.40.1', extra: { proxy: { inboundListen: `127.0.40.1:${port}` } }, services: [{ name: 'decoy', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }] })).proc;
    const refused = await impostorProc.waitForLog((l) => l.code === 'KEDGE_ADDRESS_CONFLICT', 20_000, 'the impostor\'s address claim refused');
    assert.match(String(refused.err), /127\.0\.40\.1:\d+ is already registered by workload default\/mirror/);
    const client = await startAgentProc(fed, { name: 'asker', namespace: 'default', serviceAccount: 'asker', address: '127.0.40.3', upstreams: [{ service: 'mirror.default', port: 9080 }] });
    agents.push(mirror, client);
    procs.push(impostorProc);
    await agentSeesEndpoints(client, 'mirror.default', 1);
    const hitsBefore = app.hits;
    await assert.rejects(httpGet(client.upstreams[0]!, '/', 5_000));
    const log = await client.proc.waitForLog((l) => JSON.stringify(l).includes('KEDGE_PEER_IDENTITY_MISMATCH'), 5_000, 'identity mismatch');
    assert.match(JSON.stringify(log), /spiffe:\/\/cluster\.local\/ns\/default\/sa\/impostor/);
    assert.equal(app.hits, hitsBefore, 'nothing reached the app through the impostor');
  });
});
