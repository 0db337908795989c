// Retries, timeouts, circuit breaking and outlier detection at L7, with
// real HTTP apps behind real server proxies and a client proxy's upstream
// listener on an `http` port: the route's retry codes and timeouts, the
// TrafficPolicy's circuitBreaker and outlierDetection.
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { compileServiceRoutes, validateRouteDocument, type RouteObject } from '../../policy/routes';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../policy/traffic-policy';
import { mulberry32 } from '../../agent/proxy/balancer/random';
import { Proxy } from '../../agent/proxy/proxy';
import type { EndpointView, ProxySnapshot, ServiceView } from '../../agent/proxy/types';
import { logCapture } from '../support/logs';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';
import { eventually } from '../support/procs';

const TD = 'spiffe://kedge.test';
const HOST = 'cart.shop.svc.cluster.local';
const PORT = 80;
const T = { timeout: 60_000 };

/** How an app answers: a status per request number, and a delay. */
interface Behaviour {
  status: (n: number) => number;
  delayMs: number;
}

interface App {
  server: http.Server;
  port: number;
  behaviour: Behaviour;
  requests: number;
  inFlight: number;
  maxInFlight: number;
}

async function app(name: string): Promise<App> {
  const a: App = { server: undefined as unknown as http.Server, port: 0, behaviour: { status: () => 200, delayMs: 0 }, requests: 0, inFlight: 0, maxInFlight: 0 };
  everyApp.push(a);
  a.server = http.createServer((req, res) => {
    const n = a.requests++;
    a.inFlight++;
    a.maxInFlight = Math.max(a.maxInFlight, a.inFlight);
    req.resume();
    req.on('end', () => {
      const reply = (): void => {
        a.inFlight--;
        res.statusCode = a.behaviour.status(n);
        res.setHeader('x-app', name);
        res.end(`${name} ${n}\n`);
      };
      if (a.behaviour.delayMs > 0) setTimeout(reply, a.behaviour.delayMs);
      else reply();
    });
  });
  await new Promise<void>((r) => a.server.listen(0, '127.0.0.1', () => r()));
  a.port = (a.server.address() as net.AddressInfo).port;
  return a;
}

function routes(rule: Record<string, unknown>): ServiceView['routes'] {
  const doc = {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'cart', namespace: 'shop' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'cart', port: PORT }], rules: [{ backendRefs: [{ name: 'cart', port: PORT }], ...rule }] },
  };
  const r = validateRouteDocument(doc);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return compileServiceRoutes({ key: 'cart.shop', namespace: 'shop', ports: [{ name: 'http', port: PORT }] }, [r.value as RouteObject], new Map(), 'shop');
}

/** Every app started, for what is in flight when an answer arrives. */
const everyApp: App[] = [];

// Answers are numbered in the order they complete: tests compare orders of
// events, never how long something took.
let completed = 0;

function request(port: number, agent: http.Agent | false, body?: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; order: number; appsBusy: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', method: body ? 'POST' : 'GET', agent, timeout: 20_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, order: ++completed, appsBusy: everyApp.reduce((n, a) => n + a.inFlight, 0) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const OPEN_BUDGET: TrafficPolicy = { ...TRAFFIC_POLICY_DEFAULTS, retryBudget: { percent: 100, minRetriesPerSecond: 10_000 } };

describe('L7 retries, timeouts, circuit breaking, outlier detection', () => {
  const ca = makeCa('resilience-mesh');
  const apps: App[] = [];
  const proxies: Proxy[] = [];
  const views: EndpointView[] = [];
  let client: Proxy;
  let port: number;
  const service = (extra: Partial<ServiceView> = {}, endpoints = views): ServiceView => ({ key: 'cart.shop', hostname: HOST, vip: '', ports: [{ name: 'http', port: PORT, protocol: 'http' }], endpoints, version: String(Math.random()), ...extra });
  const set = (s: ServiceView): void => client.setSnapshot({ version: String(Math.random()), services: new Map([[s.key, s]]) } satisfies ProxySnapshot);
  const reset = async (): Promise<void> => {
    // Requests an earlier test gave up on (a timeout) may still be in an app.
    await eventually(() => apps.every((a) => a.inFlight === 0), 10_000, 'the apps to finish earlier requests');
    for (const a of apps) {
      a.behaviour = { status: () => 200, delayMs: 0 };
      a.requests = 0;
      a.maxInFlight = 0;
    }
  };

  before(async () => {
    for (const name of ['a', 'b']) {
      const a = await app(name);
      const leaf = makeLeaf(ca, `${TD}/ns/shop/sa/cart-${name}`);
      const p = new Proxy({ inboundListen: { host: '127.0.0.1', port: 0 }, targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: a.port }], upstreams: [], identity: toTlsIdentity(leaf), logger: logCapture().logger });
      await p.start();
      const at = p.inboundAddress();
      apps.push(a);
      proxies.push(p);
      views.push({ address: at.host, mtlsPort: at.port, identity: leaf.spiffeId, workload: `cart-${name}`, healthy: true, ports: [] });
    }
    client = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [],
      upstreams: [{ service: 'cart.shop', port: PORT, listen: { host: '127.0.0.1', port: 0 } }],
      identity: toTlsIdentity(makeLeaf(ca, `${TD}/ns/shop/sa/frontend`)),
      logger: logCapture().logger,
      random: mulberry32(11),
    });
    await client.start();
    port = client.upstreamAddresses()[0]!.port;
  });

  after(async () => {
    await client.close(200);
    for (const p of proxies) await p.close(200);
    for (const a of apps) {
      a.server.closeAllConnections();
      await new Promise<void>((r) => a.server.close(() => r()));
    }
  });

  it('retries 503s on another attempt: 0 failed out of 2000 with an endpoint failing half its requests', T, async () => {
    await reset();
    apps[0]!.behaviour.status = (n) => (n % 2 === 0 ? 503 : 200);
    // A quarter of all requests need a retry, more than the default budget
    // (20% of requests in flight) allows; the budget test is below.
    set(service({ policy: OPEN_BUDGET, routes: routes({ retry: { codes: [503], attempts: 3 } }) }));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const results = await Promise.all(Array.from({ length: 2000 }, () => request(port, agent)));
    agent.destroy();
    const failed = results.filter((r) => r.status !== 200);
    assert.equal(failed.length, 0, `failed: ${JSON.stringify(failed.slice(0, 3))}`);
    assert.ok(apps[0]!.requests > 500, `the flaky endpoint still got traffic: ${apps[0]!.requests}`);
  });

  it('does not retry a request whose body outgrew the replay buffer: the client sees the real answer', T, async () => {
    await reset();
    for (const a of apps) a.behaviour.status = () => 503;
    set(service({ policy: OPEN_BUDGET, routes: routes({ retry: { codes: [503], attempts: 3 } }) }));
    const small = await request(port, false, Buffer.alloc(1024, 's'));
    assert.equal(small.status, 503);
    // The small body was retried: three retries after the first attempt.
    assert.equal(apps[0]!.requests + apps[1]!.requests, 4);
    await reset();
    for (const a of apps) a.behaviour.status = () => 503;
    const big = await request(port, false, Buffer.alloc(100 * 1024, 'b'));
    assert.equal(big.status, 503);
    assert.equal(apps[0]!.requests + apps[1]!.requests, 1, 'sent once');
  });

  it('the retry budget stops retries from multiplying an outage', T, async () => {
    await reset();
    for (const a of apps) a.behaviour.status = () => 503;
    const tight: TrafficPolicy = { ...TRAFFIC_POLICY_DEFAULTS, retryBudget: { percent: 0, minRetriesPerSecond: 2 } };
    set(service({ policy: tight, routes: routes({ retry: { codes: [503], attempts: 3 } }) }));
    const results = await Promise.all(Array.from({ length: 10 }, () => request(port, false)));
    assert.ok(results.every((r) => r.status === 503));
    // Without the budget each request would be sent four times (40). With
    // it only the per-second minimum (2) is retried, less when the window
    // was already used by the previous test, two more if the burst
    // straddles a window.
    const sent = apps[0]!.requests + apps[1]!.requests;
    assert.ok(sent >= 10 && sent <= 14, `${sent} requests reached the apps`);
  });

  it('answers 504 at the route timeout on a slow endpoint', T, async () => {
    await reset();
    for (const a of apps) a.behaviour.delayMs = 2_000;
    set(service({ routes: routes({ timeouts: { request: '200ms' } }) }));
    const r = await request(port, false);
    assert.equal(r.status, 504);
    assert.equal(r.headers['x-kedge-response-flags'], 'UT');
    assert.ok(r.appsBusy > 0, 'the 504 came while the app was still working on the request');
  });

  it('circuit breaking: with maxConnections 1 and maxPendingRequests 10, the excess of 100 concurrent slow requests gets 503 UO at once', T, async () => {
    await reset();
    for (const a of apps) a.behaviour.delayMs = 150;
    const policy: TrafficPolicy = { ...TRAFFIC_POLICY_DEFAULTS, circuitBreaker: { ...TRAFFIC_POLICY_DEFAULTS.circuitBreaker, maxConnections: 1, maxPendingRequests: 10 } };
    set(service({ policy }, views.slice(0, 1)));
    // Let pooled connections from earlier tests go: maxConnections counts them.
    await client.close(0).catch(() => undefined);
    client = new Proxy({
      inboundListen: { host: '127.0.0.1', port: 0 },
      targets: [],
      upstreams: [{ service: 'cart.shop', port: PORT, listen: { host: '127.0.0.1', port: 0 } }],
      identity: toTlsIdentity(makeLeaf(ca, `${TD}/ns/shop/sa/frontend`)),
      logger: logCapture().logger,
    });
    await client.start();
    port = client.upstreamAddresses()[0]!.port;
    set(service({ policy }, views.slice(0, 1)));
    const results = await Promise.all(Array.from({ length: 100 }, () => request(port, false)));
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 503 && r.headers['x-kedge-response-flags'] === 'UO');
    assert.equal(ok.length + refused.length, 100, JSON.stringify(results.filter((r) => r.status !== 200 && r.status !== 503)));
    // Requests arrive over the first few hundred ms as their connections
    // open, so a few more than 11 can be admitted as earlier ones finish.
    assert.ok(refused.length >= 70, `${refused.length} refused, ${ok.length} admitted`);
    assert.equal(apps[0]!.maxInFlight, 1, 'the endpoint sees at most maxConnections requests at once');
    // Refusals are immediate, not queued behind the slow requests.
    assert.ok(Math.min(...refused.map((r) => r.order)) < Math.max(...ok.map((r) => r.order)));
  });

  it('ejects an endpoint answering 500 to everything after consecutive5xxErrors, and sends it nothing while ejected', T, async () => {
    await reset();
    apps[0]!.behaviour.status = () => 500;
    set(service({ policy: { ...TRAFFIC_POLICY_DEFAULTS, loadBalancer: 'round-robin', outlierDetection: { ...TRAFFIC_POLICY_DEFAULTS.outlierDetection, consecutive5xxErrors: 5, baseEjectionTimeMs: 30_000 } } }));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const results: number[] = [];
    for (let i = 0; i < 40; i++) results.push((await request(port, agent)).status);
    agent.destroy();
    assert.equal(apps[0]!.requests, 5, 'exactly five 500s, then ejected');
    assert.equal(results.filter((s) => s === 500).length, 5);
    const a = client.describeBalancers().services['cart.shop']!.endpoints.find((e) => e.workload === 'cart-a')!;
    assert.equal(a.health, 'ejected');
  });
});
