// Local rate limits end to end with real processes: a federation, a server
// agent (web: an HTTP port, a gRPC port and a TCP port, in namespace shop)
// and two client agents (default/a, default/b). kedge apply -f stores an
// HTTPLocalRateLimitPolicy of 10 requests per second per identity, the
// federation pushes it to the server agent only, and its inbound proxy
// enforces it: h2load at 30 rps from each client sees 2xx for the bucket's
// 10 plus 10 per second of its run, per principal, and 429 for the rest
// (with retry-after); a grpc-js client gets RESOURCE_EXHAUSTED; a TCP
// client past the connection rate a closed connection. Then the 429
// back-off: a client balancing over two endpoints, one of which answers
// 429, stops sending to that one instead of retrying into it.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { runKedge, tempDir, eventually } from '../support/procs';
import { AgentHandle, FederationHandle, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import { echoCalls, startEchoGrpc, tcpExchange } from '../support/mesh-clients';

const T = { timeout: 120_000 };

function curl(url: string, extra: string[] = []): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-s', '-D', '-', '-o', '-', '-w', '\n%{http_code}', '--max-time', '5', ...extra, url], (err, stdout) => {
      if (err && !stdout) return reject(err);
      const nl = stdout.lastIndexOf('\n');
      const all = stdout.slice(0, nl);
      const split = all.indexOf('\r\n\r\n');
      resolve({ status: Number(stdout.slice(nl + 1)), headers: all.slice(0, split), body: all.slice(split + 4) });
    });
  });
}

/** h2load over HTTP/1.1 at `rps` for `n` requests on one connection; the status counts and how long it ran. */
function h2load(url: string, n: number, rps: number): Promise<{ ok: number; refused: number; other: number; seconds: number }> {
  return new Promise((resolve, reject) => {
    execFile('h2load', ['--h1', '-n', String(n), '-c', '1', '--rps', String(rps), url], { timeout: 60_000 }, (err, stdout) => {
      if (err) return reject(new Error(`h2load failed: ${err.message}\n${stdout}`));
      const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
      const done = /finished in ([\d.]+)(ms|s)/.exec(stdout);
      if (!codes || !done) return reject(new Error(`unexpected h2load output:\n${stdout}`));
      resolve({ ok: Number(codes[1]), refused: Number(codes[3]), other: Number(codes[2]) + Number(codes[4]), seconds: Number(done[1]) / (done[2] === 'ms' ? 1000 : 1) });
    });
  });
}

const LIMIT = `apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { name: web-per-identity, namespace: shop }
spec:
  targetRef: { kind: Service, name: web }
  identity: { requestsPerSecond: 10 }
---
apiVersion: policy.kedge.dev/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { name: grpc-calls, namespace: shop }
spec:
  targetRef: { kind: Service, name: echogrpc }
  limits:
  - { name: per-principal, requestsPerSecond: 1, burst: 3, key: [sourcePrincipal] }
---
apiVersion: policy.kedge.dev/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { name: tcp-connections, namespace: shop }
spec:
  targetRef: { kind: Service, name: tcpecho }
  limits:
  - { name: conns, connectionsPerSecond: 1, burst: 2, key: [sourcePrincipal] }
---
apiVersion: policy.kedge.dev/v1alpha1
kind: MeshQuota
metadata: { name: broken, namespace: shop }
spec:
  targetRef: { kind: Service, name: web }
  requests: 0
`;

describe('local rate limits', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  let server: AgentHandle;
  let a: AgentHandle;
  let b: AgentHandle;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  let echo: net.Server;
  let grpcServer: grpc.Server;
  const admin = () => ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];
  const dir = tempDir('ratelimit');

  before(async () => {
    fed = await startFederationProc();
    app = await startHttpApp('web');
    echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const echoPort = (echo.address() as net.AddressInfo).port;
    const g = await startEchoGrpc();
    grpcServer = g.server;
    const grpcPort = g.port;
    server = await startAgentProc(fed, {
      name: 'web',
      namespace: 'shop',
      serviceAccount: 'web',
      address: '127.0.76.1',
      services: [
        { name: 'web', ports: [{ name: 'http', port: 8000, targetPort: app.port, protocol: 'http' }] },
        { name: 'tcpecho', ports: [{ name: 'tcp', port: 9000, targetPort: echoPort, protocol: 'tcp' }] },
        { name: 'echogrpc', ports: [{ name: 'grpc', port: 9090, targetPort: grpcPort, protocol: 'grpc' }] },
      ],
    });
    const upstreams = (n: number) => [
      { service: 'web.shop', port: 8000, listen: `127.0.76.${n}:0` },
      { service: 'tcpecho.shop', port: 9000, listen: `127.0.77.${n}:0` },
      { service: 'echogrpc.shop', port: 9090, listen: `127.0.78.${n}:0` },
    ];
    a = await startAgentProc(fed, { name: 'a', namespace: 'default', serviceAccount: 'a', address: '127.0.76.2', upstreams: upstreams(2) });
    b = await startAgentProc(fed, { name: 'b', namespace: 'default', serviceAccount: 'b', address: '127.0.76.3', upstreams: upstreams(3) });
    agents.push(server, a, b);
    for (const c of [a, b]) await eventually(async () => (await curl(`http://${c.upstreams[0]}/`)).status === 200, 15_000, `${c.spec.name} reaches web`);
  });
  after(async () => {
    await Promise.all(agents.map((x) => x.proc.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
    await app.close();
    echo.close();
    grpcServer.forceShutdown();
  });

  it('kedge apply -f stores the good documents, names the document and path of a zero quota, and pushes only to the server agent', T, async () => {
    const file = path.join(dir, 'limits.yaml');
    fs.writeFileSync(file, LIMIT);
    const r = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(r.code, 1, 'the bad document makes the command fail');
    assert.match(r.stderr, /limits\.yaml \(document 4\): MeshQuota shop\/broken: spec\.requests: is 0; a limit must be at least 1/);
    assert.match(r.stdout, /^httplocalratelimitpolicy\/web-per-identity \(shop\) applied$/m);
    assert.match(r.stdout, /^httplocalratelimitpolicy\/tcp-connections \(shop\) applied$/m);
    const list = await runKedge(['get', 'ratelimits', ...admin()]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /HTTPLocalRateLimitPolicy\s+shop\s+web-per-identity\s+web\.shop\s+10\/s per identity\s+shop\/web/);
    await server.proc.waitForLog((l) => l.msg === 'rate limits updated' && l.policies === 3, 15_000, 'the server agent got the three documents');
    assert.equal(a.proc.logs.some((l) => l.msg === 'rate limits updated' && (l.policies as number) > 0), false, 'a client agent serves none of the targeted services');
  });

  it('10 rps per principal: beyond the bucket and its refill, 429 with retry-after, for each principal apart', T, async () => {
    // Both clients at once, 30 rps each for 90 requests (about 3 s).
    const [ra, rb] = await Promise.all([h2load(`http://${a.upstreams[0]}/`, 90, 30), h2load(`http://${b.upstreams[0]}/`, 90, 30)]);
    for (const [who, r] of [['a', ra], ['b', rb]] as const) {
      // The bucket holds 10 and refills 10 per second: 10 + 10 × the run's length may pass.
      const expected = 10 + 10 * r.seconds;
      process.stdout.write(`# ${who}: ${r.ok} of 90 admitted, ${r.refused} refused (429) in ${r.seconds} s; the bucket allows ${expected.toFixed(1)}\n`);
      assert.equal(r.other, 0, `${who}: only 2xx and 429`);
      assert.equal(r.ok + r.refused, 90);
      assert.ok(Math.abs(r.ok - expected) <= Math.max(3, expected * 0.1), `${who}: ${r.ok} admitted in ${r.seconds} s, expected about ${expected.toFixed(1)}`);
      assert.ok(r.refused >= 30, `${who}: ${r.refused} refused`);
    }
    // Right after a flood the bucket is empty: curl sees the 429 itself.
    const flood = await Promise.all(Array.from({ length: 15 }, () => curl(`http://${a.upstreams[0]}/x`)));
    const refused = flood.find((x) => x.status === 429);
    assert.ok(refused, `statuses ${flood.map((x) => x.status).join(',')}`);
    assert.equal(refused.body, 'local_rate_limited');
    assert.match(refused.headers, /^retry-after: [1-9]\d*\r?$/im);
    assert.match(refused.headers, /^x-kedge-response-flags: RL\r?$/im);
    const log = await server.proc.waitForLog((l) => l.msg === 'refused by rate limit' && l.policy === 'shop/web-per-identity', 5_000, 'the refusal log line');
    assert.equal(log.limit, 'identity');
    assert.match(String(log.peer), /^spiffe:\/\/cluster\.local\/ns\/default\/sa\/[ab]$/);
    // The per-request record of the server proxy counts the refusal with Envoy's flag.
    const record = await server.proc.waitForLog((l) => l.msg === 'inbound' && l.status === 429, 5_000, 'the record of a refused request');
    assert.equal(record.flags, 'RL');
    assert.equal(record.code, 'KEDGE_RATE_LIMITED');
  });

  it('gRPC: a call past the limit gets RESOURCE_EXHAUSTED; TCP: a connection past the connection rate is closed', T, async () => {
    const codes = await echoCalls(a.upstreams[2]!, 8);
    assert.deepEqual(codes.slice(0, 3), [0, 0, 0], `codes ${codes.join(',')}`);
    assert.ok(codes.slice(3).includes(grpc.status.RESOURCE_EXHAUSTED), `codes ${codes.join(',')}`);
    assert.ok(codes.every((c) => c === 0 || c === grpc.status.RESOURCE_EXHAUSTED), `codes ${codes.join(',')}`);
    const grpcRecord = await server.proc.waitForLog((l) => l.msg === 'inbound' && l.grpcStatus === grpc.status.RESOURCE_EXHAUSTED, 5_000, 'the record of a refused gRPC call');
    assert.equal(grpcRecord.flags, 'RL');
    const echoes = [];
    for (let i = 0; i < 5; i++) echoes.push(await tcpExchange(b.upstreams[1]!));
    assert.deepEqual(echoes.slice(0, 2), ['ping\n', 'ping\n']);
    assert.ok(echoes.slice(2).includes(''), `echoes ${JSON.stringify(echoes)}`);
  });

  it('kedge delete lifts the limit at the proxy', T, async () => {
    const r = await runKedge(['delete', 'httplocalratelimitpolicy', 'shop/web-per-identity', ...admin()]);
    assert.equal(r.code, 0, r.stderr);
    await server.proc.waitForLog((l) => l.msg === 'rate limits updated' && l.policies === 2, 15_000, 'the server agent dropped it');
    const r2 = await h2load(`http://${a.upstreams[0]}/`, 60, 60);
    assert.equal(r2.ok, 60);
  });
});

describe('429 back-off in client balancing', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  let client: AgentHandle;
  let busy: http.Server;
  let busyHits = 0;
  let okApp: Awaited<ReturnType<typeof startHttpApp>>;

  before(async () => {
    fed = await startFederationProc();
    okApp = await startHttpApp('ok');
    // An endpoint that is overloaded: every answer is 429.
    busy = http.createServer((_req, res) => {
      busyHits += 1;
      res.writeHead(429, { 'retry-after': '5' }).end('busy');
    });
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const busyPort = (busy.address() as net.AddressInfo).port;
    for (const [i, name, port] of [[1, 'api-busy', busyPort], [2, 'api-ok', okApp.port]] as const) {
      agents.push(await startAgentProc(fed, { name, namespace: 'shop', serviceAccount: 'api', address: `127.0.79.${i}`, services: [{ name: 'api', ports: [{ name: 'http', port: 8000, targetPort: port, protocol: 'http' }] }] }));
    }
    client = await startAgentProc(fed, { name: 'caller', namespace: 'default', serviceAccount: 'caller', address: '127.0.79.9', upstreams: [{ service: 'api.shop', port: 8000, listen: '127.0.79.9:0' }] });
    agents.push(client);
    await eventually(async () => busyHits > 0 && okApp.hits > 0 ? true : (await curl(`http://${client.upstreams[0]}/`), false), 15_000, 'both endpoints reached');
  });
  after(async () => {
    await Promise.all(agents.map((x) => x.proc.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
    await okApp.close();
    busy.close();
  });

  it('after a 429 the endpoint is backed off: the next requests go to the other one, not into it', T, async () => {
    const busyBefore = busyHits;
    const okBefore = okApp.hits;
    // 60 requests, one connection each, as fast as curl goes: the back-off
    // of the busy endpoint (1 s, then 2 s, 4 s...) covers most of them.
    const statuses: number[] = [];
    for (let i = 0; i < 60; i++) statuses.push((await curl(`http://${client.upstreams[0]}/n${i}`)).status);
    const toBusy = busyHits - busyBefore;
    const toOk = okApp.hits - okBefore;
    assert.equal(toBusy + toOk, 60);
    assert.equal(statuses.filter((s) => s === 429).length, toBusy);
    // Without back-off, random two-choice over two endpoints sends about half to each.
    process.stdout.write(`# 60 requests: ${toBusy} to the endpoint answering 429, ${toOk} to the other\n`);
    assert.ok(toBusy <= 12, `${toBusy} of 60 requests went to the endpoint answering 429 (${toOk} to the other)`);
  });
});
