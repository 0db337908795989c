// Summarises a mem-sampler log (support/mem-sampler.ts) per benchmark phase:
// the largest value of each counter within the phase, and the breakdown at
// the sample with the largest RSS, which says what the peak was made of.
import { readFileSync } from 'node:fs';
import type { MemSample } from './mem-sampler';

/** Maxima of one phase, in MB; `atPeak` is the sample with the largest RSS. */
export interface MemPhaseSummary {
  phase: string;
  samples: number;
  rss: number;
  heapTotal: number;
  heapUsed: number;
  oldUsed: number;
  external: number;
  arrayBuffers: number;
  atPeak: { rss: number; heapTotal: number; heapUsed: number; oldUsed: number; oldCommitted: number; newCommitted: number; largeObject: number; external: number; arrayBuffers: number } | undefined;
}

const MB = 1024 * 1024;
const mb = (n: number): number => Math.round((10 * n) / MB) / 10;

/** Reads a mem-sampler log; lines cut off by a kill are skipped. */
export function readMemLog(file: string): MemSample[] {
  const out: MemSample[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    try {
      out.push(JSON.parse(line) as MemSample);
    } catch {
      // A partial last line.
    }
  }
  return out;
}

/** Per phase window ([from, to] in Date.now() milliseconds), the maxima of every counter. */
export function summariseMemLog(samples: readonly MemSample[], windows: readonly { phase: string; from: number; to: number }[]): MemPhaseSummary[] {
  return windows.map(({ phase, from, to }) => {
    const inside = samples.filter((s) => s.at >= from && s.at <= to);
    const max = (get: (s: MemSample) => number) => mb(inside.reduce((m, s) => Math.max(m, get(s)), 0));
    const peak = inside.reduce<MemSample | undefined>((p, s) => (!p || s.rss > p.rss ? s : p), undefined);
    return {
      phase,
      samples: inside.length,
      rss: max((s) => s.rss),
      heapTotal: max((s) => s.heapTotal),
      heapUsed: max((s) => s.heapUsed),
      oldUsed: max((s) => s.spaces.old_space?.[0] ?? 0),
      external: max((s) => s.external),
      arrayBuffers: max((s) => s.arrayBuffers),
      atPeak: peak && {
        rss: mb(peak.rss),
        heapTotal: mb(peak.heapTotal),
        heapUsed: mb(peak.heapUsed),
        oldUsed: mb(peak.spaces.old_space?.[0] ?? 0),
        oldCommitted: mb(peak.spaces.old_space?.[1] ?? 0),
        newCommitted: mb(peak.spaces.new_space?.[1] ?? 0),
        largeObject: mb(peak.spaces.large_object_space?.[1] ?? 0),
        external: mb(peak.external),
        arrayBuffers: mb(peak.arrayBuffers),
      },
    };
  });
}

/** The summary as a Markdown table. */
export function memTable(proc: string, rows: readonly MemPhaseSummary[]): string[] {
  return [
    `#### Memory inside ${proc} (mem-sampler), MB: maxima per phase; "at RSS peak" is the breakdown of the phase's largest-RSS sample`,
    '',
    '| phase | samples | RSS | heap total | heap used | old space used | external | ArrayBuffers | at RSS peak: heap total / used / old used / old committed / new committed / large objects / external |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
    ...rows.map((r) => {
      const p = r.atPeak;
      const at = p ? `${p.heapTotal} / ${p.heapUsed} / ${p.oldUsed} / ${p.oldCommitted} / ${p.newCommitted} / ${p.largeObject} / ${p.external}` : '–';
      return `| ${r.phase} | ${r.samples} | ${r.rss} | ${r.heapTotal} | ${r.heapUsed} | ${r.oldUsed} | ${r.external} | ${r.arrayBuffers} | ${at} |`;
    }),
    '',
  ];
}
