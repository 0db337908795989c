// Failover time: a client opens new connections at a fixed rate through a
// client proxy to a service with two endpoints in the client's zone
// (us-east/zone-a) and two in another zone (us-east/zone-b). Every
// endpoint is a separate process (a Kedge inbound proxy in front of a tiny
// HTTP app), and so is the client (plain TCP, one HTTP request per
// connection). Mid-run, both zone-a processes get SIGKILL. Reported per run:
// connections that failed (started after the kill, and separately those in
// flight at the kill), the time from the kill to the last failed connection
// (every new connection succeeds after it), the time to the last connect
// retry (the proxy no longer tries dead endpoints), and connection latency.
//
// Scenarios, in the same run:
// - passive:    default policy (outlier detection on), connect retries on;
// - federation: the same, plus a snapshot marking zone-a unhealthy
//               --federation-delay ms after the kill (the federation's
//               propagation latency);
// - plain-rr:   baseline, what a plain round-robin proxy does: no locality,
//               no outlier detection, no connect retries;
// - plain-rr+federation: the baseline with the same federation push.
//
// Usage: node dist/test/bench/failover.js [--rate=100] [--warmup=1000] [--before=1000] [--after=3000] [--runs=3] [--federation-delay=150]
// (--warmup: load before the measured window, so JIT and TLS session
// caches are warm; --before: the measured window before the kill.
// KEDGE_BENCH_DEBUG=1 prints each failed connect attempt to stderr.)
// Bounded: fixed durations; every connection times out after 5 s.
// The default rate is 100/s: on the shared 2-core development machine,
// 200 new mTLS connections/s saturated the endpoint processes before any
// kill (p50 connection time over 2 s), which measures the queue, not failover.
// (Started with --role=endpoint or --role=client, this file is one endpoint
// process or the client.)
import { type ChildProcess, spawn } from 'node:child_process';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import * as os from 'node:os';
import { Writable } from 'node:stream';
import pino from 'pino';
import { TRAFFIC_POLICY_DEFAULTS, type TrafficPolicy } from '../../policy/traffic-policy';
import { Proxy } from '../../agent/proxy/proxy';
import type { EndpointView, ProxySnapshot, TlsIdentity } from '../../agent/proxy/types';
import { parseLocality } from '../../proto/model/locality';
import { makeCa, makeLeaf, toTlsIdentity } from '../support/pki';

const HOST = 'cart.shop.svc.cluster.local';
const PORT = 80;
const TD = 'spiffe://bench.kedge';
const CONNECTION_TIMEOUT_MS = 5_000;
const REQUEST = Buffer.from(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);

function arg(name: string, fallback: number): number {
  const raw = process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a whole number, got ${raw}`);
  return n;
}

const round = (x: number, digits = 1): number => Number(x.toFixed(digits));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- endpoint process -------------------------------------------------------

interface EndpointSpec {
  name: string;
  identity: Omit<TlsIdentity, 'notAfter'> & { notAfter: string };
}

async function runEndpoint(): Promise<void> {
  const spec = JSON.parse(process.env.KEDGE_BENCH_ENDPOINT ?? '') as EndpointSpec;
  const app = http.createServer((_req, res) => res.end(spec.name));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as AddressInfo).port;
  const proxy = new Proxy({
    inboundListen: { host: '127.0.0.1', port: 0 },
    targets: [{ hostname: HOST, servicePort: PORT, host: '127.0.0.1', targetPort: appPort }],
    upstreams: [],
    identity: { ...spec.identity, notAfter: new Date(spec.identity.notAfter) },
    logger: pino({ level: 'silent' }),
  });
  await proxy.start();
  process.stdout.write(`${JSON.stringify({ ready: true, mtlsPort: proxy.inboundAddress().port, appPort })}\n`);
  // The parent holds our stdin: when it goes, so do we.
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

// ---- parent: endpoints ---------------------------------------------------------

interface Endpoint {
  name: string;
  locality: string;
  child: ChildProcess;
  view: EndpointView;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function spawnEndpoint(name: string, locality: string, identity: TlsIdentity): Promise<Endpoint> {
  const spec: EndpointSpec = { name, identity: { ...identity, notAfter: identity.notAfter.toISOString() } };
  const child = spawn(process.execPath, [__filename, '--role=endpoint'], { env: { ...process.env, KEDGE_BENCH_ENDPOINT: JSON.stringify(spec) }, stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`endpoint ${name} did not start within 15 s`)), 15_000);
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      const { mtlsPort, appPort } = JSON.parse(buf.slice(0, nl)) as { mtlsPort: number; appPort: number };
      resolve({
        name,
        locality,
        child,
        view: { address: '127.0.0.1', mtlsPort, identity: identity.spiffeId, workload: name, healthy: true, ports: [{ name: 'http', port: appPort }], locality: parseLocality(locality), network: 'net-a', labels: {} },
      });
    });
    child.once('exit', (code, signal) => reject(new Error(`endpoint ${name} exited (${code ?? signal}) before it was ready`)));
  });
}

function snapshot(endpoints: readonly Endpoint[], policy: TrafficPolicy | undefined, unhealthy: ReadonlySet<string> = new Set()): ProxySnapshot {
  return {
    version: String(Date.now()),
    services: new Map([
      [
        'cart.shop',
        {
          key: 'cart.shop',
          hostname: HOST,
          vip: '',
          ports: [{ name: 'http', port: PORT, protocol: 'HTTP' }],
          endpoints: endpoints.map((e) => ({ ...e.view, healthy: !unhealthy.has(e.name) })),
          version: '1',
          ...(policy ? { policy } : {}),
        },
      ],
    ]),
  };
}

// ---- parent: load ---------------------------------------------------------------

interface Conn {
  startedAt: number;
  latencyMs: number;
  ok: boolean;
  servedBy: string;
}

/** Milliseconds since the epoch with sub-millisecond resolution: comparable across this host's processes. */
const wallNow = (): number => performance.timeOrigin + performance.now();

/** One connection: send a request with Connection: close, read the answer to the end. */
function connectOnce(port: number): Promise<Conn> {
  const startedAt = wallNow();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const bodyAt = text.indexOf('\r\n\r\n');
      const good = ok && text.startsWith('HTTP/1.1 200') && bodyAt > 0;
      resolve({ startedAt, latencyMs: wallNow() - startedAt, ok: good, servedBy: good ? text.slice(bodyAt + 4) : '' });
    };
    const timer = setTimeout(() => done(false), CONNECTION_TIMEOUT_MS);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => done(false));
    s.on('end', () => done(true));
    s.on('close', () => done(true));
    s.write(REQUEST);
  });
}

/** Opens connections at `rate` per second from now for `ms`; the promise resolves once all have finished. Runs in the client process. */
function openAtRate(port: number, rate: number, ms: number, into: Conn[]): Promise<void> {
  const interval = 1000 / rate;
  const start = performance.now();
  const pending: Promise<void>[] = [];
  let i = 0;
  return new Promise((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      // Catch up if the timer fired late, so the rate holds on average.
      while (start + i * interval <= now && i * interval < ms) {
        pending.push(connectOnce(port).then((c) => void into.push(c)));
        i++;
      }
      if (i * interval < ms) setTimeout(tick, Math.max(0, start + i * interval - performance.now()));
      else void Promise.all(pending).then(() => resolve());
    };
    tick();
  });
}

/** The client process: load at a rate, then every connection as one JSON line on stdout. */
async function runClient(): Promise<void> {
  const port = arg('port', 0);
  const conns: Conn[] = [];
  process.stdout.write(`${JSON.stringify({ started: wallNow() })}\n`);
  await openAtRate(port, arg('rate', 100), arg('duration', 1000), conns);
  process.stdout.write(`${JSON.stringify({ conns })}\n`);
}

/** Starts the client process; resolves when it has started, with its results to come. */
function spawnClient(port: number, rate: number, durationMs: number): Promise<{ started: number; results: Promise<Conn[]> }> {
  const child = spawn(process.execPath, [__filename, '--role=client', `--port=${port}`, `--rate=${rate}`, `--duration=${durationMs}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  let buf = '';
  let onStarted: (t: number) => void = () => undefined;
  let fail: (e: Error) => void = () => undefined;
  const started = new Promise<number>((resolve, reject) => {
    onStarted = resolve;
    fail = reject;
  });
  const results = new Promise<Conn[]>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(buf.slice(0, nl)) as { started?: number; conns?: Conn[] };
        buf = buf.slice(nl + 1);
        if (line.started !== undefined) onStarted(line.started);
        if (line.conns !== undefined) resolve(line.conns);
      }
    });
    child.once('exit', (code, signal) => {
      children.delete(child);
      const err = new Error(`the client process exited (${code ?? signal}) before reporting`);
      fail(err);
      reject(err);
    });
  });
  results.catch(() => undefined);
  return started.then((t) => ({ started: t, results }));
}

// ---- parent: one run of one scenario ------------------------------------------

interface Scenario {
  name: string;
  policy: TrafficPolicy | undefined;
  maxAttempts: number | undefined;
  federation: boolean;
}

const PLAIN_RR: TrafficPolicy = {
  ...TRAFFIC_POLICY_DEFAULTS,
  loadBalancer: 'round-robin',
  locality: { enabled: false, failoverPriority: [], distribute: [] },
  outlierDetection: { ...TRAFFIC_POLICY_DEFAULTS.outlierDetection, consecutiveErrors: 0 },
};

const SCENARIOS: readonly Scenario[] = [
  { name: 'passive', policy: undefined, maxAttempts: undefined, federation: false },
  { name: 'federation', policy: undefined, maxAttempts: undefined, federation: true },
  { name: 'plain-rr', policy: PLAIN_RR, maxAttempts: 1, federation: false },
  { name: 'plain-rr+federation', policy: PLAIN_RR, maxAttempts: 1, federation: true },
];

interface RunResult {
  scenario: string;
  run: number;
  connections: number;
  /** Started after the kill and failed. */
  failed: number;
  /** Started before the kill, failed (in flight on a killed endpoint). */
  failedInFlight: number;
  /** Kill → start of the last failed connection; 0 when none failed; null when failures went on to the end of the window. */
  recoveryMs: number | null;
  /** Kill → the proxy's last failed connect attempt (after it, first attempts only go to live endpoints). */
  lastFailedAttemptMs: number | null;
  failedAttempts: number;
  afterKill: { zoneA: number; zoneB: number };
  other: string[];
  latencyBeforeMs: { p50: number; p99: number };
  latencyAfterMs: { p50: number; p99: number; max: number };
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return round(s[Math.min(s.length - 1, Math.floor(p * s.length))]!, 2);
}

async function runScenario(sc: Scenario, run: number, o: { rate: number; warmup: number; before: number; after: number; federationDelay: number; identities: Map<string, TlsIdentity>; clientIdentity: TlsIdentity }): Promise<RunResult> {
  const layout: Array<[string, string]> = [
    ['a1', 'us-east/zone-a'],
    ['a2', 'us-east/zone-a'],
    ['b1', 'us-east/zone-b'],
    ['b2', 'us-east/zone-b'],
  ];
  const endpoints = await Promise.all(layout.map(([name, loc]) => spawnEndpoint(name, loc, o.identities.get(name)!)));
  // The proxy's failed connect attempts, with their (wall-clock) times.
  const retryTimes: number[] = [];
  const logStream = new Writable({
    write(chunk, _enc, cb) {
      const text = String(chunk);
      if (text.includes('outbound connect attempt failed'))
        for (const l of text.split('\n'))
          if (l) {
            const j = JSON.parse(l) as { time: number; endpoint: string; code: string };
            retryTimes.push(Number(j.time));
            if (process.env.KEDGE_BENCH_DEBUG) process.stderr.write(`${j.time} ${j.endpoint} ${j.code}\n`);
          }
      cb();
    },
  });
  const client = new Proxy({
    inboundListen: { host: '127.0.0.1', port: 0 },
    targets: [],
    upstreams: [{ service: 'cart.shop', port: PORT, listen: { host: '127.0.0.1', port: 0 } }],
    identity: o.clientIdentity,
    logger: pino({ level: 'info' }, logStream),
    client: { locality: parseLocality('us-east/zone-a'), network: 'net-a', labels: {} },
    ...(sc.maxAttempts !== undefined ? { maxAttempts: sc.maxAttempts } : {}),
  });
  await client.start();
  client.setSnapshot(snapshot(endpoints, sc.policy));
  const port = client.upstreamAddresses()[0]!.port;

  const total = o.warmup + o.before + o.after;
  const load = await spawnClient(port, o.rate, total);
  await sleep(Math.max(0, load.started + o.warmup + o.before - wallNow()));
  const killAt = wallNow();
  for (const e of endpoints.slice(0, 2)) e.child.kill('SIGKILL');
  let pushed: NodeJS.Timeout | undefined;
  if (sc.federation) pushed = setTimeout(() => client.setSnapshot(snapshot(endpoints, sc.policy, new Set(['a1', 'a2']))), o.federationDelay);
  const conns = await load.results;
  clearTimeout(pushed);

  await client.close(500);
  for (const e of endpoints) {
    e.child.stdin!.end();
    e.child.kill('SIGKILL');
  }

  const after = conns.filter((c) => c.startedAt >= killAt);
  const before = conns.filter((c) => c.startedAt < killAt && c.startedAt >= killAt - o.before);
  const failedAfter = after.filter((c) => !c.ok);
  const lastFailed = failedAfter.reduce((m, c) => Math.max(m, c.startedAt), -Infinity);
  const windowEnd = killAt + o.after;
  // Still failing in the last 10% of the window: never recovered within it.
  const recoveryMs = failedAfter.length === 0 ? 0 : lastFailed > windowEnd - o.after * 0.1 ? null : round(lastFailed - killAt);
  const retriesAfter = retryTimes.filter((t) => t >= killAt - 50);
  return {
    scenario: sc.name,
    run,
    connections: before.length + after.length,
    failed: failedAfter.length,
    failedInFlight: conns.filter((c) => c.startedAt < killAt && !c.ok).length,
    recoveryMs,
    lastFailedAttemptMs: retriesAfter.length === 0 ? null : Math.max(0, round(Math.max(...retriesAfter) - killAt)),
    failedAttempts: retryTimes.length,
    afterKill: { zoneA: after.filter((c) => c.servedBy.startsWith('a')).length, zoneB: after.filter((c) => c.servedBy.startsWith('b')).length },
    other: after.filter((c) => c.ok && !/^[ab]/.test(c.servedBy)).map((c) => c.servedBy.slice(0, 40)),
    latencyBeforeMs: { p50: pct(before.map((c) => c.latencyMs), 0.5), p99: pct(before.map((c) => c.latencyMs), 0.99) },
    latencyAfterMs: { p50: pct(after.map((c) => c.latencyMs), 0.5), p99: pct(after.map((c) => c.latencyMs), 0.99), max: pct(after.map((c) => c.latencyMs), 1) },
  };
}

async function main(): Promise<void> {
  const rate = arg('rate', 100);
  const warmup = arg('warmup', 1000);
  const before = arg('before', 1000);
  const after = arg('after', 3000);
  const runs = arg('runs', 3);
  const federationDelay = arg('federation-delay', 150);
  const loadBefore = os.loadavg()[0] ?? 0;

  const ca = makeCa('bench-failover');
  const identities = new Map(['a1', 'a2', 'b1', 'b2'].map((n) => [n, toTlsIdentity(makeLeaf(ca, `${TD}/ns/shop/sa/cart-${n}`))]));
  const clientIdentity = toTlsIdentity(makeLeaf(ca, `${TD}/ns/shop/sa/frontend`));

  const results: RunResult[] = [];
  // Interleaved, so a change in machine load touches every scenario alike.
  for (let run = 1; run <= runs; run++) {
    for (const sc of SCENARIOS) {
      const r = await runScenario(sc, run, { rate, warmup, before, after, federationDelay, identities, clientIdentity });
      results.push(r);
      process.stderr.write(`# ${sc.name} run ${run}: failed ${r.failed} (+${r.failedInFlight} in flight), recovery ${r.recoveryMs ?? 'none'} ms, last failed attempt ${r.lastFailedAttemptMs ?? '-'} ms\n`);
    }
  }

  const out = {
    bench: 'failover',
    node: process.version,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    loadAvg1m: { before: round(loadBefore, 2), after: round(os.loadavg()[0] ?? 0, 2) },
    rate,
    warmupMs: warmup,
    beforeMs: before,
    afterMs: after,
    federationDelayMs: federationDelay,
    results,
  };
  const ms = (x: number | null): string => (x === null ? `not within ${after} ms` : String(x));
  process.stdout.write(
    [
      `## failover (${out.node}, ${out.cpu}, ${out.cores} cores; ${rate} new connections/s, ${before} ms before and ${after} ms after SIGKILL of both zone-a endpoints)`,
      '',
      '| scenario | run | connections | failed after kill | failed in flight | kill → last failure ms | kill → last failed connect attempt ms | failed attempts | after kill: zone-a / zone-b | p50 / p99 ms before | p50 / p99 / max ms after |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|',
      ...results.map(
        (r) =>
          `| ${r.scenario} | ${r.run} | ${r.connections} | ${r.failed} | ${r.failedInFlight} | ${ms(r.recoveryMs)} | ${r.lastFailedAttemptMs ?? '-'} | ${r.failedAttempts} | ${r.afterKill.zoneA} / ${r.afterKill.zoneB} | ${r.latencyBeforeMs.p50} / ${r.latencyBeforeMs.p99} | ${r.latencyAfterMs.p50} / ${r.latencyAfterMs.p99} / ${r.latencyAfterMs.max} |`,
      ),
      '',
      `load average (1 min) ${out.loadAvg1m.before} before, ${out.loadAvg1m.after} after`,
      '',
      JSON.stringify(out),
      '',
    ].join('\n'),
  );
}

if (process.argv.includes('--role=endpoint') || process.argv.includes('--role=client')) {
  const role = process.argv.includes('--role=client') ? runClient().then(() => process.exit(0)) : runEndpoint();
  role.catch((err: unknown) => {
    process.stderr.write(`failover ${process.argv.find((a) => a.startsWith('--role='))} failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
} else {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`failover bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
