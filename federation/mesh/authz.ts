// The security policies: AuthorizationPolicy and PeerAuthentication
// documents (security.istio.io/v1) applied with `kedge apply -f`, durable in
// the store under /kedge/authz/<Kind>/<namespace>/<name> and watched by every
// replica, plus those read from configured Kubernetes clusters (held in
// memory per cluster, source `cluster <name>`; an applied document of the same kind, namespace and
// name wins, the cluster's one shows as a warning). Each agent is pushed only
// the documents that apply to its workload; `kedge authz check` compiles the
// same documents with the same matcher the proxies use.
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { compileAuthorization, policySelects, type AuthzMatcher } from '../../policy/authz/compile';
import { DEFAULT_ROOT_NAMESPACE, type AuthzPolicyObject, type AuthzWorkload } from '../../policy/authz/model';
import { validateAuthorizationPolicy } from '../../policy/authz/validate';
import type { PeerAuthObject, PeerAuthResolution } from '../../policy/peer-auth/model';
import { peerAuthLevel, resolvePeerAuth } from '../../policy/peer-auth/resolve';
import { validatePeerAuthentication } from '../../policy/peer-auth/validate';
import type { Store } from '../store/types';
import { WatchedMap } from '../store/watched-map';
import type { AuthzPolicyRow, PeerAuthPolicyRow } from '../ui/model/state';

export const AUTHZ_PREFIX = '/kedge/authz/';

/** The kinds this table holds. */
export type SecurityKind = 'AuthorizationPolicy' | 'PeerAuthentication';
export const SECURITY_KINDS: readonly SecurityKind[] = ['AuthorizationPolicy', 'PeerAuthentication'];

/** One policy as `kedge get authorizationpolicies` lists it (the dashboard shows the same row). */
export interface AuthzRow extends AuthzPolicyRow {
  kind: 'AuthorizationPolicy';
}

/** One policy as `kedge get peerauthentications` lists it (the dashboard shows the same row). */
export interface PeerAuthRow extends PeerAuthPolicyRow {
  kind: 'PeerAuthentication';
}

/** A workload as rows and pushes see it. */
export type NamedWorkload = AuthzWorkload & { name: string };

type Parsed = { kind: SecurityKind; id: string; json: string; source: string; authz?: AuthzPolicyObject; peer?: PeerAuthObject; error?: string };

function validate(kind: SecurityKind, doc: unknown, fromCluster: boolean): { ok: true; authz?: AuthzPolicyObject; peer?: PeerAuthObject; namespace: string; name: string } | { ok: false; errors: string[] } {
  if (kind === 'AuthorizationPolicy') {
    const r = validateAuthorizationPolicy(doc, { fromCluster });
    return r.ok ? { ok: true, authz: r.value, namespace: r.value.namespace, name: r.value.name } : r;
  }
  const r = validatePeerAuthentication(doc, { fromCluster });
  return r.ok ? { ok: true, peer: r.value, namespace: r.value.namespace, name: r.value.name } : r;
}

function kindOf(doc: unknown): SecurityKind | undefined {
  const k = (doc as { kind?: unknown } | null)?.kind;
  return SECURITY_KINDS.includes(k as SecurityKind) ? (k as SecurityKind) : undefined;
}

const APPLIED = 'kedge apply';

/** The security policies; see the file comment. */
export class AuthzTable {
  private readonly mirror: WatchedMap;
  private parsed: { rev: number; docs: Parsed[]; shadowed: Map<string, string[]> } | undefined;
  private rev = 0;
  /** Per cluster source: id to JSON, as the cluster's watch last listed them. */
  private readonly clusters = new Map<string, Map<string, string>>();
  private readonly lastLists = new Map<string, readonly unknown[]>();
  readonly rootNamespace: string;

  constructor(private readonly store: Store, private readonly opts: { logger: Logger; onChange: () => void; rootNamespace?: string; now?: () => Date }) {
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

  /**
   * Replaces what one Kubernetes cluster holds (documents as its API lists
   * them, validated here: a bad one shows as invalid and is pushed nowhere).
   */
  setClusterDocuments(source: string, docs: readonly unknown[]): void {
    // A source hands back the same array until something changed.
    if (this.lastLists.get(source) === docs) return;
    this.lastLists.set(source, docs);
    const next = new Map<string, string>();
    for (const doc of docs) {
      const kind = kindOf(doc);
      const meta = (doc as { metadata?: { namespace?: unknown; name?: unknown } }).metadata;
      if (!kind || typeof meta?.name !== 'string') continue;
      next.set(`${kind}/${typeof meta.namespace === 'string' ? meta.namespace : 'default'}/${meta.name}`, JSON.stringify(doc));
    }
    const prev = this.clusters.get(source);
    if (prev && prev.size === next.size && [...next].every(([k, v]) => prev.get(k) === v)) return;
    this.clusters.set(source, next);
    this.rev += 1;
    this.opts.onChange();
  }

  /** Every document, validated once per change: applied ones first, then each cluster's not shadowed by one already taken. */
  private state(): { docs: Parsed[]; shadowed: Map<string, string[]> } {
    if (this.parsed?.rev === this.rev) return this.parsed;
    const docs: Parsed[] = [];
    const taken = new Map<string, Parsed>();
    const shadowed = new Map<string, string[]>();
    const add = (id: string, json: string, source: string) => {
      const kind = id.split('/')[0] as SecurityKind;
      const have = taken.get(id);
      if (have) {
        const list = shadowed.get(id) ?? [];
        list.push(`also defined by ${source}; the copy from ${have.source} is used`);
        shadowed.set(id, list);
        return;
      }
      let r: ReturnType<typeof validate>;
      try {
        r = validate(kind, JSON.parse(json), source !== APPLIED);
      } catch (err) {
        r = { ok: false, errors: [`not JSON: ${(err as Error).message}`] };
      }
      const p: Parsed = r.ok ? { kind, id, json, source, ...(r.authz ? { authz: r.authz } : {}), ...(r.peer ? { peer: r.peer } : {}) } : { kind, id, json, source, error: r.errors.join('; ') };
      taken.set(id, p);
      docs.push(p);
    };
    const byId = ([a]: [string, string], [b]: [string, string]) => (a < b ? -1 : a > b ? 1 : 0);
    for (const [id, json] of [...this.mirror.table()].sort(byId)) add(id, json, APPLIED);
    for (const source of [...this.clusters.keys()].sort()) for (const [id, json] of [...this.clusters.get(source)!].sort(byId)) add(id, json, source);
    this.parsed = { rev: this.rev, docs, shadowed };
    return this.parsed;
  }

  /** The valid AuthorizationPolicies. */
  policies(): AuthzPolicyObject[] {
    return this.state().docs.flatMap((d) => (d.authz ? [d.authz] : []));
  }

  /** The valid PeerAuthentications. */
  peerAuthentications(): PeerAuthObject[] {
    return this.state().docs.flatMap((d) => (d.peer ? [d.peer] : []));
  }

  /**
   * The JSON documents that apply to a workload, in a stable order (what its
   * agent is pushed): the AuthorizationPolicies selecting it and the
   * PeerAuthentications of its mesh, namespace or selecting it.
   */
  documentsFor(w: AuthzWorkload): string[] {
    return this.state()
      .docs.filter((d) => (d.authz && policySelects(d.authz, w, this.rootNamespace)) || (d.peer && peerAuthLevel(d.peer, w, this.rootNamespace) !== undefined))
      .map((d) => (d.source === APPLIED ? d.json : JSON.stringify(stripServerFields(JSON.parse(d.json)))));
  }

  /** The compiled matcher of a workload: the same policies and code its proxy uses. */
  matcherFor(w: AuthzWorkload): AuthzMatcher {
    return compileAuthorization(this.policies(), w, { rootNamespace: this.rootNamespace });
  }

  /** The mTLS modes in force for a workload (PERMISSIVE where no policy sets one). */
  peerAuthFor(w: AuthzWorkload): PeerAuthResolution {
    return resolvePeerAuth(this.peerAuthentications(), w, { rootNamespace: this.rootNamespace });
  }

  private meta(d: Parsed): { namespace: string; name: string; warnings: string[] } {
    const [, namespace = '', name = ''] = d.id.split('/');
    return { namespace, name, warnings: this.state().shadowed.get(d.id) ?? [] };
  }

  private selectorText(selector: Readonly<Record<string, string>> | undefined, namespace: string): string {
    return selector && Object.keys(selector).length > 0 ? Object.entries(selector).map(([k, val]) => `${k}=${val}`).join(',') : namespace === this.rootNamespace ? '(mesh)' : '(namespace)';
  }

  rows(workloads: readonly NamedWorkload[]): AuthzRow[] {
    return this.state()
      .docs.filter((d) => d.kind === 'AuthorizationPolicy')
      .map((d) => {
        const { namespace, name, warnings } = this.meta(d);
        const v = d.authz;
        const selector = v?.selector && Object.keys(v.selector).length === 0 ? '(all)' : this.selectorText(v?.selector, namespace);
        const row: AuthzRow = {
          kind: 'AuthorizationPolicy',
          namespace,
          name,
          action: v?.action ?? '-',
          selector,
          rules: v?.rules.length ?? 0,
          workloads: v ? workloads.filter((w) => policySelects(v, w, this.rootNamespace)).map((w) => `${w.namespace}/${w.name}`).sort() : [],
          source: d.source,
          warnings,
        };
        if (d.error) row.error = d.error;
        return row;
      });
  }

  peerAuthRows(workloads: readonly NamedWorkload[]): PeerAuthRow[] {
    return this.state()
      .docs.filter((d) => d.kind === 'PeerAuthentication')
      .map((d) => {
        const { namespace, name, warnings } = this.meta(d);
        const v = d.peer;
        const row: PeerAuthRow = {
          kind: 'PeerAuthentication',
          namespace,
          name,
          selector: this.selectorText(v?.selector, namespace),
          mode: v?.mode ?? '-',
          ports: v ? Object.entries(v.ports).map(([p, m]) => `${p}=${m}`) : [],
          workloads: v ? workloads.filter((w) => peerAuthLevel(v, w, this.rootNamespace) !== undefined).map((w) => `${w.namespace}/${w.name}`).sort() : [],
          source: d.source,
          warnings,
        };
        if (d.error) row.error = d.error;
        return row;
      });
  }

  /**
   * Validates and stores documents of one kind. A bad document rejects only
   * itself: the valid ones are stored and every error is returned, naming
   * its document and the path in it.
   */
  async apply(docs: readonly unknown[], kind: SecurityKind = 'AuthorizationPolicy'): Promise<{ applied: { kind: string; namespace: string; name: string }[]; errors: string[] }> {
    const errors: string[] = [];
    const applied: { kind: string; namespace: string; name: string }[] = [];
    const seen = new Set<string>();
    for (const doc of docs) {
      const k = kindOf(doc);
      if (k !== kind) {
        errors.push(`${(doc as { kind?: unknown } | null)?.kind ?? 'a document without kind'}: this endpoint takes ${kind} documents only`);
        continue;
      }
      const r = validate(kind, doc, false);
      if (!r.ok) {
        errors.push(...r.errors);
        continue;
      }
      const id = `${kind}/${r.namespace}/${r.name}`;
      if (seen.has(id)) {
        errors.push(`${kind} ${r.namespace}/${r.name}: appears twice in one apply; keep one`);
        continue;
      }
      seen.add(id);
      const d = doc as { metadata: Record<string, unknown> };
      const metadata: Record<string, unknown> = { ...d.metadata, namespace: r.namespace };
      if (kind === 'PeerAuthentication' && metadata.creationTimestamp === undefined) {
        // Istio breaks ties between equally specific policies by age: keep the first apply's time.
        const before = this.mirror.table().get(id);
        const kept = before ? (JSON.parse(before) as { metadata?: { creationTimestamp?: unknown } }).metadata?.creationTimestamp : undefined;
        metadata.creationTimestamp = typeof kept === 'string' ? kept : (this.opts.now?.() ?? new Date()).toISOString();
      }
      const json = JSON.stringify({ ...d, metadata });
      await this.store.put(AUTHZ_PREFIX + id, json);
      this.mirror.table().set(id, json);
      this.rev += 1;
      applied.push({ kind, namespace: r.namespace, name: r.name });
    }
    if (applied.length > 0) this.opts.onChange();
    return { applied, errors };
  }

  async remove(namespace: string, name: string, kind: SecurityKind = 'AuthorizationPolicy'): Promise<void> {
    const id = `${kind}/${namespace}/${name}`;
    if (!this.mirror.table().has(id)) {
      const inCluster = [...this.clusters].find(([, m]) => m.has(id))?.[0];
      const hint = inCluster ? `; it comes from ${inCluster}: delete it there` : ` (see kedge get ${kind.toLowerCase()}s)`;
      throw new KedgeError('KEDGE_NOT_FOUND', `no ${kind} ${namespace}/${name} was applied with kedge apply${hint}`);
    }
    this.mirror.table().delete(id);
    this.rev += 1;
    await this.store.delete(AUTHZ_PREFIX + id);
    this.opts.onChange();
  }
}

/** A cluster's document as agents get it: the API server's metadata and status dropped (agents validate it as applied). */
function stripServerFields(doc: { metadata?: Record<string, unknown>; status?: unknown }): unknown {
  const { status: _status, ...rest } = doc;
  const m = doc.metadata ?? {};
  const keep = ['name', 'namespace', 'labels', 'annotations', 'creationTimestamp'];
  return { ...rest, metadata: Object.fromEntries(Object.entries(m).filter(([k]) => keep.includes(k))) };
}
