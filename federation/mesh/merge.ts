// Merges every source's endpoints into one MeshView. Pure and deterministic:
// the same inputs give the same services, in the same order, with the same
// versions, on every replica.
import { createHash } from 'node:crypto';
import { serviceHostname, serviceKey } from '../../proto/model/service';
import type { AgentRecord, MeshEndpoint, MeshService, MeshServicePort, MeshView } from './types';

/** The cluster name VM agents' endpoints carry. */
export const VM_CLUSTER = 'vms';

/** Builds the mesh view from the registered agents. */
export function buildMeshView(agents: readonly AgentRecord[], opts: { domain?: string } = {}): MeshView {
  const acc = new Map<string, { name: string; namespace: string; ports: Map<string, MeshServicePort>; endpoints: MeshEndpoint[]; warnings: Set<string> }>();
  for (const agent of agents) {
    const wl = agent.workload;
    for (const svc of agent.services) {
      const key = serviceKey({ name: svc.name, namespace: wl.namespace });
      let entry = acc.get(key);
      if (!entry) {
        entry = { name: svc.name, namespace: wl.namespace, ports: new Map(), endpoints: [], warnings: new Set() };
        acc.set(key, entry);
      }
      for (const p of svc.ports) {
        const known = entry.ports.get(p.name);
        if (!known) {
          entry.ports.set(p.name, { name: p.name, port: p.port, targetPort: p.targetPort, protocol: p.protocol });
        } else if (known.protocol !== p.protocol || known.port !== p.port) {
          // Namespace sameness merges ports by name; a disagreement is reported, never silently picked.
          entry.warnings.add(`port "${p.name}": ${agent.id} declares ${p.port}/${p.protocol}, others ${known.port}/${known.protocol}`);
        }
      }
      const health = agent.health[svc.name];
      entry.endpoints.push({
        address: wl.address,
        ports: svc.ports.map((p) => ({ name: p.name, port: p.targetPort })),
        mtlsPort: wl.inboundPort,
        locality: { ...wl.locality },
        cluster: VM_CLUSTER,
        network: wl.network,
        health: health && !health.healthy ? 'UNHEALTHY' : 'HEALTHY',
        weight: 1,
        labels: { ...wl.labels },
        identity: agent.identity,
        meshed: true,
        workload: agent.id,
      });
    }
  }
  const services = new Map<string, MeshService>();
  for (const key of [...acc.keys()].sort()) {
    const e = acc.get(key)!;
    const svc: MeshService = {
      key,
      name: e.name,
      namespace: e.namespace,
      hostname: serviceHostname(e, opts.domain),
      vip: '',
      ports: [...e.ports.values()].sort((a, b) => a.port - b.port || a.name.localeCompare(b.name)),
      endpoints: e.endpoints.sort((a, b) => a.address.localeCompare(b.address) || a.workload.localeCompare(b.workload)),
      version: '',
      warnings: [...e.warnings].sort(),
    };
    svc.version = serviceVersion(svc);
    services.set(key, svc);
  }
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
