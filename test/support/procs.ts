// Runs kedge subcommands as real child processes for integration tests:
// JSON log lines are parsed and can be awaited; every process is killed when
// the test ends, also when it fails.
import { spawn, ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { after } from 'node:test';

/** Path of the compiled CLI entry. */
export const KEDGE_JS = path.resolve(__dirname, '..', '..', 'bin', 'kedge.js');

/** A log line from a kedge process (pino JSON). */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/** A running kedge process with its parsed logs. */
export class KedgeProcess {
  readonly logs: LogLine[] = [];
  readonly stdout: string[] = [];
  readonly raw: string[] = [];
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly name: string, readonly child: ChildProcess) {
    let buf = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.raw.push(line);
        if (process.env.KEDGE_TEST_VERBOSE) process.stderr.write(`[${name}] ${line}\n`);
        let parsed: LogLine;
        try {
          parsed = JSON.parse(line) as LogLine;
        } catch {
          continue;
        }
        this.logs.push(parsed);
        this.waiters = this.waiters.filter((w) => (w.pred(parsed) ? (w.resolve(parsed), false) : true));
      }
    });
    child.stdout!.setEncoding('utf8').on('data', (c: string) => this.stdout.push(c));
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Resolves with the first (past or future) log line matching `pred`. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 15_000, what = 'log line'): Promise<LogLine> {
    const seen = this.logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms; last lines:\n${this.raw.slice(-15).join('\n')}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (l) => (clearTimeout(t), resolve(l)) });
    });
  }

  waitForMsg(msg: string, timeoutMs?: number): Promise<LogLine> {
    return this.waitForLog((l) => l.msg === msg, timeoutMs, `"${msg}"`);
  }

  /** Sends a signal and waits for exit (SIGKILL after `graceMs`). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill(signal);
      const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      const r = await this.exited;
      clearTimeout(t);
      return r;
    }
    return this.exited;
  }
}

const running = new Set<KedgeProcess>();
/** Kills every kedge process this test file started. */
export function killAll(): void {
  for (const p of running) p.child.kill('SIGKILL');
}
process.on('exit', killAll);
// A child left running (say, by a failed start) keeps its pipes open and so
// the test file alive; the root-level hook ends them when the file's tests end.
after(killAll);

/** Starts `kedge <args>` as a child process. */
export function startKedge(name: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; nofile?: number } = {}): KedgeProcess {
  // nofile: at most this many descriptors (soft and hard), as `ulimit -n` or a container runtime would set.
  const [cmd, argv] = opts.nofile === undefined ? [process.execPath, [KEDGE_JS, ...args]] : ['prlimit', [`--nofile=${opts.nofile}:${opts.nofile}`, process.execPath, KEDGE_JS, ...args]];
  const child = spawn(cmd, argv, {
    cwd: opts.cwd,
    env: { ...process.env, KEDGE_LOG_LEVEL: 'debug', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p = new KedgeProcess(name, child);
  running.add(p);
  void p.exited.then(() => running.delete(p));
  return p;
}

/** Runs `kedge <args>` to completion. */
export async function runKedge(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = startKedge(`kedge ${args[0] ?? ''}`, args, opts);
  const t = setTimeout(() => p.child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
  const { code } = await p.exited;
  clearTimeout(t);
  return { code, stdout: p.stdout.join(''), stderr: p.raw.join('\n') };
}

/** A fresh temporary directory removed by the caller's cleanup. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `kedge-${prefix}-`));
}

/** Polls `fn` until it returns a truthy value or the time is up. */
export async function eventually<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, what = 'condition', intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
