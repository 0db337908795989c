// The walking skeleton end to end, with real processes on loopback: a
// federation, agents joined with one-time tokens, traffic over mTLS through
// an explicit upstream, and the registration lifecycle.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runKedge, eventually } from '../support/procs';
import {
  AgentHandle, FederationHandle, agentSeesEndpoints, federationEndpoints, getJson, httpGet, restartFederationProc,
  startAgentProc, startFederationProc, startHttpApp,
} from '../support/mesh';

describe('walking skeleton: federation, agents, mTLS data path', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  const apps: { close(): Promise<void> }[] = [];
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    await Promise.all(apps.map((a) => a.close()));
  });

  it('first start writes root-cert.pem and a 0600 admin token', async () => {
    fed = await startFederationProc({ args: ['--grace-period', '2s'] });
    assert.match(fs.readFileSync(fed.rootCertFile, 'utf8'), /BEGIN CERTIFICATE/);
    assert.equal(fs.statSync(fed.adminTokenFile).mode & 0o777, 0o600);
  });

  it('sends traffic from an upstream to two endpoints over mTLS, balanced over both', async () => {
    const v1 = await startHttpApp('reviews-v1');
    const v2 = await startHttpApp('reviews-v2');
    apps.push(v1, v2);
    const started = Date.now();
    for (const [name, app, addr] of [['reviews-v1', v1, '127.0.10.1'], ['reviews-v2', v2, '127.0.10.2']] as const) {
      agents.push(await startAgentProc(fed, {
        name, namespace: 'default', serviceAccount: 'reviews', address: addr, locality: 'us-east1/us-east1-b', network: 'net-a',
        services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] }],
      }));
    }
    // The issue asks for endpoints within 2 s of an agent's start; that is a
    // latency, measured and reported, not asserted (this machine may be loaded).
    await eventually(async () => (await federationEndpoints(fed, 'reviews.default')).length === 2, 15_000, 'two endpoints in the federation');
    const v2Started = Number(agents[1]!.proc.logs.find((l) => l.msg === 'agent started')?.time);
    const latency = agents[1]!.proc.logs.find((l) => l.msg === 'registered with the federation');
    console.log(`# registration: agent started -> registered in ${Number(latency?.time) - v2Started} ms; test start -> both endpoints listed in ${Date.now() - started} ms`);

    const client = await startAgentProc(fed, {
      name: 'productpage', namespace: 'shop', serviceAccount: 'productpage', address: '127.0.10.3',
      upstreams: [{ service: 'reviews.default', port: 9080 }],
    });
    agents.push(client);
    await agentSeesEndpoints(client, 'reviews.default', 2);
    const bodies = [];
    for (let i = 0; i < 20; i++) bodies.push(await httpGet(client.upstreams[0]!));
    // Least-request over two idle, equal endpoints spreads sequential requests over both.
    assert.ok(bodies.filter((b) => b === 'reviews-v1').length >= 1, bodies.join(','));
    assert.ok(bodies.filter((b) => b === 'reviews-v2').length >= 1, bodies.join(','));
    assert.equal(bodies.length, 20);

    // The server side saw the client's SPIFFE ID on an mTLS connection.
    const seen = await agents[0]!.proc.waitForLog((l) => l.msg === 'inbound' && typeof l.peer === 'string');
    assert.equal(seen.peer, 'spiffe://cluster.local/ns/shop/sa/productpage');
  });

  it('kedge get lists services, endpoints and workloads as tables and JSON', async () => {
    const common = ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];
    const eps = await runKedge(['get', 'endpoints', 'reviews.default', ...common]);
    assert.equal(eps.code, 0, eps.stderr);
    assert.match(eps.stdout, /^SERVICE\s+ENDPOINT\s+HEALTH/);
    assert.match(eps.stdout, /reviews\.default\s+127\.0\.10\.1:\d+\s+HEALTHY\s+default\/reviews-v1\s+us-east1\/us-east1-b\s+net-a/);
    const json = await runKedge(['get', 'endpoints', 'reviews.default', '-o', 'json', ...common]);
    const rows = JSON.parse(json.stdout) as { identity: string }[];
    assert.deepEqual(rows.map((r) => r.identity), ['spiffe://cluster.local/ns/default/sa/reviews', 'spiffe://cluster.local/ns/default/sa/reviews']);
    const svcs = await runKedge(['get', 'services', ...common]);
    assert.match(svcs.stdout, /reviews\.default\s+reviews\.default\.svc\.cluster\.local\s+9080\/http\s+2\/2/);
    const wls = JSON.parse((await runKedge(['get', 'workloads', '-o', 'json', ...common])).stdout) as { name: string; host: { cpus: number; hostname: string } }[];
    assert.deepEqual(wls.map((w) => w.name).sort(), ['productpage', 'reviews-v1', 'reviews-v2']);
    assert.ok(wls.every((w) => w.host.cpus > 0 && w.host.hostname), 'host facts reported');
  });

  it('the agent admin endpoint shows config with the acked version, and certs', async () => {
    const client = agents[2]!;
    const cfg = await getJson<{ version: string; services: { key: string; endpoints: { identity: string }[] }[] }>(`${client.adminUrl}/config`);
    assert.ok(Number(cfg.version) >= 1);
    assert.equal(cfg.services[0]!.key, 'reviews.default');
    const certs = await getJson<{ spiffeId: string; serial: string; notAfter: string; trustBundlePem: string }>(`${client.adminUrl}/certs`);
    assert.equal(certs.spiffeId, 'spiffe://cluster.local/ns/shop/sa/productpage');
    assert.equal(certs.trustBundlePem.trim(), fs.readFileSync(fed.rootCertFile, 'utf8').trim());
    assert.ok(Date.parse(certs.notAfter) > Date.now() + 23 * 3600_000);
    const key = fs.statSync(path.join(client.dataDir, 'identity', 'current', 'key.pem'));
    assert.equal(key.mode & 0o777, 0o600);
  });

  it('keeps traffic flowing while the federation restarts, and loses no registration', async () => {
    const client = agents[2]!;
    await fed.proc.stop('SIGTERM');
    assert.equal(await httpGet(client.upstreams[0]!).then((b) => b.startsWith('reviews-')), true, 'data path works without the federation');
    fed = await restartFederationProc(fed);
    await eventually(async () => (await federationEndpoints(fed, 'reviews.default')).length === 2, 15_000, 'registrations back after restart');
    for (const a of agents) {
      await eventually(() => a.proc.logs.filter((l) => l.msg === 'registered with the federation').length >= 2, 15_000, `${a.spec.name} to re-register`);
    }
  });

  it('a graceful stop removes endpoints at once; a killed agent after the grace period', async () => {
    const [v1, v2] = agents;
    await v1!.proc.stop('SIGTERM');
    await eventually(async () => (await federationEndpoints(fed, 'reviews.default')).length === 1, 1_000, 'graceful removal');
    const killedAt = Date.now();
    await v2!.proc.stop('SIGKILL');
    // Still there inside the 2 s grace period, gone after it.
    await new Promise((r) => setTimeout(r, 700));
    assert.equal((await federationEndpoints(fed, 'reviews.default')).length, 1);
    await eventually(async () => (await federationEndpoints(fed, 'reviews.default')).length === 0, 6_000, 'removal after grace');
    assert.ok(Date.now() - killedAt >= 1_500, 'not removed before the grace period');
  });

  it('a restarted agent needs no new token', async () => {
    const v1 = agents[0]!;
    fs.writeFileSync(path.join(path.dirname(v1.dataDir), 'token'), 'kedge1.used.up');
    const again = await startAgentProc(fed, { ...v1.spec, dataDir: v1.dataDir });
    agents[0] = again;
    assert.ok(again.proc.logs.some((l) => l.msg === 'loaded saved identity'));
    await eventually(async () => (await federationEndpoints(fed, 'reviews.default')).length === 1, 3_000, 'restarted agent registered');
    assert.match(await httpGet(agents[2]!.upstreams[0]!), /^reviews-v1$/);
  });
});
