// What the fault suite (test/root/faults-*.test.ts) measures: a steady
// stream of HTTP requests whose every outcome is recorded with its time, so a
// test counts exactly which requests failed and when, and a one-line result
// per case that docs/RELIABILITY.md quotes.
import * as http from 'node:http';
import { eventually } from './procs';
import { fedFetch } from './fed-fetch';
import {
  type AgentHandle, type AgentSpec, type FederationHandle, agentSeesEndpoints, startAgentProc, startHttpApp,
} from './mesh';

/** One request's outcome: when it ended, whether it got the expected answer, and what went wrong. */
export interface Outcome {
  at: number;
  ok: boolean;
  detail: string;
}

/** Options for a steady load. */
export interface LoadOptions {
  /** Pause between the end of one request and the start of the next (default 50 ms). */
  intervalMs?: number;
  /** A request not answered by then counts as failed (default 5 s). */
  timeoutMs?: number;
  /** The body that counts as success; default: any 200. */
  expectBody?: string | RegExp;
  /** Requests in flight at once (default 1). */
  concurrency?: number;
}

/**
 * HTTP GETs on new connections (each balanced anew) to `target()` until
 * stopped; `target` is read per request so a restarted listener can move.
 */
export class SteadyLoad {
  readonly outcomes: Outcome[] = [];
  private running = true;
  private readonly loops: Promise<void>[];

  constructor(private readonly target: () => string, private readonly opts: LoadOptions = {}) {
    this.loops = Array.from({ length: opts.concurrency ?? 1 }, () => this.loop());
  }

  get ok(): number {
    return this.outcomes.filter((o) => o.ok).length;
  }

  get failed(): Outcome[] {
    return this.outcomes.filter((o) => !o.ok);
  }

  /** Failures that ended in [from, to). */
  failedBetween(from: number, to = Infinity): Outcome[] {
    return this.failed.filter((o) => o.at >= from && o.at < to);
  }

  /** Waits until `n` more requests than now have succeeded. */
  async moreOk(n: number, timeoutMs = 20_000): Promise<void> {
    const target = this.ok + n;
    await eventually(() => this.ok >= target, timeoutMs, `${n} more successful requests (last failures: ${this.failed.slice(-3).map((f) => f.detail).join('; ')})`, 20);
  }

  /** Stops issuing requests and waits for those in flight. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private async loop(): Promise<void> {
    const interval = this.opts.intervalMs ?? 50;
    while (this.running) {
      const o = await this.once();
      this.outcomes.push(o);
      if (interval > 0) await new Promise((r) => setTimeout(r, interval));
    }
  }

  private once(): Promise<Outcome> {
    const hostPort = this.target();
    const i = hostPort.lastIndexOf(':');
    const expect = this.opts.expectBody;
    return new Promise((resolve) => {
      const done = (ok: boolean, detail: string) => resolve({ at: Date.now(), ok, detail });
      const req = http.get({ host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)), path: '/', agent: false, timeout: this.opts.timeoutMs ?? 5_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('error', (err) => done(false, err.message));
        res.on('end', () => {
          const good = res.statusCode === 200 && (expect === undefined || (typeof expect === 'string' ? body === expect : expect.test(body)));
          done(good, good ? '' : `HTTP ${res.statusCode} ${JSON.stringify(body.slice(0, 120))} ${String(res.headers['x-kedge-response-flags'] ?? '')}`);
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.opts.timeoutMs ?? 5_000} ms`)));
      req.on('error', (err) => done(false, (err as NodeJS.ErrnoException).code ?? err.message));
    });
  }
}

/** What one fault case found, printed as one `# fault` line (docs/RELIABILITY.md quotes them). */
export interface FaultResult {
  fault: string;
  /** What acknowledged state was missing afterwards (an empty list: nothing). */
  lost: string[];
  requests: number;
  failed: number;
  /** From the fault's end (restart, heal, space freed) to the recovery event the case names. */
  recoverMs: number;
  /** What the recovery event was. */
  recoveredWhen: string;
  [extra: string]: unknown;
}

/** Prints the result line for a case. */
export function reportFault(r: FaultResult): void {
  console.log(`# fault ${JSON.stringify(r)}`);
}

/** A service `NAME.default` of `servers` agents (each in front of its own app) and one client agent with an upstream to it. */
export interface MeshPair {
  service: string;
  apps: Awaited<ReturnType<typeof startHttpApp>>[];
  servers: AgentHandle[];
  client: AgentHandle;
  /** The client's upstream listener (host:port). */
  upstream(): string;
  close(): Promise<void>;
}

/**
 * Starts the pair on loopback addresses `${net}.1`, `${net}.2`, … (127/8 is
 * all local) and waits until the client sees every server endpoint.
 */
export async function startMeshPair(fed: FederationHandle, opts: {
  name: string; net: string; servers?: number; clientListen?: string; federationAddresses?: string[]; extraServer?: AgentSpec['extra'];
  app?: (i: number) => Promise<Awaited<ReturnType<typeof startHttpApp>>>;
}): Promise<MeshPair> {
  const n = opts.servers ?? 1;
  const apps: MeshPair['apps'] = [];
  const servers: AgentHandle[] = [];
  const closeAll = async () => {
    await Promise.all([...servers, ...(pair.client ? [pair.client] : [])].map((a) => a.proc.stop('SIGKILL')));
    await Promise.all(apps.map((a) => a.close()));
  };
  const pair = { service: `${opts.name}.default`, apps, servers, client: undefined as unknown as AgentHandle, upstream: () => pair.client.upstreams[0]!, close: closeAll };
  for (let i = 0; i < n; i++) {
    const app = await (opts.app ? opts.app(i) : startHttpApp(opts.name));
    apps.push(app);
    servers.push(await startAgentProc(fed, {
      name: `${opts.name}-${i + 1}`, namespace: 'default', serviceAccount: opts.name, address: `${opts.net}.${i + 1}`,
      services: [{ name: opts.name, ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] }],
      federationAddresses: opts.federationAddresses, extra: opts.extraServer,
    }));
  }
  pair.client = await startAgentProc(fed, {
    name: `${opts.name}-client`, namespace: 'default', serviceAccount: `${opts.name}-client`, address: `${opts.net}.100`,
    upstreams: [{ service: pair.service, port: 9080, ...(opts.clientListen ? { listen: opts.clientListen } : {}) }],
    federationAddresses: opts.federationAddresses,
  });
  await agentSeesEndpoints(pair.client, pair.service, n, 20_000);
  return pair;
}

/** Every durable key the federation holds (its backup), as key -> value. */
export async function durableState(fed: FederationHandle): Promise<Map<string, string>> {
  const res = await fedFetch(fed, '/api/v1/backup', { admin: true });
  if (!res.ok) throw new Error(`backup: HTTP ${res.status} ${await res.text()}`);
  const doc = (await res.json()) as { kvs: { key: string; value: string }[] };
  return new Map(doc.kvs.map((kv) => [kv.key, kv.value]));
}

/** Keys of `before` missing from `after` (acknowledged state lost). */
export function lostKeys(before: Map<string, string>, after: Map<string, string>): string[] {
  return [...before.keys()].filter((k) => !after.has(k));
}

/** Counts `msg` log lines of an agent (e.g. registrations). */
export function countLogs(a: AgentHandle, msg: string): number {
  return a.proc.logs.filter((l) => l.msg === msg).length;
}
