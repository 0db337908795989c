// What /readyz answers: ready only when this replica can do its job. Pure:
// the inputs are gathered at the edge (server.ts) and passed in.
import type { StoreHealth } from '../store/types';
import type { SourceStatus } from '../sources/types';

/** One check of the readiness answer. */
export interface ReadinessCheck { name: string; ok: boolean; error?: string }

/** The readiness answer: ready when every check is ok. */
export interface Readiness { ready: boolean; checks: ReadinessCheck[] }

/** Which configured sources must have synced once: all, none, or these names. */
export type NeededSources = 'all' | 'none' | readonly string[];

/** What readiness is computed from. */
export interface ReadinessInputs {
  /** False until every listener is up. */
  started: boolean;
  store: StoreHealth;
  /** The last CA self-check: a certificate signed with the CA's key. */
  ca: { ok: boolean; error?: string };
  sources: readonly SourceStatus[];
  needed: NeededSources;
}

/**
 * Ready means: started, the store takes writes, the CA signs, and every
 * needed source has synced at least once. A source that synced and lost its
 * backend later keeps serving its last endpoints (marked stale), so it does
 * not make the replica unready.
 */
export function readiness(i: ReadinessInputs): Readiness {
  const checks: ReadinessCheck[] = [];
  checks.push(i.started ? { name: 'started', ok: true } : { name: 'started', ok: false, error: 'the federation is still starting' });
  checks.push(i.store.writable ? { name: 'store', ok: true } : { name: 'store', ok: false, error: i.store.error ?? 'the store does not take writes' });
  checks.push(i.ca.ok ? { name: 'ca', ok: true } : { name: 'ca', ok: false, error: i.ca.error ?? 'the CA cannot sign' });
  for (const s of i.sources) {
    const needed = i.needed === 'all' || (i.needed !== 'none' && i.needed.includes(s.name));
    if (!needed) continue;
    const name = `source:${s.name}`;
    if (s.lastSync !== undefined) checks.push({ name, ok: true });
    else checks.push({ name, ok: false, error: `${s.kind} source ${s.name} has never synced${s.error ? `: ${s.error}` : ''}` });
  }
  return { ready: checks.every((c) => c.ok), checks };
}
