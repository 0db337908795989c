// CPU and memory of other processes, read from /proc (Linux only): user+sys
// CPU from /proc/<pid>/stat, resident set now and at its peak from
// /proc/<pid>/status (VmRSS, VmHWM).
import { readFileSync } from 'node:fs';

// Clock ticks per second of /proc/<pid>/stat; 100 on every Linux Node runs on
// (USER_HZ, `getconf CLK_TCK`).
const CLK_TCK = 100;

/** One reading of a process. */
export interface ProcSample {
  /** user + system CPU since the process started, seconds. */
  cpuSeconds: number;
  rssBytes: number;
  /** Peak resident set so far (VmHWM). */
  peakRssBytes: number;
  /** performance.now() of the reading. */
  at: number;
}

/** Reads a process's CPU and memory; undefined once it has exited. */
export function sampleProc(pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name (which may hold spaces):
    // state is field 3, utime 14 and stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(rest[11]) + Number(rest[12]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    return { cpuSeconds: ticks / CLK_TCK, rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM'), at: performance.now() };
  } catch {
    return undefined;
  }
}

/** CPU used between two readings: seconds, and percent of one core over the wall time between them. */
export function cpuBetween(a: ProcSample | undefined, b: ProcSample | undefined): { seconds: number; pctCore: number } | undefined {
  if (!a || !b) return undefined;
  const seconds = b.cpuSeconds - a.cpuSeconds;
  const wall = (b.at - a.at) / 1000;
  return { seconds: round(seconds, 2), pctCore: round(wall > 0 ? (100 * seconds) / wall : 0, 1) };
}

export function round(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}

/** Percentile (nearest rank on the sorted values); NaN for none. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}
