// Federation push at scale (issue 4): how long an endpoint change takes to
// reach the last subscribed agent, and what the federation spends on it in
// CPU and memory, with 1,000 simulated agents, 1,000 services and 20,000
// endpoints. Three configurations run in sequence, each from scratch:
//
//   floor      a bare gRPC fan-out server (support/fanout-floor.ts): same
//              protocol, TLS and messages, no store, merge or debounce — the
//              baseline, what transport and simulator cost on this machine;
//   1 replica  `kedge federation` on its embedded store;
//   2 replicas two federations on one real etcd, agents split between them,
//              changes coming from agents on both.
//
// Agents are simulated in a separate process (support/sim-agents.ts). Phases
// per configuration: connect (all agents register and receive their full
// initial state), settle (the status writes the first acks trigger), idle
// (steady state, no changes), paced changes (one every --interval ms, longer
// than the 100 ms push debounce, so each change is pushed on its own), burst
// (--burst changes sent in one tick, which the debounce coalesces).
//
// Usage: node dist/test/bench/federation-push.js [--agents=1000] [--services=1000]
//   [--serves=20] [--subscriptions=20] [--changes=200] [--interval=300] [--burst=50]
//   [--replicas=1,2] [--floor=1] [--per-channel=50] [--connect-rate=0] [--debounce=100ms] [--profile] [--mem-log=DIR]
// --connect-rate=N starts N agents per second instead of all at once.
// --mem-log=DIR preloads support/mem-sampler.js into each federation and
// prints, per phase, what its memory was made of (V8 heap used and committed,
// old space, external buffers); the samples stay in DIR. With it,
// $KEDGE_BENCH_ALLOC_PROFILE=FILE lets SIGUSR2 start and stop a heap profile of
// what gets promoted to old space (see support/mem-sampler.ts), and
// $KEDGE_BENCH_FED_NODE_OPTIONS adds node options to every replica (e.g.
// "--trace-gc", whose output $KEDGE_BENCH_LOG_DIR then keeps).
// Bounded: fixed counts, per-phase timeouts, and a watchdog that ends the run
// (and every process it started) after 9 minutes.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { generateKeyAndCsr } from '../../agent/identity/csr';
import { CertificateAuthority, createRootCa } from '../../federation/ca';
import { federationSpiffeId, formatSpiffeId } from '../../proto/model/spiffe';
import { startEtcd, type EtcdServer } from '../support/etcd';
import { summariseProfile, type ProfileSummary } from './support/cpu-profile';
import { BENCH_NAMESPACE, BENCH_SERVICE_ACCOUNT, BENCH_TRUST_DOMAIN, checkLayout, type Layout } from './support/layout';
import { cpuBetween, percentile, round, sampleProc, type ProcSample } from './support/proc-stats';
import { memTable, readMemLog, summariseMemLog, type MemPhaseSummary } from './support/mem-report';
import { forkHelper, startFederation, type FederationProc } from './support/processes';
import { signSharedCertificate } from './support/credentials';
import type { AgentCredentials, ChangeResult, FromFloor, FromSim, ToFloor, ToSim } from './support/protocol';

const TARGET_P99_MS = 500;
const TARGET_RSS_MB = 300;
const SETTLE_MS = 6_000; // > the federation's 5 s status-write delay after an ack
const IDLE_MS = 4_000;
const CHANGE_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 90_000;
const WATCHDOG_MS = 9 * 60_000;
const DAY = 86_400_000;
const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');

interface Options {
  layout: Layout;
  changes: number;
  intervalMs: number;
  burst: number;
  replicas: number[];
  floor: boolean;
  perChannel: number;
  connectRate: number;
  debounce: string | undefined;
  profile: boolean;
  memLogDir: string | undefined;
}

function flag(name: string): string | undefined {
  return process.argv.find((a) => a === `--${name}` || a.startsWith(`--${name}=`))?.split('=')[1];
}

function intFlag(name: string, fallback: number, min = 1): number {
  const raw = flag(name);
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${raw}`);
  return n;
}

function parseOptions(): Options {
  const layout: Layout = { agents: intFlag('agents', 1000), services: intFlag('services', 1000), servesPerAgent: intFlag('serves', 20), subscriptionsPerAgent: intFlag('subscriptions', 20) };
  checkLayout(layout);
  const replicas = (flag('replicas') ?? '1,2').split(',').filter(Boolean).map(Number);
  if (replicas.some((r) => r !== 1 && r !== 2)) throw new Error(`--replicas takes 1, 2 or 1,2; got ${flag('replicas')}`);
  const opts: Options = {
    layout,
    changes: intFlag('changes', 200),
    intervalMs: intFlag('interval', 300),
    burst: intFlag('burst', 50, 0),
    replicas,
    floor: (flag('floor') ?? '1') !== '0',
    perChannel: intFlag('per-channel', 50),
    connectRate: intFlag('connect-rate', 0, 0),
    debounce: flag('debounce'),
    profile: process.argv.includes('--profile'),
    memLogDir: flag('mem-log'),
  };
  if (opts.changes + opts.burst > layout.agents * layout.servesPerAgent) throw new Error('more changes than (agent, service) pairs');
  return opts;
}

const hrUs = (): number => Number(process.hrtime.bigint() / 1000n);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number): number => round(bytes / 1024 / 1024, 1);
const log = (msg: string) => process.stderr.write(`[federation-push] ${msg}\n`);

/** Latency of one phase's changes, from HealthReport send to the last subscriber's receipt. */
interface LatencyStats {
  changes: number;
  missed: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  firstP50Ms: number;
}

function latencyStats(results: ChangeResult[]): LatencyStats {
  const done = results.filter((r) => r.lastMs !== null).map((r) => r.lastMs!).sort((a, b) => a - b);
  const first = results.filter((r) => r.firstMs !== null).map((r) => r.firstMs!).sort((a, b) => a - b);
  return {
    changes: results.length,
    missed: results.length - done.length,
    p50Ms: round(percentile(done, 0.5), 1),
    p99Ms: round(percentile(done, 0.99), 1),
    maxMs: round(done[done.length - 1] ?? NaN, 1),
    firstP50Ms: round(percentile(first, 0.5), 1),
  };
}

const PHASES = ['connect', 'idle', 'paced', 'burst'] as const;
type Phase = (typeof PHASES)[number];

/** CPU and memory of one process of a configuration. */
interface ProcReport {
  name: string;
  cpu: Partial<Record<Phase, { seconds: number; pctCore: number }>>;
  rssPeakMb: number;
  rssEndMb: number;
}

/** Everything measured for one configuration. */
interface ConfigReport {
  name: string;
  /** Set when the agents never all held their initial state; the phases after it did not run. */
  error: string | undefined;
  registeredS: number | undefined;
  initialStateS: number | undefined;
  channels: number | undefined;
  /** Updates, and services in them, the agents received until all held their initial state. */
  connectUpdates: { updates: number; services: number } | undefined;
  /** Agent streams that failed (and were reopened, like a real agent would) during the run. */
  streamFailures: number;
  paced: LatencyStats | undefined;
  burst: LatencyStats | undefined;
  procs: ProcReport[];
  federationWarnings: number;
  /** The most frequent of those, by message and error. */
  topWarnings: { what: string; count: number }[];
  /** The error the last failed agent stream ended with. */
  lastStreamFailure: string | undefined;
  profiles: { proc: string; phase: Phase; summary: ProfileSummary }[];
  memory: { proc: string; phases: MemPhaseSummary[] }[];
}

/** A process whose CPU and memory a configuration reports. */
interface Watched {
  name: string;
  pid: number;
  samples: Partial<Record<Phase | 'end', ProcSample>>;
  starts: Partial<Record<Phase, ProcSample>>;
}

/** The pid of the etcd serving dataDir (the etcd helper does not expose it). */
function etcdPid(etcd: EtcdServer): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.includes(`--data-dir=${etcd.dataDir}`)) return Number(entry);
    } catch {
      // Exited while we looked.
    }
  }
  return undefined;
}

/** Runs one configuration (0 replicas = the floor server) from start to clean-up. */
async function runConfig(opts: Options, replicas: 0 | 1 | 2, profileDir: string | undefined): Promise<ConfigReport> {
  const name = replicas === 0 ? 'floor (bare gRPC fan-out)' : replicas === 1 ? '1 replica, embedded store' : '2 replicas, etcd';
  log(`${name}: starting`);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'kedge-bench-push-'));
  const cleanups: (() => Promise<void>)[] = [];
  const watched: Watched[] = [];
  const watch = (wname: string, pid: number | undefined) => pid !== undefined && watched.push({ name: wname, pid, samples: {}, starts: {} });
  const feds: FederationProc[] = [];
  const phaseWindows: Partial<Record<Phase, { fromUs: number; toUs: number }>> = {};
  const wallWindows: { phase: string; from: number; to: number }[] = [];
  try {
    let addresses: string[];
    let credentials: AgentCredentials;
    if (replicas === 0) {
      const ca = new CertificateAuthority(createRootCa({ trustDomain: BENCH_TRUST_DOMAIN }), { workloadTtlMs: DAY });
      const serving = ca.issueServing(federationSpiffeId(BENCH_TRUST_DOMAIN), { ttlMs: DAY });
      const spiffeId = formatSpiffeId({ trustDomain: BENCH_TRUST_DOMAIN, namespace: BENCH_NAMESPACE, serviceAccount: BENCH_SERVICE_ACCOUNT });
      const { keyPem, csrPem } = await generateKeyAndCsr({ spiffeId });
      const rootCertPem = ca.trustBundle().join('');
      credentials = { rootCertPem, certChainPem: ca.signCsr(csrPem, spiffeId).chainPem.join(''), keyPem, trustDomain: BENCH_TRUST_DOMAIN };
      const floor = forkHelper<ToFloor, FromFloor>('floor server', path.join(__dirname, 'support', 'fanout-floor.js'));
      cleanups.push(() => floor.stop());
      floor.send({ type: 'start', layout: opts.layout, rootCertPem, certChainPem: serving.chainPem.join(''), keyPem: serving.keyPem, trustDomain: BENCH_TRUST_DOMAIN });
      addresses = [(await floor.next('listening', 20_000)).address];
      watch('floor server', floor.pid);
    } else {
      let store = 'embedded';
      if (replicas === 2) {
        const etcd = await startEtcd();
        cleanups.push(() => etcd.destroy());
        store = `etcd://${etcd.endpoint}`;
        watch('etcd', etcdPid(etcd));
      }
      for (let r = 1; r <= replicas; r++) {
        // One after the other: the first creates the CA and admin token in the store, the second loads them.
        const fed = await startFederation({
          name: `federation r${r}`,
          dataDir: path.join(tmp, `r${r}`),
          args: ['--trust-domain', BENCH_TRUST_DOMAIN, '--replica', `r${r}`, '--store', store, ...(opts.debounce ? ['--push-debounce', opts.debounce] : [])],
          nodeArgs: [
            ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
            ...(opts.memLogDir ? ['--require', path.join(__dirname, 'support', 'mem-sampler.js')] : []),
          ],
          ...(opts.memLogDir ? { env: { KEDGE_BENCH_MEM_LOG: memLogOf(opts.memLogDir, replicas, r) } } : {}),
        });
        feds.push(fed);
        cleanups.push(() => fed.stop());
        watch(`federation r${r}`, fed.pid);
      }
      credentials = await signSharedCertificate({ dataDir: feds[0]!.dataDir, httpsUrl: `https://${feds[0]!.http}`, grpc: feds[0]!.grpc });
      addresses = feds.map((f) => f.grpc);
    }

    const sim = forkHelper<ToSim, FromSim>('simulator', path.join(__dirname, 'support', 'sim-agents.js'));
    cleanups.push(() => sim.stop());
    watch('simulator', sim.pid);

    const mark = (phase: Phase | 'end') => {
      for (const w of watched) w.samples[phase] = sampleProc(w.pid);
    };
    const begin = (phase: Phase) => {
      phaseWindows[phase] = { fromUs: hrUs(), toUs: Infinity };
      wallWindows.push({ phase, from: Date.now(), to: Infinity });
      for (const w of watched) w.starts[phase] = sampleProc(w.pid);
    };
    const finish = (phase: Phase) => {
      phaseWindows[phase]!.toUs = hrUs();
      wallWindows[wallWindows.length - 1]!.to = Date.now();
      mark(phase);
    };

    begin('connect');
    sim.send({ type: 'start', config: { layout: opts.layout, addresses, agentsPerChannel: opts.perChannel, connectRate: opts.connectRate, credentials, connectTimeoutMs: CONNECT_TIMEOUT_MS } });
    let connected: Extract<FromSim, { type: 'connected' }> | undefined;
    let error: string | undefined;
    try {
      // The simulator's own deadline starts once the last agent has been started.
      const rampMs = opts.connectRate > 0 ? (1000 * opts.layout.agents) / opts.connectRate : 0;
      connected = await sim.next('connected', rampMs + CONNECT_TIMEOUT_MS + 10_000);
    } catch (err) {
      // A configuration that cannot take the agents on is a result, not a crash:
      // report it with what it cost, and go on with the next one.
      error = err instanceof Error ? err.message : String(err);
      log(`${name}: ${error}`);
    }
    finish('connect');
    let pacedStats: LatencyStats | undefined;
    let burstStats: LatencyStats | undefined;
    let streamFailures = connected?.streamFailures ?? 0;
    let lastStreamFailure = connected?.lastFailure;
    if (connected) {
      log(`${name}: ${opts.layout.agents} agents registered in ${connected.registeredMs} ms, full initial state after ${connected.initialStateMs} ms`);
      await sleep(SETTLE_MS);
      begin('idle');
      await sleep(IDLE_MS);
      finish('idle');

      begin('paced');
      sim.send({ type: 'changes', from: 0, count: opts.changes, intervalMs: opts.intervalMs, timeoutMs: CHANGE_TIMEOUT_MS });
      const paced = await sim.next('changes-done', opts.changes * opts.intervalMs + CHANGE_TIMEOUT_MS + 30_000);
      finish('paced');
      pacedStats = latencyStats(paced.results);
      streamFailures = paced.streamFailures;
      lastStreamFailure = paced.lastFailure ?? lastStreamFailure;
      log(`${name}: paced p50 ${pacedStats.p50Ms} ms, p99 ${pacedStats.p99Ms} ms, missed ${pacedStats.missed}`);

      if (opts.burst > 0) {
        // Let the paced changes' status writes (5 s after their acks) pass first.
        await sleep(SETTLE_MS);
        begin('burst');
        sim.send({ type: 'changes', from: opts.changes, count: opts.burst, intervalMs: 0, timeoutMs: CHANGE_TIMEOUT_MS });
        const burst = await sim.next('changes-done', CHANGE_TIMEOUT_MS + 30_000);
        finish('burst');
        burstStats = latencyStats(burst.results);
        streamFailures = burst.streamFailures;
        lastStreamFailure = burst.lastFailure ?? lastStreamFailure;
        log(`${name}: burst p50 ${burstStats.p50Ms} ms, p99 ${burstStats.p99Ms} ms, missed ${burstStats.missed}`);
      }
    }
    mark('end');
    const memory = opts.memLogDir ? feds.map((f, i) => {
      const file = memLogOf(opts.memLogDir!, replicas, i + 1);
      const samples = existsSync(file) ? readMemLog(file) : [];
      return { proc: f.name, phases: summariseMemLog(samples, [...wallWindows, { phase: 'whole run', from: 0, to: Infinity }]) };
    }) : [];

    const procs: ProcReport[] = watched.map((w) => ({
      name: w.name,
      cpu: Object.fromEntries(PHASES.flatMap((p) => {
        const c = cpuBetween(w.starts[p], w.samples[p]);
        return c ? [[p, c]] : [];
      })),
      rssPeakMb: mb(w.samples.end?.peakRssBytes ?? NaN),
      rssEndMb: mb(w.samples.end?.rssBytes ?? NaN),
    }));
    return {
      name,
      error,
      registeredS: connected ? round(connected.registeredMs / 1000, 2) : undefined,
      initialStateS: connected ? round(connected.initialStateMs / 1000, 2) : undefined,
      channels: connected?.channels,
      connectUpdates: connected ? { updates: connected.updatesReceived, services: connected.servicesReceived } : undefined,
      streamFailures,
      paced: pacedStats,
      burst: burstStats,
      procs,
      federationWarnings: feds.reduce((n, f) => n + f.warnings(), 0),
      topWarnings: topKinds(feds.map((f) => f.warningKinds()), 5),
      lastStreamFailure,
      profiles: [],
      memory,
    };
  } catch (err) {
    for (const f of feds) log(`${f.name}, last log lines:\n${f.lastLines().join('\n')}`);
    throw err;
  } finally {
    // Reverse start order: the simulator first, etcd last.
    for (const c of cleanups.reverse()) {
      await c().catch((err: unknown) => log(`clean-up: ${err instanceof Error ? err.message : String(err)}`));
    }
    rmSync(tmp, { recursive: true, force: true });
    if (profileDir) {
      // Written by each federation on its clean exit, named ...<pid>...cpuprofile.
      for (const fed of feds) {
        const file = readdirSync(profileDir).find((f) => f.includes(`.${fed.pid}.`) && f.endsWith('.cpuprofile'));
        if (file) profilesFound.push({ config: name, proc: fed.name, file: path.join(profileDir, file), windows: { ...phaseWindows } });
      }
    }
  }
}

/** Where replica r's mem-sampler log goes (one file per run, configuration and replica). */
const memLogStamp = Date.now();
function memLogOf(dir: string, replicas: number, replica: number): string {
  return path.join(dir, `federation-${replicas}x-r${replica}-${memLogStamp}.jsonl`);
}

const profilesFound: { config: string; proc: string; file: string; windows: Partial<Record<Phase, { fromUs: number; toUs: number }>> }[] = [];

// Functions whose inclusive share (self + callees) says where push time goes.
const INCLUSIVE = ['buildMeshView', 'walk', 'buildService', 'serviceVersion', 'stableJson', 'pushAll', 'deltaOfSorted', 'serializeFederationMessage', 'applyEvents', 'handle', 'connect', 'register', 'update', 'renew', 'writeStatus'];

function cpuCell(p: ProcReport, phase: Phase): string {
  const c = p.cpu[phase];
  return c ? `${c.seconds} (${c.pctCore}%)` : '–';
}

function configTable(opts: Options, r: ConfigReport): string {
  const lines = [`### ${r.name}`, ''];
  if (r.error) lines.push(`**Did not complete:** ${r.error}`, '');
  else {
    const u = r.connectUpdates;
    lines.push(`${opts.layout.agents} agents on ${r.channels} gRPC channels: all registered after ${r.registeredS} s, full initial state after ${r.initialStateS} s` +
      `${u ? ` (${u.updates} updates carrying ${u.services} services received until then)` : ''}.`, '');
  }
  if (r.streamFailures > 0) lines.push(`Agent streams that failed and were reopened: ${r.streamFailures}${r.lastStreamFailure ? ` (the last with: ${r.lastStreamFailure})` : ''}.`, '');
  const row = (phase: string, s: LatencyStats) => `| ${phase} | ${s.changes} | ${s.p50Ms} | ${s.p99Ms} | ${s.maxMs} | ${s.firstP50Ms} | ${s.missed} |`;
  if (r.paced) {
    lines.push(
      '| phase | changes | last receipt p50 ms | p99 ms | max ms | first receipt p50 ms | missed |',
      '|---|---:|---:|---:|---:|---:|---:|',
      row(`paced, 1 per ${opts.intervalMs} ms`, r.paced),
    );
    if (r.burst) lines.push(row(`burst, ${r.burst.changes} in one tick`, r.burst));
    lines.push('');
  }
  lines.push(
    '| process | CPU s connect (% core) | CPU s idle (% core) | CPU s paced (% core) | CPU s burst (% core) | RSS peak MB | RSS end MB |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...r.procs.map((p) => `| ${p.name} | ${cpuCell(p, 'connect')} | ${cpuCell(p, 'idle')} | ${cpuCell(p, 'paced')} | ${cpuCell(p, 'burst')} | ${p.rssPeakMb} | ${p.rssEndMb} |`),
    '',
  );
  if (r.federationWarnings > 0) lines.push(`federation log lines at warn or above: ${r.federationWarnings}; most frequent: ${r.topWarnings.map((w) => `${w.count} × ${w.what}`).join('; ')}`, '');
  for (const m of r.memory) lines.push(...memTable(m.proc, m.phases));
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions();
  const watchdog = setTimeout(() => {
    log(`still running after ${WATCHDOG_MS / 60_000} minutes; giving up`);
    process.exit(1); // the exit hooks SIGKILL every child
  }, WATCHDOG_MS);
  watchdog.unref();
  const loadBefore = os.loadavg()[0] ?? 0;
  const profileDir = opts.profile ? mkdtempSync(path.join(os.tmpdir(), 'kedge-bench-push-prof-')) : undefined;
  const configs: (0 | 1 | 2)[] = [...(opts.floor ? [0 as const] : []), ...opts.replicas.map((r) => r as 1 | 2)];
  const reports: ConfigReport[] = [];
  for (const c of configs) reports.push(await runConfig(opts, c, c === 0 ? undefined : profileDir));

  for (const p of profilesFound) {
    const report = reports.find((r) => r.name === p.config);
    for (const phase of ['connect', 'paced'] as const) {
      const w = p.windows[phase];
      if (report && w) report.profiles.push({ proc: p.proc, phase, summary: summariseProfile(p.file, REPO_ROOT, { top: 15, inclusiveOf: INCLUSIVE, window: w }) });
    }
  }

  const l = opts.layout;
  const federations = reports.flatMap((r) => r.procs.filter((p) => p.name.startsWith('federation')).map((p) => ({ config: r.name, ...p })));
  const measuredConfigs = reports.filter((r) => !r.name.startsWith('floor'));
  const result = {
    bench: 'federation-push',
    node: process.version,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    loadAvg1m: { before: round(loadBefore, 2), after: round(os.loadavg()[0] ?? 0, 2) },
    layout: l,
    endpoints: l.agents * l.servesPerAgent,
    changes: opts.changes,
    intervalMs: opts.intervalMs,
    burst: opts.burst,
    pushDebounce: opts.debounce ?? 'default (100ms)',
    connectRate: opts.connectRate === 0 ? 'all at once' : `${opts.connectRate} agents/s`,
    profiled: opts.profile,
    configs: reports.map(({ profiles: _p, memory: _m, ...r }) => r),
    targets: { p99Ms: TARGET_P99_MS, rssMb: TARGET_RSS_MB },
    meetsTargets:
      measuredConfigs.length > 0 &&
      measuredConfigs.every((r) => r.paced !== undefined && r.paced.missed === 0 && r.paced.p99Ms < TARGET_P99_MS) &&
      federations.every((f) => f.rssPeakMb < TARGET_RSS_MB),
  };
  const out = [
    `## federation-push (${result.node}, ${result.cpu}, ${result.cores} cores)`,
    '',
    `${l.agents} agents, ${l.services} services, ${result.endpoints} endpoints, ${l.subscriptionsPerAgent} subscriptions per agent; ` +
      `agents connect ${result.connectRate}; ${opts.changes} paced changes every ${opts.intervalMs} ms, then a burst of ${opts.burst}; push debounce ${result.pushDebounce}` +
      `${opts.profile ? '; federations under --cpu-prof (slower)' : ''}.`,
    'Latency: HealthReport written by one agent -> the last of the service\'s subscribers received an update showing the endpoint UNHEALTHY (simulator clock).',
    '',
    ...reports.map((r) => configTable(opts, r)),
  ];
  for (const r of reports) {
    for (const p of r.profiles) {
      const found = profilesFound.find((f) => f.config === r.name && f.proc === p.proc);
      const at = (us: number) => round((us - p.summary.startUs) / 1e6, 1);
      const windows = PHASES.flatMap((ph) => {
        const w = found?.windows[ph];
        return w ? [`${ph} ${at(w.fromUs)}–${at(w.toUs)}`] : [];
      });
      out.push(
        `#### CPU profile: ${r.name}, ${p.proc}, ${p.phase} phase (${p.summary.seconds} s, ${p.summary.busySamples} busy samples, ${p.summary.idleSamples} idle)`,
        '',
        `Profile ${found?.file ?? '?'}; phases in seconds after its start: ${windows.join(', ')}.`,
        '',
        '| self time: function | % busy |',
        '|---|---:|',
        ...p.summary.functions.map((f) => `| ${f.name} | ${f.pct} |`),
        '',
        '| self time: file | % busy |',
        '|---|---:|',
        ...p.summary.files.slice(0, 10).map((f) => `| ${f.name} | ${f.pct} |`),
        '',
        '| inclusive: function | % busy |',
        '|---|---:|',
        ...p.summary.inclusive.filter((f) => f.samples > 0).map((f) => `| ${f.name} | ${f.pct} |`),
        '',
      );
    }
  }
  out.push(
    `target: p99 < ${TARGET_P99_MS} ms and federation RSS < ${TARGET_RSS_MB} MB: ${result.meetsTargets ? 'met' : 'NOT met'}; ` +
      `load average (1 min) ${result.loadAvg1m.before} before, ${result.loadAvg1m.after} after`,
    '',
    JSON.stringify(result),
    '',
  );
  if (profileDir) out.push(`CPU profiles kept in ${profileDir}`, '');
  process.stdout.write(out.join('\n'));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`federation-push bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);

/** The `n` most frequent kinds over several counters. */
function topKinds(counters: Map<string, number>[], n: number): { what: string; count: number }[] {
  const all = new Map<string, number>();
  for (const c of counters) for (const [k, v] of c) all.set(k, (all.get(k) ?? 0) + v);
  return [...all].sort((a, b) => b[1] - a[1]).slice(0, n).map(([what, count]) => ({ what, count }));
}
