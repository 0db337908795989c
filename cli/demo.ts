// `kedge demo`: a working local mesh on loopback. Starts a federation and
// three agents as child processes, with small demo apps, prints what to curl
// and runs until interrupted.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { spawn, ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { KedgeError } from '../proto/model/errors';
import { parseFlags } from './args';
import { apiRequest } from './admin-client';

const USAGE = 'kedge demo [--base-dir DIR] [--grpc-port 15012] [--http-port 15014]';

interface DemoAgent {
  name: string;
  namespace: string;
  serviceAccount: string;
  address: string;
  app?: { service: string; port: number; appPort: number; version: string };
  upstreams?: { service: string; port: number; listen: string }[];
}

const AGENTS: DemoAgent[] = [
  { name: 'reviews-v1', namespace: 'default', serviceAccount: 'reviews', address: '127.0.0.11', app: { service: 'reviews', port: 9080, appPort: 18081, version: 'v1' } },
  { name: 'reviews-v2', namespace: 'default', serviceAccount: 'reviews', address: '127.0.0.12', app: { service: 'reviews', port: 9080, appPort: 18082, version: 'v2' } },
  {
    name: 'productpage', namespace: 'shop', serviceAccount: 'productpage', address: '127.0.0.13',
    app: { service: 'productpage', port: 9080, appPort: 18083, version: 'v1' },
    upstreams: [{ service: 'reviews.default', port: 9080, listen: '127.0.0.1:19080' }],
  },
];

/** Runs the demo until SIGINT/SIGTERM; returns the exit code. */
export async function runDemo(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { 'base-dir': { type: 'string', default: '.demo' }, 'grpc-port': { type: 'string', default: '15012' }, 'http-port': { type: 'string', default: '15014' } }, USAGE);
  const base = path.resolve(values['base-dir']);
  // A second demo must not wipe the directory of one that is running.
  const pidFile = path.join(base, 'demo.pid');
  const running = runningDemo(pidFile);
  if (running !== undefined) {
    throw new KedgeError('KEDGE_DEMO_RUNNING', `a demo is already running from ${base} (pid ${running}); stop it with Ctrl-C, or pass --base-dir DIR --grpc-port P --http-port P for a second one`);
  }
  fs.rmSync(base, { recursive: true, force: true });
  fs.mkdirSync(base, { recursive: true });
  fs.writeFileSync(pidFile, `${process.pid}\n`);
  const kedge = path.resolve(__dirname, '..', 'bin', 'kedge.js');
  const children: ChildProcess[] = [];
  const servers: http.Server[] = [];
  const start = (name: string, args: string[]) => {
    const log = fs.openSync(path.join(base, `${name}.log`), 'a');
    const child = spawn(process.execPath, [kedge, ...args], { stdio: ['ignore', log, log] });
    children.push(child);
    child.on('exit', (code, signal) => {
      if (!stopping) process.stderr.write(`demo: ${name} exited (${signal ?? code}); see ${path.join(base, `${name}.log`)}\n`);
    });
    return child;
  };
  let stopping = false;
  const stop = async () => {
    stopping = true;
    for (const c of children.reverse()) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
    for (const s of servers) s.close();
  };

  try {
    const fedDir = path.join(base, 'federation');
    const httpUrl = `https://127.0.0.1:${values['http-port']}`;
    start('federation', ['federation', '--data-dir', fedDir, '--listen-grpc', `127.0.0.1:${values['grpc-port']}`, '--listen-http', `127.0.0.1:${values['http-port']}`]);
    const adminToken = await waitFor(() => fs.readFileSync(path.join(fedDir, 'admin-token'), 'utf8').trim(), 'the federation to start (see .demo/federation.log)');
    const target = { baseUrl: httpUrl, token: adminToken, ca: fs.readFileSync(path.join(fedDir, 'root-cert.pem'), 'utf8') };
    await waitFor(async () => (await apiRequest<{ status: string }>(target, 'GET', '/readyz').catch(() => undefined))?.status === 'ready' || undefined, 'the federation to be ready');

    for (const a of AGENTS) {
      if (a.app) servers.push(await demoApp(a.name, a.app.appPort, a.app.version));
      const dir = path.join(base, a.name);
      fs.mkdirSync(dir, { recursive: true });
      // The token grants exactly what the agent registers: its name, its service and its labels.
      const labels = { app: a.app?.service ?? a.name, version: a.app?.version ?? 'v1' };
      const { token } = await apiRequest<{ token: string }>(target, 'POST', '/api/v1/tokens', {
        namespace: a.namespace, serviceAccount: a.serviceAccount, ttl: '10m', uses: 1,
        workload: a.name, services: a.app ? [a.app.service] : [], labels,
      });
      fs.writeFileSync(path.join(dir, 'token'), token, { mode: 0o600 });
      const config = {
        federation: { address: `127.0.0.1:${values['grpc-port']}`, rootCert: path.join(fedDir, 'root-cert.pem'), tokenFile: path.join(dir, 'token') },
        workload: { name: a.name, namespace: a.namespace, serviceAccount: a.serviceAccount, address: a.address, locality: 'local/zone-a', network: 'demo', labels },
        services: a.app ? [{ name: a.app.service, ports: [{ name: 'http', port: a.app.port, targetPort: a.app.appPort, protocol: 'http' }] }] : [],
        upstreams: a.upstreams ?? [],
        proxy: { inboundListen: `${a.address}:15006` },
        admin: { listen: `${a.address}:15000` },
        dataDir: path.join(dir, 'data'),
      };
      fs.writeFileSync(path.join(dir, 'agent.yaml'), YAML.stringify(config));
      start(a.name, ['agent', '--config', path.join(dir, 'agent.yaml')]);
    }
    await waitFor(async () => {
      const eps = await apiRequest<unknown[]>(target, 'GET', '/api/v1/endpoints');
      return eps.length === AGENTS.length || undefined;
    }, 'every agent to register');
    await waitFor(async () => {
      const res = await fetch('http://127.0.0.13:15000/config', { signal: AbortSignal.timeout(2_000) });
      const cfg = (await res.json()) as { services: { endpoints: unknown[] }[] };
      return cfg.services[0]?.endpoints.length === 2 || undefined;
    }, 'productpage to learn reviews endpoints');
  } catch (err) {
    await stop();
    throw err;
  }

  const cli = `node ${shortPath(path.resolve(__dirname, '..', '..', 'bin', 'kedge'))}`;
  const admin = `--federation https://127.0.0.1:${values['http-port']} --admin-token-file ${shortPath(path.join(base, 'federation', 'admin-token'))}`;
  process.stdout.write(`
Kedge demo mesh is up: a federation and three agents on loopback (logs in ${base}).

  curl http://127.0.0.1:19080/        # productpage's upstream: mTLS to reviews v1 and v2, least request
  ${cli} get endpoints ${admin}
  ${cli} get workloads ${admin}
  curl http://127.0.0.13:15000/config  # what productpage's agent holds
  curl http://127.0.0.11:15000/certs   # reviews-v1's SPIFFE identity

Press Ctrl-C to stop.
`);
  return new Promise((resolve) => {
    const onSignal = () => void stop().then(() => resolve(0));
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
}

/** The pid of a live demo that wrote `pidFile`, if any. */
export function runningDemo(pidFile: string): number | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    // EPERM: alive, but another user's.
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}

/** A path relative to the working directory when it lies below it, else absolute. */
function shortPath(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') ? rel : p;
}

function demoApp(name: string, port: number, version: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify({ service: name, version, path: req.url })}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new KedgeError('KEDGE_DEMO', `demo app ${name} cannot listen on 127.0.0.1:${port}: ${err.message}`)));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

async function waitFor<T>(fn: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new KedgeError('KEDGE_DEMO', `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
