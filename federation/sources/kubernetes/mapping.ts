// Kubernetes objects -> SourceServices: pure, deterministic, table-tested.
//
// Decisions (the operator-visible behaviour of the kubernetes source):
// - One SourceService per Service, keyed by name.namespace like every source.
// - Endpoints come from the Service's EndpointSlices (label
//   kubernetes.io/service-name), one per address (addresses[0], which the
//   API defines as fungible with the others). An address in two slices (the
//   controller moves endpoints between slices) is one endpoint; the healthier
//   entry wins and ports are united.
// - Health: conditions.ready (nil means ready, per the API) -> HEALTHY;
//   not ready -> UNHEALTHY; terminating but still serving -> UNHEALTHY (new
//   connections go elsewhere while it drains, as kube-proxy does when a ready
//   endpoint exists); terminating and not serving -> omitted (it is gone).
// - Locality: zone from the slice endpoint's `zone` (falling back to its
//   node's topology.kubernetes.io/zone), region from the node's
//   topology.kubernetes.io/region; subzone is always empty.
// - Labels: the Service's selector. Slices carry no pod labels, and the
//   selector is exactly the set every selected pod is guaranteed to carry
//   (watching Pods for the rest would cost a watch on the largest collection).
// - Ports: TCP only (the mesh proxies TCP); a service port maps to the slice
//   port of the same name, which is the endpoint's port (targetPort). An
//   unnamed port is called `port-<port>` so it can merge by name. Protocol
//   from appProtocol, else the port name's prefix (http-, grpc-, ...), else tcp.
// - Headless services (clusterIP None) are served like others: the mesh dials
//   endpoints directly and gives every service its own VIP anyway.
// - Services without a selector are served from whatever slices carry their
//   name (hand-written slices), with empty labels.
// - ExternalName services have no endpoints (they are DNS aliases) and are
//   skipped: model such a destination as a Kedge serviceEntry.
// - Services with no TCP port (e.g. UDP-only DNS) are skipped.
// - Dual-stack: IPv4 slices when a service has any, else IPv6; FQDN slices
//   (deprecated) are ignored.
// - Excluded by default: the control-plane namespaces (kube-system,
//   kube-public, kube-node-lease) and default/kubernetes, whose endpoints are
//   each cluster's own API servers and must not merge across clusters.
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { MeshEndpoint, MeshServicePort } from '../../mesh/types';
import type { SourceService } from '../types';

/** Label linking an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const REGION_LABEL = 'topology.kubernetes.io/region';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
// Clusters older than 1.17 only set the beta labels.
const LEGACY_REGION_LABEL = 'failure-domain.beta.kubernetes.io/region';
const LEGACY_ZONE_LABEL = 'failure-domain.beta.kubernetes.io/zone';

/** Namespaces left out unless the config says otherwise. */
export const DEFAULT_EXCLUDED_NAMESPACES: readonly string[] = ['kube-system', 'kube-public', 'kube-node-lease'];

/** Options of the mapping. */
export interface KubeMappingOptions {
  /** Namespaces whose services are not put in the mesh (default DEFAULT_EXCLUDED_NAMESPACES). */
  excludeNamespaces?: readonly string[];
}

type MeshHealth = MeshEndpoint['health'];
type SliceEndpoint = NonNullable<V1EndpointSlice['endpoints']>[number];
type SlicePort = NonNullable<V1EndpointSlice['ports']>[number];

/** Region and zone of a node, from its topology labels. */
export interface NodeTopology {
  region: string;
  zone: string;
}

/** Where mapped endpoints come from: cluster and network of the source. */
export interface MappingContext {
  cluster: string;
  network: string;
  /** Node name -> topology (see nodeTopologies). */
  nodes: ReadonlyMap<string, NodeTopology>;
  excluded: ReadonlySet<string>;
}

/** Builds the services of one cluster from its Services, EndpointSlices and Nodes. */
export function servicesFromObjects(
  services: readonly V1Service[],
  slices: readonly V1EndpointSlice[],
  nodes: readonly V1Node[],
  cluster: string,
  network: string,
  opts: KubeMappingOptions = {},
): SourceService[] {
  const ctx: MappingContext = { cluster, network, nodes: nodeTopologies(nodes), excluded: new Set(opts.excludeNamespaces ?? DEFAULT_EXCLUDED_NAMESPACES) };
  const slicesByService = new Map<string, V1EndpointSlice[]>();
  for (const s of slices) {
    const key = sliceServiceKey(s);
    if (key === undefined) continue;
    const list = slicesByService.get(key);
    if (list) list.push(s);
    else slicesByService.set(key, [s]);
  }
  const out: SourceService[] = [];
  for (const svc of [...services].sort(byNamespaceName)) {
    const mapped = serviceFromObjects(svc, slicesByService.get(`${svc.metadata?.namespace}/${svc.metadata?.name}`) ?? [], ctx);
    if (mapped) out.push(mapped);
  }
  return out;
}

/** Topology of every node, by node name. */
export function nodeTopologies(nodes: readonly V1Node[]): Map<string, NodeTopology> {
  const out = new Map<string, NodeTopology>();
  for (const n of nodes) {
    const name = n.metadata?.name;
    if (name) out.set(name, nodeTopologyOf(n));
  }
  return out;
}

/** Region and zone labels of one node (empty when unlabelled). */
export function nodeTopologyOf(n: V1Node): NodeTopology {
  const labels = n.metadata?.labels ?? {};
  return { region: labels[REGION_LABEL] ?? labels[LEGACY_REGION_LABEL] ?? '', zone: labels[ZONE_LABEL] ?? labels[LEGACY_ZONE_LABEL] ?? '' };
}

/** `namespace/service` a slice belongs to, or undefined for slices the mapping ignores (no service label, FQDN). */
export function sliceServiceKey(s: V1EndpointSlice): string | undefined {
  const svc = s.metadata?.labels?.[SERVICE_NAME_LABEL];
  const ns = s.metadata?.namespace;
  if (!svc || !ns || (s.addressType !== 'IPv4' && s.addressType !== 'IPv6')) return undefined;
  return `${ns}/${svc}`;
}

/** One Service with its own slices -> a SourceService, or undefined when it is not put in the mesh. */
export function serviceFromObjects(svc: V1Service, slices: readonly V1EndpointSlice[], ctx: MappingContext): SourceService | undefined {
  const name = svc.metadata?.name;
  const namespace = svc.metadata?.namespace;
  if (!name || !namespace || ctx.excluded.has(namespace)) return undefined;
  if (namespace === 'default' && name === 'kubernetes') return undefined;
  if (svc.spec?.type === 'ExternalName') return undefined;
  const specPorts = (svc.spec?.ports ?? []).filter((p) => isTcp(p.protocol) && Number.isInteger(p.port) && p.port > 0);
  if (specPorts.length === 0) return undefined;

  const family = slices.some((s) => s.addressType === 'IPv4') ? 'IPv4' : 'IPv6';
  const own = slices.filter((s) => s.addressType === family && sliceServiceKey(s) === `${namespace}/${name}`).sort(byNamespaceName);

  const ports: MeshServicePort[] = specPorts.map((p) => ({
    name: meshPortName(p.name, p.port),
    port: p.port,
    targetPort: targetPortOf(p.name ?? '', p.targetPort, p.port, own),
    protocol: meshProtocol(p.name ?? '', p.appProtocol),
  }));

  const labels = { ...(svc.spec?.selector ?? {}) };
  const byAddress = new Map<string, MeshEndpoint>();
  for (const slice of own) {
    // Which slice port serves each service port, by name (and TCP).
    const portMap = specPorts.flatMap((sp) => {
      const match = (slice.ports ?? []).find((p) => (p.name ?? '') === (sp.name ?? '') && isTcp(p.protocol) && validPort(p.port));
      return match ? [{ name: meshPortName(sp.name, sp.port), port: match.port! }] : [];
    });
    if (portMap.length === 0) continue;
    for (const ep of slice.endpoints ?? []) {
      const address = ep.addresses?.[0];
      const health = endpointHealth(ep);
      if (!address || health === undefined) continue;
      const topo = ep.nodeName ? ctx.nodes.get(ep.nodeName) : undefined;
      const endpoint: MeshEndpoint = {
        address,
        ports: portMap.map((p) => ({ ...p })),
        mtlsPort: 0,
        locality: { region: topo?.region ?? '', zone: ep.zone || topo?.zone || '', subzone: '' },
        cluster: ctx.cluster,
        network: ctx.network,
        health,
        weight: 1,
        labels: { ...labels },
        identity: '',
        meshed: false,
        workload: workloadOf(ep, namespace, address),
      };
      const prev = byAddress.get(address);
      byAddress.set(address, prev ? mergeDuplicate(prev, endpoint) : endpoint);
    }
  }
  const endpoints = [...byAddress.values()].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  return { name, namespace, ports, endpoints };
}

/** Mesh health of a slice endpoint, or undefined when it should not be served at all. */
export function endpointHealth(ep: SliceEndpoint): MeshHealth | undefined {
  const c = ep.conditions ?? {};
  // The API: nil ready means ready; nil serving means "same as ready"; nil terminating means not terminating.
  const ready = c.ready ?? true;
  const serving = c.serving ?? ready;
  const terminating = c.terminating ?? false;
  if (terminating && !serving) return undefined;
  return ready && !terminating ? 'HEALTHY' : 'UNHEALTHY';
}

/** Kedge protocol of a port: appProtocol first, then Istio-style name prefixes, else tcp. */
export function meshProtocol(portName: string, appProtocol: string | undefined): string {
  const ap = (appProtocol ?? '').toLowerCase();
  const fromAp: Record<string, string> = {
    http: 'http',
    'kubernetes.io/ws': 'http',
    http2: 'http2',
    'kubernetes.io/h2c': 'http2',
    grpc: 'grpc',
    https: 'tls',
    tls: 'tls',
    'kubernetes.io/wss': 'tls',
    tcp: 'tcp',
  };
  if (fromAp[ap]) return fromAp[ap];
  const prefix = portName.toLowerCase().split('-')[0] ?? '';
  const fromName: Record<string, string> = { http: 'http', http2: 'http2', grpc: 'grpc', https: 'tls', tls: 'tls' };
  return fromName[prefix] ?? 'tcp';
}

/** A Kubernetes port name as a mesh port name (an unnamed sole port gets `port-<n>`). */
export function meshPortName(name: string | undefined, port: number): string {
  return name ? name : `port-${port}`;
}

function targetPortOf(name: string, targetPort: number | string | undefined, port: number, slices: readonly V1EndpointSlice[]): number {
  if (typeof targetPort === 'number' && targetPort > 0) return targetPort;
  if (typeof targetPort === 'string' && /^\d+$/.test(targetPort)) return Number(targetPort);
  // A named targetPort resolves per pod: summarise with the most common slice port (ties: lowest).
  const counts = new Map<number, number>();
  for (const s of slices) {
    const p = (s.ports ?? []).find((sp: SlicePort) => (sp.name ?? '') === name && isTcp(sp.protocol) && validPort(sp.port));
    if (p) counts.set(p.port!, (counts.get(p.port!) ?? 0) + (s.endpoints?.length ?? 0) + 1);
  }
  const best = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0];
  return best ? best[0] : port;
}

function workloadOf(ep: SliceEndpoint, namespace: string, address: string): string {
  const ref = ep.targetRef;
  if (ref?.name) return `${ref.namespace ?? namespace}/${ref.name}`;
  return `${namespace}/${ep.hostname ?? address}`;
}

const HEALTH_RANK: Record<string, number> = { HEALTHY: 0, UNHEALTHY: 1, STALE: 2, HEALTH_UNKNOWN: 3 };

function mergeDuplicate(a: MeshEndpoint, b: MeshEndpoint): MeshEndpoint {
  const [keep, other] = (HEALTH_RANK[a.health] ?? 9) <= (HEALTH_RANK[b.health] ?? 9) ? [a, b] : [b, a];
  const names = new Set(keep.ports.map((p) => p.name));
  return { ...keep, ports: [...keep.ports, ...other.ports.filter((p) => !names.has(p.name))] };
}

function isTcp(protocol: string | undefined): boolean {
  return protocol === undefined || protocol === 'TCP';
}

function validPort(p: number | undefined): boolean {
  return typeof p === 'number' && Number.isInteger(p) && p > 0 && p < 65536;
}

function byNamespaceName(a: { metadata?: { namespace?: string; name?: string } }, b: { metadata?: { namespace?: string; name?: string } }): number {
  const ka = `${a.metadata?.namespace ?? ''}/${a.metadata?.name ?? ''}`;
  const kb = `${b.metadata?.namespace ?? ''}/${b.metadata?.name ?? ''}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
