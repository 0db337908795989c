// AuthorizationPolicy end to end with real processes: a federation, a server
// agent (httpbin: an HTTP port and a TCP port, label app=httpbin in
// namespace foo) and two client agents (default/sleep and default/attacker).
// kedge apply -f stores the policies, the federation pushes them to the
// agent they select, its inbound proxy enforces them (curl sees 403 `RBAC:
// access denied`, a TCP client a closed connection), and `kedge authz check`
// agrees with what the proxy does on a table of cases. A grpc-js client
// gets PERMISSION_DENIED.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { runKedge, tempDir, eventually } from '../support/procs';
import { AgentHandle, FederationHandle, curl, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import { ECHO_DEF, EchoClient, tcpExchange } from '../support/mesh-clients';

const T = { timeout: 120_000 };


/** One unary call through a client proxy; resolves with the gRPC status code and message. */
function grpcCall(hostPort: string): Promise<{ code: number; details: string }> {
  const c = new EchoClient(hostPort, grpc.credentials.createInsecure()) as unknown as grpc.Client & { Check(b: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void): void };
  return new Promise((resolve) => {
    c.Check(Buffer.from('ping'), new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err) => {
      c.close();
      resolve({ code: err?.code ?? 0, details: err?.details ?? '' });
    });
  });
}

const DENY_ATTACKER = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-attacker, namespace: foo }
spec:
  action: DENY
  rules:
  - from: [{ source: { principals: [cluster.local/ns/default/sa/attacker] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: nobody, namespace: foo }
spec:
  selector: { matchLabels: { app: nothing-has-this } }
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: broken, namespace: foo }
spec:
  rules:
  - from: [{ source: { ipBlocks: [10.0.0.0/40] } }]
`;

const ALLOW_API = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-api-get, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  action: ALLOW
  rules:
  - to: [{ operation: { methods: [GET], paths: ["/api/*"] } }]
`;

describe('authorization policies', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  let server: AgentHandle;
  let sleep: AgentHandle;
  let attacker: AgentHandle;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  let echo: net.Server;
  let grpcServer: grpc.Server;
  const admin = () => ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];
  const dir = tempDir('authz');

  before(async () => {
    fed = await startFederationProc();
    app = await startHttpApp('httpbin');
    echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const echoPort = (echo.address() as net.AddressInfo).port;
    grpcServer = new grpc.Server();
    grpcServer.addService(ECHO_DEF as unknown as grpc.ServiceDefinition, { Check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) });
    const grpcPort = await new Promise<number>((resolve, reject) => grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
    server = await startAgentProc(fed, {
      name: 'httpbin',
      namespace: 'foo',
      serviceAccount: 'httpbin',
      address: '127.0.72.1',
      services: [
        { name: 'httpbin', ports: [{ name: 'http', port: 8000, targetPort: app.port, protocol: 'http' }] },
        { name: 'tcpecho', ports: [{ name: 'tcp', port: 9000, targetPort: echoPort, protocol: 'tcp' }] },
        { name: 'echogrpc', ports: [{ name: 'grpc', port: 9090, targetPort: grpcPort, protocol: 'grpc' }] },
      ],
    });
    // Two upstream listeners per client, on its own loopback address (one address:0 per upstream).
    const upstreams = (n: number) => [
      { service: 'httpbin.foo', port: 8000, listen: `127.0.72.${n}:0` },
      { service: 'tcpecho.foo', port: 9000, listen: `127.0.73.${n}:0` },
      { service: 'echogrpc.foo', port: 9090, listen: `127.0.74.${n}:0` },
    ];
    sleep = await startAgentProc(fed, { name: 'sleep', namespace: 'default', serviceAccount: 'sleep', address: '127.0.72.2', upstreams: upstreams(2) });
    attacker = await startAgentProc(fed, { name: 'attacker', namespace: 'default', serviceAccount: 'attacker', address: '127.0.72.3', upstreams: upstreams(3) });
    agents.push(server, sleep, attacker);
    for (const a of [sleep, attacker]) await eventually(async () => (await curl(`http://${a.upstreams[0]}/`)).status === 200, 15_000, `${a.spec.name} reaches httpbin`);
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
    await app.close();
    echo.close();
    grpcServer.forceShutdown();
  });

  it('kedge apply -f stores the good policies and names the document and path of the bad one', T, async () => {
    const file = path.join(dir, 'deny.yaml');
    fs.writeFileSync(file, DENY_ATTACKER);
    const r = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(r.code, 1, 'the bad document makes the command fail');
    assert.match(r.stderr, /deny\.yaml \(document 3\): AuthorizationPolicy foo\/broken: spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: "10\.0\.0\.0\/40" is not an IP address or CIDR block/);
    // A bad policy rejects only itself: the good ones of the file are applied.
    assert.match(r.stdout, /^authorizationpolicy\/deny-attacker \(foo\) applied$/m);
    const list = await runKedge(['get', 'authorizationpolicies', '-o', 'json', ...admin()]);
    const rows = JSON.parse(list.stdout) as { name: string; workloads: string[] }[];
    assert.deepEqual(rows.map((x) => x.name).sort(), ['deny-attacker', 'nobody']);
  });

  it('a DENY for the attacker principal blocks it over HTTP (403) and TCP (closed) while sleep passes', T, async () => {
    const file = path.join(dir, 'deny-good.yaml');
    fs.writeFileSync(file, DENY_ATTACKER.split('---\n').slice(0, 2).join('---\n'));
    const r = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^authorizationpolicy\/deny-attacker \(foo\) applied$/m);
    await eventually(async () => (await curl(`http://${attacker.upstreams[0]}/`)).status === 403, 15_000, 'the attacker denied');
    const denied = await curl(`http://${attacker.upstreams[0]}/anything`);
    assert.deepEqual(denied, { status: 403, body: 'RBAC: access denied' });
    assert.equal((await curl(`http://${sleep.upstreams[0]}/anything`)).status, 200);
    assert.equal(await tcpExchange(attacker.upstreams[1]!), '', 'the attacker TCP connection is closed without an echo');
    assert.equal(await tcpExchange(sleep.upstreams[1]!), 'ping\n');
    assert.deepEqual(await grpcCall(attacker.upstreams[2]!), { code: grpc.status.PERMISSION_DENIED, details: 'RBAC: access denied' });
    assert.deepEqual(await grpcCall(sleep.upstreams[2]!), { code: grpc.status.OK, details: '' });
    const log = await server.proc.waitForLog((l) => l.msg === 'denied by authorization policy' && l.method === 'GET', 5_000, 'the denial log line');
    assert.equal(log.policy, 'foo/deny-attacker');
    assert.equal(log.rule, 0);
    assert.equal(log.peer, 'spiffe://cluster.local/ns/default/sa/attacker');
    await server.proc.waitForLog((l) => l.msg === 'denied by authorization policy' && l.method === undefined && l.policy === 'foo/deny-attacker', 5_000, 'the TCP denial log line');
  });

  it('kedge get authorizationpolicies shows what each policy selects, a selector matching nothing as such', T, async () => {
    const r = await runKedge(['get', 'authorizationpolicies', ...admin()]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /foo\s+deny-attacker\s+DENY\s+\(namespace\)\s+1\s+foo\/httpbin/);
    assert.match(r.stdout, /foo\s+nobody\s+ALLOW\s+app=nothing-has-this\s+1\s+\(no registered workload\)/);
  });

  it('an ALLOW of GET /api/* lets GET through and denies POST and other paths; TCP to the workload is denied (Istio: an ALLOW rule with HTTP fields matches no TCP)', T, async () => {
    const file = path.join(dir, 'allow.yaml');
    fs.writeFileSync(file, ALLOW_API);
    assert.equal((await runKedge(['apply', '-f', file, ...admin()])).code, 0);
    await eventually(async () => (await curl(`http://${sleep.upstreams[0]}/other`)).status === 403, 15_000, 'the ALLOW in force');
    assert.equal((await curl(`http://${sleep.upstreams[0]}/api/items`)).status, 200);
    assert.equal((await curl(`http://${sleep.upstreams[0]}/api/items`, 'POST')).status, 403);
    assert.equal((await curl(`http://${attacker.upstreams[0]}/api/items`)).status, 403, 'DENY still wins');
    assert.equal(await tcpExchange(sleep.upstreams[1]!), '');
    assert.equal((await grpcCall(sleep.upstreams[2]!)).code, grpc.status.PERMISSION_DENIED, 'a gRPC call is a POST to /kedge.test.Echo/Check: not allowed');
  });

  it('kedge authz check agrees with what the proxy does on 32 cases', T, async () => {
    const cases: { from: AgentHandle; method: string; path: string }[] = [];
    for (const from of [sleep, attacker]) for (const method of ['GET', 'POST', 'DELETE', 'PUT']) for (const p of ['/api/items', '/api/', '/apix', '/']) cases.push({ from, method, path: p });
    const mismatches: string[] = [];
    for (const c of cases) {
      const actual = await curl(`http://${c.from.upstreams[0]}${c.path}`, c.method);
      const r = await runKedge(['authz', 'check', '--from', `default/${c.from.spec.name}`, '--to', 'httpbin.foo:8000', '--method', c.method, '--path', c.path, '-o', 'json', ...admin()]);
      assert.equal(r.code, 0, r.stderr);
      const answer = JSON.parse(r.stdout) as { results: { allowed: boolean; reason: string }[] };
      assert.equal(answer.results.length, 1);
      const predicted = answer.results[0]!.allowed ? 200 : 403;
      if (predicted !== actual.status) mismatches.push(`${c.from.spec.name} ${c.method} ${c.path}: check says ${predicted} (${answer.results[0]!.reason}), proxy answered ${actual.status}`);
    }
    assert.deepEqual(mismatches, []);
    assert.equal(cases.length, 32);
    const table = await runKedge(['authz', 'check', '--from', 'default/sleep', '--to', 'httpbin.foo:8000', '--method', 'GET', '--path', '/api/x', ...admin()]);
    assert.match(table.stdout, /ALLOW\s+127\.0\.72\.1:\d+\s+foo\/httpbin\s+foo\/allow-api-get\s+0\s+allowed by ALLOW policy foo\/allow-api-get, rule 0/);
    const tcp = await runKedge(['authz', 'check', '--from', 'default/sleep', '--to', 'tcpecho.foo', ...admin()]);
    assert.match(tcp.stdout, /\[tcp\]/);
    assert.match(tcp.stdout, /DENY\s+127\.0\.72\.1:\d+.*denied: no rule of the ALLOW policies \(foo\/allow-api-get\) matches/);
    const bad = await runKedge(['authz', 'check', '--from', 'default/nobody', '--to', 'httpbin.foo', ...admin()]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no workload default\/nobody is registered/);
  });

  it('a namespace-wide ALLOW with a workload-specific DENY: the DENY wins for its workload, the ALLOW admits the rest', T, async () => {
    const file = path.join(dir, 'ns-allow.yaml');
    fs.writeFileSync(file, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-default-ns, namespace: foo }
spec:
  rules: [{ from: [{ source: { namespaces: [default] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-delete, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  action: DENY
  rules: [{ to: [{ operation: { methods: [DELETE] } }] }]
`);
    assert.equal((await runKedge(['delete', 'authorizationpolicy', 'foo/allow-api-get', ...admin()])).code, 0);
    assert.equal((await runKedge(['delete', 'authorizationpolicy', 'foo/deny-attacker', ...admin()])).code, 0);
    assert.equal((await runKedge(['apply', '-f', file, ...admin()])).code, 0);
    await eventually(async () => (await curl(`http://${sleep.upstreams[0]}/x`, 'DELETE')).status === 403, 15_000, 'the DENY in force');
    assert.equal((await curl(`http://${sleep.upstreams[0]}/x`, 'POST')).status, 200, 'the namespace-wide ALLOW admits default');
    assert.equal((await curl(`http://${attacker.upstreams[0]}/other`)).status, 200);
    // Istio's TCP rule: the DENY's only field (methods) is HTTP-only, so on TCP it is dropped and the rule denies every connection.
    assert.equal(await tcpExchange(sleep.upstreams[1]!), '', 'the DENY without its HTTP-only field denies all TCP');
    const tcpCheck = await runKedge(['authz', 'check', '--from', 'default/sleep', '--to', 'tcpecho.foo', ...admin()]);
    assert.match(tcpCheck.stdout, /DENY\s+\S+\s+foo\/httpbin\s+foo\/deny-delete\s+0\s+denied by DENY policy foo\/deny-delete, rule 0/);
    const check = await runKedge(['authz', 'check', '--from', 'default/sleep', '--to', 'httpbin.foo:8000', '--method', 'DELETE', ...admin()]);
    assert.match(check.stdout, /DENY\s+\S+\s+foo\/httpbin\s+foo\/deny-delete\s+0\s+denied by DENY policy foo\/deny-delete, rule 0/);
  });

  it('kedge delete authorizationpolicy lifts the policy at the proxy', T, async () => {
    for (const name of ['allow-default-ns', 'deny-delete']) {
      const r = await runKedge(['delete', 'authorizationpolicy', `foo/${name}`, ...admin()]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `authorizationpolicy/${name} (foo) deleted\n`);
    }
    await eventually(async () => (await curl(`http://${attacker.upstreams[0]}/other`, 'POST')).status === 200, 15_000, 'the attacker passes again');
    assert.equal(await tcpExchange(attacker.upstreams[1]!), 'ping\n');
    assert.equal((await grpcCall(attacker.upstreams[2]!)).code, grpc.status.OK);
  });
});
