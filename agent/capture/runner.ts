// The one seam between capture and the shell. Everything that touches
// iptables goes through a CommandRunner, so unit tests pass a fake and only
// root tests reach the kernel.
import { spawn } from 'node:child_process';

/** What a finished command left behind. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program with arguments and optional stdin; rejects only when it cannot start (error code ENOENT when missing). */
export interface CommandRunner {
  run(cmd: string, args: readonly string[], input?: string): Promise<CommandResult>;
}

/** Runs commands on this host, optionally behind a prefix such as ['ip', 'netns', 'exec', 'ns1']; killed after `timeoutMs`. */
export function systemRunner(opts: { prefix?: readonly string[]; timeoutMs?: number } = {}): CommandRunner {
  const prefix = opts.prefix ?? [];
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return {
    run(cmd, args, input) {
      const argv = [...prefix, cmd, ...args];
      return new Promise((resolve, reject) => {
        const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        let timedOut = false;
        const timer = setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, timeoutMs);
        child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          if (timedOut) stderr += `\n${cmd} killed after ${timeoutMs} ms`;
          resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
        });
        // A child that exits before reading stdin raises EPIPE; its exit code tells the story.
        child.stdin.on('error', () => undefined);
        child.stdin.end(input ?? '');
      });
    },
  };
}
