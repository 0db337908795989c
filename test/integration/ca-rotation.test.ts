// CA root rotation end to end with real processes: under steady traffic
// (a request every 50 ms through an agent pair, one long-lived stream) with
// --reissue, and a rotation that is started twice, interrupted by killing
// the federation, resumed after its restart and completed. The SPIFFE
// bundle endpoint is checked against the PEM bundle at each step.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { runKedge, eventually } from '../support/procs';
import { fedFetch, AgentHandle, FederationHandle, getJson, httpGet, restartFederationProc, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import type { CaStatusDoc } from '../../cli/ca';

const PEM_RE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g;
const pems = (s: string) => s.match(PEM_RE) ?? [];
const fp = (pem: string) => new X509Certificate(pem).fingerprint256;

function ca(fed: FederationHandle, args: string[]) {
  return runKedge(['ca', ...args, '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
}
async function caStatus(fed: FederationHandle): Promise<CaStatusDoc> {
  const r = await ca(fed, ['status', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as CaStatusDoc;
}
type Certs = { serial: string; chainPem: string; trustBundlePem: string };
const certs = (a: AgentHandle) => getJson<Certs>(`${a.adminUrl}/certs`);

/** Fetches the SPIFFE bundle and checks it against the PEM roots: one x509-svid JWK per root, no kid, key parameters matching. */
async function checkSpiffeBundle(fed: FederationHandle, rootsPem: string[]): Promise<{ spiffe_sequence: number }> {
  const res = await fedFetch(fed, `/.well-known/spiffe-bundle`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  const doc = (await res.json()) as { keys: Record<string, unknown>[]; spiffe_sequence: number; spiffe_refresh_hint: number };
  assert.ok(Number.isInteger(doc.spiffe_sequence) && doc.spiffe_sequence > 0);
  assert.ok(Number.isInteger(doc.spiffe_refresh_hint) && doc.spiffe_refresh_hint > 0);
  assert.equal(doc.keys.length, rootsPem.length);
  doc.keys.forEach((k, i) => {
    assert.equal(k.use, 'x509-svid');
    assert.equal(k.kid, undefined, 'X509-SVID 6.1: kid MUST NOT be set');
    const x5c = k.x5c as string[];
    assert.equal(x5c.length, 1);
    const cert = new X509Certificate(Buffer.from(x5c[0]!, 'base64'));
    assert.equal(cert.fingerprint256, fp(rootsPem[i]!), `key ${i} is root ${i} of the PEM bundle`);
    const jwk = cert.publicKey.export({ format: 'jwk' });
    assert.equal(k.kty, 'RSA');
    assert.equal(k.n, jwk.n);
    assert.equal(k.e, jwk.e);
    assert.deepEqual(Object.keys(k).sort(), ['e', 'kty', 'n', 'use', 'x5c']);
  });
  return doc;
}

/** The certificate the federation serves at host:port (its gRPC port, or HTTPS on its HTTP port). */
function servingCert(hostPort: string): Promise<X509Certificate> {
  const [host, port] = [hostPort.slice(0, hostPort.lastIndexOf(':')), Number(hostPort.slice(hostPort.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host, port, rejectUnauthorized: false, ALPNProtocols: ['h2'], servername: 'kedge-federation' }, () => {
      const c = s.getPeerX509Certificate();
      s.destroy();
      if (c) resolve(c);
      else reject(new Error('no serving certificate'));
    });
    s.on('error', reject);
  });
}

describe('CA rotation under steady traffic', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  before(async () => {
    fed = await startFederationProc();
    app = await startHttpApp('ratings');
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
    await app.close();
  });

  it('introduces a new root with --reissue: 0 failed requests, the stream survives, the old root is gone from every bundle', async (t) => {
    const server = await startAgentProc(fed, { name: 'ratings', namespace: 'default', serviceAccount: 'ratings', address: '127.0.31.1', services: [{ name: 'ratings', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }] });
    const client = await startAgentProc(fed, { name: 'web', namespace: 'default', serviceAccount: 'web', address: '127.0.31.2', upstreams: [{ service: 'ratings.default', port: 9080 }] });
    agents.push(server, client);
    await eventually(async () => (await getJson<{ services: { endpoints: unknown[] }[] }>(`${client.adminUrl}/config`)).services[0]?.endpoints.length === 1, 10_000, 'client to learn ratings');

    const oldRoots = pems(fs.readFileSync(fed.rootCertFile, 'utf8'));
    assert.equal(oldRoots.length, 1);
    const oldFp = fp(oldRoots[0]!);
    assert.equal(new X509Certificate(oldRoots[0]!).subjectAltName, 'URI:spiffe://cluster.local', 'the root is an SVID of the trust domain');
    const before = await checkSpiffeBundle(fed, oldRoots);

    // Steady traffic: a request every 50 ms on a new connection, and one long-lived stream.
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const traffic = (async () => {
      while (running) {
        const started = Date.now();
        try {
          assert.equal(await httpGet(client.upstreams[0]!), 'ratings');
          ok += 1;
        } catch (err) {
          failures.push((err as Error).message);
        }
        await new Promise((r) => setTimeout(r, Math.max(0, 50 - (Date.now() - started))));
      }
    })();
    let streamed = 0;
    let streamEnded = false;
    const [host, port] = client.upstreams[0]!.split(':');
    const stream = http.get({ host, port: Number(port), path: '/stream', agent: false }, (res) => {
      res.on('data', () => (streamed += 1));
      res.on('close', () => (streamEnded = true));
    });
    await eventually(() => streamed > 0 && ok > 5, 10_000, 'traffic to flow');

    const started = await ca(fed, ['rotate', '--reissue']);
    assert.equal(started.code, 0, started.stderr);
    assert.match(started.stdout, /rotation started/);

    // Started twice: it says a rotation is in progress (unless it already ended).
    const twice = await ca(fed, ['rotate']);
    if (twice.code !== 0) {
      assert.equal(twice.code, 1);
      assert.match(twice.stderr, /a CA rotation is already in progress[\s\S]*KEDGE_CA_ROTATION_IN_PROGRESS/);
    }

    const done = await eventually(async () => {
      const s = await caStatus(fed);
      return !s.rotation && s.roots.length === 1 && s.roots[0]!.fingerprint !== oldFp ? s : undefined;
    }, 60_000, 'the rotation to finish');
    const newFp = done.roots[0]!.fingerprint;
    assert.match(done.roots[0]!.uriSan, /^URI:spiffe:\/\/cluster\.local$/);
    assert.match(done.roots[0]!.subject, /Kedge Root CA cluster\.local G2/);

    // Every agent: only the new root in its bundle, a leaf from the new root.
    for (const a of [server, client]) {
      const c = await eventually(async () => {
        const x = await certs(a);
        const bundle = pems(x.trustBundlePem);
        return bundle.length === 1 && fp(bundle[0]!) === newFp ? x : undefined;
      }, 10_000, `${a.spec.name} to hold only the new root`);
      const root = new X509Certificate(pems(c.trustBundlePem)[0]!);
      assert.ok(new X509Certificate(c.chainPem).verify(root.publicKey), `${a.spec.name}'s leaf is signed by the new root`);
      await a.proc.waitForMsg('trust bundle updated', 5_000); // installed without a restart
    }
    assert.equal(pems(fs.readFileSync(fed.rootCertFile, 'utf8')).map(fp).join(), newFp, 'root-cert.pem holds only the new root');
    const newRoot = new X509Certificate(pems(fs.readFileSync(fed.rootCertFile, 'utf8'))[0]!);
    // The serving key is made off the event loop, so the new certificate follows the retirement shortly.
    await eventually(async () => (await servingCert(fed.grpc)).verify(newRoot.publicKey), 10_000, 'the federation to serve gRPC with a certificate from the new root');
    assert.ok((await servingCert(fed.httpAddress)).verify(newRoot.publicKey), 'and HTTPS on its HTTP port too');
    const afterDoc = await checkSpiffeBundle(fed, pems(fs.readFileSync(fed.rootCertFile, 'utf8')));
    assert.equal(afterDoc.spiffe_sequence, before.spiffe_sequence + 2, 'one step adds the new root, one retires the old');

    // New connections after the retirement still work (they use the new bundle only).
    const okAtEnd = ok;
    await eventually(() => ok >= okAtEnd + 10, 10_000, 'ten more requests after the rotation');
    running = false;
    await traffic;
    const streamedAtEnd = streamed;
    await eventually(() => streamed > streamedAtEnd, 5_000, 'the long-lived stream to keep streaming');
    t.diagnostic(`${ok} requests, ${failures.length} failed; ${streamed} chunks on the long-lived stream`);
    assert.deepEqual(failures, [], `${failures.length} of ${ok + failures.length} requests failed`);
    assert.equal(streamEnded, false, 'the long-lived stream was not cut');
    stream.destroy();
  });
});

describe('a rotation interrupted and resumed', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  before(async () => {
    fed = await startFederationProc();
    app = await startHttpApp('reviews');
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
    await app.close();
  });

  it('says it is in progress when started twice, survives the federation being killed, and resumes after restart', async () => {
    const server = await startAgentProc(fed, { name: 'reviews', namespace: 'default', serviceAccount: 'reviews', address: '127.0.32.1', services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }] });
    const client = await startAgentProc(fed, { name: 'page', namespace: 'default', serviceAccount: 'page', address: '127.0.32.2', upstreams: [{ service: 'reviews.default', port: 9080 }] });
    agents.push(server, client);
    const oldFp = fp(pems(fs.readFileSync(fed.rootCertFile, 'utf8'))[0]!);

    const noRotation = await ca(fed, ['rotate', '--finish']);
    assert.equal(noRotation.code, 1);
    assert.match(noRotation.stderr, /no CA rotation is in progress[\s\S]*KEDGE_CA_NO_ROTATION/);

    // Without --reissue the new root starts signing once both agents have the
    // bundle, then waits for their 24 h certificates to renew.
    const started = await ca(fed, ['rotate']);
    assert.equal(started.code, 0, started.stderr);
    const reissuing = await eventually(async () => {
      const s = await caStatus(fed);
      return s.rotation?.phase === 'reissuing' ? s : undefined;
    }, 30_000, 'the new root to sign');
    assert.equal(reissuing.rotation!.from, oldFp);
    assert.equal(reissuing.roots.length, 2, 'both roots are trusted');
    assert.equal(reissuing.rotation!.waitingFor, 2);
    assert.deepEqual(reissuing.rotation!.blockers.map((b) => b.reason), ['holds a certificate from the old root', 'holds a certificate from the old root']);
    await checkSpiffeBundle(fed, pems(fs.readFileSync(fed.rootCertFile, 'utf8')));
    for (const a of [server, client]) {
      await eventually(async () => pems((await certs(a)).trustBundlePem).length === 2, 10_000, `${a.spec.name} to trust both roots`);
    }

    const twice = await ca(fed, ['rotate']);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /a CA rotation is already in progress \(phase reissuing[\s\S]*kedge ca rotate --reissue[\s\S]*KEDGE_CA_ROTATION_IN_PROGRESS/);

    // Killed half-way: the rotation is in the store, and resumes. The agents
    // are frozen meanwhile: the restarted federation does not know them yet,
    // and must not take that for "nobody uses the old root".
    for (const a of [server, client]) a.proc.child.kill('SIGSTOP');
    await fed.proc.stop('SIGKILL');
    fed = await restartFederationProc(fed);
    const resumed = await caStatus(fed);
    assert.equal(resumed.rotation?.phase, 'reissuing');
    assert.equal(resumed.rotation?.to, reissuing.rotation!.to);
    assert.ok(resumed.rotation?.settlingUntil && Date.parse(resumed.rotation.settlingUntil) > Date.now(), 'the replica holds the rotation while its agents reconnect');
    assert.equal(resumed.sequence, reissuing.sequence);
    assert.equal(pems(fs.readFileSync(fed.rootCertFile, 'utf8')).length, 2, 'the restarted federation still trusts both roots');
    for (const a of [server, client]) a.proc.child.kill('SIGCONT');
    for (const a of [server, client]) await a.proc.waitForLog((l) => l.msg === 'registered with the federation' && (a.proc.logs.filter((x) => x.msg === 'registered with the federation').length >= 2), 20_000, 'reconnect');
    await eventually(async () => (await getJson<{ services: { endpoints: unknown[] }[] }>(`${client.adminUrl}/config`)).services[0]?.endpoints.length === 1, 15_000, 'page to see reviews again');
    // Traffic flows mid-rotation (the server holds an old-root certificate,
    // the client trusts both). Waited for: both agents were just frozen, and
    // a pooled connection may be closed under the first request.
    await eventually(async () => (await httpGet(client.upstreams[0]!)) === 'reviews', 10_000, 'traffic mid-rotation');

    const reissue = await ca(fed, ['rotate', '--reissue']);
    assert.equal(reissue.code, 0, reissue.stderr);
    assert.match(reissue.stdout, /already in progress \(phase reissuing\); agents are told to renew/);
    const done = await eventually(async () => {
      const s = await caStatus(fed);
      return !s.rotation ? s : undefined;
    }, 60_000, 'the resumed rotation to finish');
    assert.equal(done.roots.length, 1);
    assert.equal(done.roots[0]!.fingerprint, reissuing.rotation!.to);
    for (const a of [server, client]) {
      await eventually(async () => {
        const b = pems((await certs(a)).trustBundlePem);
        return b.length === 1 && fp(b[0]!) === reissuing.rotation!.to;
      }, 10_000, `${a.spec.name} to hold only the new root`);
    }
    await eventually(async () => (await httpGet(client.upstreams[0]!)) === 'reviews', 10_000, 'traffic under the new root');
  });
});
