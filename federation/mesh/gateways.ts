// Gateway substitution: what a service looks like from one network. Pure
// and deterministic, applied per network to the merged view before it is
// pushed (see docs/gateway.md).
//
// - An endpoint on the client's own network, or with no network (taken for
//   reachable from everywhere: a flat network, or a source that does not
//   know), is kept as it is. A client with no network sees every endpoint
//   unchanged, as Istio treats a proxy without a network.
// - The endpoints of another network are replaced by that network's
//   east-west gateways: one endpoint per gateway, at the gateway's address
//   and port, carrying the DESTINATION workloads' SPIFFE ID, so the client
//   proxy still verifies the workload it reaches end to end through the
//   gateway (which passes TLS through untouched). Its weight is the
//   endpoint count behind it: the summed weight (1 each unless a source
//   says otherwise) of the endpoints the gateway would use (all but
//   UNHEALTHY ones, as the agent counts health), split evenly between the
//   network's gateways; it is HEALTHY while at least one of them is.
// - One identity per (service, network) behind a gateway. The gateway
//   routes on the SNI, which names only service and port, and the client
//   checks exactly one identity; so if a service's endpoints on one network
//   have several identities, the gateway serves only the endpoints of one
//   (the identity most of them have, ties to the smallest), and both sides
//   agree on it: gatewayView gives the gateway only those endpoints, and
//   substituteGateways advertises that identity. The others stay reachable
//   from their own network, not through the gateway; a warning says so.
//   (One gateway endpoint per identity would not work: whichever identity a
//   client picked, the gateway could forward it to a workload with another,
//   and the client's check would fail.) The choice counts endpoints, not
//   healthy ones, so health changes do not flip it while pushes to the
//   gateway and its clients are in flight.
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
import type { AgentRecord, MeshEndpoint, MeshService, MeshView } from './types';

/** The east-west gateway port agents in gateway mode listen on by default. */
export { GATEWAY_PORT as DEFAULT_GATEWAY_PORT } from '../../proto/model/ports';

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
  // Per network: its gateways, the identity they serve and its endpoints.
  const plans: { network: string; gws: GatewayInfo[]; identity: string; group: MeshEndpoint[] }[] = [];
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
    if (meshed.length === 0) continue;
    const identity = gatewayIdentity(meshed);
    const group = meshed.filter((e) => e.identity === identity);
    if (group.length < meshed.length) warnings.add(identityWarning(network, meshed, identity, `unreachable from network ${clientNetwork}`));
    plans.push({ network, gws, identity, group });
  }

  // A network's weight is split evenly between its gateways. To keep integer
  // weights exact, every weight is scaled by the LCM of the gateway counts
  // (1, and no change at all, when each network has one gateway), as Istio does.
  const scale = weightScale(plans.map((p) => p.gws.length), [...kept, ...plans.flatMap((p) => p.group)]);
  const substituted: MeshEndpoint[] = [];
  for (const { network, gws, identity, group } of plans) {
    for (const gw of gws) substituted.push(gatewayEndpoint(gw, network, identity, group, scale / gws.length));
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
 * The service as the gateway of `network` must see it: exactly the
 * endpoints it stands for in other networks' views, that is the meshed
 * endpoints on `network` with the identity substituteGateways advertises
 * for it (see the file comment). Returns `service` itself when nothing is
 * dropped; otherwise a new service with its version recomputed.
 */
export function gatewayView(service: MeshService, network: string): MeshService {
  const meshed = service.endpoints.filter((e) => e.network === network && e.meshed);
  const identity = meshed.length > 0 ? gatewayIdentity(meshed) : '';
  const endpoints = meshed.filter((e) => e.identity === identity);
  if (endpoints.length === service.endpoints.length) return service;
  const warnings = new Set(service.warnings);
  if (endpoints.length < meshed.length) warnings.add(identityWarning(network, meshed, identity, 'not served by its gateway'));
  const out: MeshService = { ...service, endpoints, warnings: [...warnings].sort(), version: '' };
  out.version = serviceVersion(out);
  return out;
}

/**
 * The one identity a network's gateway serves for a service: the identity
 * most of its meshed endpoints there have, ties to the smallest. Counts
 * endpoints whatever their health, so the choice is stable.
 */
export function gatewayIdentity(meshed: readonly MeshEndpoint[]): string {
  const counts = new Map<string, number>();
  for (const e of meshed) counts.set(e.identity, (counts.get(e.identity) ?? 0) + 1);
  let best = '';
  let bestCount = 0;
  for (const [identity, n] of counts) {
    if (n > bestCount || (n === bestCount && identity < best)) {
      best = identity;
      bestCount = n;
    }
  }
  return best;
}

function identityWarning(network: string, meshed: readonly MeshEndpoint[], identity: string, what: string): string {
  const others = [...new Set(meshed.map((e) => e.identity).filter((i) => i !== identity))].sort();
  const n = meshed.filter((e) => e.identity !== identity).length;
  return `network ${network}: ${n} endpoint(s) with identity ${others.join(', ')} ${what}; its gateway serves only ${identity}, the identity most endpoints there have (give a service one identity per network)`;
}

/** The east-west gateways among registered agents. */
export function gatewaysOfAgents(agents: readonly AgentRecord[]): GatewayInfo[] {
  return agents.flatMap((a) => (a.gateway ? [{ network: a.workload.network, address: a.gateway.address, port: a.gateway.port, identity: a.identity, locality: a.workload.locality, workload: a.id }] : []));
}

/**
 * The whole view for agents on `network`: substituteGateways for ordinary
 * agents, gatewayView for gateway agents. Build it once per network
 * (and per change of the view or the gateway set) and share it among that
 * network's push sessions, not once per agent.
 */
export function viewForNetwork(view: MeshView, network: string, gateways: readonly GatewayInfo[], role: 'workload' | 'gateway' = 'workload'): MeshView {
  // A workload with no network sees every service as it is (substituteGateways).
  if (network === '' && role === 'workload') return view;
  const services = new Map<string, MeshService>();
  // Unchanged services are the same objects from one view to the next
  // (buildMeshView reuses them), so their per-network views are memoised
  // instead of being rebuilt and re-hashed on every push.
  const memoKey = `${role}/${network}/${JSON.stringify(gateways)}`;
  for (const [key, svc] of view.services) {
    let perService = perNetworkViews.get(svc);
    if (!perService) perNetworkViews.set(svc, (perService = new Map()));
    let v = perService.get(memoKey);
    if (!v) {
      v = role === 'gateway' ? gatewayView(svc, network) : substituteGateways(svc, network, gateways);
      if (perService.size > 16) perService.clear();
      perService.set(memoKey, v);
    }
    services.set(key, v);
  }
  return { services };
}

const perNetworkViews = new WeakMap<MeshService, Map<string, MeshService>>();

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
