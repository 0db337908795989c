// Auto mTLS end to end, with real processes on loopback: a federation whose
// config lists service entries (endpoints without a Kedge proxy) and agents
// whose explicit upstreams reach them in plain TCP, while meshed endpoints
// of the same service keep mTLS; a dead plaintext endpoint is ejected as a
// meshed one is, and no request fails.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { eventually, runKedge } from '../support/procs';
import { AgentHandle, FederationHandle, agentSeesEndpoints, getJson, httpGet, startAgentProc, startFederationProc, startHttpApp, writeFederationConfig } from '../support/mesh';

/** A plain TCP app that answers each connection with one HTTP response naming it, and keeps each connection's first bytes. */
interface PlainApp {
  name: string;
  port: number;
  firstBytes: Buffer[];
  close(): Promise<void>;
}

async function startPlainApp(name: string, host: string): Promise<PlainApp> {
  const firstBytes: Buffer[] = [];
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.once('data', (chunk: Buffer) => {
      firstBytes.push(chunk);
      socket.end(`HTTP/1.1 200 OK\r\ncontent-length: ${name.length}\r\nconnection: close\r\n\r\n${name}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    name,
    port: (server.address() as net.AddressInfo).port,
    firstBytes,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

interface ConfigService {
  key: string;
  endpoints: { address: string; meshed: boolean; ports: { name: string; port: number }[] }[];
  balancer: { endpoints: { key: string; plaintext: boolean; health: string }[] } | null;
}

describe('plaintext endpoints: auto mTLS from VM agents', () => {
  let fed: FederationHandle;
  let client: AgentHandle;
  const agents: AgentHandle[] = [];
  const apps: { close(): Promise<void> }[] = [];
  let pg: PlainApp;
  let metrics: PlainApp;
  let ordersPlain: PlainApp;
  let ordersMeshed: Awaited<ReturnType<typeof startHttpApp>>;
  const admin = () => ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];
  const upstream = (service: string, port: number): string => client.upstreams[client.spec.upstreams!.findIndex((u) => u.service === service && u.port === port)]!;

  before(async () => {
    // billing-db: a database outside every cluster, two ports on two app
    // listeners. orders: one VM agent (meshed) and one service entry
    // endpoint (plaintext) under one name.namespace.
    pg = await startPlainApp('pg', '127.0.75.1');
    metrics = await startPlainApp('metrics', '127.0.75.1');
    ordersPlain = await startPlainApp('orders-plain', '127.0.75.2');
    ordersMeshed = await startHttpApp('orders-meshed');
    apps.push(pg, metrics, ordersPlain, ordersMeshed);

    const file = writeFederationConfig({
      serviceEntries: [
        {
          name: 'billing-db', namespace: 'shop',
          ports: [{ name: 'pg', port: 5432, protocol: 'tcp' }, { name: 'metrics', port: 9187, protocol: 'http' }],
          endpoints: [{ address: '127.0.75.1', ports: { pg: pg.port, metrics: metrics.port } }],
        },
        { name: 'orders', namespace: 'shop', ports: [{ name: 'http', port: 9080, protocol: 'http' }], endpoints: [{ address: '127.0.75.2', ports: { http: ordersPlain.port } }] },
      ],
    });
    fed = await startFederationProc({ args: ['--config', file] });
    agents.push(await startAgentProc(fed, {
      name: 'orders-vm', namespace: 'shop', serviceAccount: 'orders', address: '127.0.75.10',
      services: [{ name: 'orders', ports: [{ name: 'http', port: 9080, targetPort: ordersMeshed.port, protocol: 'http' }] }],
    }));
    client = await startAgentProc(fed, {
      name: 'web', namespace: 'shop', serviceAccount: 'web', address: '127.0.75.20',
      upstreams: [
        { service: 'billing-db.shop', port: 5432, listen: '127.0.75.21:0' },
        { service: 'billing-db.shop', port: 9187, listen: '127.0.75.22:0' },
        { service: 'orders.shop', port: 9080, listen: '127.0.75.23:0' },
      ],
    });
    agents.push(client);
    await agentSeesEndpoints(client, 'billing-db.shop', 1);
    await agentSeesEndpoints(client, 'orders.shop', 2);
  });

  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    await Promise.all(apps.map((a) => a.close()));
  });

  it('reaches a service entry in plain TCP, each service port at its own app port', async () => {
    assert.equal(await httpGet(upstream('billing-db.shop', 5432)), 'pg');
    assert.equal(await httpGet(upstream('billing-db.shop', 9187)), 'metrics');
    // What the app received is the client's own bytes: no TLS ClientHello (0x16 0x03).
    for (const first of [...pg.firstBytes, ...metrics.firstBytes]) assert.match(first.toString('latin1'), /^GET \/ HTTP\/1\.1\r\n/);
    const log = await client.proc.waitForLog((l) => l.msg === 'outbound' && l.service === 'billing-db.shop' && l.port === 5432, 5_000, 'access log line');
    assert.deepEqual([log.endpoint, log.plaintext, log.sni, log.peer], [`127.0.75.1:${pg.port}`, true, undefined, undefined]);
  });

  it('shows the plaintext endpoint on /config and in kedge get endpoints', async () => {
    const cfg = await getJson<{ services: ConfigService[] }>(`${client.adminUrl}/config`);
    const db = cfg.services.find((s) => s.key === 'billing-db.shop')!;
    assert.deepEqual(db.endpoints.map((e) => [e.address, e.meshed, e.ports.map((p) => p.port).sort((a, b) => a - b)]), [['127.0.75.1', false, [pg.port, metrics.port].sort((a, b) => a - b)]]);
    assert.deepEqual(db.balancer!.endpoints.map((e) => [e.key, e.plaintext]), [[`127.0.75.1:${pg.port}`, true]]);
    const table = await runKedge(['get', 'endpoints', 'orders.shop', ...admin()]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`127\\.0\\.75\\.2:${ordersPlain.port} .* plaintext\\n`));
    assert.match(table.stdout, /127\.0\.75\.10:\d+ .* spiffe:\/\/cluster\.local\/ns\/shop\/sa\/orders\n/);
  });

  it('kedge get endpoints --from shows the plaintext endpoint with its share, as the client balances it', async () => {
    const from = await runKedge(['get', 'endpoints', 'orders.shop', '--from', 'shop/web', ...admin()]);
    assert.equal(from.code, 0, from.stderr);
    assert.match(from.stdout, new RegExp(`127\\.0\\.75\\.2:${ordersPlain.port} +static\\/shop\\/orders\\/127\\.0\\.75\\.2 +.* 50\\.0%\\n`));
    assert.match(from.stdout, /127\.0\.75\.10:\d+ +shop\/orders-vm +.* 50\.0%\n/);
  });

  it('balances one service over its meshed endpoint (mTLS) and its plaintext one', async () => {
    const seen = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const body = await httpGet(upstream('orders.shop', 9080));
      seen.set(body, (seen.get(body) ?? 0) + 1);
    }
    assert.deepEqual([...seen.keys()].sort(), ['orders-meshed', 'orders-plain']);
    const meshedLog = await client.proc.waitForLog((l) => l.msg === 'outbound' && l.service === 'orders.shop' && l.plaintext === undefined, 5_000, 'mTLS access log line');
    assert.equal(meshedLog.peer, 'spiffe://cluster.local/ns/shop/sa/orders');
    assert.ok(ordersPlain.firstBytes.every((b) => b.toString('latin1').startsWith('GET / HTTP/1.1')));
  });

  it('a dead plaintext endpoint is ejected like a meshed one, and no request fails', async () => {
    await ordersPlain.close();
    let failed = 0;
    for (let i = 0; i < 30; i++) {
      try {
        assert.equal(await httpGet(upstream('orders.shop', 9080)), 'orders-meshed');
      } catch {
        failed++;
      }
    }
    assert.equal(failed, 0);
    const key = `127.0.75.2:${ordersPlain.port}`;
    const ejection = await client.proc.waitForLog((l) => l.msg === 'endpoint ejected by outlier detection' && l.endpoint === key, 5_000, 'ejection of the plaintext endpoint');
    assert.equal(ejection.service, 'orders.shop');
    const attempt = await client.proc.waitForLog((l) => l.msg === 'outbound connect attempt failed' && l.endpoint === key, 1_000, 'failed attempt');
    assert.equal(attempt.code, 'KEDGE_UPSTREAM_CONNECT_FAILED');
    assert.match(String(attempt.err), new RegExp(`plaintext endpoint ${key.replace(/\./g, '\\.')} .*ECONNREFUSED.*check that its app listens on port ${ordersPlain.port}`));
    const balancer = await eventually(async () => {
      const cfg = await getJson<{ services: ConfigService[] }>(`${client.adminUrl}/config`);
      return cfg.services.find((s) => s.key === 'orders.shop')?.balancer ?? undefined;
    }, 5_000, 'orders balancer');
    assert.equal(balancer.endpoints.find((e) => e.key === key)!.health, 'ejected');
  });
});
