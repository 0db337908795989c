// Routes (HTTPRoute, GRPCRoute, FaultInjection): documents applied with
// `kedge apply -f`, kept durable in the store, and routes read from
// Kubernetes clusters. resolveRoutes merges them (kedge apply's copy of a
// name wins; the others show as a warning on the route) and gives each
// service the documents attached to it, as one JSON string the merge puts
// on the Service, so it is encoded once for all subscribers.
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { documentLabel, validateRouteDocument } from '../../policy/routes/documents';
import type { FaultObject, RouteDocumentObject, RouteKind, RouteObject } from '../../policy/routes/model';
import type { Store } from '../store/types';
import { WatchedMap } from '../store/watched-map';

/** Store prefix: `<kind>/<namespace>/<name>` -> document (JSON), creationTimestamp stamped at first apply. */
export const ROUTES_PREFIX = '/kedge/routes/';

/** A route document read from a Kubernetes cluster. */
export interface ClusterRouteDocument {
  cluster: string;
  doc: unknown;
}

/** One route as `kedge get routes` lists it. */
export interface RouteRow {
  kind: RouteKind;
  namespace: string;
  name: string;
  /** `kedge apply`, or `cluster <name>`. */
  source: string;
  /** Services the route attaches to (with port when given). */
  parents: string[];
  backends: string[];
  rules: number;
  createdAt: string;
  /** Copies elsewhere that lost, unknown services, unresolved references. */
  warnings: string[];
  /** Set when the document is invalid: it is not pushed. */
  error?: string;
}

/** What resolveRoutes gives the merge and the push. */
export interface ResolvedRoutes {
  /** Service key -> JSON list of the documents attached to it (routes, then the FaultInjections they use). */
  perService: ReadonlyMap<string, string>;
  /** Service key -> services its routes send traffic to (backends and mirrors), pushed along with it. */
  backends: ReadonlyMap<string, readonly string[]>;
  rows: readonly RouteRow[];
}

const idOf = (kind: string, namespace: string, name: string) => `${kind}/${namespace}/${name}`;

interface Candidate {
  id: string;
  source: string;
  doc: unknown;
  value: RouteDocumentObject | undefined;
  error: string | undefined;
}

/**
 * Merges applied and cluster documents. Pure: `serviceExists` only adds
 * warnings (a route may arrive before its services), and a reference to a
 * FaultInjection that does not exist is a warning too (the agent then answers
 * that rule's requests with 500, as the Gateway API says).
 */
export function resolveRoutes(applied: ReadonlyMap<string, string>, cluster: readonly ClusterRouteDocument[], serviceExists: (key: string) => boolean = () => true): ResolvedRoutes {
  const byId = new Map<string, Candidate[]>();
  const add = (source: string, doc: unknown, fromCluster: boolean) => {
    const r = validateRouteDocument(doc, { fromCluster });
    const value = r.ok ? r.value : undefined;
    const id = value ? idOf(value.kind, value.namespace, value.name) : documentLabel(doc).replace(' ', '/');
    const list = byId.get(id) ?? [];
    list.push({ id, source, doc, value, error: r.ok ? undefined : r.errors.join('; ') });
    byId.set(id, list);
  };
  for (const json of applied.values()) add('kedge apply', JSON.parse(json), false);
  for (const c of [...cluster].sort((a, b) => a.cluster.localeCompare(b.cluster))) add(`cluster ${c.cluster}`, c.doc, true);

  const winners: Candidate[] = [];
  const rows: RouteRow[] = [];
  const rowById = new Map<string, RouteRow>();
  for (const [, list] of [...byId].sort(([a], [b]) => a.localeCompare(b))) {
    // kedge apply first (added first), then clusters by name; an invalid copy never wins over a valid one.
    const win = list.find((c) => c.value) ?? list[0]!;
    const warnings = list.filter((c) => c !== win).map((c) => `also defined by ${c.source}${c.error ? ' (invalid there)' : ''}; the copy from ${win.source} is used`);
    if (win.value) winners.push(win);
    const row = rowOf(win, warnings);
    rows.push(row);
    rowById.set(win.id, row);
  }

  const faults = new Map<string, FaultObject & { doc: unknown }>();
  for (const w of winners) if (w.value!.kind === 'FaultInjection') faults.set(`${w.value!.namespace}/${w.value!.name}`, { ...(w.value as FaultObject), doc: w.doc });
  // GEP-1294: on one service port a GRPCRoute wins over HTTPRoutes; say so on the HTTPRoute.
  const grpcParents = winners.flatMap((w) => (w.value!.kind === 'GRPCRoute' ? (w.value as RouteObject).parents.map((p) => ({ p, w })) : []));
  const whole = (p: { port: number | undefined; sectionName: string | undefined }) => p.port === undefined && p.sectionName === undefined;
  for (const w of winners) {
    if (w.value!.kind !== 'HTTPRoute' || grpcParents.length === 0) continue;
    const noted = new Set<string>();
    for (const p of (w.value as RouteObject).parents) {
      for (const { p: g, w: gw } of grpcParents) {
        const overlap = g.service === p.service && (whole(p) || whole(g) || (p.port !== undefined && p.port === g.port) || (p.sectionName !== undefined && p.sectionName === g.sectionName));
        const key = `${gw.id} ${p.service}`;
        if (!overlap || noted.has(key)) continue;
        noted.add(key);
        rowById.get(w.id)!.warnings.push(`GRPCRoute ${gw.value!.namespace}/${gw.value!.name} attaches to the same port of ${p.service}; a GRPCRoute wins there (GEP-1294), so this route is not used on that port`);
      }
    }
  }
  const attached = new Map<string, { docs: unknown[]; faults: Set<string>; backends: Set<string> }>();
  for (const w of winners) {
    const route = w.value!;
    if (route.kind === 'FaultInjection') continue;
    const row = rowById.get(w.id)!;
    for (const p of route.parents) {
      if (!serviceExists(p.service)) row.warnings.push(`parent service ${p.service} is not known to the federation`);
    }
    const backends = new Set<string>();
    const refs = new Set<string>();
    for (const rule of route.rules) {
      for (const b of rule.backends) backends.add(b.service);
      for (const m of rule.filters.mirrors) backends.add(m.service);
      if (rule.filters.faultRef) refs.add(rule.filters.faultRef);
    }
    for (const b of backends) if (!serviceExists(b)) row.warnings.push(`backend ${b} is not known to the federation; requests sent to it fail with 500`);
    for (const ref of refs) if (!faults.has(ref)) row.warnings.push(`FaultInjection ${ref} does not exist; requests of the rules using it fail with 500`);
    for (const service of new Set(route.parents.map((p) => p.service))) {
      let a = attached.get(service);
      if (!a) attached.set(service, (a = { docs: [], faults: new Set(), backends: new Set() }));
      a.docs.push(cleanDocument(w.doc, route));
      for (const r of refs) a.faults.add(r);
      for (const b of backends) a.backends.add(b);
    }
  }
  const perService = new Map<string, string>();
  const backendMap = new Map<string, string[]>();
  for (const [service, a] of attached) {
    const docs = [...a.docs];
    for (const ref of [...a.faults].sort()) {
      const f = faults.get(ref);
      if (f) docs.push(cleanDocument(f.doc, f));
    }
    perService.set(service, JSON.stringify(docs));
    backendMap.set(service, [...a.backends].filter((b) => b !== service).sort());
  }
  return { perService, backends: backendMap, rows };
}

/** The document as agents receive it: what the user wrote, with namespace and creationTimestamp made explicit and no server fields. */
function cleanDocument(doc: unknown, value: RouteDocumentObject): unknown {
  const d = doc as { apiVersion: string; kind: string; metadata: Record<string, unknown>; spec: unknown };
  return {
    apiVersion: d.apiVersion,
    kind: d.kind,
    metadata: { name: value.name, namespace: value.namespace, ...(value.createdAt ? { creationTimestamp: value.createdAt } : {}) },
    spec: d.spec,
  };
}

function rowOf(c: Candidate, warnings: string[]): RouteRow {
  const v = c.value;
  const label = documentLabel(c.doc).split(' ');
  const [namespace = 'default', name = ''] = (label[1] ?? '').split('/');
  const row: RouteRow = {
    kind: (v?.kind ?? label[0]) as RouteKind,
    namespace: v?.namespace ?? namespace,
    name: v?.name ?? name,
    source: c.source,
    parents: v && v.kind !== 'FaultInjection' ? v.parents.map((p) => `${p.service}${p.port ? `:${p.port}` : p.sectionName ? `:${p.sectionName}` : ''}`) : [],
    backends: v && v.kind !== 'FaultInjection' ? [...new Set(v.rules.flatMap((r) => r.backends.map((b) => `${b.service}:${b.port}${r.backends.length > 1 ? `=${b.weight}` : ''}`)))] : [],
    rules: v && v.kind !== 'FaultInjection' ? v.rules.length : 0,
    createdAt: v?.createdAt ?? '',
    warnings,
  };
  if (c.error) row.error = c.error;
  return row;
}

/** The routes applied with `kedge apply`, durable in the store. */
export class RouteTable {
  private readonly mirror: WatchedMap;
  private rev = 0;

  constructor(private readonly store: Store, opts: { logger: Logger; onChange: () => void }) {
    this.mirror = new WatchedMap(store, ROUTES_PREFIX, {
      logger: opts.logger,
      onChange: () => {
        this.rev += 1;
        opts.onChange();
      },
    });
  }

  /** Changes with every change of the table, so callers can cache what they derive from it. */
  revision(): number {
    return this.rev;
  }

  start(): Promise<void> {
    return this.mirror.start();
  }

  /** `<kind>/<namespace>/<name>` -> JSON document. */
  table(): ReadonlyMap<string, string> {
    return this.mirror.table();
  }

  /**
   * Validates and stores documents. One bad document rejects only itself:
   * the valid ones are stored and every error is returned, each naming its
   * document and path. Parents, backends and mirrors must name services the
   * federation knows; an ExtensionRef must name a FaultInjection stored or
   * applied in the same request. A re-applied route keeps its first
   * creationTimestamp, so its precedence does not change.
   */
  async apply(
    docs: readonly unknown[],
    serviceExists: (key: string) => boolean,
    servicePorts?: (key: string) => readonly { name: string; port: number }[] | undefined,
    now: () => Date = () => new Date(),
  ): Promise<{ applied: { kind: string; namespace: string; name: string }[]; errors: string[] }> {
    const errors: string[] = [];
    const valid: { value: RouteDocumentObject; doc: unknown }[] = [];
    for (const doc of docs) {
      const r = validateRouteDocument(doc, { serviceExists, ...(servicePorts ? { servicePorts } : {}) });
      if (r.ok) valid.push({ value: r.value, doc });
      else errors.push(...r.errors);
    }
    const faults = new Set([...this.mirror.table().keys()].filter((k) => k.startsWith('FaultInjection/')).map((k) => k.slice('FaultInjection/'.length)));
    for (const v of valid) if (v.value.kind === 'FaultInjection') faults.add(`${v.value.namespace}/${v.value.name}`);
    const seen = new Set<string>();
    const stored: { kind: string; namespace: string; name: string }[] = [];
    for (const { value, doc } of valid) {
      const id = idOf(value.kind, value.namespace, value.name);
      const label = `${value.kind} ${value.namespace}/${value.name}`;
      if (seen.has(id)) {
        errors.push(`${label}: appears twice in one apply; keep one`);
        continue;
      }
      seen.add(id);
      if (value.kind !== 'FaultInjection') {
        const missing = value.rules.flatMap((r, i) => (r.filters.faultRef && !faults.has(r.filters.faultRef) ? [`${label}: spec.rules[${i}].filters: the ExtensionRef names FaultInjection ${r.filters.faultRef}, which does not exist; apply it first or in the same file`] : []));
        if (missing.length) {
          errors.push(...missing);
          continue;
        }
      }
      const prev = this.mirror.table().get(id);
      const created = (prev ? (JSON.parse(prev) as { metadata?: { creationTimestamp?: string } }).metadata?.creationTimestamp : undefined) ?? now().toISOString();
      const d = doc as { metadata: Record<string, unknown> };
      const json = JSON.stringify({ ...d, metadata: { ...d.metadata, namespace: value.namespace, creationTimestamp: created } });
      await this.store.put(ROUTES_PREFIX + id, json);
      this.mirror.table().set(id, json);
      this.rev += 1;
      stored.push({ kind: value.kind, namespace: value.namespace, name: value.name });
    }
    return { applied: stored, errors };
  }

  /**
   * Deletes an applied document. A FaultInjection still used by an applied
   * route is kept (its requests would fail with 500): KEDGE_IN_USE.
   */
  async remove(kind: RouteKind, namespace: string, name: string): Promise<void> {
    const id = idOf(kind, namespace, name);
    if (!this.mirror.table().has(id)) throw new KedgeError('KEDGE_NOT_FOUND', `no ${kind} ${namespace}/${name} was applied with kedge apply (see kedge get routes)`);
    if (kind === 'FaultInjection') {
      const users = [...this.mirror.table()].filter(([k, json]) => !k.startsWith('FaultInjection/') && usesFault(JSON.parse(json), `${namespace}/${name}`)).map(([k]) => k.replace('/', ' '));
      if (users.length) throw new KedgeError('KEDGE_IN_USE', `FaultInjection ${namespace}/${name} is used by ${users.join(', ')}; delete or change those routes first`);
    }
    this.mirror.table().delete(id);
    this.rev += 1;
    await this.store.delete(ROUTES_PREFIX + id);
  }

  close(): void {
    this.mirror.close();
  }
}

function usesFault(doc: unknown, ref: string): boolean {
  const r = validateRouteDocument(doc);
  return r.ok && r.value.kind !== 'FaultInjection' && (r.value as RouteObject).rules.some((rule) => rule.filters.faultRef === ref);
}
