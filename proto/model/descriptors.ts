// A process's listeners share one descriptor limit: connection limits only
// protect /healthz and Sign when their sum stays below it. At start the
// federation compares them with its soft RLIMIT_NOFILE (Node raises the soft
// limit to the hard one; `ulimit -n`, systemd's LimitNOFILE and a
// container runtime's default set the hard one).
import * as fs from 'node:fs';
import type { Logger } from './log';

/** Descriptors kept for files, the store, etcd and outbound connections besides the listeners' limits. */
export const DESCRIPTOR_HEADROOM = 256;

/** The soft limit on open files from /proc/self/limits; undefined where unreadable or unlimited. */
export function openFilesLimit(text?: string): number | undefined {
  let t = text;
  if (t === undefined) {
    try {
      t = fs.readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return undefined;
    }
  }
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(t);
  return m && m[1] !== 'unlimited' ? Number(m[1]) : undefined;
}

/** Logs a warning naming the settings when their connection limits and the headroom exceed the descriptor limit. */
export function warnIfDescriptorsShort(logger: Logger, limits: [setting: string, max: number][], limit = openFilesLimit()): boolean {
  if (limit === undefined) return false;
  const need = limits.reduce((n, [, m]) => n + m, 0) + DESCRIPTOR_HEADROOM;
  if (need <= limit) return false;
  logger.warn(
    { openFilesLimit: limit, needed: need, limits: Object.fromEntries(limits) },
    `the connection limits (${limits.map(([k, m]) => `${k}=${m}`).join(', ')}) plus ${DESCRIPTOR_HEADROOM} for files exceed this process's open-file limit (${limit}): a flood could still use every descriptor; raise LimitNOFILE / ulimit -n, or lower the limits`,
  );
  return true;
}
