// The dashboard with a mesh of 1,000 services and 5,000 workloads: a real
// federation, 5,000 simulated agents (the federation-push benchmark's
// simulator: real Connect streams with host facts, one shared certificate)
// and Debian's chromium. The page renders one page of rows at a time, the
// filters find one workload among 5,000, and after the first state a change
// to one workload's endpoint reaches the page as that row alone, not as the
// 5,000 (measured on the WebSocket frames the page received).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { SKIP_WITHOUT_CHROMIUM, launchChromium } from '../support/browser';
import { startFederationProc, type FederationHandle } from '../support/mesh';
import { eventually, tempDir } from '../support/procs';
import { forkHelper, type Helper } from '../bench/support/processes';
import { signSharedCertificate } from '../bench/support/credentials';
import { BENCH_TRUST_DOMAIN, agentName, changeTarget, serviceKeyOf, type Layout } from '../bench/support/layout';
import type { FromSim, ToSim } from '../bench/support/protocol';

const LAYOUT: Layout = { agents: 5_000, services: 1_000, servesPerAgent: 1, subscriptionsPerAgent: 1 };

interface Frame {
  bytes: number;
  msg: { type: string; sections?: Record<string, unknown>; rows?: Record<string, { upsert: unknown[]; remove: string[] }> };
}

describe('dashboard with 1,000 services and 5,000 workloads', { skip: SKIP_WITHOUT_CHROMIUM }, () => {
  let fed: FederationHandle;
  let sim: Helper<ToSim, FromSim> | undefined;
  let browser: BrowserContext;
  let page: Page;
  const frames: Frame[] = [];
  const shots = tempDir('dashboard-scale-screenshots');

  before(async () => {
    fed = await startFederationProc({ args: ['--trust-domain', BENCH_TRUST_DOMAIN, '--grace-period', '60s'] });
    const credentials = await signSharedCertificate({ dataDir: fed.dataDir, httpsUrl: fed.httpsUrl, grpc: fed.grpc });
    sim = forkHelper<ToSim, FromSim>('simulator', path.join(__dirname, '..', 'bench', 'support', 'sim-agents.js'));
    sim!.send({ type: 'start', config: { layout: LAYOUT, addresses: [fed.grpc], agentsPerChannel: 100, connectRate: 500, credentials, connectTimeoutMs: 200_000 } });
    // At a steady rate (10 s for all): a fleet restart storm is the federation-push benchmark's subject, not this test's.
    const connected = await sim!.next('connected', 230_000);
    process.stdout.write(`# ${LAYOUT.agents} simulated agents registered in ${connected.registeredMs} ms (${connected.streamFailures} stream failures)\n`);
    ({ browser, page } = await launchChromium());
    page.on('websocket', (ws) => ws.on('framereceived', (f) => {
      const text = typeof f.payload === 'string' ? f.payload : f.payload.toString('utf8');
      frames.push({ bytes: Buffer.byteLength(text), msg: JSON.parse(text) as Frame['msg'] });
    }));
  });

  after(async () => {
    process.stdout.write(`# dashboard scale screenshots: ${shots}\n`);
    await browser?.close();
    if (sim) {
      sim.send({ type: 'stop' });
      await sim.stop();
    }
    await fed?.proc.stop('SIGKILL');
  });

  it('logs in and counts the whole mesh', async () => {
    await page.goto(`${fed.httpsUrl}/ui/`);
    await page.getByLabel('Admin or viewer token').fill(fs.readFileSync(fed.adminTokenFile, 'utf8').trim());
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('[data-feed="live"]').waitFor({ timeout: 30_000 });
    await page.getByText('1000 services · 5000 endpoints · 5000 workloads (0 disconnected)').waitFor({ timeout: 30_000 });
    await page.screenshot({ path: path.join(shots, '01-map.png') });
  });

  it('renders one page of workloads and services, and a filter finds one workload among 5,000', async () => {
    await page.keyboard.press('4');
    await page.getByText('workloads 1–50 of 5000').first().waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('tr[data-workload]').count(), 50, 'one page of rows in the DOM, not 5,000');
    const name = agentName(4321);
    await page.getByLabel('Filter').fill(name);
    await page.locator(`tr[data-workload="bench/${name}"]`).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('tr[data-workload]').count(), 1);
    await page.screenshot({ path: path.join(shots, '02-workloads-filtered.png') });
    // The filter box has the focus (digits type into it): the nav link switches views.
    await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: 'Services' }).click();
    await page.getByText('services 1–50 of 1000').first().waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('tr[data-service]').count(), 50);
  });

  it('sends one workload\'s change as its row, not the whole section', async () => {
    const full = frames.find((f) => f.msg.type === 'sections' && Array.isArray(f.msg.sections?.workloads))!;
    assert.ok(full, 'the first state arrived whole');
    assert.equal((full.msg.sections!.workloads as unknown[]).length, 5000);
    const before = frames.length;
    // The simulator marks agent A's service unhealthy (a HealthReport): one endpoint changes.
    const { agent, service } = changeTarget(LAYOUT, 0);
    sim!.send({ type: 'changes', from: 0, count: 1, intervalMs: 0, timeoutMs: 20_000 });
    const done = await sim!.next('changes-done', 30_000);
    assert.equal(done.results[0]!.received, done.results[0]!.expected, 'the subscribers saw the change');
    const workload = `bench/${agentName(agent)}`;
    const isChange = (f: Frame) => f.msg.rows?.endpoints?.upsert.some((e) => (e as { workload: string; health: string }).workload === workload && (e as { health: string }).health === 'UNHEALTHY');
    const change = await eventually(() => frames.slice(before).find(isChange), 10_000, `a frame with ${workload}'s endpoint of ${serviceKeyOf(service)} turning unhealthy`);
    assert.equal(change.msg.sections?.endpoints, undefined, 'endpoints came as rows, not whole');
    assert.ok(change.bytes * 50 < full.bytes, `the change frame (${change.bytes} B) is a small part of the first state (${full.bytes} B)`);
    process.stdout.write(`# first state ${full.bytes} B; the frame with the change ${change.bytes} B\n`);
    // Every frame after the first state was row changes or small sections, never the 5,000 workloads again.
    for (const f of frames.slice(frames.indexOf(full) + 1)) assert.equal((f.msg.sections?.workloads as unknown[] | undefined)?.length, undefined, `a later frame resent all workloads (${f.bytes} B)`);
    // The page shows it: the service's page lists the endpoint unhealthy.
    await page.goto(`${fed.httpsUrl}/ui/#/services/${serviceKeyOf(service)}`);
    await page.getByText(/0\/1 healthy|unhealthy/i).first().waitFor({ timeout: 10_000 });
    await page.screenshot({ path: path.join(shots, '03-changed-service.png') });
  });
});
