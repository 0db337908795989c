// AuthorizationPolicy documents applied with `kedge apply -f`, durable in the
// store under /kedge/authz/AuthorizationPolicy/<namespace>/<name>, watched by
// every replica. Each agent is pushed only the documents that select its
// workload; `kedge authz check` compiles the same documents with the same
// matcher the proxies use.
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { compileAuthorization, policySelects, type AuthzMatcher } from '../../policy/authz/compile';
import { DEFAULT_ROOT_NAMESPACE, type AuthzPolicyObject, type AuthzWorkload } from '../../policy/authz/model';
import { validateAuthorizationPolicy } from '../../policy/authz/validate';
import type { Store } from '../store/types';
import { WatchedMap } from '../store/watched-map';
import type { AuthzPolicyRow } from '../ui/model/state';

export const AUTHZ_PREFIX = '/kedge/authz/';

/** One policy as `kedge get authorizationpolicies` lists it (the dashboard shows the same row). */
export interface AuthzRow extends AuthzPolicyRow {
  kind: 'AuthorizationPolicy';
}

/** The applied AuthorizationPolicies; see the file comment. */
export class AuthzTable {
  private readonly mirror: WatchedMap;
  private parsed: { rev: number; docs: { id: string; json: string; value: AuthzPolicyObject | undefined; error?: string }[] } | undefined;
  private rev = 0;
  readonly rootNamespace: string;

  constructor(private readonly store: Store, opts: { logger: Logger; onChange: () => void; rootNamespace?: string }) {
    this.rootNamespace = opts.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    this.mirror = new WatchedMap(store, AUTHZ_PREFIX, {
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

  /** Every stored document, validated once per change of the table. */
  private docs(): { id: string; json: string; value: AuthzPolicyObject | undefined; error?: string }[] {
    if (this.parsed?.rev === this.rev) return this.parsed.docs;
    const docs = [...this.mirror.table()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([id, json]) => {
        const r = validateAuthorizationPolicy(JSON.parse(json));
        return r.ok ? { id, json, value: r.value } : { id, json, value: undefined, error: r.errors.join('; ') };
      });
    this.parsed = { rev: this.rev, docs };
    return docs;
  }

  /** The valid policies. */
  policies(): AuthzPolicyObject[] {
    return this.docs().flatMap((d) => (d.value ? [d.value] : []));
  }

  /** The JSON documents that select a workload, in a stable order (what its agent is pushed). */
  documentsFor(w: AuthzWorkload): string[] {
    return this.docs()
      .filter((d) => d.value && policySelects(d.value, w, this.rootNamespace))
      .map((d) => d.json);
  }

  /** The compiled matcher of a workload: the same policies and code its proxy uses. */
  matcherFor(w: AuthzWorkload): AuthzMatcher {
    return compileAuthorization(this.policies(), w, { rootNamespace: this.rootNamespace });
  }

  rows(workloads: readonly (AuthzWorkload & { name: string })[]): AuthzRow[] {
    return this.docs().map((d) => {
      const [, namespace = '', name = ''] = d.id.split('/');
      const v = d.value;
      const selector = v?.selector ? Object.entries(v.selector).map(([k, val]) => `${k}=${val}`).join(',') || '(all)' : namespace === this.rootNamespace ? '(mesh)' : '(namespace)';
      const row: AuthzRow = {
        kind: 'AuthorizationPolicy',
        namespace,
        name,
        action: v?.action ?? '-',
        selector,
        rules: v?.rules.length ?? 0,
        workloads: v ? workloads.filter((w) => policySelects(v, w, this.rootNamespace)).map((w) => `${w.namespace}/${w.name}`) : [],
      };
      if (d.error) row.error = d.error;
      return row;
    });
  }

  /**
   * Validates and stores documents. A bad document rejects only itself: the
   * valid ones are stored and every error is returned, naming its document
   * and the path in it.
   */
  async apply(docs: readonly unknown[]): Promise<{ applied: { kind: string; namespace: string; name: string }[]; errors: string[] }> {
    const errors: string[] = [];
    const applied: { kind: string; namespace: string; name: string }[] = [];
    const seen = new Set<string>();
    for (const doc of docs) {
      const r = validateAuthorizationPolicy(doc);
      if (!r.ok) {
        errors.push(...r.errors);
        continue;
      }
      const id = `AuthorizationPolicy/${r.value.namespace}/${r.value.name}`;
      if (seen.has(id)) {
        errors.push(`AuthorizationPolicy ${r.value.namespace}/${r.value.name}: appears twice in one apply; keep one`);
        continue;
      }
      seen.add(id);
      const d = doc as { metadata: Record<string, unknown> };
      const json = JSON.stringify({ ...d, metadata: { ...d.metadata, namespace: r.value.namespace } });
      await this.store.put(AUTHZ_PREFIX + id, json);
      this.mirror.table().set(id, json);
      this.rev += 1;
      applied.push({ kind: 'AuthorizationPolicy', namespace: r.value.namespace, name: r.value.name });
    }
    return { applied, errors };
  }

  async remove(namespace: string, name: string): Promise<void> {
    const id = `AuthorizationPolicy/${namespace}/${name}`;
    if (!this.mirror.table().has(id)) throw new KedgeError('KEDGE_NOT_FOUND', `no AuthorizationPolicy ${namespace}/${name} was applied (see kedge get authorizationpolicies)`);
    this.mirror.table().delete(id);
    this.rev += 1;
    await this.store.delete(AUTHZ_PREFIX + id);
  }
}
