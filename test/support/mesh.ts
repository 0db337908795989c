// Starts a real federation and real agents as processes on loopback, with
// ports chosen by the kernel (port 0) and read back from their logs.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import YAML from 'yaml';
import { KedgeProcess, runKedge, startKedge, tempDir, eventually } from './procs';
import { fedFetch } from './fed-fetch';

export { fedFetch, type FedRequest } from './fed-fetch';

/** A federation process and what tests need to talk to it. */
export interface FederationHandle {
  proc: KedgeProcess;
  dataDir: string;
  grpc: string;
  /** HOST:PORT of the HTTP API port (HTTPS only unless started with --insecure-http). */
  httpAddress: string;
  /** The HTTP API over HTTPS; the CLI verifies it with the root-cert.pem beside adminTokenFile, fedFetch with rootCertFile. */
  httpsUrl: string;
  adminTokenFile: string;
  rootCertFile: string;
  args: string[];
  /** Extra environment of the process (kept across restarts, e.g. a faked clock). */
  env?: NodeJS.ProcessEnv;
}

/** Parses "host:port" into its port. */
export function portOf(hostPort: string): number {
  return Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));
}

/** Starts `kedge federation` on 127.0.0.1 with kernel-chosen ports. */
export async function startFederationProc(opts: { dataDir?: string; args?: string[]; host?: string; env?: NodeJS.ProcessEnv; nofile?: number } = {}): Promise<FederationHandle> {
  const dataDir = opts.dataDir ?? tempDir('fed');
  const host = opts.host ?? '127.0.0.1';
  const args = ['federation', '--data-dir', dataDir, '--listen-grpc', `${host}:0`, '--listen-http', `${host}:0`, ...(opts.args ?? [])];
  const proc = startKedge('federation', args, { env: opts.env, ...(opts.nofile === undefined ? {} : { nofile: opts.nofile }) });
  const ready = await proc.waitForMsg('federation ready', 20_000);
  return { ...federationHandle(proc, dataDir, ready), args, env: opts.env };
}

/** The handle of a federation process whose 'federation ready' line is `ready`. */
export function federationHandle(proc: KedgeProcess, dataDir: string, ready: Record<string, unknown>): FederationHandle {
  return {
    proc,
    dataDir,
    grpc: String(ready.grpc),
    httpAddress: String(ready.http),
    httpsUrl: `https://${String(ready.http)}`,
    adminTokenFile: path.join(dataDir, 'admin-token'),
    rootCertFile: path.join(dataDir, 'root-cert.pem'),
    args: [],
  };
}

/** Writes a federation config file (YAML) in a fresh temporary dir; start it with `startFederationProc({ args: ['--config', file] })`. */
export function writeFederationConfig(doc: Record<string, unknown>): string {
  const file = path.join(tempDir('fed-config'), 'federation.yaml');
  fs.writeFileSync(file, YAML.stringify(doc));
  return file;
}

/** Restarts a stopped federation on the same data dir and ports. */
export async function restartFederationProc(fed: FederationHandle): Promise<FederationHandle> {
  const args = fed.args.map((a) => a);
  args[args.indexOf('--listen-grpc') + 1] = fed.grpc;
  args[args.indexOf('--listen-http') + 1] = fed.httpAddress;
  const proc = startKedge('federation', args, { env: fed.env });
  await proc.waitForMsg('federation ready', 20_000);
  return { ...fed, proc, args };
}

/** Creates a join token through the real CLI. */
export async function createToken(fed: FederationHandle, namespace: string, serviceAccount: string, extra: string[] = []): Promise<string> {
  const r = await runKedge(['token', 'create', '--namespace', namespace, '--service-account', serviceAccount, '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile, ...extra]);
  if (r.code !== 0) throw new Error(`token create failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

/**
 * The token flags granting exactly what `spec` registers: its services, its
 * name, the labels writeAgentConfig sets, and the gateway role when the
 * spec configures one.
 */
export function grantFlags(spec: AgentSpec): string[] {
  const out = ['--workload', spec.name, '--labels', `app=${spec.name}`];
  for (const s of spec.services ?? []) out.push('--service', s.name);
  const gw = (spec.extra as { gateway?: unknown } | undefined)?.gateway;
  // A test's gateway is often its network's first member.
  if (gw !== undefined && spec.network) out.push('--gateway', spec.network, '--new-network');
  return out;
}

/** What an agent in a test serves and uses. */
export interface AgentSpec {
  name: string;
  namespace: string;
  serviceAccount: string;
  address: string;
  services?: { name: string; ports: { name: string; port: number; targetPort?: number; protocol?: string }[] }[];
  upstreams?: { service: string; port: number; listen?: string }[];
  locality?: string;
  network?: string;
  /** Reuse a data dir (restart); default: a fresh one. */
  dataDir?: string;
  /** Token to join with; default: a fresh token for namespace/serviceAccount. */
  token?: string;
  /** Federation addresses tried in order (default: the federation's one). */
  federationAddresses?: string[];
  /** Extra top-level config merged in. */
  extra?: Record<string, unknown>;
}

/** A running agent process. */
export interface AgentHandle {
  proc: KedgeProcess;
  spec: AgentSpec;
  dataDir: string;
  configFile: string;
  inbound: string;
  upstreams: string[];
  adminUrl: string;
  /** The agent's Prometheus endpoint (http://host:port/metrics), '' when it did not start. */
  metricsUrl: string;
}

/** Writes an agent config for `spec` and returns its path. */
export function writeAgentConfig(fed: FederationHandle, spec: AgentSpec, dataDir: string, tokenFile: string): string {
  const config = {
    federation: { address: spec.federationAddresses ?? fed.grpc, rootCert: fed.rootCertFile, tokenFile },
    workload: {
      name: spec.name,
      namespace: spec.namespace,
      serviceAccount: spec.serviceAccount,
      address: spec.address,
      ...(spec.locality ? { locality: spec.locality } : {}),
      ...(spec.network ? { network: spec.network } : {}),
      labels: { app: spec.name },
    },
    services: spec.services ?? [],
    upstreams: (spec.upstreams ?? []).map((u) => ({ service: u.service, port: u.port, listen: u.listen ?? '127.0.0.1:0' })),
    proxy: { inboundListen: `${spec.address}:0` },
    admin: { listen: '127.0.0.1:0', metricsListen: '127.0.0.1:0' },
    dataDir,
    ...(spec.extra ?? {}),
  };
  const file = path.join(dataDir, '..', `${spec.name}.yaml`);
  fs.writeFileSync(file, YAML.stringify(config));
  return file;
}

/** Starts `kedge agent` for `spec` and waits until it registered. */
export async function startAgentProc(fed: FederationHandle, spec: AgentSpec, opts: { waitRegistered?: boolean } = {}): Promise<AgentHandle> {
  const { proc, dataDir, configFile } = await spawnAgentProc(fed, spec);
  const started = await proc.waitForMsg('agent started', 20_000);
  if (opts.waitRegistered ?? true) await proc.waitForMsg('registered with the federation', 20_000);
  return {
    proc,
    spec,
    dataDir,
    configFile,
    inbound: String(started.inbound),
    upstreams: (started.upstreams as string[]) ?? [],
    adminUrl: `http://${String(started.admin)}`,
    metricsUrl: typeof started.metrics === 'string' ? `http://${started.metrics}/metrics` : '',
  };
}

/**
 * Writes an agent's config and token and starts it, without waiting for
 * anything: for tests that watch an agent that cannot join yet.
 */
export async function spawnAgentProc(fed: FederationHandle, spec: AgentSpec): Promise<{ proc: KedgeProcess; dataDir: string; configFile: string }> {
  const root = spec.dataDir ? path.dirname(spec.dataDir) : tempDir(`agent-${spec.name}`);
  const dataDir = spec.dataDir ?? path.join(root, 'data');
  fs.mkdirSync(dataDir, { recursive: true });
  const tokenFile = path.join(root, 'token');
  if (!spec.dataDir || spec.token) fs.writeFileSync(tokenFile, spec.token ?? (await createToken(fed, spec.namespace, spec.serviceAccount, grantFlags(spec))));
  const configFile = writeAgentConfig(fed, spec, dataDir, tokenFile);
  return { proc: startKedge(`agent-${spec.name}`, ['agent', '--config', configFile]), dataDir, configFile };
}

/** GETs JSON from a URL (admin endpoints, the federation API with a token). */
export async function getJson<T>(url: string, token?: string): Promise<T> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** Endpoints of a service as the federation API reports them. */
export async function federationEndpoints(fed: FederationHandle, service: string): Promise<{ address: string; workload: string; identity: string; health: string }[]> {
  const res = await fedFetch(fed, `/api/v1/endpoints/${service}`, { admin: true, signal: AbortSignal.timeout(5_000) });
  if (res.status === 404) return [];
  if (!res.ok) throw new Error(`endpoints ${service}: HTTP ${res.status}`);
  return (await res.json()) as never;
}

/** Waits until the agent's admin /config shows `service` with `count` endpoints. */
export function agentSeesEndpoints(agent: AgentHandle, service: string, count: number, timeoutMs = 10_000): Promise<unknown> {
  return eventually(async () => {
    const cfg = await getJson<{ services: { key: string; endpoints: unknown[] }[] }>(`${agent.adminUrl}/config`);
    return cfg.services.find((s) => s.key === service)?.endpoints.length === count ? cfg : undefined;
  }, timeoutMs, `${agent.spec.name} to see ${count} endpoints of ${service}`);
}

/** A plain HTTP app on 127.0.0.1 that answers with its name. */
export async function startHttpApp(name: string, host = '127.0.0.1', port = 0): Promise<{ port: number; hits: number; server: http.Server; close(): Promise<void> }> {
  const app = { port: 0, hits: 0, server: undefined as unknown as http.Server, close: async () => undefined as void };
  app.server = http.createServer((req, res) => {
    app.hits += 1;
    if (req.url?.startsWith('/stream')) {
      // Long-lived response for "no dropped connection" tests.
      res.writeHead(200, { 'content-type': 'text/plain' });
      const t = setInterval(() => res.write(`${name}\n`), 50);
      req.on('close', () => clearInterval(t));
      return;
    }
    res.end(name);
  });
  await new Promise<void>((resolve, reject) => app.server.once('error', reject).listen(port, host, () => resolve()));
  app.port = (app.server.address() as { port: number }).port;
  app.close = () => new Promise((r) => {
    app.server.close(() => r());
    app.server.closeAllConnections();
  });
  return app;
}

/** One HTTP GET on a new connection (so each request is balanced anew); resolves with the body. */
/** One request with the real curl; resolves with the status and body (status 0 when curl got no response). */
export function curl(url: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-s', '-X', method, '-o', '-', '-w', '\n%{http_code}', '--max-time', '5', url], (err, stdout) => {
      if (err && !stdout) return reject(err);
      const nl = stdout.lastIndexOf('\n');
      resolve({ status: Number(stdout.slice(nl + 1)), body: stdout.slice(0, nl) });
    });
  });
}

export function httpGet(hostPort: string, pathName = '/', timeoutMs = 5_000): Promise<string> {
  const port = Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));
  const host = hostPort.slice(0, hostPort.lastIndexOf(':'));
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: pathName, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve(body)).on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET http://${hostPort}${pathName} timed out`)));
    req.on('error', reject);
  });
}
