// The Kubernetes API double's object store: like etcd behind an API server,
// one global resourceVersion bumped by every write, an event history that
// watches replay from, and compaction after which a watch from an older
// resourceVersion is answered with 410 Gone. No sockets here.
import { randomUUID } from 'node:crypto';

/** The resources the double serves. */
export type Resource = 'services' | 'endpointslices' | 'nodes' | 'httproutes' | 'grpcroutes' | 'authorizationpolicies' | 'peerauthentications';

/** How a resource appears on the wire. */
export interface ResourceInfo {
  apiVersion: string;
  kind: string;
  listKind: string;
  namespaced: boolean;
}

export const RESOURCES: Record<Resource, ResourceInfo> = {
  services: { apiVersion: 'v1', kind: 'Service', listKind: 'ServiceList', namespaced: true },
  endpointslices: { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', listKind: 'EndpointSliceList', namespaced: true },
  nodes: { apiVersion: 'v1', kind: 'Node', listKind: 'NodeList', namespaced: false },
  // Gateway API CRDs, as a cluster with them installed serves them.
  httproutes: { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', listKind: 'HTTPRouteList', namespaced: true },
  grpcroutes: { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', listKind: 'GRPCRouteList', namespaced: true },
  // Istio's security CRDs.
  authorizationpolicies: { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', listKind: 'AuthorizationPolicyList', namespaced: true },
  peerauthentications: { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', listKind: 'PeerAuthenticationList', namespaced: true },
};

/** Any stored object (a fixture's V1Service, V1EndpointSlice, V1Node...): only metadata is interpreted. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; uid?: string; creationTimestamp?: unknown; generation?: number; labels?: Record<string, string> };
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** One entry of the event history. */
export interface StoredEvent {
  rv: number;
  resource: Resource;
  type: WatchEventType;
  object: KubeObject;
}

/** Resource of an object, from its kind. */
export function resourceOf(obj: KubeObject): Resource {
  for (const [r, info] of Object.entries(RESOURCES) as [Resource, ResourceInfo][]) {
    if (info.kind === obj.kind) return r;
  }
  throw new Error(`kube double: unsupported kind ${String(obj.kind)}`);
}

function keyOf(namespace: string | undefined, name: string): string {
  return `${namespace ?? ''}/${name}`;
}

/** Objects, history and resourceVersions of one fake cluster. */
export class KubeObjectStore {
  private readonly objects: Record<Resource, Map<string, KubeObject>> = { services: new Map(), endpointslices: new Map(), nodes: new Map(), httproutes: new Map(), grpcroutes: new Map(), authorizationpolicies: new Map(), peerauthentications: new Map() };
  private history: StoredEvent[] = [];
  private listeners = new Set<(ev: StoredEvent) => void>();
  /** Last resourceVersion handed out. */
  rv = 100;
  /** Events at or below this resourceVersion are gone; watching from older is 410. */
  compactedRv = 100;

  constructor(private readonly maxHistory = 10_000) {}

  /** Creates or replaces an object (keeps its uid on replace); returns the stored copy. */
  apply(input: KubeObject): KubeObject {
    const resource = resourceOf(input);
    const name = input.metadata?.name;
    if (!name) throw new Error('kube double: object without metadata.name');
    const key = keyOf(RESOURCES[resource].namespaced ? (input.metadata?.namespace ?? 'default') : undefined, name);
    const prev = this.objects[resource].get(key);
    const obj = structuredClone(input);
    const rv = ++this.rv;
    obj.apiVersion = RESOURCES[resource].apiVersion;
    obj.kind = RESOURCES[resource].kind;
    obj.metadata = {
      ...obj.metadata,
      ...(RESOURCES[resource].namespaced ? { namespace: input.metadata?.namespace ?? 'default' } : {}),
      uid: prev?.metadata?.uid ?? randomUUID(),
      resourceVersion: String(rv),
      creationTimestamp: prev?.metadata?.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      generation: (prev?.metadata?.generation ?? 0) + 1,
    };
    this.objects[resource].set(key, obj);
    this.record({ rv, resource, type: prev ? 'MODIFIED' : 'ADDED', object: obj });
    return obj;
  }

  /** Deletes an object; the DELETED event carries its last state at a new resourceVersion. */
  delete(resource: Resource, namespace: string | undefined, name: string): boolean {
    const key = keyOf(RESOURCES[resource].namespaced ? (namespace ?? 'default') : undefined, name);
    const prev = this.objects[resource].get(key);
    if (!prev) return false;
    this.objects[resource].delete(key);
    const rv = ++this.rv;
    const obj = structuredClone(prev);
    obj.metadata = { ...obj.metadata, resourceVersion: String(rv) };
    this.record({ rv, resource, type: 'DELETED', object: obj });
    return true;
  }

  get(resource: Resource, namespace: string | undefined, name: string): KubeObject | undefined {
    return this.objects[resource].get(keyOf(RESOURCES[resource].namespaced ? (namespace ?? 'default') : undefined, name));
  }

  /** Current objects of a resource (optionally one namespace), sorted by namespace/name as the API server lists them. */
  list(resource: Resource, namespace?: string): KubeObject[] {
    return [...this.objects[resource].entries()]
      .filter(([, o]) => namespace === undefined || o.metadata?.namespace === namespace)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => o);
  }

  /** Events of `resource` after `fromRv`, or 'expired' when compaction removed some. */
  eventsSince(resource: Resource, fromRv: number, namespace?: string): StoredEvent[] | 'expired' {
    if (fromRv < this.compactedRv) return 'expired';
    return this.history.filter((e) => e.rv > fromRv && e.resource === resource && (namespace === undefined || e.object.metadata?.namespace === namespace));
  }

  /** Drops the whole history: every watch from before now gets 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history = [];
  }

  /** Called synchronously for every write, after it is recorded. */
  subscribe(fn: (ev: StoredEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private record(ev: StoredEvent): void {
    this.history.push(ev);
    if (this.history.length > this.maxHistory) {
      const dropped = this.history.splice(0, this.history.length - this.maxHistory);
      this.compactedRv = dropped[dropped.length - 1]!.rv;
    }
    for (const fn of this.listeners) fn(ev);
  }
}
