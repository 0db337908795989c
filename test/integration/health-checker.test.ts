// HealthChecker end to end with the real probes against real apps on
// 127.0.0.1:0 whose health flips: an HTTP server answering 200 or 500, a TCP
// listener that closes and comes back, a grpc-js server whose
// grpc.health.v1 status flips SERVING/NOT_SERVING, and exec commands.
// Each report must come exactly when the thresholds say: after N equal
// results in a row, not before and not twice.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { HealthChecker } from '../../agent/health/checker';
import type { HealthCheckConfig, ProbeConfig } from '../../agent/health/config';
import { healthClientConstructor, type HealthCheckRequest, type HealthCheckResponse, type ServingStatus } from '../../agent/health/grpc-health';
import { runProbe } from '../../agent/health/probes';
import { silentLogger } from '../../proto/model/log';

const T = { timeout: 20_000 };
const PERIOD = 40;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function listen(server: net.Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Report {
  healthy: boolean;
  detail: string;
  /** Probe results seen when the report was made. */
  results: boolean[];
}

/** Runs one service's checker with the real probes, recording every result and report. */
function watch(probe: ProbeConfig, over: Partial<HealthCheckConfig> = {}) {
  const results: boolean[] = [];
  const reports: Report[] = [];
  const check: HealthCheckConfig = { probe, periodMs: PERIOD, timeoutMs: 1000, initialDelayMs: 0, healthyThreshold: 1, unhealthyThreshold: 3, ...over };
  const checker = new HealthChecker({
    targets: [{ service: 'payments', check }],
    onChange: (service, healthy, detail) => {
      assert.equal(service, 'payments');
      reports.push({ healthy, detail, results: [...results] });
    },
    log: silentLogger(),
    runProbe: async (p, t, s) => {
      const r = await runProbe(p, t, s);
      results.push(r.ok);
      return r;
    },
  });
  return { checker, results, reports, check };
}

/**
 * The report came at exactly the `n`th equal result in a row: the last `n`
 * results before it agree with it, and the one before them (if any) did not.
 */
function assertAtThreshold(r: Report, n: number): void {
  const run = r.results.slice(-n);
  assert.equal(run.length, n, `${n} results before the report`);
  assert.ok(run.every((ok) => ok === r.healthy), `the last ${n} results were all ${r.healthy ? 'successes' : 'failures'}: ${r.results}`);
  if (r.results.length > n) assert.equal(r.results[r.results.length - n - 1], !r.healthy, `the run was exactly ${n} long: ${r.results}`);
}

/** Waits `periods` more probe results and asserts no report came with them. */
async function assertQuiet(w: ReturnType<typeof watch>, periods = 5): Promise<void> {
  const reports = w.reports.length;
  const results = w.results.length;
  await waitFor(`${periods} more probes`, () => w.results.length >= results + periods);
  assert.equal(w.reports.length, reports, 'no report while the state holds');
}

describe('HealthChecker with real apps', () => {
  let dir: string;
  before(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-health-'))));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('http: 200 turns healthy after healthyThreshold, 500 unhealthy after unhealthyThreshold, and back', T, async () => {
    let status = 200;
    const server = http.createServer((_req, res) => res.writeHead(status).end());
    const port = await listen(server);
    const w = watch({ kind: 'http', host: '127.0.0.1', port, path: '/healthz' }, { healthyThreshold: 2, unhealthyThreshold: 3 });
    try {
      w.checker.start();
      await waitFor('healthy', () => w.reports.length === 1);
      assert.deepEqual(w.reports[0]!.results, [true, true], 'healthy after exactly 2 successes');
      assert.equal(w.reports[0]!.detail, `GET http://127.0.0.1:${port}/healthz: HTTP 200`);
      await assertQuiet(w);

      status = 500;
      await waitFor('unhealthy', () => w.reports.length === 2);
      assert.equal(w.reports[1]!.healthy, false);
      assertAtThreshold(w.reports[1]!, 3);
      assert.equal(w.reports[1]!.detail, `3 consecutive failures, last: GET http://127.0.0.1:${port}/healthz: HTTP 500`);
      await assertQuiet(w);

      status = 200;
      await waitFor('healthy again', () => w.reports.length === 3);
      assert.equal(w.reports[2]!.healthy, true);
      assertAtThreshold(w.reports[2]!, 2);
      assert.deepEqual(w.checker.snapshot(), [{ service: 'payments', healthy: true, detail: `GET http://127.0.0.1:${port}/healthz: HTTP 200` }]);
    } finally {
      await w.checker.stop();
      server.closeAllConnections();
      await close(server);
    }
  });

  it('http: a blip shorter than unhealthyThreshold is not reported', T, async () => {
    let failNext = 0;
    const server = http.createServer((_req, res) => {
      const code = failNext > 0 ? 503 : 200;
      if (failNext > 0) failNext--;
      res.writeHead(code).end();
    });
    const port = await listen(server);
    const w = watch({ kind: 'http', host: '127.0.0.1', port, path: '/' }, { unhealthyThreshold: 3 });
    try {
      w.checker.start();
      await waitFor('healthy', () => w.reports.length === 1);
      failNext = 2;
      await waitFor('the blip to pass', () => failNext === 0);
      await assertQuiet(w);
      assert.equal(w.results.filter((ok) => !ok).length, 2);
      assert.equal(w.reports.length, 1);
    } finally {
      await w.checker.stop();
      await close(server);
    }
  });

  it('tcp: an app that is not up yet is reported unhealthy at the first failure, then healthy, then unhealthy when it closes', T, async () => {
    // Reserve a port, release it, and start the app on it later.
    const reserve = net.createServer();
    const port = await listen(reserve);
    await close(reserve);
    const w = watch({ kind: 'tcp', host: '127.0.0.1', port }, { healthyThreshold: 1, unhealthyThreshold: 2 });
    let app: net.Server | undefined;
    try {
      w.checker.start();
      await waitFor('unhealthy', () => w.reports.length === 1);
      assert.deepEqual(w.reports[0]!.results, [false], 'not ready until proven: the first failure decides');
      assert.match(w.reports[0]!.detail, /connection refused by 127\.0\.0\.1:\d+: is the app listening on that port\?/);

      app = net.createServer((s) => s.destroy());
      await listen(app, port);
      await waitFor('healthy', () => w.reports.length === 2);
      assert.equal(w.reports[1]!.healthy, true);
      assertAtThreshold(w.reports[1]!, 1);

      await close(app);
      app = undefined;
      await waitFor('unhealthy again', () => w.reports.length === 3);
      assert.equal(w.reports[2]!.healthy, false);
      assertAtThreshold(w.reports[2]!, 2);
      await assertQuiet(w);
    } finally {
      await w.checker.stop();
      if (app) await close(app);
    }
  });

  it('grpc: SERVING and NOT_SERVING of a named service flip the health, with thresholds', T, async () => {
    const statuses = new Map<string, ServingStatus>([['shop.Payments', 'SERVING']]);
    const server = new grpc.Server();
    server.addService(healthClientConstructor().service, {
      Check: (call: grpc.ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, cb: grpc.sendUnaryData<HealthCheckResponse>) => {
        const status = statuses.get(call.request.service);
        if (status === undefined) return cb({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        cb(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => call.end(),
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    const w = watch({ kind: 'grpc', host: '127.0.0.1', port, service: 'shop.Payments' }, { healthyThreshold: 2, unhealthyThreshold: 2 });
    try {
      w.checker.start();
      await waitFor('healthy', () => w.reports.length === 1);
      assert.deepEqual(w.reports[0]!.results, [true, true]);
      assert.equal(w.reports[0]!.detail, `gRPC health of service "shop.Payments" at 127.0.0.1:${port}: SERVING`);

      statuses.set('shop.Payments', 'NOT_SERVING');
      await waitFor('unhealthy', () => w.reports.length === 2);
      assertAtThreshold(w.reports[1]!, 2);
      assert.equal(w.reports[1]!.detail, `2 consecutive failures, last: gRPC health of service "shop.Payments" at 127.0.0.1:${port}: NOT_SERVING`);

      statuses.set('shop.Payments', 'SERVING');
      await waitFor('healthy again', () => w.reports.length === 3);
      assertAtThreshold(w.reports[2]!, 2);

      statuses.delete('shop.Payments');
      await waitFor('unhealthy: service unknown', () => w.reports.length === 4);
      assert.match(w.reports[3]!.detail, /does not know the service \(NOT_FOUND\)$/);
    } finally {
      await w.checker.stop();
      server.forceShutdown();
    }
  });

  it("exec: 'exit 0' is healthy, 'exit 1' unhealthy at once when unproven", T, async () => {
    const ok = watch({ kind: 'exec', command: ['sh', '-c', 'exit 0'] });
    const bad = watch({ kind: 'exec', command: ['sh', '-c', 'echo "db down"; exit 1'] });
    try {
      ok.checker.start();
      bad.checker.start();
      await waitFor('both decided', () => ok.reports.length === 1 && bad.reports.length === 1);
      assert.deepEqual([ok.reports[0]!.healthy, ok.reports[0]!.results], [true, [true]]);
      assert.deepEqual([bad.reports[0]!.healthy, bad.reports[0]!.results, bad.reports[0]!.detail], [false, [false], 'sh -c echo "db down"; exit 1: exit 1: db down']);
      await assertQuiet(bad, 3);
    } finally {
      await Promise.all([ok.checker.stop(), bad.checker.stop()]);
    }
  });

  it('exec: a flag file flips the command between exit 0 and exit 1', T, async () => {
    const flag = path.join(dir, 'ready');
    fs.writeFileSync(flag, '');
    const w = watch({ kind: 'exec', command: ['sh', '-c', `test -e ${flag}`] }, { healthyThreshold: 2, unhealthyThreshold: 1 });
    try {
      w.checker.start();
      await waitFor('healthy', () => w.reports.length === 1);
      assert.deepEqual(w.reports[0]!.results, [true, true]);
      fs.rmSync(flag);
      await waitFor('unhealthy', () => w.reports.length === 2);
      assertAtThreshold(w.reports[1]!, 1);
      fs.writeFileSync(flag, '');
      await waitFor('healthy again', () => w.reports.length === 3);
      assertAtThreshold(w.reports[2]!, 2);
    } finally {
      await w.checker.stop();
    }
  });

  it("exec: 'sleep 5' runs into the timeout each period, and each timed-out run is killed", T, async () => {
    const pids = path.join(dir, 'sleep-pids');
    const w = watch({ kind: 'exec', command: ['sh', '-c', `echo $$ >> ${pids}; sleep 5`] }, { timeoutMs: 150, periodMs: 50, unhealthyThreshold: 1 });
    try {
      w.checker.start();
      await waitFor('unhealthy', () => w.reports.length === 1);
      assert.equal(w.reports[0]!.detail, `sh -c echo $$ >> ${pids}; sleep 5: timed out after 150ms`);
      await waitFor('three timed-out runs', () => w.results.length >= 3);
    } finally {
      await w.checker.stop();
    }
    const started = fs.readFileSync(pids, 'utf8').trim().split('\n').map(Number);
    assert.ok(started.length >= 3);
    await waitFor('every timed-out shell to be gone', () => started.every(gone));
  });

  it('stop() kills a command in flight and no report follows', T, async () => {
    const pidFile = path.join(dir, 'inflight.pid');
    const w = watch({ kind: 'exec', command: ['sh', '-c', `echo $$ > ${pidFile}; sleep 5`] }, { timeoutMs: 10_000 });
    w.checker.start();
    await waitFor('the command to start', () => /^\d+\n$/.test(fs.existsSync(pidFile) ? fs.readFileSync(pidFile, 'utf8') : ''));
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    const t0 = Date.now();
    await w.checker.stop();
    assert.ok(Date.now() - t0 < 1000, 'stop() does not wait for the probe timeout');
    await waitFor('the command to be killed', () => gone(pid));
    await sleep(3 * PERIOD);
    assert.deepEqual(w.reports, []);
  });
});

/** True once `pid` has gone (or is a zombie no one reaped: dead all the same). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}
