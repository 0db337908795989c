// Gateway substitution: what a service looks like from one network. Pure
// and deterministic, applied per network to the merged view before it is
// pushed (see docs/gateway.md).
//
// - An endpoint on the client's own network, or with no network (taken for
//   reachable from everywhere: a flat network, or a source that does not
//   know), is kept as it is. A client with no network sees every endpoint
//   unchanged, as Istio treats a proxy without a network.
// - The endpoints of another network are replaced by that network's
//   east-west gateways: one endpoint per (gateway, destination identity),
//   at the gateway's address and port, carrying the DESTINATION workloads'
//   SPIFFE ID, so the client proxy still verifies the workload it reaches
//   end to end through the gateway (which passes TLS through untouched).
//   Its weight is the endpoint count behind it: the summed weight (1 each
//   unless a source says otherwise) of the endpoints of that identity the
//   gateway would use (all but UNHEALTHY ones, as the agent counts health),
//   split evenly between the network's gateways; it is HEALTHY while at
//   least one of them is.
// - A network with no gateway is unreachable from other networks: its
//   endpoints are dropped, and a warning on the service says so. So are
//   plaintext (unmeshed) endpoints on another network: a gateway routes on
//   the SNI of mesh TLS and has nothing to route a plaintext connection on.
// - The result's version is recomputed (serviceVersion), so a gateway
//   joining, leaving or changing health behind it changes the version the
//   push compares, and agents get the new view.
import { formatHostPort } from '../../proto/model/address';
import type { LocalityParts } from '../../proto/model/locality';
import { serviceVersion } from './merge';
import type { MeshEndpoint, MeshService, MeshView } from './types';

/** The east-west gateway port agents in gateway mode listen on by default. */
export const DEFAULT_GATEWAY_PORT = 15443;

/** A network's east-west gateway, as the federation learned it from the gateway agent's registration. */
export interface GatewayInfo {
  network: string;
  /** Address other networks reach the gateway at. */
  address: string;
  /** Normally DEFAULT_GATEWAY_PORT. */
  port: number;
  /** The gateway agent's own SPIFFE ID; informational only, since clients verify the destination workload, never the gateway. */
  identity?: string;
  /** Where the gateway runs; the substituted endpoints take it, so locality-aware balancing ranks them by it. Default: what the endpoints behind it share. */
  locality?: LocalityParts;
  /** Shown as the substituted endpoints' workload; default `gateway/<network>/<address:port>`. */
  workload?: string;
}

type Health = MeshEndpoint['health'];

/**
 * The service as a client on `clientNetwork` must see it: endpoints on
 * other networks replaced by their gateways (see the file comment). Returns
 * `service` itself when nothing changes; otherwise a new service with its
 * version recomputed. Does not modify its inputs.
 */
export function substituteGateways(service: MeshService, clientNetwork: string, gateways: readonly GatewayInfo[]): MeshService {
  if (clientNetwork === '') return service;
  const kept: MeshEndpoint[] = [];
  const remote = new Map<string, MeshEndpoint[]>();
  for (const e of service.endpoints) {
    if (e.network === '' || e.network === clientNetwork) kept.push(e);
    else {
      let list = remote.get(e.network);
      if (list === undefined) remote.set(e.network, (list = []));
      list.push(e);
    }
  }
  if (remote.size === 0) return service;

  const warnings = new Set(service.warnings);
  // Per network: its gateways and its meshed endpoints by identity.
  const plans: { network: string; gws: GatewayInfo[]; byIdentity: Map<string, MeshEndpoint[]> }[] = [];
  for (const network of [...remote.keys()].sort()) {
    const endpoints = remote.get(network)!;
    const gws = gatewaysOf(network, gateways);
    if (gws.length === 0) {
      warnings.add(`network ${network}: ${endpoints.length} endpoint(s) unreachable from network ${clientNetwork}; no east-west gateway is registered for ${network}`);
      continue;
    }
    const meshed = endpoints.filter((e) => e.meshed);
    if (meshed.length < endpoints.length) {
      warnings.add(`network ${network}: ${endpoints.length - meshed.length} plaintext endpoint(s) unreachable from network ${clientNetwork}; a gateway carries mesh TLS only`);
    }
    const byIdentity = groupBy(meshed, (e) => e.identity);
    if (byIdentity.size > 1) {
      warnings.add(
        `network ${network}: endpoints behind its gateway have ${byIdentity.size} identities (${[...byIdentity.keys()].sort().join(', ')}); ` +
          'the gateway routes on service and port only, so a connection may reach a workload other than the identity the client picked and fail verification (then it is retried)',
      );
    }
    if (byIdentity.size > 0) plans.push({ network, gws, byIdentity });
  }

  // A network's weight is split evenly between its gateways. To keep integer
  // weights exact, every weight is scaled by the LCM of the gateway counts
  // (1, and no change at all, when each network has one gateway), as Istio does.
  const scale = weightScale(plans.map((p) => p.gws.length), [...kept, ...plans.flatMap((p) => [...p.byIdentity.values()].flat())]);
  const substituted: MeshEndpoint[] = [];
  for (const { network, gws, byIdentity } of plans) {
    for (const identity of [...byIdentity.keys()].sort()) {
      const group = byIdentity.get(identity)!;
      for (const gw of gws) substituted.push(gatewayEndpoint(gw, network, identity, group, scale / gws.length));
    }
  }
  const direct = scale === 1 ? kept : kept.map((e) => ({ ...e, weight: endpointWeight(e) * scale }));

  const out: MeshService = { ...service, endpoints: [...direct, ...substituted], warnings: [...warnings].sort(), version: '' };
  out.version = serviceVersion(out);
  return out;
}

// Weights are uint32 on the wire; a scale that could overflow one is
// dropped (1), trading exact shares between gateways for valid weights.
const MAX_WEIGHT = 0xffffffff;

function weightScale(gatewayCounts: readonly number[], endpoints: readonly MeshEndpoint[]): number {
  let scale = 1;
  for (const n of gatewayCounts) scale = lcm(scale, n);
  if (scale === 1) return 1;
  const total = endpoints.reduce((sum, e) => sum + endpointWeight(e), 0);
  return total * scale <= MAX_WEIGHT ? scale : 1;
}

function lcm(a: number, b: number): number {
  let x = a;
  let y = b;
  while (y !== 0) [x, y] = [y, x % y];
  return (a / x) * b;
}

// An endpoint's weight; 0 is proto3's "unset" and counts as 1.
function endpointWeight(e: MeshEndpoint): number {
  return e.weight > 0 ? e.weight : 1;
}

/**
 * The service as a gateway on `network` must see it: only the endpoints it
 * can reach directly (its own network's, and those with no network).
 * Returns `service` itself when nothing is dropped; otherwise a new service
 * with its version recomputed.
 */
export function localNetworkView(service: MeshService, network: string): MeshService {
  if (network === '') return service;
  const endpoints = service.endpoints.filter((e) => e.network === '' || e.network === network);
  if (endpoints.length === service.endpoints.length) return service;
  const out: MeshService = { ...service, endpoints, version: '' };
  out.version = serviceVersion(out);
  return out;
}

/**
 * The whole view for agents on `network`: substituteGateways for ordinary
 * agents, localNetworkView for gateway agents. Build it once per network
 * (and per change of the view or the gateway set) and share it among that
 * network's push sessions, not once per agent.
 */
export function viewForNetwork(view: MeshView, network: string, gateways: readonly GatewayInfo[], role: 'workload' | 'gateway' = 'workload'): MeshView {
  const services = new Map<string, MeshService>();
  for (const [key, svc] of view.services) services.set(key, role === 'gateway' ? localNetworkView(svc, network) : substituteGateways(svc, network, gateways));
  return { services };
}

// The gateways of one network, de-duplicated by address:port, in a stable order.
function gatewaysOf(network: string, gateways: readonly GatewayInfo[]): GatewayInfo[] {
  const seen = new Map<string, GatewayInfo>();
  for (const g of gateways) {
    const key = formatHostPort({ host: g.address, port: g.port });
    if (g.network === network && !seen.has(key)) seen.set(key, g);
  }
  return [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, g]) => g);
}

// One gateway's endpoint for the `group` of one identity behind it, its
// weight the group's usable weight times `share` (scale / gateway count).
function gatewayEndpoint(gw: GatewayInfo, network: string, identity: string, group: readonly MeshEndpoint[], share: number): MeshEndpoint {
  let usable = 0;
  let best: Health = 'UNHEALTHY';
  for (const e of group) {
    if (e.health === 'UNHEALTHY') continue;
    usable += endpointWeight(e);
    best = betterHealth(best, e.health);
  }
  return {
    address: gw.address,
    mtlsPort: gw.port,
    ports: unionPorts(group),
    locality: gw.locality ? { ...gw.locality } : commonLocality(group),
    cluster: common(group, (e) => e.cluster),
    network,
    health: best,
    // Weight 0 would read as "unset"; an endpoint with nothing usable behind
    // it is UNHEALTHY, and keeps weight 1 for when every endpoint is (panic).
    weight: Math.max(1, Math.round(usable * share)),
    labels: commonLabels(group),
    identity,
    meshed: true,
    workload: gw.workload ?? `gateway/${network}/${formatHostPort({ host: gw.address, port: gw.port })}`,
  };
}

// HEALTHY over HEALTH_UNKNOWN over STALE over UNHEALTHY: the gateway
// endpoint is as healthy as the best endpoint behind it.
const HEALTH_RANK: Record<Health, number> = { HEALTHY: 3, HEALTH_UNKNOWN: 2, STALE: 1, UNHEALTHY: 0 };

function betterHealth(a: Health, b: Health): Health {
  return HEALTH_RANK[b] > HEALTH_RANK[a] ? b : a;
}

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const t of items) {
    const k = key(t);
    let list = out.get(k);
    if (list === undefined) out.set(k, (list = []));
    list.push(t);
  }
  return out;
}

// The value every item shares, or '' when they differ.
function common<T>(items: readonly T[], get: (t: T) => string): string {
  const first = items.length > 0 ? get(items[0]!) : '';
  return items.every((t) => get(t) === first) ? first : '';
}

// The locality prefix every endpoint shares: same region, then same zone,
// then same subzone; '' from the first level where they differ.
function commonLocality(group: readonly MeshEndpoint[]): LocalityParts {
  const region = common(group, (e) => e.locality?.region ?? '');
  const zone = region ? common(group, (e) => e.locality?.zone ?? '') : '';
  const subzone = zone ? common(group, (e) => e.locality?.subzone ?? '') : '';
  return { region, zone, subzone };
}

// Labels with the same value on every endpoint of the group, so label-based
// failover ranks the gateway endpoint as it would rank every one behind it.
function commonLabels(group: readonly MeshEndpoint[]): Record<string, string> {
  const out: Record<string, string> = {};
  const first = group[0]?.labels ?? {};
  for (const k of Object.keys(first).sort()) {
    const v = first[k]!;
    if (group.every((e) => e.labels[k] === v)) out[k] = v;
  }
  return out;
}

// Port names the group serves, each with the first target port seen (the
// client dials the gateway's port; these only say which service ports are served).
function unionPorts(group: readonly MeshEndpoint[]): MeshEndpoint['ports'] {
  const byName = new Map<string, MeshEndpoint['ports'][number]>();
  for (const e of group) for (const p of e.ports) if (!byName.has(p.name)) byName.set(p.name, { name: p.name, port: p.port });
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.port - b.port));
}
