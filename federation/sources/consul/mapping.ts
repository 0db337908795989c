// Pure mapping from Consul's catalog (passing instances per service) to the
// services a source hands the mesh merge. The decisions, in one place:
//
// - name: the Consul service name, which must be a DNS label; others are
//   skipped with a problem. The `consul` service itself (the servers) and
//   services with a Kind (connect-proxy, mesh/terminating/ingress/api
//   gateways: Consul's own mesh plumbing, not workloads) are skipped.
// - namespace: Consul has no Kubernetes namespaces. An instance's service
//   meta `k8s-namespace` (set by consul-k8s connect-inject) or
//   `external-k8s-ns` (set by consul-k8s catalog sync) wins; otherwise the
//   source's configured namespace, default `default`. Instances of one Consul
//   service may therefore land in several namespaces.
// - cluster: the datacenter; network: from the source's config.
// - address: Service.Address, or Node.Address when empty (Consul's rule);
//   must be an IP address, since the mesh matches captured destinations by IP.
// - ports: a Consul instance has one port. It becomes one service port whose
//   protocol is service meta `protocol` (tcp, http, http2, grpc, tls; default
//   tcp) and whose name is service meta `port-name`, default the protocol, so
//   a Consul `http` port merges by name with a Kubernetes port named `http`.
//   The service-level port number is the most common instance port (ties:
//   the lowest); each endpoint carries its own instance port.
// - labels: every service meta key as is, and each tag as `tag/<tag>: "true"`
//   (Consul meta keys cannot contain '/', so the two never collide).
// - locality: service meta `region`/`zone`/`subzone`, else node meta keys of
//   the same names.
// - weight: Weights.Passing (default 1); health HEALTHY (only instances whose
//   every check passes are listed); meshed false; no identity.
import { isIP } from 'node:net';
import { isDnsLabel } from '../../../proto/model/service';
import type { MeshEndpoint, MeshServicePort } from '../../mesh/types';
import type { SourceService } from '../types';
import type { ConsulHealthEntry } from './wire';

/** Protocols a Consul instance may declare in service meta `protocol`. */
export const CONSUL_PROTOCOLS: readonly string[] = ['tcp', 'http', 'http2', 'grpc', 'tls'];

/** Service meta keys the mapping reads. */
export const CONSUL_META = Object.freeze({
  namespace: ['k8s-namespace', 'external-k8s-ns'] as const,
  protocol: 'protocol',
  portName: 'port-name',
  locality: ['region', 'zone', 'subzone'] as const,
});

/** Label key prefix for Consul tags. */
export const CONSUL_TAG_LABEL_PREFIX = 'tag/';

/** What the mapping takes from the source's configuration. */
export interface ConsulMappingOptions {
  /** The datacenter, used as every endpoint's cluster. */
  datacenter: string;
  network: string;
  /** Namespace for instances without namespace meta (default `default`). */
  namespace: string;
}

/** Services and the problems (skipped instances, bad meta) found on the way. */
export interface ConsulMapping {
  services: SourceService[];
  problems: string[];
}

/**
 * Maps the whole catalog: Consul service name to its passing health entries.
 * Deterministic: services sorted by namespace then name, endpoints by address.
 */
export function servicesFromCatalog(catalog: ReadonlyMap<string, readonly ConsulHealthEntry[]>, opts: ConsulMappingOptions): ConsulMapping {
  const services: SourceService[] = [];
  const problems: string[] = [];
  for (const name of [...catalog.keys()].sort()) {
    const m = servicesFromHealth(name, catalog.get(name)!, opts);
    services.push(...m.services);
    problems.push(...m.problems);
  }
  return { services: sortServices(services), problems };
}

/** Maps one Consul service's entries (one Kedge service per namespace found). */
export function servicesFromHealth(name: string, entries: readonly ConsulHealthEntry[], opts: ConsulMappingOptions): ConsulMapping {
  const problems: string[] = [];
  if (name === 'consul') return { services: [], problems };
  if (!isDnsLabel(name)) {
    return { services: [], problems: [`consul service "${name}" skipped: not a DNS label (lowercase letters, digits and '-'), so it cannot be a mesh service name`] };
  }
  const byNamespace = new Map<string, { endpoints: MeshEndpoint[]; ports: Map<string, { protocol: string; counts: Map<number, number> }> }>();
  for (const entry of entries) {
    const svc = entry.Service;
    const where = `consul service "${name}": instance "${svc.ID}" on node "${entry.Node.Node}"`;
    if (svc.Kind) continue; // a proxy or gateway, not a workload
    if ((entry.Checks ?? []).some((c) => c.Status !== 'passing')) continue;
    const meta = svc.Meta ?? {};
    const nodeMeta = entry.Node.Meta ?? {};

    const namespace = CONSUL_META.namespace.map((k) => meta[k]).find((v) => v) ?? opts.namespace;
    if (!isDnsLabel(namespace)) {
      problems.push(`${where} skipped: namespace "${namespace}" from service meta is not a DNS label`);
      continue;
    }
    const address = svc.Address || entry.Node.Address;
    if (isIP(address) === 0) {
      problems.push(`${where} skipped: address "${address}" is not an IP address`);
      continue;
    }
    if (!Number.isInteger(svc.Port) || svc.Port < 1 || svc.Port > 65535) {
      problems.push(`${where} skipped: port ${svc.Port} is not between 1 and 65535`);
      continue;
    }
    let protocol = (meta[CONSUL_META.protocol] ?? 'tcp').toLowerCase();
    if (!CONSUL_PROTOCOLS.includes(protocol)) {
      problems.push(`${where}: unknown protocol "${meta[CONSUL_META.protocol]}" in service meta (expected one of ${CONSUL_PROTOCOLS.join(', ')}); using tcp`);
      protocol = 'tcp';
    }
    let portName = meta[CONSUL_META.portName] ?? protocol;
    if (!isDnsLabel(portName)) {
      problems.push(`${where}: port-name "${portName}" in service meta is not a DNS label; using "${protocol}"`);
      portName = protocol;
    }

    let ns = byNamespace.get(namespace);
    if (!ns) byNamespace.set(namespace, (ns = { endpoints: [], ports: new Map() }));
    let port = ns.ports.get(portName);
    if (!port) ns.ports.set(portName, (port = { protocol, counts: new Map() }));
    else if (port.protocol !== protocol) {
      problems.push(`${where}: port "${portName}" declared ${protocol}, other instances ${port.protocol}; keeping ${port.protocol}`);
    }
    port.counts.set(svc.Port, (port.counts.get(svc.Port) ?? 0) + 1);

    const labels: Record<string, string> = { ...meta };
    for (const t of svc.Tags ?? []) labels[`${CONSUL_TAG_LABEL_PREFIX}${t}`] = 'true';
    const passingWeight = svc.Weights?.Passing;
    ns.endpoints.push({
      address,
      ports: [{ name: portName, port: svc.Port }],
      mtlsPort: 0,
      locality: localityOf(meta, nodeMeta, where, problems),
      cluster: opts.datacenter,
      network: opts.network,
      health: 'HEALTHY',
      weight: Number.isInteger(passingWeight) && passingWeight! >= 1 ? passingWeight! : 1,
      labels,
      identity: '',
      meshed: false,
      workload: `${entry.Node.Node}/${svc.ID}`,
    });
  }
  const services: SourceService[] = [];
  for (const [namespace, ns] of byNamespace) {
    const ports: MeshServicePort[] = [...ns.ports].map(([portName, p]) => {
      const port = mostCommon(p.counts);
      return { name: portName, port, targetPort: port, protocol: p.protocol };
    });
    services.push({
      name,
      namespace,
      ports: ports.sort((a, b) => a.port - b.port || a.name.localeCompare(b.name)),
      endpoints: ns.endpoints.sort((a, b) => a.address.localeCompare(b.address) || a.workload.localeCompare(b.workload)),
    });
  }
  return { services: sortServices(services), problems };
}

/** The same services with every endpoint's health set to STALE. */
export function markStale(services: readonly SourceService[]): SourceService[] {
  return services.map((s) => ({ ...s, endpoints: s.endpoints.map((e) => ({ ...e, health: 'STALE' as const })) }));
}

/** Sorts by namespace, then name. */
export function sortServices(services: SourceService[]): SourceService[] {
  return services.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
}

function localityOf(meta: Record<string, string>, nodeMeta: Record<string, string>, where: string, problems: string[]): MeshEndpoint['locality'] {
  const [region, zone, subzone] = CONSUL_META.locality.map((k) => {
    const v = meta[k] ?? nodeMeta[k] ?? '';
    if (v && (/\s/.test(v) || v.includes('/'))) {
      problems.push(`${where}: ${k} "${v}" ignored: it may not contain '/' or spaces`);
      return '';
    }
    return v;
  }) as [string, string, string];
  return { region, zone, subzone };
}

/** The most frequent key; ties go to the lowest, so the choice is stable. */
function mostCommon(counts: ReadonlyMap<number, number>): number {
  let best = 0;
  let bestCount = -1;
  for (const [port, n] of [...counts].sort((a, b) => a[0] - b[0])) {
    if (n > bestCount) {
      best = port;
      bestCount = n;
    }
  }
  return best;
}
