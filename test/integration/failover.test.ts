// Locality failover through the real data path on 127.0.0.1: a client proxy
// in us-east/zone-a, and three "zones" of server proxies (real mTLS inbound
// listeners with their own identities), each in front of a tiny HTTP app
// that says who it is. Endpoints die by closing their listeners and apps
// abruptly, come back on the same ports, or are marked unhealthy in the
// snapshot as the federation would. Every client request is a new
// connection; a failed one is any request that did not get its answer.
import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startAdmin } from '../../agent/admin/server';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../policy/traffic-policy';
import { mulberry32 } from '../../agent/proxy/balancer/random';
import type { BalancerState } from '../../agent/proxy/balancers';
import { Proxy } from '../../agent/proxy/proxy';
import type { EndpointView, ProxySnapshot } from '../../agent/proxy/types';
import type { Service__Output } from '../../proto/loader';
import { parseLocality } from '../../proto/model/locality';
import { makeCa, makeLeaf, type TestCa, toTlsIdentity } from '../support/pki';
import { logCapture, type LogLine } from '../support/logs';

const TD = 'spiffe://kedge.test';
const HOST = 'cart.shop.svc.cluster.local';
const PORT = 80;
const T = { timeout: 30_000 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// What /config lists: the service as the federation pushed it (only the fields the dump reads).
const CART_SERVICE = { key: 'cart.shop', hostname: HOST, vip: '', version: '1', ports: [], endpoints: [] } as unknown as Service__Output;

// Short ejections, so "brought back" does not wait the default 10 s.
const FAST_OUTLIER: TrafficPolicy['outlierDetection'] = { ...TRAFFIC_POLICY_DEFAULTS.outlierDetection, baseEjectionTimeMs: 300, maxEjectionTimeMs: 1_500 };
const FAST: TrafficPolicy = { ...TRAFFIC_POLICY_DEFAULTS, outlierDetection: FAST_OUTLIER };

/** One server-side workload: an HTTP app behind a Kedge proxy, killable and restartable on the same ports. */
class Server {
  private app: http.Server | undefined;
  private proxy: Proxy | undefined;
  private appPort = 0;
  private mtlsPort = 0;

  constructor(
    readonly name: string,
    readonly zone: string,
    readonly locality: string,
    readonly network: string,
    private readonly ca: TestCa,
  ) {}

  get spiffeId(): string {
    return `${TD}/ns/shop/sa/cart-${this.name}`;
  }

  async start(): Promise<void> {
    this.app = http.createServer((_req, res) => res.end(this.name));
    await new Promise<void>((r) => this.app!.listen(this.appPort, '127.0.0.1', r));
    this.appPort = (this.app.address() as AddressInfo).port;
    this.proxy = new Proxy({
      inboundListen: { host: '127.0.0.1', port: this.mtlsPort },
      targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: this.appPort }],
      upstreams: [],
      identity: toTlsIdentity(makeLeaf(this.ca, this.spiffeId)),
      logger: logCapture().logger,
    });
    await this.proxy.start();
    this.mtlsPort = this.proxy.inboundAddress().port;
  }

  /** Closes the listener and the app at once, open connections too. */
  async kill(): Promise<void> {
    await Promise.all([this.proxy?.close(0), this.killApp()]);
    this.proxy = undefined;
  }

  /** Only the app dies; its proxy keeps accepting mesh connections. */
  async killApp(): Promise<void> {
    const app = this.app;
    this.app = undefined;
    if (app === undefined) return;
    app.closeAllConnections();
    await new Promise<void>((r) => app.close(() => r()));
  }

  view(healthy = true): EndpointView {
    return {
      address: '127.0.0.1',
      mtlsPort: this.mtlsPort,
      identity: this.spiffeId,
      workload: this.name,
      healthy,
      ports: [{ name: 'http', port: this.appPort }],
      locality: parseLocality(this.locality),
      network: this.network,
      labels: {},
    };
  }
}

interface Load {
  failed: number;
  byServer: Record<string, number>;
  byZone: Record<string, number>;
}

describe('locality failover through the proxy', () => {
  const ca = makeCa('failover');
  const servers = [
    new Server('a1', 'zone-a', 'us-east/zone-a', 'net-b', ca),
    new Server('a2', 'zone-a', 'us-east/zone-a', 'net-b', ca),
    new Server('b1', 'zone-b', 'us-east/zone-b', 'net-a', ca),
    new Server('b2', 'zone-b', 'us-east/zone-b', 'net-a', ca),
    new Server('w1', 'us-west', 'us-west/zone-a', 'net-a', ca),
    new Server('w2', 'us-west', 'us-west/zone-a', 'net-a', ca),
  ];
  const byName = new Map(servers.map((s) => [s.name, s]));
  const zoneOf = new Map(servers.map((s) => [s.name, s.zone]));
  const zone = (z: string): Server[] => servers.filter((s) => s.zone === z);
  let client: Proxy;
  let clientLog: LogLine[];
  let upstreamPort: number;
  let admin: Awaited<ReturnType<typeof startAdmin>>;

  /** Pushes a snapshot of every server, with `unhealthy` marked so, as the federation would. */
  function push(policy: TrafficPolicy, unhealthy: string[] = []): void {
    const snapshot: ProxySnapshot = {
      version: String(Date.now()),
      services: new Map([
        [
          'cart.shop',
          {
            key: 'cart.shop',
            hostname: HOST,
            vip: '',
            ports: [{ name: 'http', port: PORT, protocol: 'HTTP' }],
            endpoints: servers.map((s) => s.view(!unhealthy.includes(s.name))),
            version: '1',
            policy,
          },
        ],
      ]),
    };
    client.setSnapshot(snapshot);
  }

  function get(): Promise<string | undefined> {
    return new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: upstreamPort, path: '/', agent: false, timeout: 5_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve(res.statusCode === 200 ? body : undefined));
        res.on('error', () => resolve(undefined));
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(undefined));
    });
  }

  /** `n` requests, `concurrency` at a time, each on a new connection. */
  async function load(n: number, concurrency = 4): Promise<Load> {
    const out: Load = { failed: 0, byServer: {}, byZone: {} };
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < n) {
        next++;
        const who = await get();
        if (who === undefined) {
          out.failed++;
          continue;
        }
        out.byServer[who] = (out.byServer[who] ?? 0) + 1;
        const z = zoneOf.get(who) ?? '?';
        out.byZone[z] = (out.byZone[z] ?? 0) + 1;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return out;
  }

  async function balancerDump(): Promise<BalancerState> {
    const res = await fetch(`http://127.0.0.1:${admin.address.port}/balancer`);
    assert.equal(res.status, 200);
    return (await res.json()) as BalancerState;
  }

  /**
   * Waits until no endpoint is ejected: an ejection from an earlier step
   * (zone-b's, when zone-a took traffic back first) lasts up to
   * maxEjectionTime and would skew the next step's counts.
   */
  async function ejectionsOver(): Promise<void> {
    const started = Date.now();
    for (;;) {
      const d = (await balancerDump()).services['cart.shop'];
      if (d && d.endpoints.every((e) => e.health !== 'ejected')) return;
      assert.ok(Date.now() - started < 5_000, `endpoints still ejected: ${JSON.stringify(d?.endpoints.filter((e) => e.health === 'ejected').map((e) => e.workload))}`);
      await sleep(50);
    }
  }

  const ejected = (name: string): boolean => clientLog.some((l) => l.msg === 'endpoint ejected by outlier detection' && l.workload === name);

  before(async () => {
    await Promise.all(servers.map((s) => s.start()));
    const log = logCapture();
    clientLog = log.lines;
    client = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [],
      upstreams: [{ service: 'cart.shop', port: PORT, listen: { host: '127.0.0.1', port: 0 } }],
      identity: toTlsIdentity(makeLeaf(ca, `${TD}/ns/shop/sa/frontend`)),
      logger: log.logger,
      connectTimeoutMs: 1_000,
      client: { locality: parseLocality('us-east/zone-a'), network: 'net-a', labels: {} },
      random: mulberry32(42),
    });
    await client.start();
    upstreamPort = client.upstreamAddresses()[0]!.port;
    admin = await startAdmin(
      { host: '127.0.0.1', port: 0 },
      { identity: () => undefined, services: () => new Map([['cart.shop', CART_SERVICE]]), session: () => undefined, stats: () => client.stats(), ready: () => true, balancer: () => client.describeBalancers() },
    );
    push(FAST);
  });

  after(async () => {
    await Promise.all([client?.close(200), admin?.close(), ...servers.map((s) => s.kill())]);
  });

  it('steady load goes only to the client zone', T, async () => {
    const r = await load(40);
    assert.deepEqual(r.byZone, { 'zone-a': 40 });
    assert.equal(r.failed, 0);
    assert.ok(r.byServer.a1! > 0 && r.byServer.a2! > 0, JSON.stringify(r.byServer));
  });

  it('zone-a killed: new connections move to zone-b, and none fails', T, async () => {
    await Promise.all(zone('zone-a').map((s) => s.kill()));
    const r = await load(60);
    assert.equal(r.failed, 0);
    assert.deepEqual(r.byZone, { 'zone-b': 60 });
    assert.ok(ejected('a1') && ejected('a2'), 'both zone-a endpoints ejected');
  });

  it('zone-b killed too: traffic moves to the other region, and none fails', T, async () => {
    await Promise.all(zone('zone-b').map((s) => s.kill()));
    const r = await load(60);
    assert.equal(r.failed, 0);
    assert.deepEqual(r.byZone, { 'us-west': 60 });
    assert.ok(ejected('b1') && ejected('b2'), 'both zone-b endpoints ejected');
  });

  it('brought back on the same ports: traffic returns to zone-a once the ejections end', T, async () => {
    await Promise.all([...zone('zone-a'), ...zone('zone-b')].map((s) => s.start()));
    const started = Date.now();
    let failed = 0;
    let settled = false;
    // Ejections here last at most maxEjectionTime (1.5 s).
    while (!settled && Date.now() - started < 6_000) {
      const r = await load(12);
      failed += r.failed;
      settled = r.byZone['zone-a'] === 12;
      if (!settled) await sleep(50);
    }
    assert.ok(settled, 'traffic back in zone-a');
    assert.equal(failed, 0);
    const r = await load(40);
    assert.deepEqual(r.byZone, { 'zone-a': 40 });
    assert.equal(r.failed, 0);
  });

  it('half of zone-a down: 70% stays, 30% spills to zone-b (the 1.4 rule)', T, async () => {
    await ejectionsOver();
    await byName.get('a2')!.kill();
    push(FAST, ['a2']);
    const d = (await balancerDump()).services['cart.shop']!;
    assert.deepEqual(
      d.priorities.map((p) => [p.priority, p.hosts, p.healthy, p.load]),
      [
        [0, 2, 1, 70],
        [2, 2, 2, 30],
        [3, 2, 2, 0],
      ],
    );
    const n = 300;
    const r = await load(n);
    assert.equal(r.failed, 0);
    // Binomial sampling error: sd = sqrt(300 × 0.7 × 0.3) ≈ 7.9; allow 4 sd.
    const inA = r.byZone['zone-a'] ?? 0;
    assert.ok(Math.abs(inA - 0.7 * n) <= 32, `zone-a took ${inA} of ${n}; zones ${JSON.stringify(r.byZone)}`);
    assert.equal(inA + (r.byZone['zone-b'] ?? 0), n);
    await byName.get('a2')!.start();
    push(FAST);
  });

  it('every endpoint unhealthy per the federation: traffic goes to all of them, and /balancer says panic', T, async () => {
    await ejectionsOver();
    push(FAST, servers.map((s) => s.name));
    const d = (await balancerDump()).services['cart.shop']!;
    assert.equal(d.panic, true);
    assert.equal(d.totalPanic, true);
    assert.ok(d.endpoints.every((e) => e.health === 'unhealthy' && e.eligible && e.share > 0), JSON.stringify(d.endpoints));
    const r = await load(120);
    assert.equal(r.failed, 0);
    assert.deepEqual(Object.keys(r.byServer).sort(), ['a1', 'a2', 'b1', 'b2', 'w1', 'w2']);
    // /config carries the same view with each service.
    const config = (await (await fetch(`http://127.0.0.1:${admin.address.port}/config`)).json()) as { services: Array<{ key: string; balancer: { panic: boolean } | null }> };
    assert.deepEqual(config.services.map((s) => [s.key, s.balancer?.panic]), [['cart.shop', true]]);
    push(FAST);
    assert.equal((await balancerDump()).services['cart.shop']!.panic, false);
  });

  it('a failoverPriority policy changes the order as written: [network, region, zone]', T, async () => {
    // zone-a shares the client's zone but not its network (net-b): last.
    push({ ...FAST, locality: { ...FAST.locality, failoverPriority: ['network', 'region', 'zone'] } });
    const d = (await balancerDump()).services['cart.shop']!;
    assert.equal(d.mode, 'failover-priority');
    assert.deepEqual(Object.fromEntries(d.endpoints.map((e) => [e.workload, e.priority])), { a1: 3, a2: 3, b1: 1, b2: 1, w1: 2, w2: 2 });
    const r1 = await load(30);
    assert.deepEqual(r1.byZone, { 'zone-b': 30 });
    // zone-b gone: the next in that order is us-west, not the client's own zone.
    await Promise.all(zone('zone-b').map((s) => s.kill()));
    const r2 = await load(40);
    assert.equal(r2.failed, 0);
    assert.deepEqual(r2.byZone, { 'us-west': 40 });
    await Promise.all(zone('zone-b').map((s) => s.start()));
    push(FAST);
  });

  it('/balancer answers 503 with a code on an admin endpoint that was not given the balancer', T, async () => {
    const bare = await startAdmin({ host: '127.0.0.1', port: 0 }, { identity: () => undefined, services: () => new Map(), session: () => undefined, stats: () => ({}), ready: () => true });
    try {
      const res = await fetch(`http://127.0.0.1:${bare.address.port}/balancer`);
      assert.equal(res.status, 503);
      assert.equal(((await res.json()) as { code: string }).code, 'KEDGE_NO_BALANCER');
    } finally {
      await bare.close();
    }
  });

  it('an app dead behind a live proxy is ejected after three resets', T, async () => {
    // Long ejections, so a1 stays out for the rest of the test; a new
    // outlier setting also starts detection afresh.
    const slow: TrafficPolicy = { ...FAST, outlierDetection: { ...FAST_OUTLIER, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 60_000 } };
    push(slow);
    await byName.get('a1')!.killApp();
    // The proxy still completes the handshake and answers 503 itself, naming
    // KEDGE_TARGET_CONNECT_FAILED: the request never reached an app, so the
    // client proxy sends it to another endpoint and counts a connect failure.
    const r = await load(40, 1);
    assert.equal(r.failed, 0);
    assert.equal(r.byServer.a1, undefined);
    // With a1 out, zone-a keeps 70% (the 1.4 rule) and zone-b takes the rest.
    assert.equal((r.byServer.a2 ?? 0) + (r.byZone['zone-b'] ?? 0), 40);
    assert.ok(clientLog.some((l) => l.msg === 'endpoint ejected by outlier detection' && l.workload === 'a1' && l.outcome === 'connect-failure'));
    const a1 = (await balancerDump()).services['cart.shop']!.endpoints.find((e) => e.workload === 'a1')!;
    assert.equal(a1.health, 'ejected');
    assert.equal(a1.federationHealthy, true);
  });
});
