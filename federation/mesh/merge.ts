// Merges every source's services into one MeshView. Pure and deterministic:
// the same inputs give the same services, in the same order, with the same
// versions, on every replica.
//
// - Namespace sameness: the same name.namespace from any source is one
//   service; its endpoints are concatenated.
// - Ports merge by name; a port declared differently by two sources is
//   reported as a warning on the service, never silently picked.
// - A Kubernetes endpoint is meshed when an agent of the same cluster
//   registered the same address: it takes the agent's identity and mTLS
//   port, and the agent's own copy of that endpoint is dropped.
import { createHash } from 'node:crypto';
import { serviceHostname, serviceKey } from '../../proto/model/service';
import type { SourceService } from '../sources/types';
import type { AgentRecord, MeshEndpoint, MeshService, MeshServicePort, MeshView } from './types';

/** The cluster name VM agents' endpoints carry. */
export const VM_CLUSTER = 'vms';

/** Inputs of the merge besides the services themselves. */
export interface MergeOptions {
  domain?: string;
  /** Service key -> VIP. */
  vips?: ReadonlyMap<string, string>;
  /** Service key -> TrafficPolicy document (JSON). */
  policies?: ReadonlyMap<string, string>;
  /** Service key -> JSON list of the route documents attached to it (resolveRoutes). */
  routes?: ReadonlyMap<string, string>;
}

// Per record object: records are replaced only when they change, so the
// services built from an unchanged record are the same objects, which lets
// buildMeshView recognise unchanged services by identity.
const servicesOfRecord = new WeakMap<AgentRecord, { svc: SourceService; key: string }[]>();

function servicesOfRecordKeyed(agent: AgentRecord): { svc: SourceService; key: string }[] {
  let mine = servicesOfRecord.get(agent);
  if (!mine) {
    mine = servicesOfAgent(agent).map((svc) => ({ svc, key: serviceKey(svc) }));
    servicesOfRecord.set(agent, mine);
  }
  return mine;
}

/** The agents source: registered agents as services with meshed endpoints. */
export function agentServices(agents: readonly AgentRecord[]): SourceService[] {
  const out: SourceService[] = [];
  for (const agent of agents) for (const { svc } of servicesOfRecordKeyed(agent)) out.push(svc);
  return out;
}

function servicesOfAgent(agent: AgentRecord): SourceService[] {
  const wl = agent.workload;
  // One copy per agent shared by its services' endpoints (20 at the scale of
  // issue 4), which, like every mesh endpoint, are never modified.
  const locality = { ...wl.locality };
  const labels = { ...wl.labels };
  return agent.services.map((svc) => {
    const health = agent.health[svc.name];
    return {
      name: svc.name,
      namespace: wl.namespace,
      ports: svc.ports.map((p) => ({ name: p.name, port: p.port, targetPort: p.targetPort, protocol: p.protocol })),
      endpoints: [{
        address: wl.address,
        ports: svc.ports.map((p) => ({ name: p.name, port: p.targetPort })),
        mtlsPort: wl.inboundPort,
        locality,
        cluster: agent.cluster ?? VM_CLUSTER,
        network: wl.network,
        health: health && !health.healthy ? 'UNHEALTHY' : 'HEALTHY',
        weight: 1,
        labels,
        identity: agent.identity,
        meshed: true,
        workload: agent.id,
      }],
    };
  });
}

// Every rebuild walks all services of all sources (20,000 at the scale of
// issue 4) but normally only one changed, so the walk must allocate nothing
// per unchanged service: the previous implementation built every service's
// accumulator (a port Map, a warning Set, endpoint and input arrays) on every
// rebuild only to find it unchanged, and V8 pretenured those allocation sites,
// putting about 1.4 MB per change straight into old space (issue 4: that
// garbage, not live data, set the federation's peak RSS). So a rebuild runs in
// two passes over the same walk: the first only compares each key's inputs,
// in order, with those of its last build (a cursor per key, no allocation);
// the second builds the keys that differ, exactly as before.

/** What one service key was built from last time, and how this build's inputs compare so far. */
interface Slot {
  /** Inputs of the last build: source services and pod agents in walk order, then VIP, policy, domain. */
  inputs: unknown[];
  result: MeshService | undefined;
  /** The build that last saw this key; a key not seen by a build is gone. */
  epoch: number;
  /** This build's inputs seen so far all equal inputs[0..matched). */
  matched: number;
  dirty: boolean;
}
const slots = new Map<string, Slot>();
let epoch = 0;
/** Keys of `slots` in order; sorted again only when a key comes or goes. */
let sortedKeys: string[] = [];

// serviceKey() allocates a string; the walk asks for every service's key on
// every rebuild, and services are plain data replaced (never mutated) on change.
const keyOfService = new WeakMap<SourceService, string>();
function keyOf(svc: SourceService): string {
  let key = keyOfService.get(svc);
  if (key === undefined) keyOfService.set(svc, (key = serviceKey(svc)));
  return key;
}

/** One service of one source, with what the merge derived from the other inputs. */
type Visit = (key: string, svc: SourceService, from: string) => void;

/**
 * Calls `visit` for every service the view is built from, in merge order:
 * other sources first, then agents' services, except an agent's service
 * already represented by its pod's meshed Kubernetes endpoint.
 */
function walk(agents: readonly AgentRecord[], sources: readonly (readonly SourceService[])[], podAgents: ReadonlyMap<string, AgentRecord>, visit: Visit): void {
  // Pods (cluster/address) with a meshed endpoint from a source, and which
  // keys already have an endpoint at such a pod; both empty without pod agents
  // or meshed Kubernetes endpoints, so the common case allocates nothing.
  const meshedPods = new Set<string>();
  for (const list of sources) {
    for (const svc of list) {
      for (const e of svc.endpoints) {
        if (e.cluster === VM_CLUSTER) continue;
        if (e.meshed || (podAgents.size > 0 && podAgents.has(`${e.cluster}/${e.address}`))) meshedPods.add(`${e.cluster}/${e.address}`);
      }
    }
  }
  const atPods = new Set<string>();
  const noteEndpoints = (key: string, svc: SourceService) => {
    if (meshedPods.size === 0) return;
    for (const e of svc.endpoints) {
      const pod = `${e.cluster}/${e.address}`;
      if (meshedPods.has(pod)) atPods.add(`${key} ${pod}`);
    }
  };
  for (const list of sources) {
    for (const svc of list) {
      const key = keyOf(svc);
      noteEndpoints(key, svc);
      visit(key, svc, svc.endpoints[0]?.cluster || 'a source');
    }
  }
  for (const agent of agents) {
    for (const { svc, key } of servicesOfRecordKeyed(agent)) {
      const ep = svc.endpoints[0]!;
      // A pod's agent is already represented by its meshed Kubernetes endpoint.
      if (meshedPods.size > 0 && meshedPods.has(`${ep.cluster}/${ep.address}`) && atPods.has(`${key} ${ep.cluster}/${ep.address}`)) continue;
      noteEndpoints(key, svc);
      visit(key, svc, ep.workload);
    }
  }
}

// The agent of a Kubernetes endpoint that is not meshed by its source, if one registered.
function podAgentOf(e: MeshEndpoint, podAgents: ReadonlyMap<string, AgentRecord>): AgentRecord | undefined {
  return !e.meshed && podAgents.size > 0 ? podAgents.get(`${e.cluster}/${e.address}`) : undefined;
}

/** Builds the mesh view from registered agents and other sources' services. */
export function buildMeshView(agents: readonly AgentRecord[], opts: MergeOptions = {}, sources: readonly (readonly SourceService[])[] = []): MeshView {
  epoch += 1;
  // Agents that sit in front of a Kubernetes pod, by cluster/address.
  const podAgents = new Map<string, AgentRecord>();
  for (const a of agents) if (a.cluster) podAgents.set(`${a.cluster}/${a.workload.address}`, a);

  // Pass 1: compare every key's inputs with its last build's.
  let keysChanged = false;
  const see = (slot: Slot, x: unknown) => {
    if (slot.dirty) return;
    const i = slot.matched;
    if (i < slot.inputs.length && (slot.inputs[i] === x || sameData(slot.inputs[i], x))) {
      // Equal by value (a replaced record whose change was elsewhere: one
      // health report replaces all 20 services of its agent, and only one of
      // them changed): keep the built service, and take the new object so
      // that the next build matches it by identity.
      slot.inputs[i] = x;
      slot.matched = i + 1;
    } else {
      slot.dirty = true;
    }
  };
  walk(agents, sources, podAgents, (key, svc) => {
    let slot = slots.get(key);
    if (!slot) {
      slot = { inputs: [], result: undefined, epoch: 0, matched: 0, dirty: true };
      slots.set(key, slot);
      keysChanged = true;
    }
    if (slot.epoch !== epoch) {
      slot.epoch = epoch;
      slot.matched = 0;
      slot.dirty = slot.result === undefined;
    }
    see(slot, svc);
    for (const e of svc.endpoints) {
      const agent = podAgentOf(e, podAgents);
      if (agent) see(slot, agent);
    }
  });
  let dirty = 0;
  for (const [key, slot] of slots) {
    if (slot.epoch !== epoch) {
      slots.delete(key);
      keysChanged = true;
      continue;
    }
    see(slot, opts.vips?.get(key) ?? '');
    see(slot, opts.policies?.get(key) ?? '');
    see(slot, opts.routes?.get(key) ?? '');
    see(slot, opts.domain ?? '');
    if (slot.matched !== slot.inputs.length) slot.dirty = true;
    if (slot.dirty) dirty += 1;
  }
  if (keysChanged) sortedKeys = [...slots.keys()].sort();

  // Pass 2: accumulate only the keys that changed, in the same walk order.
  if (dirty > 0) {
    const acc = new Map<string, Accumulator>();
    walk(agents, sources, podAgents, (key, svc, from) => {
      if (slots.get(key)!.dirty) accumulate(acc, key, svc, from, podAgents);
    });
    for (const [key, e] of acc) {
      e.inputs.push(opts.vips?.get(key) ?? '', opts.policies?.get(key) ?? '', opts.routes?.get(key) ?? '', opts.domain ?? '');
      const result = buildService(key, e, opts);
      const slot = slots.get(key)!;
      slot.inputs = e.inputs;
      slot.result = result;
    }
  }

  const services = new Map<string, MeshService>();
  for (const key of sortedKeys) {
    const slot = slots.get(key)!;
    slot.dirty = false;
    services.set(key, slot.result!);
  }
  return { services };
}

/** Deep equality of plain data (JSON-like objects, arrays, primitives); anything else only by identity. Allocates nothing. */
export function sameData(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameData(a[i], b[i])) return false;
    return true;
  }
  const proto = Object.getPrototypeOf(a);
  if (Array.isArray(b) || (proto !== Object.prototype && proto !== null) || Object.getPrototypeOf(b) !== proto) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let keys = 0;
  for (const k in x) {
    if (!Object.hasOwn(x, k)) continue;
    keys += 1;
    if (!Object.hasOwn(y, k) || !sameData(x[k], y[k])) return false;
  }
  for (const k in y) if (Object.hasOwn(y, k)) keys -= 1;
  return keys === 0;
}

/** A changed service's inputs, gathered by the second pass. */
interface Accumulator {
  name: string;
  namespace: string;
  ports: Map<string, MeshServicePort & { from: string }>;
  endpoints: MeshEndpoint[];
  warnings: Set<string>;
  inputs: unknown[];
}

function accumulate(acc: Map<string, Accumulator>, key: string, svc: SourceService, from: string, podAgents: ReadonlyMap<string, AgentRecord>): void {
  let entry = acc.get(key);
  if (!entry) {
    entry = { name: svc.name, namespace: svc.namespace, ports: new Map(), endpoints: [], warnings: new Set(), inputs: [] };
    acc.set(key, entry);
  }
  entry.inputs.push(svc);
  for (const p of svc.ports) {
    const known = entry.ports.get(p.name);
    if (!known) entry.ports.set(p.name, { ...p, from });
    else if (known.protocol !== p.protocol || known.port !== p.port) {
      entry.warnings.add(`port "${p.name}": ${from} declares ${p.port}/${p.protocol}, ${known.from} ${known.port}/${known.protocol}`);
    }
  }
  for (const e of svc.endpoints) {
    const agent = podAgentOf(e, podAgents);
    if (agent) entry.inputs.push(agent);
    entry.endpoints.push(agent ? { ...e, meshed: true, identity: agent.identity, mtlsPort: agent.workload.inboundPort, workload: agent.id } : e);
  }
}

function buildService(key: string, e: Accumulator, opts: MergeOptions): MeshService {
  const svc: MeshService = {
    key,
    name: e.name,
    namespace: e.namespace,
    hostname: serviceHostname(e, opts.domain),
    vip: opts.vips?.get(key) ?? '',
    ports: [...e.ports.values()].map(({ from: _f, ...p }) => p).sort((a, b) => a.port - b.port || a.name.localeCompare(b.name)),
    endpoints: e.endpoints.sort((a, b) => a.cluster.localeCompare(b.cluster) || a.address.localeCompare(b.address) || a.workload.localeCompare(b.workload)),
    version: '',
    warnings: [...e.warnings].sort(),
    trafficPolicy: opts.policies?.get(key) ?? '',
    routes: opts.routes?.get(key) ?? '',
  };
  svc.version = serviceVersion(svc);
  return svc;
}

/** Content hash of a service (its version field excluded). */
export function serviceVersion(svc: MeshService): string {
  const { version: _ignored, ...rest } = svc;
  return createHash('sha256').update(stableJson(rest)).digest('hex').slice(0, 16);
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}
