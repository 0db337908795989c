// Summarises a V8 .cpuprofile (written by `node --cpu-prof`) into where the
// samples landed: self time by function and by file, as a share of the
// samples that were not idle. Sample times are V8's monotonic clock in µs,
// the clock process.hrtime() reads on Linux, so another process can name a
// window of the profile.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** One row of the summary: a function (or file) and its share of busy samples. */
export interface HotSpot {
  name: string;
  samples: number;
  pct: number;
}

/** Self-time summary of one profile. */
export interface ProfileSummary {
  file: string;
  /** Profile start on the monotonic clock, µs (to place windows in it). */
  startUs: number;
  seconds: number;
  busySamples: number;
  idleSamples: number;
  functions: HotSpot[];
  files: HotSpot[];
  /** Inclusive share (self + callees) of selected federation functions. */
  inclusive: HotSpot[];
}

function where(url: string, root: string): string {
  if (!url) return '(native)';
  const p = url.startsWith('file://') ? new URL(url).pathname : url;
  const nm = p.lastIndexOf('/node_modules/');
  if (nm >= 0) return p.slice(nm + '/node_modules/'.length);
  return p.startsWith(root) ? path.relative(root, p) : p;
}

/** Which part of a profile to summarise; times from process.hrtime.bigint() / 1000n (µs). */
export interface ProfileWindow {
  fromUs?: number;
  toUs?: number;
}

/**
 * Reads a profile; `root` shortens paths, `top` bounds the lists and
 * `inclusiveOf` names functions (by name) whose inclusive share is reported.
 */
export function summariseProfile(file: string, root: string, opts: { top?: number; inclusiveOf?: readonly string[]; window?: ProfileWindow } = {}): ProfileSummary {
  const top = opts.top ?? 15;
  const inclusiveOf = opts.inclusiveOf ?? [];
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const from = opts.window?.fromUs ?? -Infinity;
  const to = opts.window?.toUs ?? Infinity;
  const samples: number[] = [];
  let t = prof.startTime;
  prof.samples.forEach((id, i) => {
    t += prof.timeDeltas[i] ?? 0;
    if (t >= from && t <= to) samples.push(id);
  });
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfHits = new Map<number, number>();
  for (const id of samples) selfHits.set(id, (selfHits.get(id) ?? 0) + 1);

  let idle = 0;
  const fn = new Map<string, number>();
  const files = new Map<string, number>();
  const incl = new Map<string, number>(inclusiveOf.map((n) => [n, 0]));
  for (const [id, hits] of selfHits) {
    const node = byId.get(id)!;
    const name = node.callFrame.functionName || '(anonymous)';
    if (name === '(idle)') {
      idle += hits;
      continue;
    }
    const loc = where(node.callFrame.url, root);
    const key = node.callFrame.url ? `${loc}:${name}` : name;
    fn.set(key, (fn.get(key) ?? 0) + hits);
    files.set(loc, (files.get(loc) ?? 0) + hits);
    // Inclusive: count the sample once for each named function on its stack.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)!.callFrame.functionName;
      if (incl.has(f) && !seen.has(f)) {
        seen.add(f);
        incl.set(f, incl.get(f)! + hits);
      }
    }
  }
  const busy = samples.length - idle;
  const rows = (m: Map<string, number>, n: number): HotSpot[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, samples]) => ({ name, samples, pct: Number(((100 * samples) / Math.max(1, busy)).toFixed(1)) }));
  return {
    file,
    startUs: prof.startTime,
    seconds: Number(((Math.min(to, prof.endTime) - Math.max(from, prof.startTime)) / 1e6).toFixed(1)),
    busySamples: busy,
    idleSamples: idle,
    functions: rows(fn, top),
    files: rows(files, top),
    inclusive: rows(incl, inclusiveOf.length),
  };
}
