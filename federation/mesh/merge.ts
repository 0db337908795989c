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
}

// Per record object: records are replaced only when they change, so the
// services built from an unchanged record are the same objects, which lets
// buildMeshView recognise unchanged services by identity.
const servicesOfRecord = new WeakMap<AgentRecord, SourceService[]>();

/** The agents source: registered agents as services with meshed endpoints. */
export function agentServices(agents: readonly AgentRecord[]): SourceService[] {
  const out: SourceService[] = [];
  for (const agent of agents) {
    let mine = servicesOfRecord.get(agent);
    if (!mine) {
      mine = servicesOfAgent(agent);
      servicesOfRecord.set(agent, mine);
    }
    out.push(...mine);
  }
  return out;
}

function servicesOfAgent(agent: AgentRecord): SourceService[] {
  const out: SourceService[] = [];
  {
    const wl = agent.workload;
    for (const svc of agent.services) {
      const health = agent.health[svc.name];
      out.push({
        name: svc.name,
        namespace: wl.namespace,
        ports: svc.ports.map((p) => ({ name: p.name, port: p.port, targetPort: p.targetPort, protocol: p.protocol })),
        endpoints: [{
          address: wl.address,
          ports: svc.ports.map((p) => ({ name: p.name, port: p.targetPort })),
          mtlsPort: wl.inboundPort,
          locality: { ...wl.locality },
          cluster: agent.cluster ?? VM_CLUSTER,
          network: wl.network,
          health: health && !health.healthy ? 'UNHEALTHY' : 'HEALTHY',
          weight: 1,
          labels: { ...wl.labels },
          identity: agent.identity,
          meshed: true,
          workload: agent.id,
        }],
      });
    }
  }
  return out;
}

/** What one service was built from last time, to skip rebuilding (and re-hashing) it when nothing changed. */
interface BuiltService {
  inputs: readonly unknown[];
  result: MeshService;
}
let lastBuilt = new Map<string, BuiltService>();

/** Builds the mesh view from registered agents and other sources' services. */
export function buildMeshView(agents: readonly AgentRecord[], opts: MergeOptions = {}, sources: readonly (readonly SourceService[])[] = []): MeshView {
  // Agents that sit in front of a Kubernetes pod, by cluster/address.
  const podAgents = new Map<string, AgentRecord>();
  for (const a of agents) if (a.cluster) podAgents.set(`${a.cluster}/${a.workload.address}`, a);

  const acc = new Map<string, { name: string; namespace: string; ports: Map<string, MeshServicePort & { from: string }>; endpoints: MeshEndpoint[]; warnings: Set<string>; inputs: unknown[] }>();
  const add = (svc: SourceService, from: string) => {
    const key = serviceKey(svc);
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
      const agent = !e.meshed ? podAgents.get(`${e.cluster}/${e.address}`) : undefined;
      if (agent) entry.inputs.push(agent);
      entry.endpoints.push(agent ? { ...e, meshed: true, identity: agent.identity, mtlsPort: agent.workload.inboundPort, workload: agent.id } : e);
    }
  };
  for (const list of sources) for (const svc of list) add(svc, svc.endpoints[0]?.cluster || 'a source');
  const meshedPods = new Set<string>();
  for (const e of acc.values()) for (const ep of e.endpoints) if (ep.meshed && ep.cluster !== VM_CLUSTER) meshedPods.add(`${ep.cluster}/${ep.address}`);
  for (const svc of agentServices(agents)) {
    const ep = svc.endpoints[0]!;
    // A pod's agent is already represented by its meshed Kubernetes endpoint.
    if (meshedPods.has(`${ep.cluster}/${ep.address}`) && acc.get(serviceKey(svc))?.endpoints.some((x) => x.address === ep.address && x.cluster === ep.cluster)) continue;
    add(svc, ep.workload);
  }

  const services = new Map<string, MeshService>();
  const built = new Map<string, BuiltService>();
  for (const key of [...acc.keys()].sort()) {
    const e = acc.get(key)!;
    e.inputs.push(opts.vips?.get(key) ?? '', opts.policies?.get(key) ?? '', opts.domain ?? '');
    const prev = lastBuilt.get(key);
    if (prev && prev.inputs.length === e.inputs.length && prev.inputs.every((x, i) => x === e.inputs[i])) {
      services.set(key, prev.result);
      built.set(key, prev);
      continue;
    }
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
    };
    svc.version = serviceVersion(svc);
    services.set(key, svc);
    built.set(key, { inputs: e.inputs, result: svc });
  }
  lastBuilt = built;
  return { services };
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
