// The dashboard in a real browser (Debian's chromium driven by
// playwright-core) against a real federation and real agents on two
// networks joined by a gateway: login (a wrong token refused), the mesh map,
// services with a failing endpoint and a failover order, workloads, a
// SIGKILLed agent turning disconnected on the page, a new service and an
// applied route appearing without a reload, a viewer token that can read
// but not write, a federation restart shown and recovered from, and a
// narrow window. Screenshots are kept in a temp dir (its path is printed).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { SKIP_WITHOUT_CHROMIUM, launchChromium } from '../support/browser';
import { fedFetch, agentSeesEndpoints, createToken, grantFlags, httpGet, restartFederationProc, startAgentProc, startFederationProc, writeAgentConfig, type AgentHandle, type FederationHandle } from '../support/mesh';
import { eventually, runKedge, startKedge, tempDir } from '../support/procs';


// Skipped only off CI, on a machine without chromium; CI installs it (.ci/run).
describe('dashboard in chromium', { skip: SKIP_WITHOUT_CHROMIUM }, () => {
  let fed: FederationHandle;
  let adminToken: string;
  let browser: BrowserContext;
  let page: Page;
  const agents: AgentHandle[] = [];
  const closers: (() => Promise<void>)[] = [];
  const shots = tempDir('dashboard-screenshots');
  const shot = async (p: Page, name: string) => {
    await p.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  };

  before(async () => {
    fed = await startFederationProc({ args: ['--grace-period', '30s'] });
    adminToken = fs.readFileSync(fed.adminTokenFile, 'utf8').trim();
    // reviews answers 500 to /fail/*: the service graph shows the failures and their paths.
    const app = http.createServer((req, res) => res.writeHead(req.url?.startsWith('/fail') ? 500 : 200).end('reviews'));
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => app.close(() => r())));
    const appPort = (app.address() as { port: number }).port;
    const telemetry = { statsInterval: '500ms' };
    // A service whose probe fails: its endpoint is unhealthy in the federation.
    const sick = http.createServer((_req, res) => res.writeHead(503).end());
    await new Promise<void>((r) => sick.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => sick.close(() => r())));
    const sickPort = (sick.address() as { port: number }).port;
    agents.push(await startAgentProc(fed, { name: 'reviews', namespace: 'default', serviceAccount: 'reviews', address: '127.0.95.1', network: 'net-b', locality: 'us-west/zone-w', services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: appPort, protocol: 'http' }] }], extra: { telemetry } }));
    agents.push(await startGateway(fed));
    agents.push(await startAgentProc(fed, {
      name: 'ratings', namespace: 'default', serviceAccount: 'ratings', address: '127.0.95.3', network: 'net-a', locality: 'us-east/zone-a',
      services: [{ name: 'ratings', ports: [{ name: 'http', port: 9080, targetPort: sickPort }], health: { http: { path: '/healthz', port: sickPort }, period: '200ms', timeout: '500ms', unhealthyThreshold: 1 } } as never],
    }));
    agents.push(await startAgentProc(fed, { name: 'orders', namespace: 'default', serviceAccount: 'orders', address: '127.0.95.2', network: 'net-a', locality: 'us-east/zone-a', services: [{ name: 'orders', ports: [{ name: 'http', port: 9080 }] }] }));
    agents.push(await startAgentProc(fed, { name: 'web', namespace: 'shop', serviceAccount: 'web', address: '127.0.95.9', network: 'net-a', locality: 'us-east/zone-a', upstreams: [{ service: 'reviews.default', port: 9080 }], extra: { telemetry } }));
    ({ browser, page } = await launchChromium());
  });

  after(async () => {
    process.stdout.write(`# dashboard screenshots: ${shots}\n`);
    await browser?.close();
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    for (const c of closers) await c();
  });

  it('refuses a wrong token at login and says why', async () => {
    await page.goto(`${fed.httpsUrl}/ui/`);
    await page.getByLabel('Admin or viewer token').fill('not-the-token');
    await page.getByRole('button', { name: 'Log in' }).click();
    const err = page.locator('#login-error');
    await err.waitFor();
    assert.match(await err.innerText(), /Login refused: missing or wrong admin token/);
    await shot(page, '01-login-refused');
    const forged = 'kedgeview1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
    await page.getByLabel('Admin or viewer token').fill(forged);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByText('viewer token not recognised').waitFor();
    assert.equal(await page.evaluate("sessionStorage.getItem('kedge.token')"), null);
  });

  it('logs in with the admin token (kept in session storage, not the URL) and maps both networks and the gateway', async () => {
    await page.getByLabel('Admin or viewer token').fill(adminToken);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('[data-feed="live"]').waitFor();
    assert.ok(!page.url().includes(adminToken));
    assert.equal(await page.evaluate("sessionStorage.getItem('kedge.token')"), adminToken);
    const netB = page.locator('li.network[data-network="net-b"]');
    await netB.getByText('gateway mesh-gateways/gw-b at 127.0.95.5').waitFor();
    assert.match(await netB.innerText(), /gateway connected/);
    const netA = page.locator('li.network[data-network="net-a"]');
    await eventually(async () => /vm group vms: 2 endpoints \(1 healthy\), 3 workloads \(3 connected\)/.test(await netA.innerText()), 10_000, 'net-a with the failing ratings endpoint');
    assert.match(await netA.innerText(), /no gateway/);
    assert.match(await page.locator('main').innerText(), /network net-a → gateway mesh-gateways\/gw-b \(network net-b\)/);
    // Cytoscape drew the map: its canvas is there and sized.
    const canvas = await page.locator('.graph canvas').first().boundingBox();
    assert.ok(canvas && canvas.width > 300 && canvas.height > 200, JSON.stringify(canvas));
    await shot(page, '02-mesh-map');
  });

  it('lists services with health in words, endpoints by locality, and the failover order from a chosen client', async () => {
    await page.keyboard.press('3');
    await page.getByRole('heading', { name: 'Services' }).waitFor();
    assert.match(await page.locator('tr[data-service="ratings.default"]').innerText(), /0\/1 healthy/);
    assert.match(await page.locator('tr[data-service="reviews.default"]').innerText(), /1\/1 healthy/);
    await page.getByRole('link', { name: 'reviews.default' }).click();
    await page.getByRole('heading', { name: /Service reviews\.default/ }).waitFor();
    assert.match(await page.locator('main').innerText(), /us-west\/zone-w[\s\S]*127\.0\.95\.1[\s\S]*healthy/);
    await page.getByLabel('As seen from client').selectOption('shop/web');
    const order = page.locator('ol.failover');
    await order.waitFor();
    // From net-a, net-b's endpoint is reached through net-b's gateway.
    assert.match(await order.innerText(), /priority \d+ \(first choice\)\s*127\.0\.95\.5 \(mesh-gateways\/gw-b\) net-b/);
    assert.match(await order.innerText(), /100\.0% of new connections/);
    await shot(page, '03-service-detail');
  });

  it('draws the service graph from the agents\' reports: the edge\'s rate, success and mTLS, and a click shows its policies and recent errors', async () => {
    const audit = path.join(tempDir('dashboard-authz'), 'authz.yaml');
    fs.writeFileSync(audit, [
      'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: audit-deletes, namespace: default }\nspec:\n  action: AUDIT\n  rules:\n  - to: [{ operation: { methods: [DELETE] } }]\n',
      'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default-permissive, namespace: default }\nspec:\n  mtls: { mode: PERMISSIVE }\n',
      'apiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: { name: reviews-total, namespace: default }\nspec:\n  targetRef: { kind: Service, name: reviews }\n  total: { requestsPerSecond: 10000 }\n',
    ].join('---\n'));
    const applied = await runKedge(['apply', '-f', audit, '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(applied.code, 0, applied.stderr);
    const web = agents.find((a) => a.spec.name === 'web')!;
    await agentSeesEndpoints(web, 'reviews.default', 1);
    for (let i = 0; i < 30; i++) await httpGet(web.upstreams[0]!, '/');
    for (let i = 0; i < 10; i++) await httpGet(web.upstreams[0]!, `/fail/${i}`).catch(() => undefined);
    await page.keyboard.press('2');
    await page.getByRole('heading', { name: 'Service graph' }).waitFor();
    // web serves no service, so it is a workload node; reviews is a service.
    const row = page.locator('tr[data-edge="wl:shop/web->svc:reviews.default"]');
    await row.waitFor({ timeout: 10_000 });
    await eventually(async () => /75\.0% success/.test(await row.innerText()), 15_000, 'all 40 requests reported');
    const text = await row.innerText();
    assert.match(text, /workload shop\/web\s+reviews\.default/);
    assert.match(text, /\d+(\.\d+)? rps · 75\.0% ok · p99 [\d.]+ ms/);
    assert.match(text, /mTLS/);
    assert.doesNotMatch(text, /plaintext/);
    // A click on the drawn edge opens its detail: the AUDIT policy selecting reviews, and the failed requests.
    const canvas = (await page.locator('.graph').boundingBox())!;
    const mid = (await page.evaluate(`(() => { const cy = document.querySelector('.graph')._cyreg.cy; return cy.getElementById('wl:shop/web->svc:reviews.default').renderedMidpoint(); })()`)) as { x: number; y: number };
    await page.mouse.click(canvas.x + mid.x, canvas.y + mid.y);
    const detail = page.locator('aside[data-detail="wl:shop/web->svc:reviews.default"]');
    await detail.waitFor({ timeout: 5_000 });
    assert.match(await detail.innerText(), /AuthorizationPolicy default\/audit-deletes: AUDIT/);
    assert.match(await detail.innerText(), /PeerAuthentication default\/default-permissive: PERMISSIVE/);
    assert.match(await detail.innerText(), /HTTPLocalRateLimitPolicy default\/reviews-total: /);
    assert.match(await detail.innerText(), /No route attaches to reviews\.default/);
    const errors = detail.locator('tr.edge-error');
    assert.ok((await errors.count()) >= 1);
    assert.match(await errors.first().innerText(), /500\s+GET \/fail\/\d/);
    await shot(page, '03b-service-graph');
    // The namespace filter keeps the edge for either end's namespace and drops it for another.
    await page.getByLabel('Namespace').selectOption('default');
    await row.waitFor();
    await page.getByLabel('Namespace').selectOption('shop');
    await row.waitFor();
    // The policies view lists the authorization policy with the workloads it selects.
    await page.keyboard.press('5');
    const authz = page.locator('tr[data-authz="default/audit-deletes"]');
    await authz.waitFor();
    assert.match(await authz.innerText(), /AUDIT[\s\S]*in force on \d+ workloads?/);
    assert.match(await page.locator('tr[data-peerauth="default/default-permissive"]').innerText(), /PERMISSIVE[\s\S]*in force on \d+ workloads?/);
    assert.match(await page.locator('tr[data-ratelimit="HTTPLocalRateLimitPolicy/default/reviews-total"]').innerText(), /reviews\.default[\s\S]*in force on 1 workload/);
  });

  it('shows workloads with host facts, SPIFFE ID and certificate expiry, and a SIGKILLed agent disconnected within 2 s of the federation noticing', async () => {
    await page.keyboard.press('4');
    const row = page.locator('tr[data-workload="default/orders"]');
    await row.waitFor();
    const text = await row.innerText();
    assert.match(text, /spiffe:\/\/cluster\.local\/ns\/default\/sa\/orders/);
    assert.match(text, /connected, last contact/);
    assert.match(text, /expires in \d+h/);
    assert.match(text, /in sync \(\d+\)/);
    assert.match(text, /\d+ CPUs/);
    await shot(page, '04-workloads');
    const orders = agents.find((a) => a.spec.name === 'orders')!;
    await orders.proc.stop('SIGKILL');
    const noticed = await fed.proc.waitForLog((l) => /^agent stream (lost|ended)/.test(String(l.msg)) && l.agent === 'default/orders', 10_000);
    process.stdout.write(`# federation noticed: ${String(noticed.msg)}\n`);
    await row.getByText(/disconnected/).waitFor({ timeout: 2_000 });
    await shot(page, '05-agent-killed');
  });

  it('shows a newly registered service and an applied route without a reload', async () => {
    await page.evaluate('window.kedgeMarker = 42');
    await page.keyboard.press('3');
    agents.push(await startAgentProc(fed, { name: 'payments', namespace: 'default', serviceAccount: 'payments', address: '127.0.95.4', network: 'net-a', services: [{ name: 'payments', ports: [{ name: 'http', port: 9080 }] }] }));
    await page.locator('tr[data-service="payments.default"]').waitFor({ timeout: 5_000 });
    const file = path.join(tempDir('dashboard-route'), 'route.yaml');
    fs.writeFileSync(file, 'apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: reviews-split }\nspec:\n  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]\n  rules:\n  - backendRefs: [{ name: reviews, port: 9080 }]\n');
    await page.keyboard.press('5');
    const applied = await runKedge(['apply', '-f', file, '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(applied.code, 0, applied.stderr);
    await page.locator('tr[data-route="HTTPRoute/default/reviews-split"]').waitFor({ timeout: 5_000 });
    assert.match(await page.locator('tr[data-route="HTTPRoute/default/reviews-split"]').innerText(), /applied/);
    assert.equal(await page.evaluate('window.kedgeMarker'), 42, 'the page was not reloaded');
    await shot(page, '06-policies');
  });

  it('gives a viewer token (kedge token create --viewer) reads but refuses applies and deletes', async () => {
    const made = await runKedge(['token', 'create', '--viewer', '--ttl', '1h', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(made.code, 0, made.stderr);
    const viewer = made.stdout.trim();
    assert.match(viewer, /^kedgeview1\./);
    const call = (method: string, p: string, body?: unknown) =>
      fedFetch(fed, `${p}`, { method, headers: { authorization: `Bearer ${viewer}`, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}) });
    assert.equal((await call('GET', '/api/v1/services')).status, 200);
    for (const [method, p, body] of [
      ['POST', '/api/v1/routes', []],
      ['POST', '/api/v1/policies', []],
      ['DELETE', '/api/v1/routes/HTTPRoute/default/reviews-split'],
      ['DELETE', '/api/v1/workloads/shop/web'],
      ['POST', '/api/v1/tokens', { namespace: 'default', serviceAccount: 'x' }],
      ['POST', '/api/v1/viewer-tokens', {}],
      ['GET', '/api/v1/backup'],
    ] as [string, string, unknown?][]) {
      const res = await call(method, p, body);
      assert.equal(res.status, 403, `${method} ${p}`);
      assert.match(((await res.json()) as { message: string }).message, /viewer token is read-only/);
    }
    // The CLI with the viewer token is refused too, and the route is still there.
    const tokenFile = path.join(tempDir('viewer'), 'token');
    fs.writeFileSync(tokenFile, viewer);
    const del = await runKedge(['delete', 'httproute', 'default/reviews-split', '--federation', fed.httpsUrl, '--admin-token-file', tokenFile, '--root-cert', fed.rootCertFile]);
    assert.notEqual(del.code, 0);
    assert.match(del.stderr, /read-only/);
    // In the page: a fresh tab logs in as a viewer and sees the same mesh.
    const tab = await browser.newPage();
    await tab.goto(`${fed.httpsUrl}/ui/#/policies`);
    await tab.getByLabel('Admin or viewer token').fill(viewer);
    await tab.getByRole('button', { name: 'Log in' }).click();
    await tab.getByText('viewer (read-only)').waitFor();
    await tab.locator('tr[data-route="HTTPRoute/default/reviews-split"]').waitFor();
    await shot(tab, '07-viewer');
    await tab.close();
  });

  it('ends the session of a viewer token that expires while the page is open, and refuses it at login', async () => {
    const made = await runKedge(['token', 'create', '--viewer', '--ttl', '3s', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(made.code, 0, made.stderr);
    const tab = await browser.newPage();
    await tab.goto(`${fed.httpsUrl}/ui/`);
    await tab.getByLabel('Admin or viewer token').fill(made.stdout.trim());
    await tab.getByRole('button', { name: 'Log in' }).click();
    await tab.locator('[data-feed="live"]').waitFor();
    // The feed checks the token on every tick: once it has expired the page is back at the login form, saying why.
    await tab.locator('#login-error').getByText(/this viewer token has expired/).waitFor({ timeout: 15_000 });
    assert.equal(await tab.evaluate("sessionStorage.getItem('kedge.token')"), null);
    await tab.getByLabel('Admin or viewer token').fill(made.stdout.trim());
    await tab.getByRole('button', { name: 'Log in' }).click();
    await tab.locator('#login-error').getByText(/Login refused: this viewer token has expired/).waitFor();
    await shot(tab, '07b-viewer-expired');
    await tab.close();
  });

  it('shows a lost connection when the federation goes away and recovers when it is back', async () => {
    await page.keyboard.press('1');
    await fed.proc.stop('SIGTERM');
    await page.locator('[data-feed="lost"]').waitFor({ timeout: 10_000 });
    assert.match(await page.locator('[role="status"]').innerText(), /Connection lost: .*Retrying in \d+ s/);
    await shot(page, '08-connection-lost');
    fed = await restartFederationProc(fed);
    await page.locator('[data-feed="live"]').waitFor({ timeout: 15_000 });
    await page.locator('li.network[data-network="net-b"]').getByText('gateway mesh-gateways/gw-b').waitFor({ timeout: 15_000 });
  });

  it('fits a narrow window: nothing scrolls sideways but the tables', async () => {
    await page.setViewportSize({ width: 420, height: 800 });
    for (const key of ['1', '2', '3', '4', '5']) {
      await page.keyboard.press(key);
      await page.locator('main h2').first().waitFor();
      const overflow = (await page.evaluate('document.documentElement.scrollWidth - window.innerWidth')) as number;
      assert.ok(overflow <= 0, `view ${key} is ${overflow}px wider than the window`);
    }
    await page.keyboard.press('4');
    await shot(page, '09-narrow-workloads');
    await page.setViewportSize({ width: 1280, height: 800 });
  });
});

async function startGateway(fed: FederationHandle): Promise<AgentHandle> {
  const dir = tempDir('dashboard-gateway');
  const tokenFile = path.join(dir, 'token');
  const spec = { name: 'gw-b', namespace: 'mesh-gateways', serviceAccount: 'east-west-gateway', address: '127.0.95.5', network: 'net-b', extra: { gateway: { listen: '127.0.95.5:0' } } };
  fs.writeFileSync(tokenFile, await createToken(fed, spec.namespace, spec.serviceAccount, grantFlags(spec)));
  const file = writeAgentConfig(fed, spec, path.join(dir, 'data'), tokenFile);
  const proc = startKedge('dashboard-gateway', ['agent', '--mode', 'gateway', '--config', file]);
  const started = await proc.waitForMsg('agent started', 20_000);
  await proc.waitForMsg('registered with the federation', 20_000);
  return { proc, spec, dataDir: path.join(dir, 'data'), configFile: file, inbound: '', upstreams: [], adminUrl: `http://${String(started.admin)}`, metricsUrl: '' };
}
