// The trust model, attacked as an ordinary token holder would: every attack
// of issue 9, scripted against a real federation and a real victim agent,
// must fail with a clear refusal and leave the victim's registration,
// endpoints and traffic untouched. The attacker speaks the agent protocol
// with its own gRPC client (it is not bound by the agent's code).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { runKedge, eventually } from '../support/procs';
import { AgentHandle, FederationHandle, createToken, federationEndpoints, getJson, httpGet, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import { federationClient, signOnce, type ClientIdentity } from '../../agent/registration/client';
import { generateKeyAndCsr } from '../../agent/identity/csr';
import { hasCode, type KedgeError } from '../../proto/model/errors';
import { parseHostPort } from '../../proto/model/address';
import type { AgentMessage, FederationMessage__Output, Register } from '../../proto/loader';

interface Joined extends ClientIdentity { serial: string }

/** What a raw Connect stream received and how it ended. */
interface RawStream {
  messages: FederationMessage__Output[];
  ended: Promise<{ code: number; details: string }>;
  send(m: AgentMessage): void;
  close(): void;
}

describe('trust model: what an ordinary token holder cannot do', () => {
  let fed: FederationHandle;
  let victim: AgentHandle;
  let client: AgentHandle;
  const apps: { close(): Promise<void> }[] = [];
  const admin = ['--federation', '', '--admin-token-file', ''];
  const rootPem = () => fs.readFileSync(fed.rootCertFile, 'utf8');
  const grpcClient = (id?: ClientIdentity) => federationClient(parseHostPort(fed.grpc, 'grpc'), rootPem(), id, 'cluster.local');

  async function join(token: string): Promise<Joined> {
    const { keyPem, csrPem } = await generateKeyAndCsr();
    const c = grpcClient();
    try {
      const res = await signOnce(c, csrPem, token);
      return { keyPem, certChainPem: res.certChainPem.join(''), serial: new X509Certificate(res.certChainPem[0]!).serialNumber.toUpperCase() };
    } finally {
      c.close();
    }
  }

  async function renew(id: Joined): Promise<Joined> {
    const { keyPem, csrPem } = await generateKeyAndCsr();
    const c = grpcClient(id);
    try {
      const res = await signOnce(c, csrPem, undefined);
      return { keyPem, certChainPem: res.certChainPem.join(''), serial: new X509Certificate(res.certChainPem[0]!).serialNumber.toUpperCase() };
    } finally {
      c.close();
    }
  }

  function connect(id: ClientIdentity): RawStream {
    const c = grpcClient(id);
    const call = c.Connect();
    const messages: FederationMessage__Output[] = [];
    call.on('data', (m: FederationMessage__Output) => messages.push(m));
    const ended = new Promise<{ code: number; details: string }>((resolve) => {
      call.on('error', (err: grpc.ServiceError) => resolve({ code: err.code, details: err.details }));
      call.on('end', () => resolve({ code: 0, details: 'ended' }));
    }).finally(() => c.close());
    return { messages, ended, send: (m) => call.write(m), close: () => call.cancel() };
  }

  function register(over: Partial<Register['workload']> & { services?: Register['services']; subscriptions?: string[] }): AgentMessage {
    const { services, subscriptions, ...wl } = over;
    return {
      register: {
        workload: { name: 'attacker', namespace: 'default', serviceAccount: 'attacker', address: '127.0.77.9', inboundPort: 15006, labels: {}, network: '', ...wl },
        services: services ?? [],
        subscriptions: subscriptions ?? [],
        agentVersion: 'test',
      },
    };
  }

  /** Registers on a raw stream and returns how the federation answered: registered, or the refusal. */
  async function attempt(id: ClientIdentity, msg: AgentMessage): Promise<{ registered: boolean; code: number; details: string; stream: RawStream }> {
    const s = connect(id);
    s.send(msg);
    const first = await Promise.race([
      eventually(() => s.messages.some((m) => m.msg === 'registered'), 10_000, 'an answer to Register').then(() => 'registered' as const),
      s.ended,
    ]);
    if (first === 'registered') return { registered: true, code: 0, details: '', stream: s };
    return { registered: false, ...first, stream: s };
  }

  async function victimIntact() {
    const eps = await federationEndpoints(fed, 'reviews.default');
    assert.deepEqual(eps.map((e) => [e.workload, e.identity]), [['default/vm-1', 'spiffe://cluster.local/ns/default/sa/reviews']], 'reviews.default is still only the victim');
    for (let i = 0; i < 10; i++) assert.equal((await httpGet(client.upstreams[0]!)), 'vm-1', 'traffic still reaches the victim');
  }

  before(async () => {
    fed = await startFederationProc();
    admin[1] = fed.httpsUrl;
    admin[3] = fed.adminTokenFile;
    const app = await startHttpApp('vm-1');
    apps.push(app);
    victim = await startAgentProc(fed, {
      name: 'vm-1', namespace: 'default', serviceAccount: 'reviews', address: '127.0.77.1',
      services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }],
    });
    client = await startAgentProc(fed, { name: 'web', namespace: 'default', serviceAccount: 'web', address: '127.0.77.2', upstreams: [{ service: 'reviews.default', port: 9080 }] });
    await eventually(async () => (await httpGet(client.upstreams[0]!).catch(() => undefined)) === 'vm-1', 15_000, 'traffic to the victim');
  });
  after(async () => {
    await Promise.all([victim?.proc.stop('SIGKILL'), client?.proc.stop('SIGKILL')]);
    await fed?.proc.stop('SIGKILL');
    for (const a of apps) await a.close();
  });

  it('cannot take over another workload by its name, even with the service granted; Goodbye removes only its own', async () => {
    const id = await join(await createToken(fed, 'default', 'attacker', ['--service', 'reviews', '--labels', 'app=*']));
    const r = await attempt(id, register({ name: 'vm-1', services: [{ name: 'reviews', namespace: 'default', ports: [{ name: 'http', port: 9080, targetPort: 1234, protocol: 'tcp' }] }] }));
    assert.equal(r.registered, false);
    assert.match(r.details, /workload default\/vm-1 belongs to another certificate \(spiffe:\/\/cluster\.local\/ns\/default\/sa\/reviews/);
    await victimIntact();
    // A Goodbye from a stream that never registered vm-1 removes nothing.
    const other = await attempt(id, register({ name: 'vm-1' }));
    other.stream.send({ goodbye: { reason: 'bye' } });
    await other.stream.ended;
    await victimIntact();
    assert.ok(victim.proc.logs.every((l) => l.msg !== 'lost the federation; reconnecting'), 'the victim\'s stream was never disturbed');
  });

  it('a certificate without --workload is pinned to its first name; one with --workload vm-* may use names it matches', async () => {
    const pinned = await join(await createToken(fed, 'default', 'pinned'));
    const first = await attempt(pinned, register({ name: 'pinned-1', serviceAccount: 'pinned', address: '127.0.77.50' }));
    assert.equal(first.registered, true, first.details);
    first.stream.close();
    const second = await attempt(pinned, register({ name: 'pinned-2', serviceAccount: 'pinned', address: '127.0.77.50' }));
    assert.equal(second.registered, false);
    assert.match(second.details, /bound to workload "pinned-1" and cannot register as "pinned-2"/);
    const group = await join(await createToken(fed, 'default', 'group', ['--workload', 'vm-*']));
    for (const [name, ok] of [['vm-a', true], ['vm-b', true], ['db-1', false]] as const) {
      const r = await attempt(group, register({ name, serviceAccount: 'group', address: `127.0.77.${name === 'vm-a' ? 51 : 52}` }));
      assert.equal(r.registered, ok, `${name}: ${r.details}`);
      if (!ok) assert.match(r.details, /workload name "db-1" is not granted \(the token allows vm-\*\)/);
      r.stream.close();
    }
  });

  it('cannot serve a service it was not granted; the refusal names --service', async () => {
    const id = await join(await createToken(fed, 'default', 'attacker', ['--labels', 'app=*']));
    const r = await attempt(id, register({ name: 'attacker-2', services: [{ name: 'reviews', namespace: 'default', ports: [{ name: 'http', port: 9080, targetPort: 1234, protocol: 'tcp' }] }] }));
    assert.equal(r.registered, false);
    assert.match(r.details, /service "reviews" is not granted \(granted: none\); create the token with --service reviews/);
    await victimIntact();
  });

  it('cannot claim another workload\'s address and inbound port; kedge get workloads shows the conflict', async () => {
    const row = await getJson<{ address: string }>(`${victim.adminUrl}/config`).catch(() => undefined);
    void row;
    const inboundPort = Number(victim.inbound.split(':').pop());
    const id = await join(await createToken(fed, 'default', 'attacker', ['--service', 'ratings']));
    const r = await attempt(id, register({ name: 'attacker-3', address: '127.0.77.1', inboundPort, services: [{ name: 'ratings', namespace: 'default', ports: [{ name: 'http', port: 9080, targetPort: 1, protocol: 'tcp' }] }] }));
    assert.equal(r.registered, false);
    assert.match(r.details, new RegExp(`127\\.0\\.77\\.1:${inboundPort} is already registered by workload default/vm-1`));
    const wl = JSON.parse((await runKedge(['get', 'workloads', 'default/vm-1', '-o', 'json', ...admin])).stdout) as { conflicts: string[] };
    assert.equal(wl.conflicts.length, 1);
    assert.match(wl.conflicts[0]!, /default\/attacker-3 \(spiffe:\/\/cluster\.local\/ns\/default\/sa\/attacker\) claimed 127\.0\.77\.1:\d+; refused/);
    await victimIntact();
  });

  it('cannot declare itself a gateway; a token with --gateway may', async () => {
    const id = await join(await createToken(fed, 'default', 'attacker'));
    const r = await attempt(id, register({ name: 'attacker-gw', network: 'net-b', gateway: { address: '127.0.77.9', port: 15443 } }));
    assert.equal(r.registered, false);
    assert.match(r.details, /east-west gateway of network "net-b" is not granted; create the token with --gateway net-b/);
    // A gateway grant for a network the mesh does not know is refused unless --new-network says it is new.
    const unknown = await runKedge(['token', 'create', '--namespace', 'mesh-gateways', '--service-account', 'gw', '--gateway', 'net-b', ...admin]);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /--gateway net-b: no endpoint or workload of the mesh is on network net-b .*add --new-network/);
    const ok = await attempt(await join(await createToken(fed, 'mesh-gateways', 'gw', ['--gateway', 'net-b', '--new-network'])), register({ name: 'gw-b', namespace: 'mesh-gateways', serviceAccount: 'gw', network: 'net-b', gateway: { address: '127.0.77.10', port: 15443 } }));
    assert.equal(ok.registered, true, ok.details);
    ok.stream.send({ goodbye: { reason: 'done' } });
    await ok.stream.ended;
  });

  it('cannot register thousands of services, oversized names or labels, or half a million subscriptions', async () => {
    const id = await join(await createToken(fed, 'default', 'attacker', ['--service', '*', '--labels', 'app=*']));
    const port = [{ name: 'p', port: 1, targetPort: 1, protocol: 'tcp' }];
    const cases: [string, AgentMessage, RegExp][] = [
      ['10,000 services', register({ name: 'a1', services: Array.from({ length: 10_000 }, (_, i) => ({ name: `s${i}`, namespace: 'default', ports: port })) }), /10000 services in one registration; the limit is 64/],
      ['a 1 MB service name', register({ name: 'a2', services: [{ name: 'x'.repeat(1_000_000), namespace: 'default', ports: port }] }), /service name "x{77}\.\.\." is not a DNS label/],
      ['a 2 MB message', register({ name: 'a3', services: [{ name: 'x'.repeat(2_000_000), namespace: 'default', ports: port }] }), /larger than max|exceeds|too large/i],
      ['3 MB of labels', register({ name: 'a4', labels: Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`k${i}`, 'v'.repeat(100_000)])) }), /larger than max|exceeds|too large/i],
      ['500,000 subscriptions', register({ name: 'a5', subscriptions: Array.from({ length: 500_000 }, (_, i) => `s${i}.default`) }), /larger than max|exceeds|too large/i],
      ['6,000 subscriptions', register({ name: 'a6', subscriptions: Array.from({ length: 6_000 }, (_, i) => `s${i}.default`) }), /6000 subscriptions; the limit is 5000/],
    ];
    for (const [what, msg, re] of cases) {
      const r = await attempt(id, msg);
      assert.equal(r.registered, false, `${what} was accepted`);
      assert.match(r.details, re, what);
    }
    // Subscriptions added one Subscribe at a time hit the same limit.
    const s = await attempt(id, register({ name: 'a7' }));
    assert.equal(s.registered, true, s.details);
    s.stream.send({ subscribe: { add: Array.from({ length: 5_001 }, (_, i) => `s${i}.default`), remove: [] } });
    const end = await s.stream.ended;
    assert.match(end.details, /would exceed 5000 subscriptions/);
    await victimIntact();
  });

  it('cannot renew or connect with a superseded certificate', async () => {
    const first = await join(await createToken(fed, 'default', 'rotating', ['--labels', 'app=*']));
    const second = await renew(first);
    const third = await renew(second);
    const err = await renew(first).then(() => undefined, (e: KedgeError) => e);
    assert.ok(err && hasCode(err, 'KEDGE_PERMISSION_DENIED'), `renewal from a superseded certificate: ${err?.message}`);
    assert.match(err.message, /a newer certificate of this workload has been issued since/);
    const conn = await attempt(first, register({ name: 'rotating', serviceAccount: 'rotating', address: '127.0.77.30' }));
    assert.equal(conn.registered, false);
    assert.match(conn.details, /cannot connect: a newer certificate/);
    // The newest (and the one before it) still work.
    const ok = await attempt(third, register({ name: 'rotating', serviceAccount: 'rotating', address: '127.0.77.30' }));
    assert.equal(ok.registered, true, ok.details);
    ok.stream.close();
    await renew(second);
  });

  it('a revoked workload cannot renew, its stream is closed, it is gone from the mesh, and agents receive the serial', async () => {
    const id = await join(await createToken(fed, 'default', 'doomed', ['--service', 'doomed', '--labels', 'app=*']));
    const s = await attempt(id, register({ name: 'doomed', serviceAccount: 'doomed', address: '127.0.77.20', services: [{ name: 'doomed', namespace: 'default', ports: [{ name: 'p', port: 1, targetPort: 1, protocol: 'tcp' }] }] }));
    assert.equal(s.registered, true, s.details);
    await eventually(async () => (await federationEndpoints(fed, 'doomed.default')).length === 1, 10_000, 'doomed registered');
    const del = await runKedge(['delete', 'workload', 'default/doomed', ...admin]);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stdout, new RegExp(`workload default/doomed deleted: revoked certificate\\(s\\) ${id.serial}; registration removed`));
    const end = await s.stream.ended;
    assert.match(end.details, /was revoked/);
    const err = await renew(id).then(() => undefined, (e: KedgeError) => e);
    assert.ok(err && hasCode(err, 'KEDGE_REVOKED'), `renewal after revocation: ${err?.message}`);
    await eventually(async () => (await federationEndpoints(fed, 'doomed.default')).length === 0, 10_000, 'doomed gone from the mesh');
    const certs = await eventually(async () => {
      const c = await getJson<{ revokedSerials?: string[] }>(`${client.adminUrl}/certs`);
      return c.revokedSerials?.includes(id.serial) ? c : undefined;
    }, 5_000, 'the client agent to hold the revoked serial');
    assert.ok(certs.revokedSerials!.includes(id.serial));
    // The name is free again for a new join.
    const again = await attempt(await join(await createToken(fed, 'default', 'doomed', ['--service', 'doomed', '--labels', 'app=*'])), register({ name: 'doomed', serviceAccount: 'doomed', address: '127.0.77.20' }));
    assert.equal(again.registered, true, again.details);
    again.stream.close();
    await victimIntact();
  });

  it('a revoked client\'s open mesh connections are closed by the server\'s proxy within 2 s, and new ones refused', async () => {
    const spy = await startAgentProc(fed, { name: 'spy', namespace: 'default', serviceAccount: 'spy', address: '127.0.77.40', upstreams: [{ service: 'reviews.default', port: 9080 }] });
    try {
      await eventually(async () => (await httpGet(spy.upstreams[0]!).catch(() => undefined)) === 'vm-1', 15_000, 'spy reaches the victim');
      // A long-lived stream through the spy's proxy to the victim's.
      const [host, port] = spy.upstreams[0]!.split(':');
      const http = await import('node:http');
      let chunks = 0;
      const closed = new Promise<void>((resolve, reject) => {
        const req = http.get({ host, port: Number(port), path: '/stream' }, (res) => {
          res.on('data', () => (chunks += 1));
          res.on('end', resolve);
          res.on('error', () => resolve());
          res.on('close', resolve);
        });
        req.on('error', () => resolve());
        setTimeout(() => reject(new Error('the stream was never closed')), 30_000).unref();
      });
      await eventually(() => chunks >= 3, 10_000, 'the stream flowing');
      const del = await runKedge(['delete', 'workload', 'default/spy', ...admin]);
      assert.equal(del.code, 0, del.stderr);
      await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the revoked client\'s stream was still open 2 s after kedge delete workload')), 2_000))]);
      // A new connection from the revoked certificate is refused by the victim's proxy.
      await assert.rejects(httpGet(spy.upstreams[0]!, '/', 3_000));
      await victimIntact();
    } finally {
      await spy.proc.stop('SIGKILL');
    }
  });

  it('never issues an identity in kedge-system', async () => {
    const r = await runKedge(['token', 'create', '--namespace', 'kedge-system', '--service-account', 'kedge-federation', ...admin]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /namespace kedge-system is reserved for the mesh's own components/);
  });

  it('tokens are listed with their grants and can be deleted', async () => {
    const token = await createToken(fed, 'default', 'listed', ['--service', 'reviews', '--workload', 'vm-*', '--labels', 'app=reviews,version=*']);
    const id = token.split('.')[1]!;
    const rows = JSON.parse((await runKedge(['get', 'tokens', '-o', 'json', ...admin])).stdout) as { id: string; grant: unknown }[];
    assert.deepEqual(rows.find((r) => r.id === id)?.grant, { services: ['reviews'], workload: 'vm-*', labels: { app: 'reviews', version: '*' }, gateway: '' });
    const table = (await runKedge(['get', 'tokens', ...admin])).stdout;
    assert.match(table, new RegExp(`${id}\\s+default/listed\\s+reviews\\s+vm-\\*\\s+app=reviews,version=\\*`));
    assert.equal((await runKedge(['delete', 'token', id, ...admin])).code, 0);
    const { csrPem } = await generateKeyAndCsr();
    const c = grpcClient();
    const err = await signOnce(c, csrPem, token).then(() => undefined, (e: KedgeError) => e);
    c.close();
    assert.ok(err && hasCode(err, 'KEDGE_TOKEN_UNKNOWN'), String(err));
  });
});
