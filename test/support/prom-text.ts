// A reader for the Prometheus text format, for tests: samples with their
// labels unescaped, and a lookup by name and label subset.

/** One sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses every sample line; throws on a line that is not valid. */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    out.push(parseLine(line));
  }
  return out;
}

function parseLine(line: string): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{)?/.exec(line);
  if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
  const name = m[1]!;
  let i = m[0].length;
  const labels: Record<string, string> = {};
  if (m[2]) {
    while (line[i] !== '}') {
      const k = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(i));
      if (!k) throw new Error(`bad label at ${i} in ${JSON.stringify(line)}`);
      i += k[0].length;
      let v = '';
      for (;;) {
        const c = line[i++];
        if (c === undefined) throw new Error(`unterminated label value in ${JSON.stringify(line)}`);
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i++];
          v += e === 'n' ? '\n' : e === '\\' ? '\\' : e === '"' ? '"' : (() => { throw new Error(`bad escape \\${e} in ${JSON.stringify(line)}`); })();
        } else v += c;
      }
      labels[k[1]!] = v;
      if (line[i] === ',') i++;
    }
    i++;
  }
  const rest = line.slice(i).trim().split(/\s+/);
  const value = rest[0] === '+Inf' ? Infinity : rest[0] === '-Inf' ? -Infinity : Number(rest[0]);
  // Prometheus parses values with Go's ParseFloat: NaN in any case (prom-client writes `Nan`).
  if (rest[0] === undefined || (Number.isNaN(value) && rest[0].toLowerCase() !== 'nan')) throw new Error(`bad value in ${JSON.stringify(line)}`);
  return { name, labels, value };
}

/** Samples named `name` whose labels include every pair of `match`. */
export function select(samples: readonly Sample[], name: string, match: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
}

/** The sum of the values select() returns. */
export function total(samples: readonly Sample[], name: string, match: Record<string, string> = {}): number {
  return select(samples, name, match).reduce((n, s) => n + s.value, 0);
}
