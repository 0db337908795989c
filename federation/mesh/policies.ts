// Traffic policies (kedge apply -f): one TrafficPolicy document per service,
// validated on the way in and kept durable in the store; the merge attaches
// each to its service so agents receive it with the service.
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { validateTrafficPolicy } from '../../policy/traffic-policy';
import type { Store } from '../store/types';
import { WatchedMap } from '../store/watched-map';

/** Store prefix: service key -> TrafficPolicy document (JSON). */
export const POLICIES_PREFIX = '/kedge/policies/';

/** A stored policy as the API lists it. */
export interface PolicyRow {
  name: string;
  service: string;
  document: unknown;
}

/** The policy table of the mesh. */
export class PolicyTable {
  private readonly mirror: WatchedMap;

  constructor(private readonly store: Store, opts: { logger: Logger; onChange: () => void }) {
    this.mirror = new WatchedMap(store, POLICIES_PREFIX, opts);
  }

  start(): Promise<void> {
    return this.mirror.start();
  }

  /** Service key -> JSON document, for the merge. */
  table(): ReadonlyMap<string, string> {
    return this.mirror.table();
  }

  /**
   * Validates and stores documents (all or nothing: any invalid document
   * rejects the whole request, each error naming its document and path).
   */
  async apply(docs: readonly unknown[], serviceExists: (key: string) => boolean): Promise<PolicyRow[]> {
    const errors: string[] = [];
    const valid: PolicyRow[] = [];
    docs.forEach((doc, i) => {
      const r = validateTrafficPolicy(doc, { serviceExists });
      if (r.ok) valid.push({ name: r.value.name, service: r.value.service, document: doc });
      else for (const e of r.errors) errors.push(docs.length > 1 ? `document ${i + 1}: ${e}` : e);
    });
    const seen = new Set<string>();
    for (const v of valid) {
      if (seen.has(v.service)) errors.push(`two documents set the policy of ${v.service}; one service has one policy`);
      seen.add(v.service);
    }
    if (errors.length) throw new KedgeError('KEDGE_BAD_POLICY', errors.join('\n'));
    for (const v of valid) {
      const json = JSON.stringify(v.document);
      await this.store.put(POLICIES_PREFIX + v.service, json);
      this.mirror.table().set(v.service, json);
    }
    return valid;
  }

  async remove(service: string): Promise<boolean> {
    this.mirror.table().delete(service);
    return this.store.delete(POLICIES_PREFIX + service);
  }

  list(): PolicyRow[] {
    return [...this.mirror.table()].map(([service, json]) => {
      const document = JSON.parse(json) as { metadata?: { name?: string } };
      return { name: document.metadata?.name ?? service, service, document };
    }).sort((a, b) => a.service.localeCompare(b.service));
  }

  close(): void {
    this.mirror.close();
  }
}
