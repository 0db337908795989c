// Starts a real etcd (Debian `etcd-server`, /usr/bin/etcd) for tests, on
// loopback ports nobody else holds, with a temporary data dir. There is no
// skip: a missing binary fails the test with what to install, because CI
// installs etcd-server and a silently skipped store test proves nothing.
// Every etcd started here is SIGKILLed when the test process exits, also when
// a test fails before its cleanup ran.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A running (or stopped, restartable) etcd for one test file. */
export interface EtcdServer {
  /** `127.0.0.1:<client port>`, as openEtcdStore takes it. */
  readonly endpoint: string;
  readonly dataDir: string;
  /** True while the process runs. */
  readonly running: boolean;
  /** Stops the process (SIGTERM by default; SIGKILL after 5 s) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Stops it if running, then starts it again on the same data dir and ports and waits until healthy. */
  restart(): Promise<void>;
  /** SIGKILLs the process and waits for it to exit. */
  kill9(): Promise<void>;
  /** SIGSTOPs the process: connections stay open but nothing answers (a hung etcd). */
  pause(): void;
  /** SIGCONTs a paused process. */
  resume(): void;
  /** Stops the process and removes the data dir if startEtcd created it. */
  destroy(): Promise<void>;
}

/** Options for startEtcd. */
export interface StartEtcdOptions {
  /** Data dir to use (kept on destroy); default: a fresh temporary dir (removed on destroy and at exit). */
  dataDir?: string;
  /** Extra etcd flags, e.g. ['--quota-backend-bytes=…']. */
  args?: string[];
  /** How long to wait for /health (default 15 s). */
  readyTimeoutMs?: number;
  /**
   * Serve clients over TLS with this certificate (its SANs must name
   * 127.0.0.1), and with `clientCertAuth` require client certificates signed
   * by `caFile`. /health is then read from a plain metrics listener.
   */
  tls?: { certFile: string; keyFile: string; caFile: string; clientCertAuth?: boolean };
}

const DEFAULT_BIN = '/usr/bin/etcd';
const STDERR_KEEP = 40; // lines of etcd output kept for failure messages

const running = new Set<ChildProcess>();
const tempDirs = new Set<string>();
function killAll(): void {
  for (const child of running) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}
process.on('exit', killAll);
// 'exit' does not run when a signal ends the process (a cancelled CI job, the
// test runner's timeout): clean up, then let the signal do what it would have.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    killAll();
    process.kill(process.pid, sig);
  });
}

/** The etcd binary: $KEDGE_TEST_ETCD or /usr/bin/etcd; throws with what to install when it is missing. */
export function etcdBinary(): string {
  const bin = process.env.KEDGE_TEST_ETCD ?? DEFAULT_BIN;
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(`etcd is not installed: ${bin} is missing or not executable. The etcd store tests need a real etcd 3.4+: install it with "apt-get install etcd-server" (CI does), or point KEDGE_TEST_ETCD at an etcd binary.`);
  }
  return bin;
}

/** A port the kernel reports free right now (bind port 0, read it, close). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port from listen(0)'))));
    });
  });
}

function healthy(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path: '/health', timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        try {
          resolve(res.statusCode === 200 && (JSON.parse(body) as { health?: string }).health === 'true');
        } catch {
          resolve(false);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

class EtcdProcess implements EtcdServer {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private output: string[] = [];

  constructor(
    private readonly bin: string,
    readonly dataDir: string,
    private readonly ownsDir: boolean,
    private readonly clientPort: number,
    private readonly peerPort: number,
    private readonly extraArgs: string[],
    private readonly readyTimeoutMs: number,
    private readonly tls: StartEtcdOptions['tls'],
    private readonly metricsPort: number,
    /** Member name and the whole cluster's `name=peerURL,...` (default: one member named default). */
    private readonly member: { name: string; initialCluster: string; token?: string } | undefined = undefined,
  ) {}

  get endpoint(): string {
    return `127.0.0.1:${this.clientPort}`;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  /** Starts the process and waits for /health; rejects (process killed) when it exits or stays unhealthy. */
  async start(): Promise<void> {
    if (this.child) throw new Error(`etcd on ${this.endpoint} is already running`);
    const client = `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.clientPort}`;
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const member = this.member ?? { name: 'default', initialCluster: `default=${peer}` };
    const args = [
      `--name=${member.name}`, `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${client}`, `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`, `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=${member.initialCluster}`,
      ...(member.token ? [`--initial-cluster-token=${member.token}`] : []),
      '--logger=zap', '--log-outputs=stderr', '--log-level=warn',
      ...(this.tls
        ? [
          `--cert-file=${this.tls.certFile}`, `--key-file=${this.tls.keyFile}`, `--trusted-ca-file=${this.tls.caFile}`,
          ...(this.tls.clientCertAuth ? ['--client-cert-auth'] : []),
          `--listen-metrics-urls=http://127.0.0.1:${this.metricsPort}`,
        ]
        : []),
      ...this.extraArgs,
    ];
    this.output = [];
    const child = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    running.add(child);
    let exitInfo: string | undefined;
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
      exitInfo = `code ${code}, signal ${signal}`;
      running.delete(child);
      if (this.child === child) this.child = undefined;
      resolve();
    }));
    child.on('error', (err) => this.output.push(`spawn error: ${err.message}`));
    for (const s of [child.stdout!, child.stderr!]) {
      let buf = '';
      s.setEncoding('utf8').on('data', (chunk: string) => {
        buf += chunk;
        const lines = buf.split('\n');
        buf = lines.pop()!;
        this.output.push(...lines);
        if (this.output.length > STDERR_KEEP) this.output.splice(0, this.output.length - STDERR_KEEP);
        if (process.env.KEDGE_TEST_VERBOSE) for (const l of lines) process.stderr.write(`[etcd ${this.clientPort}] ${l}\n`);
      });
    }
    const deadline = Date.now() + this.readyTimeoutMs;
    while (!(await healthy(this.tls ? this.metricsPort : this.clientPort))) {
      if (exitInfo !== undefined) throw new Error(`etcd on ${this.endpoint} exited during start-up (${exitInfo}):\n${this.output.join('\n')}`);
      if (Date.now() > deadline) {
        await this.kill9();
        throw new Error(`etcd on ${this.endpoint} was not healthy after ${this.readyTimeoutMs} ms:\n${this.output.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** True when the last start failed because a port was taken (a race with another process). */
  portCollision(): boolean {
    return this.output.some((l) => l.includes('address already in use'));
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill(signal);
    if (signal !== 'SIGKILL') child.kill('SIGCONT'); // a paused etcd handles SIGTERM only once resumed
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  kill9(): Promise<void> {
    return this.stop('SIGKILL');
  }

  pause(): void {
    if (!this.child) throw new Error(`etcd on ${this.endpoint} is not running`);
    this.child.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  async destroy(): Promise<void> {
    await this.stop();
    if (this.ownsDir) {
      rmSync(this.dataDir, { recursive: true, force: true });
      tempDirs.delete(this.dataDir);
    }
  }
}

/**
 * Starts a single-member etcd on two free loopback ports and resolves once
 * /health says so. Retries with new ports when another process took one
 * between choosing and binding it.
 */
export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdServer> {
  const bin = etcdBinary();
  const ownsDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'kedge-etcd-'));
  if (ownsDir) tempDirs.add(dataDir);
  for (let attempt = 1; ; attempt++) {
    const clientPort = await freePort();
    let peerPort = await freePort();
    while (peerPort === clientPort) peerPort = await freePort();
    let metricsPort = opts.tls ? await freePort() : 0;
    while (opts.tls && (metricsPort === clientPort || metricsPort === peerPort)) metricsPort = await freePort();
    const etcd = new EtcdProcess(bin, dataDir, ownsDir, clientPort, peerPort, opts.args ?? [], opts.readyTimeoutMs ?? 15_000, opts.tls, metricsPort);
    try {
      await etcd.start();
      return etcd;
    } catch (err) {
      await etcd.kill9();
      if (!etcd.portCollision() || attempt >= 5) throw err;
      if (ownsDir) {
        // A half-initialised member would remember the old peer URL.
        rmSync(dataDir, { recursive: true, force: true });
        mkdirSync(dataDir, { mode: 0o700 });
      }
    }
  }
}

/** A cluster of etcd members on loopback; each member can be killed and restarted on its data dir. */
export interface EtcdCluster {
  readonly members: EtcdServer[];
  /** Every member's client endpoint, comma-separated, as `--store etcd://…` takes them. */
  readonly endpoints: string;
  destroy(): Promise<void>;
}

/**
 * Starts an etcd cluster of `size` members (default 3), each with its own
 * temporary data dir, and resolves once every member reports healthy
 * (/health answers true only when the cluster has a leader).
 */
export async function startEtcdCluster(size = 3, opts: { readyTimeoutMs?: number } = {}): Promise<EtcdCluster> {
  const bin = etcdBinary();
  const used = new Set<number>();
  const port = async () => {
    let p = await freePort();
    while (used.has(p)) p = await freePort();
    used.add(p);
    return p;
  };
  const specs: { name: string; client: number; peer: number; dir: string }[] = [];
  for (let i = 0; i < size; i++) {
    const dir = mkdtempSync(join(tmpdir(), `kedge-etcd${i + 1}-`));
    tempDirs.add(dir);
    specs.push({ name: `m${i + 1}`, client: await port(), peer: await port(), dir });
  }
  const initialCluster = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peer}`).join(',');
  const token = `kedge-test-${process.pid}-${specs[0]!.peer}`;
  const members = specs.map((s) => new EtcdProcess(bin, s.dir, true, s.client, s.peer, [], opts.readyTimeoutMs ?? 30_000, undefined, 0, { name: s.name, initialCluster, token }));
  // Members start together: none is healthy before a quorum has elected a leader.
  try {
    await Promise.all(members.map((m) => m.start()));
  } catch (err) {
    await Promise.all(members.map((m) => m.destroy()));
    throw err;
  }
  return {
    members,
    endpoints: members.map((m) => m.endpoint).join(','),
    destroy: async () => {
      await Promise.all(members.map((m) => m.destroy()));
    },
  };
}
