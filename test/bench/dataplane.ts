// The data-plane benchmark: load generator (wrk) -> client proxy
// 127.0.0.1:19080 -> mTLS (TLS 1.3) -> server proxy 127.0.0.3:15006 -> app
// (nginx, 1 KiB body, keep-alive) 127.0.0.1:18080, the same topology for
// every case: direct (wrk straight to the app), Kedge L4 (a `tcp` port)
// and L7 (an `http` port), HAProxy and nginx pairs in L4 and L7 with the
// shared configurations (../shared/perf-anchors, or PERF_ANCHORS). Each
// proxy runs as its own process so its CPU and RSS are read from one PID.
// Cases run in interleaved rounds in one run; compare ratios within a run.
//
// Usage: npm run build && node dist/test/bench/dataplane.js [--rounds 3] [--seconds 5] [--connections 50] [--cases direct,kedge-l4,...]
// Needs: wrk, haproxy, nginx, libnginx-mod-stream, openssl (apt-get).
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
};
const ROUNDS = Number(arg('rounds', '3'));
const SECONDS = Number(arg('seconds', '5'));
const CONNECTIONS = Number(arg('connections', '50'));
// `-native`: the same Kedge pair on the native forwarding core (agent/native, ProxyOptions.core).
const ALL = ['direct', 'kedge-l4', 'kedge-l4-native', 'kedge-l7', 'kedge-l7-native', 'haproxy-l4', 'haproxy-l7', 'nginx-l4', 'nginx-l7'];
const CASES = arg('cases', ALL.join(',')).split(',');
// --perf DIR: `perf record -g` on each pair's processes during the measured
// run (Kedge proxies then run with --perf-basic-prof so JavaScript frames
// have names); summarise with `perf report -i DIR/<case>-<round>.data`.
const PERF_DIR = arg('perf', '');
const REPO = path.resolve(__dirname, '..', '..', '..');
const ANCHORS = process.env.PERF_ANCHORS ?? path.resolve(REPO, '..', 'shared', 'perf-anchors');
const CLK_TCK = 100;
const PAGE = 4096;

const run = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-dataplane-'));
const certs = path.join(run, 'certs');
const children: ChildProcess[] = [];

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function config(file: string): string {
  const text = fs.readFileSync(path.join(ANCHORS, file), 'utf8').replaceAll('@CERTS@', certs).replaceAll('@RUN@', run);
  const out = path.join(run, path.basename(file));
  fs.writeFileSync(out, text);
  return out;
}

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  c.stderr!.on('data', (d: Buffer) => (err += String(d)));
  c.once('exit', (code) => {
    if (code !== 0 && code !== null) console.error(`${cmd} exited ${code}: ${err.slice(0, 400)}`);
  });
  children.push(c);
  return c;
}

async function waitPort(port: number, host = '127.0.0.1'): Promise<void> {
  const net = await import('node:net');
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host, port }, () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on ${host}:${port}`);
}

/** utime+stime ticks and RSS bytes of a PID. */
function usage(pid: number): { ticks: number; rss: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ticks: Number(f[11]) + Number(f[12]), rss: Number(f[21]) * PAGE };
}

// A Kedge proxy in its own process, from the compiled tree, with the shared certificates.
const KEDGE_CHILD = `
const fs = require('fs');
const { Proxy } = require(process.env.PROXY_JS);
const pino = require(require.resolve('pino', { paths: [process.env.REPO] }));
const d = process.env.CERTS;
const side = process.env.SIDE;
const proto = process.env.PROTO;
const leaf = side === 'client' ? 'client' : 'server';
const identity = { spiffeId: 'spiffe://cluster.local/ns/default/sa/' + leaf, certChainPem: fs.readFileSync(d + '/' + leaf + '.crt', 'utf8'), keyPem: fs.readFileSync(d + '/' + leaf + '.key', 'utf8'), trustBundlePem: fs.readFileSync(d + '/ca.crt', 'utf8'), serial: '', notAfter: new Date(Date.now() + 86400e3) };
const HOST = 'server.default.svc.cluster.local';
const logger = pino({ level: 'warn' });
const core = process.env.CORE;
const p = side === 'client'
  ? new Proxy({ inboundListen: { host: '127.0.0.1', port: 0 }, targets: [], upstreams: [{ service: 'server.default', port: 80, listen: { host: '127.0.0.1', port: 19080 } }], identity, logger, core })
  : new Proxy({ inboundListen: { host: '127.0.0.3', port: 15006 }, targets: [{ hostname: HOST, servicePort: 80, host: '127.0.0.1', targetPort: 18080 }], upstreams: [], identity, logger, core });
p.setSnapshot({ version: '1', services: new Map([['server.default', { key: 'server.default', hostname: HOST, vip: '', ports: [{ name: 'web', port: 80, protocol: proto }], endpoints: [{ address: '127.0.0.3', mtlsPort: 15006, identity: 'spiffe://cluster.local/ns/default/sa/server', workload: 'server', healthy: true, ports: [] }], version: '1' }]]) });
p.start().catch((e) => { console.error(e); process.exit(1); });
`;

interface Pair {
  pids: number[];
  stop: () => Promise<void>;
}

async function startPair(name: string): Promise<Pair> {
  const procs: ChildProcess[] = [];
  const [kind, layer, variant] = name.split('-') as [string, string, string | undefined];
  if (kind === 'direct') return { pids: [], stop: async () => undefined };
  if (kind === 'kedge') {
    const env = { ...process.env, PROXY_JS: path.join(REPO, 'dist', 'agent', 'proxy', 'proxy.js'), REPO, CERTS: certs, PROTO: layer === 'l7' ? 'http' : 'tcp', CORE: variant === 'native' ? 'native' : 'typescript' };
    const flags = PERF_DIR ? ['--perf-basic-prof'] : [];
    procs.push(start(process.execPath, [...flags, '-e', KEDGE_CHILD], { ...env, SIDE: 'server' }));
    procs.push(start(process.execPath, [...flags, '-e', KEDGE_CHILD], { ...env, SIDE: 'client' }));
  } else if (kind === 'haproxy') {
    procs.push(start('haproxy', ['-db', '-f', config(`haproxy/${layer}-server.cfg`)]));
    procs.push(start('haproxy', ['-db', '-f', config(`haproxy/${layer}-client.cfg`)]));
  } else {
    procs.push(start('nginx', ['-c', config(`nginx/${layer}-server.conf`)]));
    procs.push(start('nginx', ['-c', config(`nginx/${layer}-client.conf`)]));
  }
  await waitPort(15006, '127.0.0.3');
  await waitPort(19080);
  return {
    pids: procs.map((p) => p.pid!),
    stop: async () => {
      for (const p of procs) p.kill('SIGTERM');
      await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null ? r(undefined) : p.once('exit', r)))));
    },
  };
}

interface Result {
  rps: number;
  p50: number;
  p99: number;
  /** vCPU per 1,000 rps, per proxy (mean of the pair). */
  cpuPerK: number;
  /** RSS per proxy after the run, MB (mean). */
  rssMb: number;
  errors: number;
}

function ms(v: string, unit: string): number {
  const n = Number(v);
  return unit === 'us' ? n / 1000 : unit === 's' ? n * 1000 : n;
}

async function measure(name: string, round: number): Promise<Result> {
  const pair = await startPair(name);
  const port = name === 'direct' ? 18080 : 19080;
  try {
    // Warm up: connections, JIT, TLS sessions.
    spawnSync('wrk', ['-t1', `-c${CONNECTIONS}`, '-d1s', `http://127.0.0.1:${port}/`]);
    const perf = PERF_DIR && pair.pids.length > 0 ? spawn('perf', ['record', '-g', '-q', '-o', path.join(PERF_DIR, `${name}-${round}.data`), '-p', pair.pids.join(','), '--', 'sleep', String(SECONDS)], { stdio: 'ignore' }) : undefined;
    const before = pair.pids.map(usage);
    const t0 = performance.now();
    const out = sh('wrk', ['-t1', `-c${CONNECTIONS}`, `-d${SECONDS}s`, '--latency', `http://127.0.0.1:${port}/`]);
    const wall = (performance.now() - t0) / 1000;
    const after = pair.pids.map(usage);
    if (perf) await new Promise((r) => (perf.exitCode !== null ? r(undefined) : perf.once('exit', r)));
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
    const lat = (p: string): number => {
      const m = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
      return m ? ms(m[1]!, m[2]!) : NaN;
    };
    const errs = /Non-2xx or 3xx responses: (\d+)/.exec(out);
    const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    const errors = Number(errs?.[1] ?? 0) + (sock ? Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]) : 0);
    const cpu = pair.pids.map((_, i) => (after[i]!.ticks - before[i]!.ticks) / CLK_TCK / wall);
    const cpuPerK = cpu.length === 0 ? 0 : cpu.reduce((a, b) => a + b, 0) / cpu.length / (rps / 1000);
    const rssMb = after.length === 0 ? 0 : after.reduce((a, b) => a + b.rss, 0) / after.length / 1e6;
    return { rps, p50: lat('50'), p99: lat('99'), cpuPerK, rssMb, errors };
  } finally {
    await pair.stop();
  }
}

async function main(): Promise<void> {
  for (const tool of ['wrk', 'haproxy', 'nginx', 'openssl']) {
    if (spawnSync('which', [tool]).status !== 0) throw new Error(`${tool} is missing: apt-get install -y wrk haproxy nginx libnginx-mod-stream openssl`);
  }
  fs.copyFileSync(path.join(ANCHORS, 'gen-certs.sh'), path.join(run, 'gen-certs.sh'));
  sh('bash', [path.join(run, 'gen-certs.sh')]);
  fs.mkdirSync(path.join(run, 'ngx-app-tmp'), { recursive: true });
  start('nginx', ['-c', config('nginx/app.conf')]);
  await waitPort(18080);
  const results = new Map<string, Result[]>();
  console.log(`# dataplane: ${ROUNDS} interleaved rounds x ${SECONDS}s, wrk -t1 -c${CONNECTIONS}, ${os.cpus().length} vCPU, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const name of CASES) {
      const r = await measure(name, round);
      if (!results.has(name)) results.set(name, []);
      results.get(name)!.push(r);
      console.log(`round ${round} ${name.padEnd(11)} ${r.rps.toFixed(0).padStart(7)} rps  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  ${r.cpuPerK.toFixed(3)} vCPU/krps/proxy  ${r.rssMb.toFixed(0)} MB/proxy  errors ${r.errors}`);
    }
  }
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const haL7 = med(results.get('haproxy-l7')?.map((r) => r.rps) ?? [NaN]);
  const haL4 = med(results.get('haproxy-l4')?.map((r) => r.rps) ?? [NaN]);
  console.log('\n| case | max rps (median) | p50 ms | p99 ms | vCPU per 1k rps per proxy | RSS MB per proxy | vs HAProxy same layer |');
  console.log('|---|---|---|---|---|---|---|');
  for (const [name, rs] of results) {
    const rps = med(rs.map((r) => r.rps));
    const base = name.includes('-l7') ? haL7 : name.includes('-l4') ? haL4 : NaN;
    console.log(`| ${name} | ${rps.toFixed(0)} | ${med(rs.map((r) => r.p50)).toFixed(2)} | ${med(rs.map((r) => r.p99)).toFixed(2)} | ${name === 'direct' ? '-' : med(rs.map((r) => r.cpuPerK)).toFixed(3)} | ${name === 'direct' ? '-' : med(rs.map((r) => r.rssMb)).toFixed(0)} | ${Number.isNaN(base) ? '-' : `${(rps / base).toFixed(2)}x`} |`);
  }
  console.log(`\nload average after: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    fs.rmSync(run, { recursive: true, force: true });
  });
