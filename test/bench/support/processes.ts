// Child processes of the federation-push benchmark: `kedge federation`
// replicas (JSON logs parsed for readiness and warnings) and forked helpers
// talking over IPC. Every child started here is SIGKILLed when the benchmark
// exits for any reason, so a failed run leaves nothing behind.
//
// test/support/procs.ts is not reused: it registers a node:test `after`
// hook, which outside the test runner prints a TAP report into the
// benchmark's output.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import * as path from 'node:path';

/** The compiled CLI, from dist/test/bench/support/. */
export const KEDGE_JS = path.resolve(__dirname, '..', '..', '..', 'bin', 'kedge.js');

const children = new Set<ChildProcess>();
function killChildren(): void {
  for (const c of children) c.kill('SIGKILL');
}
process.on('exit', killChildren);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    killChildren();
    process.exit(130);
  });
}

function track(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  children.add(child);
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
}

/** Signals a child and waits for it to exit, SIGKILLing it after graceMs. */
async function stopChild(child: ChildProcess, exited: Promise<unknown>, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** A running `kedge federation` replica. */
export interface FederationProc {
  name: string;
  pid: number;
  grpc: string;
  http: string;
  dataDir: string;
  /** Log lines at warn level or above, counted as a sanity check of the run. */
  warnings(): number;
  /** The same lines counted by message and error (truncated), to say what went wrong in a bad run. */
  warningKinds(): Map<string, number>;
  lastLines(): string[];
  /** SIGTERM (a clean stop writes the CPU profile), SIGKILL after 15 s. */
  stop(): Promise<void>;
}

/** Starts `kedge federation` on loopback with kernel-chosen ports; resolves when it logs "federation ready". */
export async function startFederation(opts: { name: string; dataDir: string; args: string[]; nodeArgs?: string[]; env?: Record<string, string> }): Promise<FederationProc> {
  // $KEDGE_BENCH_FED_NODE_OPTIONS adds node options to every replica (e.g.
  // "--trace-gc" or "--heapsnapshot-signal=SIGUSR2"), for looking into where
  // its memory or time goes; split on spaces.
  const extra = (process.env.KEDGE_BENCH_FED_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
  const args = [...extra, ...(opts.nodeArgs ?? []), KEDGE_JS, 'federation', '--data-dir', opts.dataDir, '--listen-grpc', '127.0.0.1:0', '--listen-http', '127.0.0.1:0', ...opts.args];
  // $KEDGE_BENCH_LOG_DIR keeps every replica's full log, for looking into a
  // bad run, and its stdout (where V8's --trace-gc writes) beside it.
  const logDir = process.env.KEDGE_BENCH_LOG_DIR;
  const logBase = logDir ? path.join(logDir, `${opts.name.replace(/\W+/g, '-')}-${Date.now()}`) : undefined;
  const child = spawn(process.execPath, args, { stdio: ['ignore', logBase ? 'pipe' : 'ignore', 'pipe'], env: { ...process.env, KEDGE_LOG_LEVEL: 'info', ...opts.env } });
  if (logBase) child.stdout!.pipe(createWriteStream(`${logBase}.stdout`));
  const exited = track(child);
  const tail: string[] = [];
  const logFile = logBase ? createWriteStream(`${logBase}.log`) : undefined;
  let warnings = 0;
  const kinds = new Map<string, number>();
  let buf = '';
  let onReady: ((l: Record<string, unknown>) => void) | undefined;
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      tail.push(line);
      if (tail.length > 30) tail.shift();
      logFile?.write(`${line}\n`);
      try {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        if (typeof parsed.level === 'number' && parsed.level >= 40) {
          warnings++;
          const kind = `${String(parsed.msg)}${parsed.err ? `: ${String(parsed.err).slice(0, 160)}` : ''}`;
          kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
        }
        if (parsed.msg === 'federation ready') onReady?.(parsed);
      } catch {
        // Not a log line (a Node warning); kept in the tail for failure messages.
      }
    }
  });
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${opts.name}: not ready within 30 s:\n${tail.join('\n')}`)), 30_000);
    onReady = (l) => {
      clearTimeout(t);
      resolve(l);
    };
    void exited.then(({ code, signal }) => {
      clearTimeout(t);
      reject(new Error(`${opts.name} exited during start-up (code ${code}, signal ${signal}):\n${tail.join('\n')}`));
    });
  });
  return {
    name: opts.name,
    pid: child.pid!,
    grpc: String(ready.grpc),
    http: String(ready.http),
    dataDir: opts.dataDir,
    warnings: () => warnings,
    warningKinds: () => new Map(kinds),
    lastLines: () => [...tail],
    stop: () => stopChild(child, exited, 'SIGTERM', 15_000),
  };
}

/** A forked helper speaking typed messages over IPC. */
export interface Helper<In, Out extends { type: string }> {
  pid: number;
  send(msg: In): void;
  /** The next message of `type` (a 'failed' message or an exit rejects). */
  next<T extends Out['type']>(type: T, timeoutMs: number): Promise<Extract<Out, { type: T }>>;
  stop(): Promise<void>;
}

/** Forks a compiled helper module; its stdout and stderr go to ours. */
export function forkHelper<In, Out extends { type: string }>(name: string, modulePath: string, nodeArgs: string[] = []): Helper<In, Out> {
  const child = fork(modulePath, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: nodeArgs });
  const exited = track(child);
  const inbox: Out[] = [];
  let wake: (() => void) | undefined;
  let exitInfo: string | undefined;
  child.on('message', (m) => {
    inbox.push(m as Out);
    wake?.();
  });
  void exited.then(({ code, signal }) => {
    exitInfo = `code ${code}, signal ${signal}`;
    wake?.();
  });
  return {
    pid: child.pid!,
    send: (msg) => child.send(msg as object),
    next: async (type, timeoutMs) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const failed = inbox.find((m) => m.type === 'failed') as { message?: string } | undefined;
        if (failed) throw new Error(`${name} failed: ${failed.message}`);
        const i = inbox.findIndex((m) => m.type === type);
        if (i >= 0) return inbox.splice(i, 1)[0] as Extract<Out, { type: typeof type }>;
        if (exitInfo) throw new Error(`${name} exited (${exitInfo}) before sending "${type}"`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`${name}: no "${type}" within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        wake = undefined;
      }
    },
    stop: async () => {
      if (child.connected) child.send({ type: 'stop' });
      await stopChild(child, exited, 'SIGTERM', 5_000);
    },
  };
}
