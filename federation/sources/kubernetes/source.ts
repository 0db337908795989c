// The `kubernetes` source: one per cluster kubeconfig. Lists and watches
// Services, EndpointSlices and Nodes with @kubernetes/client-node and maps
// them to SourceServices (mapping.ts); HTTPRoutes and GRPCRoutes
// (gateway.networking.k8s.io/v1) with the same reflectors, handed to the
// federation as documents (routes()). A cluster without the Gateway API
// CRDs answers 404 for those: it has no routes, and its endpoints are not
// affected. AuthorizationPolicies and PeerAuthentications
// (security.istio.io/v1) likewise (securityPolicies()); a cluster without
// Istio's CRDs has none. A cluster that stays unreachable for
// staleAfterMs keeps its last endpoints, marked STALE, instead of emptying
// the mesh; it is fresh again as soon as every watch is re-established.
import type { KubeConfig, V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from '../../../proto/model/log';
import { errorMessage } from '../../../proto/model/errors';
import type { Source, SourceService, SourceStatus } from '../types';
import { DEFAULT_BACKOFF, type BackoffPolicy } from './backoff';
import { loadKubeconfig, openWatch, serverOf, withSignal, type WatchCallbacks } from './client';
import { describeApiError } from './errors';
import { DEFAULT_EXCLUDED_NAMESPACES, nodeTopologies, nodeTopologyOf, serviceFromObjects, sliceServiceKey, type MappingContext, type NodeTopology } from './mapping';
import { keyOf, Reflector, type ObjectChange } from './reflector';
import { reviewServiceAccountToken, type ServiceAccountTokenReview, type TokenReviewOptions } from './token-review';

/** Configuration of one cluster's source (from `clusters[]` of kind kubernetes). */
export interface KubernetesSourceConfig {
  /** Cluster name: every endpoint's `cluster`. */
  name: string;
  /** Path of the kubeconfig; its current context is used. */
  kubeconfig: string;
  /** Every endpoint's `network`. */
  network: string;
  logger: Logger;
  /** How long the cluster may be unreachable before its endpoints turn STALE. */
  staleAfterMs?: number;
  /** Bound on every list request and on the wait for a watch's response headers. */
  requestTimeoutMs?: number;
  /** start() resolves after the first sync or this long, whichever is first (the sync goes on). */
  startWaitMs?: number;
  /** Server-side watch timeout (each watch picks between this and twice it). */
  watchTimeoutSeconds?: number;
  backoff?: BackoffPolicy;
  /** Namespaces left out of the mesh (default kube-system, kube-public, kube-node-lease). */
  excludeNamespaces?: readonly string[];
}

/** Defaults of the optional settings, in one table. */
export const KUBERNETES_SOURCE_DEFAULTS = {
  // Long enough to ride out an API server rollout, short enough that an
  // operator sees a lost cluster within a minute.
  staleAfterMs: 30_000,
  // A full list of a large cluster's EndpointSlices takes seconds.
  requestTimeoutMs: 30_000,
  // Federation start-up waits this long at most for a slow or hanging cluster.
  startWaitMs: 5_000,
  // client-go's reflector uses 5-10 min too.
  watchTimeoutSeconds: 300,
  backoff: DEFAULT_BACKOFF,
} as const;

/** Endpoints of one Kubernetes cluster, kept current by list/watch. */
export class KubernetesSource implements Source {
  readonly kind = 'kubernetes' as const;
  readonly name: string;
  /** The loaded kubeconfig, e.g. for TokenReview against this cluster. */
  readonly kubeConfig: KubeConfig;
  /** API server URL of the kubeconfig's current context. */
  readonly server: string;
  private readonly cfg: KubernetesSourceConfig;
  private readonly log: Logger;
  private readonly requestTimeoutMs: number;
  private readonly staleAfterMs: number;
  private readonly services$: Reflector<V1Service>;
  private readonly slices: Reflector<V1EndpointSlice>;
  private readonly nodes: Reflector<V1Node>;
  private readonly httpRoutes: Reflector<RouteObject>;
  private readonly grpcRoutes: Reflector<RouteObject>;
  private currentRoutes: readonly unknown[] = [];
  private readonly authorizationPolicies: Reflector<RouteObject>;
  private readonly peerAuthentications: Reflector<RouteObject>;
  private currentSecurity: readonly unknown[] = [];
  // Incremental mapping: only services whose Service, slices or nodes changed are mapped again.
  private readonly mapped = new Map<string, { svc: SourceService; fp: string }>();
  private readonly slicesByService = new Map<string, Map<string, V1EndpointSlice>>();
  private topologies = new Map<string, NodeTopology>();
  private readonly excluded: ReadonlySet<string>;
  private dirty = new Set<string>();
  private allDirty = true;
  private renderedStale = false;
  private current: readonly SourceService[] = [];
  private endpointCount = 0;
  private onChange: () => void = () => {};
  private started = false;
  private closed = false;
  private recomputePending = false;
  private connected = false;
  private everConnected = false;
  private stale = false;
  private lastSyncAt: number | undefined;
  private staleTimer: NodeJS.Timeout | undefined;

  /** Loads the kubeconfig; throws KEDGE_K8S_KUBECONFIG naming the file when it is unusable. */
  constructor(cfg: KubernetesSourceConfig) {
    this.cfg = cfg;
    this.name = cfg.name;
    this.kubeConfig = loadKubeconfig(cfg.kubeconfig);
    this.server = serverOf(this.kubeConfig);
    this.requestTimeoutMs = cfg.requestTimeoutMs ?? KUBERNETES_SOURCE_DEFAULTS.requestTimeoutMs;
    this.staleAfterMs = cfg.staleAfterMs ?? KUBERNETES_SOURCE_DEFAULTS.staleAfterMs;
    this.excluded = new Set(cfg.excludeNamespaces ?? DEFAULT_EXCLUDED_NAMESPACES);
    const core = this.kubeConfig.makeApiClient(k8s.CoreV1Api);
    const discovery = this.kubeConfig.makeApiClient(k8s.DiscoveryV1Api);
    this.log = cfg.logger.child({ cluster: cfg.name, server: this.server });
    const common = {
      server: this.server,
      logger: this.log,
      requestTimeoutMs: this.requestTimeoutMs,
      watchTimeoutSeconds: cfg.watchTimeoutSeconds ?? KUBERNETES_SOURCE_DEFAULTS.watchTimeoutSeconds,
      backoff: cfg.backoff ?? KUBERNETES_SOURCE_DEFAULTS.backoff,
      describe: (err: unknown, what: string) => describeApiError(err, { server: this.server, kubeconfig: cfg.kubeconfig, what, timeoutMs: this.requestTimeoutMs }),
      openWatch: (path: string, params: Record<string, string | number | boolean>, cb: WatchCallbacks) => openWatch(this.kubeConfig, path, params, this.requestTimeoutMs, cb),
      onState: () => this.stateChanged(),
      trim: withoutManagedFields,
    };
    this.services$ = new Reflector<V1Service>({ ...common, onObjects: (c) => this.serviceChanged(c), resource: 'services', watchPath: '/api/v1/services', list: (signal) => core.listServiceForAllNamespaces({}, withSignal(signal)) });
    this.slices = new Reflector<V1EndpointSlice>({
      ...common,
      onObjects: (c) => this.sliceChanged(c),
      resource: 'endpointslices',
      watchPath: '/apis/discovery.k8s.io/v1/endpointslices',
      list: (signal) => discovery.listEndpointSliceForAllNamespaces({}, withSignal(signal)),
    });
    this.nodes = new Reflector<V1Node>({
      ...common,
      onObjects: (c) => this.nodeChanged(c),
      resource: 'nodes',
      watchPath: '/api/v1/nodes',
      list: (signal) => core.listNode({}, withSignal(signal)),
      // Only name and topology labels matter; a Node's status (images, conditions) is large.
      trim: (n) => ({ metadata: { name: n.metadata?.name, namespace: n.metadata?.namespace, resourceVersion: n.metadata?.resourceVersion, labels: n.metadata?.labels } }),
    });
    const custom = this.kubeConfig.makeApiClient(k8s.CustomObjectsApi);
    const routeReflector = (plural: 'httproutes' | 'grpcroutes') => new Reflector<RouteObject>({
      ...common,
      // Routes say nothing about endpoints: their state is not the cluster's.
      onState: () => {},
      onObjects: () => this.routesChanged(),
      resource: plural,
      watchPath: `/apis/gateway.networking.k8s.io/v1/${plural}`,
      list: (signal) => custom.listClusterCustomObject({ group: 'gateway.networking.k8s.io', version: 'v1', plural }, withSignal(signal)) as Promise<{ items?: RouteObject[]; metadata?: { resourceVersion?: string } }>,
    });
    this.httpRoutes = routeReflector('httproutes');
    this.grpcRoutes = routeReflector('grpcroutes');
    const securityReflector = (plural: 'authorizationpolicies' | 'peerauthentications') => new Reflector<RouteObject>({
      ...common,
      // Policies say nothing about endpoints either.
      onState: () => {},
      onObjects: () => this.securityChanged(),
      resource: plural,
      watchPath: `/apis/security.istio.io/v1/${plural}`,
      list: (signal) => custom.listClusterCustomObject({ group: 'security.istio.io', version: 'v1', plural }, withSignal(signal)) as Promise<{ items?: RouteObject[]; metadata?: { resourceVersion?: string } }>,
    });
    this.authorizationPolicies = securityReflector('authorizationpolicies');
    this.peerAuthentications = securityReflector('peerauthentications');
  }

  /**
   * Starts the three list/watch loops; resolves once each listed or failed
   * once, or after startWaitMs (a hanging API server must not hold up the
   * federation); never rejects.
   */
  async start(onChange: () => void): Promise<void> {
    if (this.started) throw new Error(`kubernetes source ${this.name} started twice`);
    this.started = true;
    this.onChange = onChange;
    for (const r of this.reflectors()) r.start();
    this.httpRoutes.start();
    this.grpcRoutes.start();
    this.authorizationPolicies.start();
    this.peerAuthentications.start();
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.cfg.startWaitMs ?? KUBERNETES_SOURCE_DEFAULTS.startWaitMs)));
    await Promise.race([Promise.all(this.reflectors().map((r) => r.firstAttempt)), waited]);
    clearTimeout(timer);
    this.recompute();
  }

  services(): readonly SourceService[] {
    return this.current;
  }

  /** HTTPRoutes and GRPCRoutes of the cluster (outside excluded namespaces), the same array until one changes. */
  routes(): readonly unknown[] {
    return this.currentRoutes;
  }

  /** AuthorizationPolicies and PeerAuthentications of the cluster (outside excluded namespaces), the same array until one changes. */
  securityPolicies(): readonly unknown[] {
    return this.currentSecurity;
  }

  status(): SourceStatus {
    const failing = this.reflectors().find((r) => r.error !== undefined);
    return {
      name: this.name,
      kind: this.kind,
      connected: this.connected,
      // While connected the view is current; after a loss, when it last was.
      lastSync: this.connected ? new Date().toISOString() : this.lastSyncAt !== undefined ? new Date(this.lastSyncAt).toISOString() : undefined,
      stale: this.stale,
      error: this.connected ? undefined : failing?.error?.message,
      services: this.current.length,
      endpoints: this.endpointCount,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.staleTimer) clearTimeout(this.staleTimer);
    for (const r of this.reflectors()) r.close();
    this.httpRoutes.close();
    this.grpcRoutes.close();
    this.authorizationPolicies.close();
    this.peerAuthentications.close();
  }

  /** Checks a pod's service-account token with this cluster's TokenReview. */
  reviewToken(token: string, opts: TokenReviewOptions = {}): Promise<ServiceAccountTokenReview> {
    return reviewServiceAccountToken(this.kubeConfig, token, { timeoutMs: this.requestTimeoutMs, cluster: this.name, kubeconfigPath: this.cfg.kubeconfig, ...opts });
  }

  private reflectors(): [Reflector<V1Service>, Reflector<V1EndpointSlice>, Reflector<V1Node>] {
    return [this.services$, this.slices, this.nodes];
  }

  private stateChanged(): void {
    if (this.closed) return;
    const all = this.reflectors().every((r) => r.connected);
    if (all !== this.connected) {
      // lastSync: when the view was last known complete and current.
      if (all || this.everConnected) this.lastSyncAt = Date.now();
      if (all) this.everConnected = true;
      this.connected = all;
    }
    // Staleness follows the endpoint data (Services and EndpointSlices);
    // a Nodes failure only loses regions and shows as an error.
    if (this.endpointDataCurrent()) {
      if (this.staleTimer) clearTimeout(this.staleTimer);
      this.staleTimer = undefined;
      if (this.stale) {
        this.stale = false;
        this.log.info('Kubernetes cluster reachable again; endpoints fresh');
        // At once, so status() and services() never disagree about staleness.
        this.recompute();
      }
    } else if (!this.staleTimer && !this.stale) {
      this.armStaleTimer();
    }
  }

  private endpointDataCurrent(): boolean {
    return this.services$.connected && this.slices.connected;
  }

  private armStaleTimer(): void {
    this.staleTimer = setTimeout(() => this.markStale(), this.staleAfterMs);
    this.staleTimer.unref();
  }

  private markStale(): void {
    this.staleTimer = undefined;
    if (this.closed || this.endpointDataCurrent()) return;
    // Nothing served yet: nothing to mark; look again later.
    if (!(this.services$.synced && this.slices.synced)) return this.armStaleTimer();
    this.stale = true;
    this.log.warn({ staleAfterMs: this.staleAfterMs }, 'Kubernetes cluster unreachable; serving its last endpoints as STALE');
    this.recompute();
  }

  /**
   * The documents of custom-resource reflectors outside excluded namespaces,
   * each with its apiVersion and kind (the list answer carries none per
   * item; the reflector's resource says it).
   */
  private documentsOf(apiVersion: string, byKind: readonly [string, Reflector<RouteObject>][]): unknown[] {
    const keep = (o: RouteObject) => !this.excluded.has(o.metadata?.namespace ?? '');
    return byKind.flatMap(([kind, r]) => r.items().filter(keep).map((o) => ({ ...o, apiVersion, kind })));
  }

  private documentsChanged(): void {
    if (!this.started) return;
    try {
      this.onChange();
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, 'onChange handler failed');
    }
  }

  private securityChanged(): void {
    if (this.closed) return;
    this.currentSecurity = this.documentsOf('security.istio.io/v1', [['AuthorizationPolicy', this.authorizationPolicies], ['PeerAuthentication', this.peerAuthentications]]);
    this.documentsChanged();
  }

  private routesChanged(): void {
    if (this.closed) return;
    this.currentRoutes = this.documentsOf('gateway.networking.k8s.io/v1', [['HTTPRoute', this.httpRoutes], ['GRPCRoute', this.grpcRoutes]]);
    this.documentsChanged();
  }

  private serviceChanged(c: ObjectChange<V1Service>): void {
    if (c.kind === 'reset') this.allDirty = true;
    else this.markDirty(keyOf(c.kind === 'set' ? c.obj : c.prev));
    this.scheduleRecompute();
  }

  private sliceChanged(c: ObjectChange<V1EndpointSlice>): void {
    if (c.kind === 'reset') {
      this.slicesByService.clear();
      for (const s of this.slices.items()) this.indexSlice(s);
      this.allDirty = true;
    } else {
      if (c.prev) this.unindexSlice(c.prev);
      if (c.kind === 'set') this.indexSlice(c.obj);
    }
    this.scheduleRecompute();
  }

  private nodeChanged(c: ObjectChange<V1Node>): void {
    if (c.kind === 'reset') {
      this.topologies = nodeTopologies(this.nodes.items());
      this.allDirty = true;
    } else {
      const name = (c.kind === 'set' ? c.obj : c.prev).metadata?.name ?? '';
      const before = this.topologies.get(name);
      const after = c.kind === 'set' ? nodeTopologyOf(c.obj) : undefined;
      // Nodes change often (status); only a topology change touches endpoints.
      if (before?.region === after?.region && before?.zone === after?.zone) return;
      if (after) this.topologies.set(name, after);
      else this.topologies.delete(name);
      this.allDirty = true;
    }
    this.scheduleRecompute();
  }

  private indexSlice(s: V1EndpointSlice): void {
    const svc = sliceServiceKey(s);
    const key = keyOf(s);
    if (svc === undefined || key === undefined) return;
    let m = this.slicesByService.get(svc);
    if (!m) this.slicesByService.set(svc, (m = new Map()));
    m.set(key, s);
    this.dirty.add(svc);
  }

  private unindexSlice(s: V1EndpointSlice): void {
    const svc = sliceServiceKey(s);
    const key = keyOf(s);
    if (svc === undefined || key === undefined) return;
    const m = this.slicesByService.get(svc);
    m?.delete(key);
    if (m?.size === 0) this.slicesByService.delete(svc);
    this.dirty.add(svc);
  }

  private markDirty(key: string | undefined): void {
    if (key !== undefined) this.dirty.add(key);
  }

  private scheduleRecompute(): void {
    if (this.recomputePending || this.closed) return;
    this.recomputePending = true;
    // Coalesce: a relist or a burst of events is one recompute and one onChange.
    setImmediate(() => {
      this.recomputePending = false;
      if (!this.closed) this.recompute();
    });
  }

  private recompute(): void {
    // Until Services and EndpointSlices have both been listed, a partial view would drop endpoints.
    if (!(this.services$.synced && this.slices.synced)) return;
    const ctx: MappingContext = { cluster: this.name, network: this.cfg.network, nodes: this.topologies, excluded: this.excluded };
    const keys = this.allDirty ? new Set([...this.mapped.keys(), ...this.services$.items().map((s) => keyOf(s) ?? '')]) : this.dirty;
    this.allDirty = false;
    this.dirty = new Set();
    let changed = this.stale !== this.renderedStale;
    for (const key of keys) {
      const svc = this.services$.get(key);
      const out = svc ? serviceFromObjects(svc, [...(this.slicesByService.get(key)?.values() ?? [])], ctx) : undefined;
      const prev = this.mapped.get(key);
      if (!out) {
        if (prev) this.mapped.delete(key);
        changed ||= prev !== undefined;
        continue;
      }
      const fp = JSON.stringify(out);
      if (prev?.fp === fp) continue;
      this.mapped.set(key, { svc: out, fp });
      changed = true;
    }
    if (!changed) return;
    this.renderedStale = this.stale;
    const sorted = [...this.mapped.keys()].sort().map((k) => this.mapped.get(k)!.svc);
    this.current = this.stale ? sorted.map((s) => ({ ...s, endpoints: s.endpoints.map((e) => ({ ...e, health: 'STALE' as const })) })) : sorted;
    this.endpointCount = sorted.reduce((n, s) => n + s.endpoints.length, 0);
    if (!this.started) return;
    try {
      this.onChange();
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, 'onChange handler failed');
    }
  }
}

/** An HTTPRoute or GRPCRoute as the API server returns it; validated by the federation, not here. */
interface RouteObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; managedFields?: unknown };
  spec?: unknown;
}

/** Drops metadata.managedFields (server-side apply bookkeeping, often the bulk of an object). */
function withoutManagedFields<T extends { metadata?: { managedFields?: unknown } }>(o: T): T {
  if (!o.metadata?.managedFields) return o;
  const { managedFields: _dropped, ...metadata } = o.metadata;
  return { ...o, metadata };
}
