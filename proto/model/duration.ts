import { KedgeError } from './errors';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses Go-style durations ("24h", "1h30m", "500ms", "10s") to milliseconds.
 * A bare number (YAML `connectTimeout: 1`) is refused with an error saying
 * so: it once meant milliseconds and silently broke traffic.
 */
export function parseDuration(s: string | number, what = 'duration'): number {
  if (typeof s === 'number') {
    throw new KedgeError('KEDGE_BAD_DURATION', `invalid ${what} ${s}: a bare number has no unit; write ${s}s or ${s}ms (units: ms, s, m, h, d)`);
  } else {
    const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
    let total = 0;
    let matched = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(s)) !== null) {
      total += Number(m[1]) * (UNITS[m[2] as string] as number);
      matched = re.lastIndex;
    }
    if (s.length > 0 && matched === s.length) return total;
  }
  throw new KedgeError('KEDGE_BAD_DURATION', `invalid ${what} ${JSON.stringify(s)}: use a number with a unit, such as 500ms, 10s, 5m, 24h`);
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
