// A network-namespace lab for end-to-end tests: hosts are namespaces, a
// network is a Linux bridge inside the lab's own switch namespace with a veth
// to each host, addresses come from the benchmarking ranges 198.18.0.0/15 and
// 2001:2::/48, and nothing routes out of the lab. Every lab has a unique name
// prefix (parallel tests never collide) and is torn down after the test, on
// process exit, on SIGINT/SIGTERM, and, if a run was SIGKILLed, by the next
// lab that finds its namespaces with a dead owner pid.
import { ChildProcess, SpawnOptions, spawn, spawnSync } from 'node:child_process';
import { CommandRunner, systemRunner } from '../../agent/capture/runner';

/** A host of the lab: one network namespace with lo up. */
export interface LabHost {
  readonly name: string;
  readonly ns: string;
  /** Interfaces in attach order. */
  readonly links: LabLink[];
  /** The host's IPv4 address on `network` (default: its first network). */
  ip(network?: string): string;
  /** The host's IPv6 address on `network` (default: its first network). */
  ip6(network?: string): string;
}

/** A host's attachment to a network. */
export interface LabLink {
  network: string;
  iface: string;
  v4: string;
  v6: string;
}

/** A network of the lab: a bridge in the switch namespace and its subnets. */
export interface LabNetwork {
  readonly name: string;
  readonly bridge: string;
  readonly subnet: string;
  readonly subnet6: string;
}

/** How to run a command in a host. */
export interface LabRunOptions {
  input?: string;
  /** Killed and failed after this long (default 15 s). */
  timeoutMs?: number;
  /** Run as this uid (and gid, default the same) via setpriv. */
  uid?: number;
  gid?: number;
  env?: NodeJS.ProcessEnv;
  /** Resolve with a non-zero exit instead of throwing. */
  allowFailure?: boolean;
}

/** What a command run in a host left behind. */
export interface LabRunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Something with node:test's `after`, so the lab tears down with the test or suite. */
export interface AfterHook {
  after(fn: () => unknown): unknown;
}

const NAME_RE = /^[a-z][a-z0-9]{0,11}$/;
const live = new Set<NetLab>();
let counter = 0;
let hooksInstalled = false;

/** A lab of hosts and networks; create with `NetLab.create(t)`. */
export class NetLab {
  readonly prefix: string;
  readonly switchNs: string;
  private readonly hosts = new Map<string, LabHost & { links: LabLink[] }>();
  private readonly networks = new Map<string, LabNetwork & { index: number; ports: number }>();
  private readonly namespaces: string[] = [];
  private readonly procs = new Set<LabProcess>();
  private destroyed = false;

  private constructor() {
    this.prefix = `klab-${process.pid}-${++counter}-`;
    this.switchNs = `${this.prefix}sw`;
  }

  /** Creates an empty lab (fails loudly when not root or iproute2 is missing) and registers teardown with `hook.after`. */
  static async create(hook?: AfterHook): Promise<NetLab> {
    if (process.getuid?.() !== 0) throw new Error('netlab needs root (network namespaces); run the root tests as root');
    const probe = spawnSync('ip', ['-V'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) throw new Error(`netlab needs iproute2's "ip" on PATH: ${probe.error?.message ?? probe.stderr}`);
    installHooks();
    reapStaleLabs();
    const lab = new NetLab();
    live.add(lab);
    hook?.after(() => lab.destroy());
    await lab.addNamespace(lab.switchNs);
    return lab;
  }

  /** Adds a host: a namespace with lo up. */
  async host(name: string): Promise<LabHost> {
    if (!NAME_RE.test(name)) throw new Error(`lab host name "${name}" must match ${NAME_RE}`);
    if (this.hosts.has(name)) throw new Error(`lab host "${name}" exists`);
    const ns = `${this.prefix}${name}`;
    await this.addNamespace(ns);
    const links: LabLink[] = [];
    const pick = (net: string | undefined, f: (l: LabLink) => string) => {
      const l = net === undefined ? links[0] : links.find((x) => x.network === net);
      if (!l) throw new Error(`lab host "${name}" is not on network ${net ?? '(any)'}`);
      return f(l);
    };
    const h = { name, ns, links, ip: (n?: string) => pick(n, (l) => l.v4), ip6: (n?: string) => pick(n, (l) => l.v6) };
    this.hosts.set(name, h);
    return h;
  }

  /** Adds a network joining `hosts`: network N is 198.18.N.0/24 and 2001:2:0:N::/64, host i of it gets .(i+1). */
  async network(name: string, hosts: readonly LabHost[]): Promise<LabNetwork> {
    if (!NAME_RE.test(name)) throw new Error(`lab network name "${name}" must match ${NAME_RE}`);
    if (this.networks.has(name)) throw new Error(`lab network "${name}" exists`);
    const index = this.networks.size;
    if (index > 255) throw new Error('a lab has at most 256 networks');
    const net = { name, bridge: `br${index}`, subnet: `198.18.${index}.0/24`, subnet6: `${canonical6(`2001:2:0:${index.toString(16)}::`)}/64`, index, ports: 0 };
    this.networks.set(name, net);
    await this.ip(this.switchNs, ['link', 'add', net.bridge, 'type', 'bridge']);
    await this.ip(this.switchNs, ['link', 'set', net.bridge, 'up']);
    for (const h of hosts) await this.attach(h, net);
    return net;
  }

  /** Adds a route in `host` to `dst` via the gateway address `via`. */
  async route(host: LabHost, dst: string, via: string): Promise<void> {
    await this.ip(host.ns, [...(dst.includes(':') ? ['-6'] : []), 'route', 'add', dst, 'via', via]);
  }

  /** Lets `host` forward packets between its networks (a router). */
  async forwarding(host: LabHost): Promise<void> {
    await this.run(host, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
  }

  /** Runs a command inside `host` and waits for it; throws on a non-zero exit unless `allowFailure`. */
  run(host: LabHost | string, cmd: string, args: readonly string[] = [], opts: LabRunOptions = {}): Promise<LabRunResult> {
    const p = this.spawn(host, cmd, args, opts);
    const timeoutMs = opts.timeoutMs ?? 15_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        p.kill();
        reject(new Error(`${describe(cmd, args)} in ${nsOf(host)} did not finish within ${timeoutMs} ms; output: ${p.output()}`));
      }, timeoutMs);
      p.child.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      p.child.on('close', (code, signal) => {
        clearTimeout(timer);
        const res = { code: code ?? 128, stdout: p.stdout, stderr: p.stderr };
        if (res.code !== 0 && !opts.allowFailure) {
          reject(new Error(`${describe(cmd, args)} in ${nsOf(host)} exited ${code ?? signal}: ${p.stderr.trim() || p.stdout.trim()}`));
        } else resolve(res);
      });
    });
  }

  /** Starts a long-running command inside `host`; it is killed at teardown. */
  spawn(host: LabHost | string, cmd: string, args: readonly string[] = [], opts: LabRunOptions = {}): LabProcess {
    if (this.destroyed) throw new Error('lab already torn down');
    const asUser = opts.uid === undefined ? [] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.gid ?? opts.uid}`, '--clear-groups', '--'];
    const argv = ['netns', 'exec', nsOf(host), ...asUser, cmd, ...args];
    // detached: its own process group, so teardown kills children too.
    const so: SpawnOptions = { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env };
    const p = new LabProcess(spawn('ip', argv, so), describe(cmd, args));
    this.procs.add(p);
    p.child.on('close', () => this.procs.delete(p));
    p.child.stdin?.on('error', () => undefined);
    p.child.stdin?.end(opts.input ?? '');
    return p;
  }

  /** Runs a Node.js script (`node -e`) inside `host`, with `args` as process.argv[1..]. */
  node(host: LabHost | string, script: string, args: readonly string[] = [], opts: LabRunOptions = {}): LabProcess {
    return this.spawn(host, process.execPath, ['-e', script, '--', ...args], opts);
  }

  /** A CommandRunner that runs inside `host`, for code that takes one (capture). */
  runner(host: LabHost | string): CommandRunner {
    return systemRunner({ prefix: ['ip', 'netns', 'exec', nsOf(host)] });
  }

  /** The namespaces this lab created, switch first. */
  namespaceNames(): string[] {
    return [...this.namespaces];
  }

  /** Kills every process and deletes every namespace of the lab; safe to call twice. */
  async destroy(): Promise<void> {
    this.destroySync();
  }

  /** Synchronous teardown, usable from a process 'exit' handler. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const p of this.procs) p.kill();
    for (const ns of [...this.namespaces].reverse()) killAndDelete(ns);
  }

  private async addNamespace(ns: string): Promise<void> {
    await this.ipRoot(['netns', 'add', ns]);
    this.namespaces.push(ns);
    await this.ip(ns, ['link', 'set', 'lo', 'up']);
  }

  private async attach(h: LabHost & { links: LabLink[] }, net: LabNetwork & { index: number; ports: number }): Promise<void> {
    const hostIndex = [...this.hosts.values()].indexOf(h);
    const sw = `n${net.index}h${hostIndex}`;
    const iface = `eth${h.links.length}`;
    const octet = ++net.ports;
    if (octet > 254) throw new Error(`lab network ${net.name} is full`);
    const v4 = `198.18.${net.index}.${octet}`;
    const v6 = canonical6(`2001:2:0:${net.index.toString(16)}::${octet.toString(16)}`);
    // Both ends are created inside lab namespaces, so names never clash with the real host's.
    await this.ip(this.switchNs, ['link', 'add', sw, 'type', 'veth', 'peer', 'name', iface, 'netns', h.ns]);
    await this.ip(this.switchNs, ['link', 'set', sw, 'master', net.bridge, 'up']);
    await this.ip(h.ns, ['addr', 'add', `${v4}/24`, 'dev', iface]);
    // nodad: the address is usable at once instead of after duplicate detection.
    await this.ip(h.ns, ['-6', 'addr', 'add', `${v6}/64`, 'dev', iface, 'nodad']);
    await this.ip(h.ns, ['link', 'set', iface, 'up']);
    h.links.push({ network: net.name, iface, v4, v6 });
  }

  private async ip(ns: string, args: string[]): Promise<void> {
    await this.ipRoot(['-n', ns, ...args]);
  }

  private ipRoot(args: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`ip ${args.join(' ')} failed (${code}): ${err.trim()}`));
      });
    });
  }
}

/** A process started in a lab host, with its output collected. */
export class LabProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;

  constructor(
    readonly child: ChildProcess,
    readonly label: string,
  ) {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => child.on('close', (code) => resolve(code)));
    child.on('error', () => undefined);
  }

  /** stdout and stderr so far, for failure messages. */
  output(): string {
    return `stdout: ${JSON.stringify(this.stdout)} stderr: ${JSON.stringify(this.stderr)}`;
  }

  /** Resolves with stdout once it matches `re`; rejects after `timeoutMs` or when the process exits first. */
  waitFor(re: RegExp, timeoutMs = 5000): Promise<string> {
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.child.stdout?.off('data', check);
        if (err) reject(err);
        else resolve(this.stdout);
      };
      const check = () => {
        if (re.test(this.stdout)) finish();
      };
      const timer = setTimeout(() => finish(new Error(`${this.label}: no ${re} within ${timeoutMs} ms; ${this.output()}`)), timeoutMs);
      this.child.stdout?.on('data', check);
      void this.exited.then((code) => setImmediate(() => (re.test(this.stdout) ? finish() : finish(new Error(`${this.label} exited ${code} before printing ${re}; ${this.output()}`)))));
      check();
    });
  }

  /** Kills the process and its children (SIGKILL to the group). */
  kill(): void {
    const pid = this.child.pid;
    if (pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

// The text the kernel and Node print for an IPv6 address, so tests compare strings.
function canonical6(a: string): string {
  return new URL(`http://[${a}]/`).hostname.slice(1, -1);
}

function nsOf(host: LabHost | string): string {
  return typeof host === 'string' ? host : host.ns;
}

function describe(cmd: string, args: readonly string[]): string {
  const a = args.join(' ');
  return `"${cmd}${a.length > 80 ? ` ${a.slice(0, 80)}…` : a ? ` ${a}` : ''}"`;
}

// Kills whatever still runs in a namespace, then deletes it.
function killAndDelete(ns: string): void {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5000 }).stdout ?? '';
  for (const pid of pids.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // Exited meanwhile.
    }
  }
  spawnSync('ip', ['netns', 'delete', ns], { timeout: 5000 });
}

// Deletes namespaces left by labs whose process died without tearing down (SIGKILL, OOM).
function reapStaleLabs(): void {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 5000 }).stdout ?? '';
  for (const line of list.split('\n')) {
    const m = /^(klab-(\d+)-\d+-\S+)/.exec(line);
    if (!m || pidAlive(Number(m[2]))) continue;
    killAndDelete(m[1] as string);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const all = () => {
    for (const lab of [...live]) lab.destroySync();
  };
  process.on('exit', all);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      all();
      process.kill(process.pid, sig);
    });
  }
}
