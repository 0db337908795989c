// The error-collecting walker every policy validator uses. It does not stop at
// the first problem, so one `kedge apply` reports everything wrong with a
// file; each error names its path in the document
// (`spec.rules[0].matches[1].path.value: ...`).
import { KedgeError } from '../proto/model/errors';
import { parseDuration } from '../proto/model/duration';

/** Collects errors, each prefixed with the path it concerns. */
export class Checker {
  readonly errors: string[] = [];

  fail(path: string, msg: string): void {
    this.errors.push(`${path || '(top level)'}: ${msg}`);
  }

  /** A mapping whose keys are all in `allowed` (when given); undefined (and an error) otherwise. */
  object(v: unknown, path: string, allowed?: readonly string[]): Record<string, unknown> | undefined {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      this.fail(path, v === undefined || v === null ? 'is required' : 'must be a mapping');
      return undefined;
    }
    if (allowed) {
      for (const k of Object.keys(v)) if (!allowed.includes(k)) this.fail(path ? `${path}.${k}` : k, `unknown field (expected one of: ${allowed.join(', ')})`);
    }
    return v as Record<string, unknown>;
  }

  /** An optional mapping: undefined without an error when absent. */
  optionalObject(v: unknown, path: string, allowed?: readonly string[]): Record<string, unknown> | undefined {
    return v === undefined || v === null ? undefined : this.object(v, path, allowed);
  }

  /** An optional list: [] when absent. */
  list(v: unknown, path: string, what = 'a list'): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.fail(path, `must be ${what}`);
      return [];
    }
    return v;
  }

  int(v: unknown, path: string, def: number | undefined, min: number, max: number): number {
    if (v === undefined || v === null) {
      if (def === undefined) this.fail(path, 'is required');
      return def ?? min;
    }
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      this.fail(path, 'must be a whole number');
      return def ?? min;
    }
    if (v < min || v > max) {
      this.fail(path, `must be between ${min} and ${max}`);
      return def ?? min;
    }
    return v;
  }

  bool(v: unknown, path: string, def: boolean): boolean {
    if (v === undefined || v === null) return def;
    if (typeof v !== 'boolean') {
      this.fail(path, 'must be true or false');
      return def;
    }
    return v;
  }

  /** A non-empty string, or undefined (with an error saying `hint` when given). */
  string(v: unknown, path: string, hint?: string): string | undefined {
    if (typeof v !== 'string' || v === '') {
      this.fail(path, v === undefined || v === null ? `is required${hint ? `: ${hint}` : ''}` : `must be a non-empty string${hint ? `: ${hint}` : ''}`);
      return undefined;
    }
    return v;
  }

  oneOf<T extends string>(v: unknown, path: string, allowed: readonly T[], def: T): T {
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string' || !allowed.includes(v as T)) {
      this.fail(path, `must be one of: ${allowed.join(', ')}`);
      return def;
    }
    return v as T;
  }

  /**
   * A Kedge duration ("500ms", "10s", "1m30s") in milliseconds. A bare
   * number is an error: `connectTimeout: 1` once meant 1 ms and silently
   * broke traffic, so the unit is always written.
   */
  duration(v: unknown, path: string, minMs: number, def: number): number {
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string' && typeof v !== 'number') {
      this.fail(path, 'must be a duration such as 500ms, 10s or 5m');
      return def;
    }
    let ms: number;
    try {
      ms = parseDuration(v, 'duration');
    } catch (err) {
      this.fail(path, err instanceof KedgeError ? err.message : String(err));
      return def;
    }
    if (ms < minMs) {
      this.fail(path, `must be at least ${minMs} ms`);
      return def;
    }
    return ms;
  }
}

/** Kubernetes object names (RFC 1123 subdomain). */
export const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** Kubernetes namespaces and Service names (RFC 1123 label). */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
