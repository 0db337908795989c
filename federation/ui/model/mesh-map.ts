// The mesh map: networks, the localities in them, the clusters, VM groups
// and Consul datacenters in each locality, and the gateways that join
// networks, with counts and health. meshElements turns it into the nodes
// and edges Cytoscape.js lays out.
import type { DashboardState } from './state';
import { type Badge, countBadge } from './health';
import { plural } from './lists';

/** Where agents' own endpoints are grouped (federation/mesh/merge.ts VM_CLUSTER). */
export const VM_GROUP = 'vms';
/** How an endpoint or workload with no network is shown. */
export const DEFAULT_NETWORK = '(default network)';
const NO_LOCALITY = '(no locality)';

/** One cluster, VM group or Consul datacenter in one locality of one network. */
export interface MapGroup {
  id: string;
  name: string;
  /** 'vm group', 'kubernetes', 'consul', 'static' or 'cluster' (a pod's cluster without a configured source). */
  kind: string;
  endpoints: number;
  healthy: number;
  workloads: number;
  connected: number;
  badge: Badge;
}

/** A locality (region/zone/subzone) in a network. */
export interface MapLocality {
  id: string;
  name: string;
  groups: MapGroup[];
}

/** An east-west gateway agent. */
export interface MapGateway {
  id: string;
  workload: string;
  address: string;
  connected: boolean;
  badge: Badge;
}

/** A network with its localities and gateways. */
export interface MapNetwork {
  id: string;
  name: string;
  localities: MapLocality[];
  gateways: MapGateway[];
  endpoints: number;
  healthy: number;
  badge: Badge;
}

/** Traffic from network `from` to endpoints on `to` enters through gateway `gateway`. */
export interface MapLink {
  id: string;
  from: string;
  to: string;
  gateway: string;
}

/** The whole map. */
export interface MeshMap {
  networks: MapNetwork[];
  links: MapLink[];
  namespaces: string[];
}

const namespaceOfService = (key: string): string => key.slice(key.lastIndexOf('.') + 1);

/**
 * Builds the map from endpoints and workloads; with `namespace`, only
 * that namespace's endpoints and workloads are counted (gateways are kept:
 * they carry every namespace).
 */
export function meshMap(state: Pick<DashboardState, 'endpoints' | 'workloads' | 'sources'>, namespace = ''): MeshMap {
  const kinds = new Map(state.sources.map((s) => [s.name, s.kind]));
  const networks = new Map<string, { localities: Map<string, Map<string, Omit<MapGroup, 'badge' | 'id'>>>; gateways: MapGateway[] }>();
  const networkOf = (n: string) => {
    const name = n || DEFAULT_NETWORK;
    let net = networks.get(name);
    if (!net) networks.set(name, (net = { localities: new Map(), gateways: [] }));
    return net;
  };
  const groupOf = (network: string, locality: string, cluster: string) => {
    const locs = networkOf(network).localities;
    const loc = locality || NO_LOCALITY;
    let groups = locs.get(loc);
    if (!groups) locs.set(loc, (groups = new Map()));
    const name = cluster || VM_GROUP;
    let g = groups.get(name);
    if (!g) groups.set(name, (g = { name, kind: kinds.get(name) ?? (name === VM_GROUP ? 'vm group' : 'cluster'), endpoints: 0, healthy: 0, workloads: 0, connected: 0 }));
    return g;
  };
  const namespaces = new Set<string>();
  for (const e of state.endpoints) {
    const ns = namespaceOfService(e.service);
    namespaces.add(ns);
    if (namespace && ns !== namespace) continue;
    const g = groupOf(e.network, e.locality, e.cluster);
    g.endpoints += 1;
    if (e.health === 'HEALTHY') g.healthy += 1;
  }
  for (const w of state.workloads) {
    namespaces.add(w.namespace);
    if (w.gateway) {
      networkOf(w.network).gateways.push({
        id: `gateway:${w.id}`,
        workload: w.id,
        address: w.gateway,
        connected: w.connected,
        badge: w.connected ? { level: 'ok', text: 'gateway connected' } : { level: 'bad', text: 'gateway disconnected' },
      });
      continue;
    }
    if (namespace && w.namespace !== namespace) continue;
    const g = groupOf(w.network, w.locality, w.cluster);
    g.workloads += 1;
    if (w.connected) g.connected += 1;
  }
  const out: MapNetwork[] = [...networks]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, net]) => {
      const netId = `network:${name}`;
      const localities = [...net.localities]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([loc, groups]) => {
          const locId = `${netId}|${loc}`;
          return {
            id: locId,
            name: loc,
            groups: [...groups.values()]
              .sort((a, b) => a.name.localeCompare(b.name))
              .map((g) => ({ ...g, id: `${locId}|${g.name}`, badge: groupBadge(g) })),
          };
        });
      const endpoints = localities.reduce((n, l) => n + l.groups.reduce((m, g) => m + g.endpoints, 0), 0);
      const healthy = localities.reduce((n, l) => n + l.groups.reduce((m, g) => m + g.healthy, 0), 0);
      return { id: netId, name, localities, gateways: net.gateways.sort((a, b) => a.id.localeCompare(b.id)), endpoints, healthy, badge: countBadge(healthy, endpoints) };
    });
  const links: MapLink[] = [];
  for (const to of out) {
    for (const gw of to.gateways) {
      for (const from of out) {
        if (from !== to) links.push({ id: `${from.id}->${gw.id}`, from: from.id, to: to.id, gateway: gw.id });
      }
    }
  }
  return { networks: out, links, namespaces: [...namespaces].sort() };
}

function groupBadge(g: Omit<MapGroup, 'badge' | 'id'>): Badge {
  if (g.workloads > g.connected) return { level: 'bad', text: `${g.workloads - g.connected} of ${plural(g.workloads, 'workload')} disconnected` };
  if (g.endpoints === 0) return g.workloads ? { level: 'ok', text: `${plural(g.workloads, 'workload')}, no endpoints` } : { level: 'warn', text: 'empty' };
  return countBadge(g.healthy, g.endpoints);
}

/** A Cytoscape.js element definition (what `cytoscape({ elements })` takes). */
export interface MapElement {
  group: 'nodes' | 'edges';
  data: { id: string; label: string; parent?: string; source?: string; target?: string; kind: string; level: string };
}

/** The nodes (networks and localities as compound parents, groups and gateways inside) and edges (network to gateway). */
export function meshElements(map: MeshMap): MapElement[] {
  const out: MapElement[] = [];
  for (const net of map.networks) {
    out.push({ group: 'nodes', data: { id: net.id, label: `network ${net.name} — ${net.badge.text}`, kind: 'network', level: net.badge.level } });
    for (const loc of net.localities) {
      out.push({ group: 'nodes', data: { id: loc.id, parent: net.id, label: loc.name, kind: 'locality', level: 'ok' } });
      for (const g of loc.groups) {
        const counts = [plural(g.endpoints, 'endpoint'), g.workloads ? plural(g.workloads, 'workload') : ''].filter(Boolean).join(', ');
        out.push({ group: 'nodes', data: { id: g.id, parent: loc.id, label: `${g.kind} ${g.name}\n${counts}\n${g.badge.text}`, kind: 'group', level: g.badge.level } });
      }
    }
    for (const gw of net.gateways) {
      out.push({ group: 'nodes', data: { id: gw.id, parent: net.id, label: `gateway ${gw.workload}\n${gw.address}\n${gw.badge.text}`, kind: 'gateway', level: gw.badge.level } });
    }
  }
  for (const l of map.links) out.push({ group: 'edges', data: { id: l.id, source: l.from, target: l.gateway, label: 'via gateway', kind: 'link', level: 'ok' } });
  return out;
}
