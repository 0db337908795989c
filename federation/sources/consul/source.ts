// The `consul` source: one Consul datacenter's passing service instances,
// kept current with blocking queries. One query watches the service list
// (/v1/catalog/services); each service gets its own query on
// /v1/health/service/<name>?passing (the same shape as consul-template and
// Prometheus' Consul discovery). Each query retries on its own with jittered
// backoff; when Consul is unreachable the last endpoints stay, marked STALE
// once a service's query (or the catalog query) has failed continuously for
// staleAfterMs.
//
// Consul limits concurrent HTTP connections per client address
// (limits.http_max_conns_per_client, default 200); this source holds one
// per service plus one, so a catalog larger than that needs the limit raised.
import * as fs from 'node:fs';
import { errorMessage, KedgeError } from '../../../proto/model/errors';
import type { Logger } from '../../../proto/model/log';
import type { Source, SourceService, SourceStatus } from '../types';
import type { BackoffOptions } from './backoff';
import { BlockingQuery, type BlockingAnswer } from './blocking-query';
import { ConsulClient, type ConsulReadOptions } from './client';
import { describeConsulError } from './errors';
import { markStale, servicesFromHealth, sortServices, type ConsulMappingOptions } from './mapping';
import { readCatalogServices, readHealthEntries, type ConsulHealthEntry } from './wire';

/** Defaults of the tunables, in one table. */
export const CONSUL_SOURCE_DEFAULTS = Object.freeze({
  namespace: 'default',
  staleAfterMs: 30_000,
  /** Blocking wait: short enough that a silently dead connection is noticed within about a minute. */
  waitMs: 60_000,
  requestTimeoutMs: 10_000,
});

/** Configuration of one Consul source (a `kind: consul` cluster). */
export interface ConsulSourceOptions {
  /** The cluster's name in the federation config (and in `kedge get clusters`). */
  name: string;
  /** Consul HTTP API, e.g. http://127.0.0.1:8500. */
  address: string;
  /** The datacenter to read (?dc=); becomes every endpoint's cluster. */
  datacenter: string;
  /** File holding the ACL token, re-read after Consul rejects it (so a rotated token is picked up). */
  tokenFile?: string | undefined;
  /** A token given directly (tests); tokenFile wins. */
  token?: string | undefined;
  network: string;
  /** Namespace for instances without `k8s-namespace` meta (default `default`). */
  namespace?: string | undefined;
  logger: Logger;
  /** How long Consul may be unreachable before its endpoints are marked STALE (default 30 s). */
  staleAfterMs?: number | undefined;
  waitMs?: number | undefined;
  requestTimeoutMs?: number | undefined;
  backoff?: BackoffOptions | undefined;
  now?: () => number;
}

type HealthAnswer = { entries: ConsulHealthEntry[]; problems: string[] };

interface ServiceWatch {
  query: BlockingQuery<HealthAnswer>;
  mapped: SourceService[];
  /** JSON of `mapped`, to tell a real change from an index bump. */
  fingerprint: string;
  problems: Set<string>;
}

/** Endpoints of one Consul datacenter. */
export class ConsulSource implements Source {
  readonly kind = 'consul' as const;
  readonly name: string;
  private readonly client: ConsulClient;
  private readonly mapping: ConsulMappingOptions;
  private readonly staleAfterMs: number;
  private readonly now: () => number;
  private catalog: BlockingQuery<string[]> | undefined;
  private readonly watches = new Map<string, ServiceWatch>();
  private view: readonly SourceService[] = [];
  private staleNames = '';
  /** The initial sync finished (or failed): from now on changes are announced. */
  private synced = false;
  private closed = false;
  private lastSyncAt: number | undefined;
  private lastError: string | undefined;
  private token: string | undefined;
  private staleTimer: NodeJS.Timeout | undefined;
  private onChange: () => void = () => {};

  constructor(private readonly opts: ConsulSourceOptions) {
    this.name = opts.name;
    this.now = opts.now ?? Date.now;
    this.staleAfterMs = opts.staleAfterMs ?? CONSUL_SOURCE_DEFAULTS.staleAfterMs;
    this.mapping = { datacenter: opts.datacenter, network: opts.network, namespace: opts.namespace ?? CONSUL_SOURCE_DEFAULTS.namespace };
    this.client = new ConsulClient(opts.address, opts.datacenter);
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    this.catalog = this.query('catalog services', (o) => this.client.catalogServices(o), readCatalogServices, (names) => this.applyCatalog(names));
    await this.catalog.first;
    // The first catalog answer created one watch per service; wait for their first answers too.
    await Promise.all([...this.watches.values()].map((w) => w.query.first));
    if (this.closed) return;
    this.synced = true;
    this.rebuild();
    if (this.connected()) this.opts.logger.info({ source: this.name, services: this.view.length }, 'consul source synced');
  }

  services(): readonly SourceService[] {
    return this.view;
  }

  status(): SourceStatus {
    const connected = this.connected();
    if (connected) this.lastSyncAt = this.now();
    let error = connected ? undefined : this.lastError;
    if (connected && this.filteredByAcl()) {
      error = `Consul ${this.opts.datacenter} at ${this.opts.address} hid some services or instances from this token (X-Consul-Results-Filtered-By-ACLs): grant it service:read and node:read on everything the mesh should see`;
    }
    return {
      name: this.name,
      kind: this.kind,
      connected,
      lastSync: this.lastSyncAt === undefined ? undefined : new Date(this.lastSyncAt).toISOString(),
      stale: this.staleNames !== '',
      error,
      services: this.view.length,
      endpoints: this.view.reduce((n, s) => n + s.endpoints.length, 0),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.staleTimer);
    this.catalog?.stop();
    for (const w of this.watches.values()) w.query.stop();
    this.client.destroy();
  }

  /** Builds a blocking query whose answers are validated by `read` before `apply` sees them. */
  private query<T>(what: string, fetch: (o: ConsulReadOptions) => Promise<BlockingAnswer<unknown>>, read: (body: unknown) => T, apply: (data: T) => void): BlockingQuery<T> {
    const q: BlockingQuery<T> = new BlockingQuery<T>({
      fetch: async (index, ctx) => {
        if (this.token === undefined) this.token = this.readToken();
        const answer = await fetch({
          index,
          ctx,
          token: this.token || undefined,
          waitMs: this.opts.waitMs ?? CONSUL_SOURCE_DEFAULTS.waitMs,
          timeoutMs: this.opts.requestTimeoutMs ?? CONSUL_SOURCE_DEFAULTS.requestTimeoutMs,
        });
        return { ...answer, body: read(answer.body) };
      },
      onData: (answer) => {
        if (this.closed) return;
        apply(answer.body);
        this.afterAnswer(q);
      },
      onError: (err) => this.queryFailed(what, err),
      backoff: this.opts.backoff,
      now: this.now,
    });
    return q;
  }

  private applyCatalog(names: string[]): void {
    const wanted = new Set(names);
    let removed = false;
    for (const [name, w] of this.watches) {
      if (wanted.has(name)) continue;
      w.query.stop();
      this.watches.delete(name);
      removed = true;
    }
    for (const name of names) {
      if (this.watches.has(name)) continue;
      const watch: ServiceWatch = { mapped: [], fingerprint: '[]', problems: new Set(), query: undefined as never };
      watch.query = this.query(
        `health of service ${name}`,
        (o) => this.client.healthService(name, o),
        (body) => readHealthEntries(name, body),
        (answer) => this.applyHealth(name, watch, answer),
      );
      this.watches.set(name, watch);
    }
    if (removed) this.rebuild();
  }

  private applyHealth(name: string, watch: ServiceWatch, answer: HealthAnswer): void {
    if (this.watches.get(name) !== watch) return; // dropped from the catalog meanwhile
    const m = servicesFromHealth(name, answer.entries, this.mapping);
    const problems = new Set([...answer.problems, ...m.problems]);
    for (const p of problems) if (!watch.problems.has(p)) this.opts.logger.warn({ source: this.name, problem: p }, 'consul instance not mapped as is');
    watch.problems = problems;
    const fingerprint = JSON.stringify(m.services);
    if (fingerprint === watch.fingerprint) return;
    watch.mapped = m.services;
    watch.fingerprint = fingerprint;
    this.rebuild();
  }

  /** After any answer: a recovered Consul lets the other queries retry at once, and staleness may end. */
  private afterAnswer(q: BlockingQuery<unknown>): void {
    if (q === this.catalog) for (const w of this.watches.values()) if (w.query.failing) w.query.retryNow();
    if (this.connected()) {
      this.lastSyncAt = this.now();
      this.lastError = undefined;
    }
    if (this.computeStaleNames() !== this.staleNames) this.rebuild();
  }

  private queryFailed(what: string, err: unknown): void {
    if (this.closed) return;
    const e = describeConsulError(err, { address: this.opts.address, datacenter: this.opts.datacenter, what, tokenFile: this.opts.tokenFile });
    // A rejected token is re-read before the next attempt: the file may have been rotated.
    if (e.code === 'KEDGE_CONSUL_ACL' || e.code === 'KEDGE_CONSUL_TOKEN') this.token = undefined;
    if (e.message !== this.lastError) this.opts.logger.warn({ source: this.name, code: e.code, err: e.message }, 'consul query failed; retrying with backoff');
    this.lastError = e.message;
    this.scheduleStaleCheck();
  }

  private readToken(): string {
    if (this.opts.tokenFile === undefined) return this.opts.token ?? '';
    let text: string;
    try {
      text = fs.readFileSync(this.opts.tokenFile, 'utf8').trim();
    } catch (err) {
      throw new KedgeError('KEDGE_CONSUL_TOKEN', `cannot read the Consul token file ${this.opts.tokenFile} (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}): check tokenFile in the cluster config`, { cause: err });
    }
    if (!text) throw new KedgeError('KEDGE_CONSUL_TOKEN', `the Consul token file ${this.opts.tokenFile} is empty: put the ACL token's SecretID in it`);
    return text;
  }

  private connected(): boolean {
    if (!this.synced || !this.catalog || this.catalog.failing || this.catalog.lastOk === undefined) return false;
    for (const w of this.watches.values()) if (w.query.failing || w.query.lastOk === undefined) return false;
    return true;
  }

  private filteredByAcl(): boolean {
    if (this.catalog?.filteredByAcl) return true;
    for (const w of this.watches.values()) if (w.query.filteredByAcl) return true;
    return false;
  }

  private isStale(q: BlockingQuery<unknown>): boolean {
    return q.failingSince !== undefined && this.now() - q.failingSince >= this.staleAfterMs;
  }

  /** Names of the services whose endpoints are stale, joined (a cheap comparable). */
  private computeStaleNames(): string {
    const all = this.catalog !== undefined && this.isStale(this.catalog);
    return [...this.watches].filter(([, w]) => w.mapped.length > 0 && (all || this.isStale(w.query))).map(([n]) => n).sort().join(',');
  }

  /** Re-evaluates staleness when the earliest failing query crosses staleAfterMs. */
  private scheduleStaleCheck(): void {
    clearTimeout(this.staleTimer);
    if (this.closed) return;
    let next = Infinity;
    for (const q of [this.catalog, ...[...this.watches.values()].map((w) => w.query)]) {
      if (!q || q.failingSince === undefined || this.isStale(q)) continue;
      next = Math.min(next, q.failingSince + this.staleAfterMs);
    }
    if (this.computeStaleNames() !== this.staleNames) this.rebuild();
    if (next === Infinity) return;
    this.staleTimer = setTimeout(() => this.scheduleStaleCheck(), Math.max(0, next - this.now()) + 1);
    this.staleTimer.unref();
  }

  /** Rebuilds the view from every watch; tells the federation once synced. */
  private rebuild(): void {
    this.staleNames = this.computeStaleNames();
    const stale = new Set(this.staleNames ? this.staleNames.split(',') : []);
    const out: SourceService[] = [];
    for (const [name, w] of this.watches) out.push(...(stale.has(name) ? markStale(w.mapped) : w.mapped));
    this.view = sortServices(out);
    if (this.synced && !this.closed) this.onChange();
  }
}
