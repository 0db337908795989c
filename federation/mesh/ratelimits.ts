// HTTPLocalRateLimitPolicy and MeshQuota documents applied with `kedge
// apply -f`, durable in the store under /kedge/ratelimits/<Kind>/<ns>/<name>,
// watched by every replica. Each agent is pushed only the documents that
// target a service it registered (its server proxy enforces them).
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import type { MeshQuotaPolicy, RateLimitDocument } from '../../policy/ratelimit/model';
import { validateRateLimitDocument } from '../../policy/ratelimit/validate';
import type { Store } from '../store/types';
import { WatchedMap } from '../store/watched-map';
import type { RateLimitPolicyRow } from '../ui/model/state';

export const RATELIMITS_PREFIX = '/kedge/ratelimits/';

/** One document as `kedge get ratelimits` lists it (the dashboard shows the same row). */
export type RateLimitRow = RateLimitPolicyRow;

interface Parsed {
  id: string;
  json: string;
  value: RateLimitDocument | undefined;
  error?: string;
}

/** The applied rate-limit documents; see the file comment. */
export class RateLimitTable {
  private readonly mirror: WatchedMap;
  private parsed: { rev: number; docs: Parsed[]; quotas: Map<string, MeshQuotaPolicy> } | undefined;
  private rev = 0;

  constructor(private readonly store: Store, opts: { logger: Logger; onChange: () => void }) {
    this.mirror = new WatchedMap(store, RATELIMITS_PREFIX, {
      logger: opts.logger,
      onChange: () => {
        this.rev += 1;
        opts.onChange();
      },
    });
  }

  start(): Promise<void> {
    return this.mirror.start();
  }

  close(): void {
    this.mirror.close();
  }

  private state(): { docs: Parsed[]; quotas: Map<string, MeshQuotaPolicy> } {
    if (this.parsed?.rev === this.rev) return this.parsed;
    const docs = [...this.mirror.table()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([id, json]): Parsed => {
        const r = validateRateLimitDocument(JSON.parse(json));
        return r.ok ? { id, json, value: r.value } : { id, json, value: undefined, error: r.errors.join('; ') };
      });
    const quotas = new Map<string, MeshQuotaPolicy>();
    for (const d of docs) if (d.value?.kind === 'MeshQuota') quotas.set(`${d.value.namespace}/${d.value.name}`, d.value);
    this.parsed = { rev: this.rev, docs, quotas };
    return this.parsed;
  }

  /** The valid MeshQuotas by namespace/name. */
  quotas(): ReadonlyMap<string, MeshQuotaPolicy> {
    return this.state().quotas;
  }

  /** The JSON documents targeting any of `services` (name.namespace), in a stable order: what that agent is pushed. */
  documentsFor(services: readonly string[]): string[] {
    return this.state()
      .docs.filter((d) => d.value && services.includes(`${d.value.service}.${d.value.namespace}`))
      .map((d) => d.json);
  }

  rows(workloads: readonly { namespace: string; name: string; services: readonly string[] }[]): RateLimitRow[] {
    return this.state().docs.map((d) => {
      const [kind = '', namespace = '', name = ''] = d.id.split('/');
      const v = d.value;
      const service = v ? `${v.service}.${v.namespace}` : '-';
      const row: RateLimitRow = {
        kind,
        namespace,
        name,
        service,
        limit: v ? describe(v) : '-',
        workloads: workloads.filter((w) => w.services.includes(service)).map((w) => `${w.namespace}/${w.name}`),
      };
      if (d.error) row.error = d.error;
      return row;
    });
  }

  /** Validates and stores documents; a bad one rejects only itself, every error naming its document and path. */
  async apply(docs: readonly unknown[]): Promise<{ applied: { kind: string; namespace: string; name: string }[]; errors: string[] }> {
    const errors: string[] = [];
    const applied: { kind: string; namespace: string; name: string }[] = [];
    const seen = new Set<string>();
    for (const doc of docs) {
      const r = validateRateLimitDocument(doc);
      if (!r.ok) {
        errors.push(...r.errors);
        continue;
      }
      const id = `${r.value.kind}/${r.value.namespace}/${r.value.name}`;
      if (seen.has(id)) {
        errors.push(`${r.value.kind} ${r.value.namespace}/${r.value.name}: appears twice in one apply; keep one`);
        continue;
      }
      seen.add(id);
      const d = doc as { metadata: Record<string, unknown> };
      const json = JSON.stringify({ ...d, metadata: { ...d.metadata, namespace: r.value.namespace } });
      await this.store.put(RATELIMITS_PREFIX + id, json);
      this.mirror.table().set(id, json);
      this.rev += 1;
      applied.push({ kind: r.value.kind, namespace: r.value.namespace, name: r.value.name });
    }
    return { applied, errors };
  }

  async remove(kind: string, namespace: string, name: string): Promise<void> {
    const id = `${kind}/${namespace}/${name}`;
    if (!this.mirror.table().has(id)) throw new KedgeError('KEDGE_NOT_FOUND', `no ${kind} ${namespace}/${name} was applied (see kedge get ratelimits)`);
    this.mirror.table().delete(id);
    this.rev += 1;
    await this.store.delete(RATELIMITS_PREFIX + id);
  }
}

function describe(v: RateLimitDocument): string {
  if (v.kind === 'MeshQuota') return `${v.requests} per ${v.windowMs / 1000}s per principal${v.clients.length ? ` (${v.clients.map((c) => `${c.namespace}/${c.name}`).join(',')})` : ''}, fail ${v.failureMode.toLowerCase()}`;
  const parts: string[] = [];
  if (v.total) parts.push(`${v.total.rate}/s total`);
  if (v.identity) parts.push(`${v.identity.rate}/s per identity`);
  if (v.overrides.length) parts.push(`${v.overrides.length} override${v.overrides.length > 1 ? 's' : ''}`);
  for (const l of v.limits) parts.push(`${l.name}: ${l.bucket.rate}/s ${l.unit === 'connections' ? 'connections' : 'requests'}${l.key.length ? ` by ${l.key.map((k) => (k.kind === 'header' ? `header ${k.name}` : k.kind)).join('+')}` : ''}`);
  return parts.join(', ');
}
