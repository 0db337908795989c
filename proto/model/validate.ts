import { KedgeError } from './errors';

/**
 * Walks an untrusted YAML/JSON document with a path, so every error names the
 * file and the field ("agent.yaml: workload.namespace: must be a string").
 * Configuration is validated once into a frozen object; nothing half-read
 * leaks past the loader.
 */
export class Doc {
  constructor(readonly file: string, readonly value: unknown, readonly path: string = '') {}

  fail(msg: string): never {
    throw new KedgeError('KEDGE_BAD_CONFIG', `${this.file}: ${this.path || '(top level)'}: ${msg}`);
  }

  at(key: string | number): Doc {
    const v = this.isMissing() ? undefined : (this.value as Record<string | number, unknown>)[key];
    const p = typeof key === 'number' ? `${this.path}[${key}]` : this.path ? `${this.path}.${key}` : key;
    return new Doc(this.file, v, p);
  }

  isMissing(): boolean {
    return this.value === undefined || this.value === null;
  }

  object(allowed?: readonly string[]): Doc {
    if (typeof this.value !== 'object' || this.value === null || Array.isArray(this.value)) this.fail('must be a mapping');
    if (allowed) {
      for (const k of Object.keys(this.value)) {
        if (!allowed.includes(k)) this.fail(`unknown field "${k}" (expected one of: ${allowed.join(', ')})`);
      }
    }
    return this;
  }

  optionalObject(allowed?: readonly string[]): Doc | undefined {
    return this.isMissing() ? undefined : this.object(allowed);
  }

  keys(): string[] {
    return this.isMissing() ? [] : Object.keys(this.object().value as object);
  }

  list(): Doc[] {
    if (this.isMissing()) return [];
    if (!Array.isArray(this.value)) this.fail('must be a list');
    return (this.value as unknown[]).map((_, i) => this.at(i));
  }

  string(def?: string): string {
    if (this.isMissing()) {
      if (def !== undefined) return def;
      this.fail('is required');
    }
    if (typeof this.value !== 'string' || this.value === '') this.fail('must be a non-empty string');
    return this.value as string;
  }

  optionalString(): string | undefined {
    return this.isMissing() ? undefined : this.string();
  }

  int(def?: number, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number {
    if (this.isMissing()) {
      if (def !== undefined) return def;
      this.fail('is required');
    }
    const v = this.value;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail('must be a whole number');
    if ((v as number) < min || (v as number) > max) this.fail(`must be between ${min} and ${max}`);
    return v as number;
  }

  port(def?: number): number {
    return this.int(def, 1, 65535);
  }

  bool(def?: boolean): boolean {
    if (this.isMissing()) {
      if (def !== undefined) return def;
      this.fail('is required');
    }
    if (typeof this.value !== 'boolean') this.fail('must be true or false');
    return this.value as boolean;
  }

  stringMap(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const k of this.keys()) {
      const v = this.at(k).value;
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') this.at(k).fail('must be a string');
      out[k] = String(v);
    }
    return out;
  }

  /** Runs `parse` and re-throws its KedgeError with this field's file and path. */
  parse<T>(parse: (v: string) => T, def?: string): T {
    // Durations are parsed here too, and a bare YAML number has no unit.
    if (typeof this.value === 'number') this.fail(`must be a string, not the bare number ${this.value}; a duration needs its unit, such as ${this.value}s or ${this.value}ms`);
    const s = this.string(def);
    try {
      return parse(s);
    } catch (err) {
      if (err instanceof KedgeError) this.fail(err.message);
      throw err;
    }
  }
}

/** Deep-freezes plain data. */
export function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const child of Object.values(v as object)) deepFreeze(child);
  }
  return v;
}
