// Identity end to end: joining with tokens (and every way a join can be
// wrong), renewal over mTLS with a short TTL while traffic flows, and the
// federation's checks on callers.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { runKedge, startKedge, eventually, tempDir } from '../support/procs';
import { AgentHandle, FederationHandle, createToken, getJson, httpGet, startAgentProc, startFederationProc, startHttpApp, writeAgentConfig } from '../support/mesh';
import { federationClient, signOnce } from '../../agent/registration/client';
import { generateKeyAndCsr } from '../../agent/identity/csr';
import { makeCa, makeLeaf } from '../support/pki';
import { hasCode, KedgeError } from '../../proto/model/errors';
import { parseHostPort } from '../../proto/model/address';

/** Flips one byte inside the CSR's signature (the last bytes of the DER). */
function forgeSignature(csrPem: string): string {
  const b64 = csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const der = Buffer.from(b64, 'base64');
  der[der.length - 10] = der[der.length - 10]! ^ 0xff;
  return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE REQUEST-----\n`;
}

async function expectCode(p: Promise<unknown>, code: string): Promise<KedgeError> {
  try {
    await p;
  } catch (err) {
    assert.ok(hasCode(err, code), `expected ${code}, got ${(err as KedgeError).code}: ${(err as Error).message}`);
    return err as KedgeError;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

describe('joining and signing', () => {
  let fed: FederationHandle;
  const client = () => federationClient(parseHostPort(fed.grpc, 'grpc'), fs.readFileSync(fed.rootCertFile, 'utf8'), undefined, 'cluster.local');
  before(async () => {
    fed = await startFederationProc();
  });
  after(() => fed.proc.stop('SIGKILL'));

  it('signs the identity the token is bound to', async () => {
    const token = await createToken(fed, 'shop', 'payments');
    const { csrPem } = await generateKeyAndCsr();
    const res = await signOnce(client(), csrPem, token);
    assert.equal(res.spiffeId, 'spiffe://cluster.local/ns/shop/sa/payments');
    assert.equal(res.certChainPem.length, 1);
    await expectCode(signOnce(client(), csrPem, token), 'KEDGE_TOKEN_USED');
  });

  it('refuses a CSR for another identity', async () => {
    const token = await createToken(fed, 'shop', 'payments');
    const { csrPem } = await generateKeyAndCsr({ spiffeId: 'spiffe://cluster.local/ns/kube-system/sa/admin' });
    const err = await expectCode(signOnce(client(), csrPem, token), 'KEDGE_CSR_IDENTITY_MISMATCH');
    assert.match(err.message, /kube-system\/sa\/admin/);
    // The refused CSR did not consume the token.
    const ok = await generateKeyAndCsr();
    assert.equal((await signOnce(client(), ok.csrPem, token)).spiffeId, 'spiffe://cluster.local/ns/shop/sa/payments');
  });

  it('refuses a CSR with a bad signature without consuming the token', async () => {
    const token = await createToken(fed, 'shop', 'payments');
    const { csrPem } = await generateKeyAndCsr();
    await expectCode(signOnce(client(), forgeSignature(csrPem), token), 'KEDGE_BAD_CSR');
    await expectCode(signOnce(client(), 'not a csr', token), 'KEDGE_BAD_CSR');
    await expectCode(signOnce(client(), 'x'.repeat(200_000), token), 'KEDGE_BAD_CSR');
    const ok = await signOnce(client(), csrPem, token);
    assert.equal(ok.spiffeId, 'spiffe://cluster.local/ns/shop/sa/payments');
  });

  it('refuses unknown, malformed and expired tokens', async () => {
    const { csrPem } = await generateKeyAndCsr();
    await expectCode(signOnce(client(), csrPem, 'garbage'), 'KEDGE_TOKEN_MALFORMED');
    const real = await createToken(fed, 'shop', 'payments');
    const [prefix, id] = real.split('.');
    await expectCode(signOnce(client(), csrPem, `${prefix}.${id}.${'A'.repeat(43)}`), 'KEDGE_TOKEN_UNKNOWN');
    const short = await createToken(fed, 'shop', 'payments', ['--ttl', '1s']);
    await new Promise((r) => setTimeout(r, 1_300));
    await expectCode(signOnce(client(), csrPem, short), 'KEDGE_TOKEN_EXPIRED');
  });

  it('refuses renewal without a certificate, or with one from another CA', async () => {
    const { csrPem } = await generateKeyAndCsr();
    await expectCode(signOnce(client(), csrPem, ''), 'KEDGE_UNAUTHENTICATED');
    const foreign = makeLeaf(makeCa('other-mesh'), 'spiffe://cluster.local/ns/shop/sa/payments');
    const c = federationClient(parseHostPort(fed.grpc, 'grpc'), fs.readFileSync(fed.rootCertFile, 'utf8'), { certChainPem: foreign.certPem, keyPem: foreign.keyPem }, 'cluster.local');
    const err = await expectCode(signOnce(c, csrPem, ''), 'KEDGE_UNAUTHENTICATED');
    assert.match(err.message, /issued by this federation/);
  });

  it('an agent with a used token exits with a clear error', async () => {
    const token = await createToken(fed, 'shop', 'payments', ['--labels', 'app=*']);
    const a = await startAgentProc(fed, { name: 'first', namespace: 'shop', serviceAccount: 'payments', address: '127.0.20.1', token });
    await a.proc.stop();
    const b = startKedge('second', ['agent', '--config', writeAgentConfig(fed, { name: 'second', namespace: 'shop', serviceAccount: 'payments', address: '127.0.20.2' }, tempDir('second'), writeToken(token))]);
    const { code } = await b.exited;
    assert.equal(code, 1);
    assert.match(b.raw.join('\n'), /kedge: join token .* cannot be used again.*\[KEDGE_TOKEN_USED\]/);
  });

  it('an agent whose config names another identity than its token refuses to start', async () => {
    const token = await createToken(fed, 'shop', 'payments');
    const p = startKedge('mismatch', ['agent', '--config', writeAgentConfig(fed, { name: 'x', namespace: 'shop', serviceAccount: 'orders', address: '127.0.20.3' }, tempDir('mm'), writeToken(token))]);
    assert.equal((await p.exited).code, 1);
    assert.match(p.raw.join('\n'), /\[KEDGE_IDENTITY_MISMATCH\]/);
  });
});

function writeToken(token: string): string {
  const f = path.join(tempDir('token'), 'token');
  fs.writeFileSync(f, token);
  return f;
}

describe('agent start with the federation away', () => {
  it('retries with backoff, then joins when the federation comes up', async () => {
    const fed = await startFederationProc();
    const token = await createToken(fed, 'shop', 'late', ['--labels', 'app=late']);
    await fed.proc.stop();
    const dir = tempDir('late');
    const proc = startKedge('late', ['agent', '--config', writeAgentConfig(fed, { name: 'late', namespace: 'shop', serviceAccount: 'late', address: '127.0.20.9' }, path.join(dir, 'data'), writeToken(token))]);
    try {
      await eventually(() => proc.logs.filter((l) => l.msg === 'federation unreachable; will retry').length >= 2, 10_000, 'two retries');
      const again = startKedge('federation', fed.args.map((a, i) => (fed.args[i - 1] === '--listen-grpc' ? fed.grpc : fed.args[i - 1] === '--listen-http' ? fed.httpAddress : a)));
      try {
        await proc.waitForMsg('registered with the federation', 20_000);
      } finally {
        await again.stop('SIGKILL');
      }
    } finally {
      await proc.stop('SIGKILL');
    }
  });
});

describe('bad configuration', () => {
  it('a malformed agent config names the file and field, exits 1, and writes nothing', async () => {
    const dir = tempDir('badcfg');
    const file = path.join(dir, 'agent.yaml');
    fs.writeFileSync(file, `federation: { address: 127.0.0.1:1, rootCert: ./r.pem }\nworkload: { name: a, namespace: b, serviceAccount: c }\nservices: [ { name: s, ports: [ { port: 0 } ] } ]\ndataDir: ./data\n`);
    const r = await runKedge(['agent', '--config', file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${file}: services\\[0\\]\\.ports\\[0\\]\\.port: must be between 1 and 65535 \\[KEDGE_BAD_CONFIG\\]`));
    assert.equal(fs.existsSync(path.join(dir, 'data')), false);
    const missing = await runKedge(['agent', '--config', path.join(dir, 'nope.yaml')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read agent config .*nope\.yaml: ENOENT/);
  });
  it('a malformed federation config names the field and exits 1 before creating its data dir', async () => {
    const dir = tempDir('badfed');
    const file = path.join(dir, 'federation.yaml');
    fs.writeFileSync(file, `dataDir: ./data\nworkloadCertTtl: forever\n`);
    const r = await runKedge(['federation', '--config', file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /federation\.yaml: workloadCertTtl: invalid workload certificate TTL "forever"/);
    assert.equal(fs.existsSync(path.join(dir, 'data')), false);
    const flag = await runKedge(['federation', '--listen-grpc', 'everywhere']);
    assert.equal(flag.code, 1);
    assert.match(flag.stderr, /--listen-grpc: .*HOST:PORT/);
    const unknown = await runKedge(['federation', '--no-such-flag']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /Unknown option '--no-such-flag'/);
  });
});

describe('renewal and the data path', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  before(async () => {
    fed = await startFederationProc({ args: ['--workload-cert-ttl', '10s'] });
    app = await startHttpApp('ratings');
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
    await app.close();
  });

  it('renews certificates over mTLS while traffic flows, dropping nothing', async () => {
    const server = await startAgentProc(fed, { name: 'ratings', namespace: 'default', serviceAccount: 'ratings', address: '127.0.21.1', services: [{ name: 'ratings', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }] });
    const client = await startAgentProc(fed, { name: 'web', namespace: 'default', serviceAccount: 'web', address: '127.0.21.2', upstreams: [{ service: 'ratings.default', port: 9080 }] });
    agents.push(server, client);
    await eventually(async () => (await getJson<{ services: { endpoints: unknown[] }[] }>(`${client.adminUrl}/config`)).services[0]?.endpoints.length === 1, 10_000, 'client to learn ratings');
    const serialBefore = (await getJson<{ serial: string }>(`${client.adminUrl}/certs`)).serial;

    // One long-lived stream, plus a new connection every 100 ms, across the renewals.
    let streamed = 0;
    let streamEnded = false;
    const [host, port] = client.upstreams[0]!.split(':');
    const stream = http.get({ host, port: Number(port), path: '/stream', agent: false }, (res) => {
      res.on('data', () => (streamed += 1));
      res.on('close', () => (streamEnded = true));
    });
    let ok = 0;
    const failures: string[] = [];
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      try {
        assert.equal(await httpGet(client.upstreams[0]!), 'ratings');
        ok += 1;
      } catch (err) {
        failures.push((err as Error).message);
      }
      const renewed = [server, client].every((a) => a.proc.logs.some((l) => l.msg === 'certificate renewed'));
      if (renewed && ok > 20) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const countAtRenewal = streamed;
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(failures, []);
    assert.ok(streamed > countAtRenewal, 'the long-lived connection still streams after both renewals');
    assert.equal(streamEnded, false);
    stream.destroy();
    const after = await getJson<{ serial: string; notAfter: string }>(`${client.adminUrl}/certs`);
    assert.notEqual(after.serial, serialBefore);
    // The renewal was authenticated by the old certificate (no token was used again).
    assert.ok(client.proc.logs.some((l) => l.msg === 'certificate renewed'));
    assert.ok(fed.proc.logs.some((l) => l.msg === 'signed workload certificate' && l.via === 'mtls' && l.spiffeId === 'spiffe://cluster.local/ns/default/sa/web'));
  });
});
