// The Prometheus text exposition format (version 0.0.4), the parts a lean
// writer needs: label-value escaping, label sets rendered once per series,
// and numbers as Prometheus parses them. Pure.

/** The content type of the text format. */
export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * A label value as the text format requires: backslash, double quote and
 * line feed escaped. Lone UTF-16 surrogates (what a JS string holds where
 * bytes were not valid UTF-8 and were decoded leniently) become U+FFFD, so
 * the body is always valid UTF-8 and a bad value cannot break the line.
 */
export function escapeLabelValue(v: string): string {
  // Fast path: most values need nothing.
  if (!NEEDS_WORK.test(v)) return v;
  return v.replace(LONE_SURROGATE, '\uFFFD').replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

const NEEDS_WORK = /[\\"\n\uD800-\uDFFF]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `a="x",b="y"` for names and values in order (names are trusted constants). */
export function renderLabels(names: readonly string[], values: readonly string[]): string {
  let out = '';
  for (let i = 0; i < names.length; i++) {
    if (i > 0) out += ',';
    out += `${names[i]}="${escapeLabelValue(values[i] ?? '')}"`;
  }
  return out;
}

/** A sample value: integers plainly, non-finite as Prometheus spells them. */
export function formatValue(n: number): string {
  if (Number.isFinite(n)) return String(n);
  if (Number.isNaN(n)) return 'NaN';
  return n > 0 ? '+Inf' : '-Inf';
}

/** Help text escaping (backslash and line feed). */
export function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** The `# HELP` and `# TYPE` lines of a family. */
export function familyHeader(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): string {
  return `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
}
