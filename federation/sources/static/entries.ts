// `serviceEntries` of the federation config: services whose endpoints are
// written down rather than discovered (a database outside every cluster).
// Validated once into frozen data; any invalid entry rejects the whole
// config (KEDGE_BAD_CONFIG naming the field, e.g.
// "federation.yaml: serviceEntries[0].endpoints[1].address: ..."), so the
// federation exits before binding instead of serving a partial mesh.
//
//   serviceEntries:
//     - name: billing-db            # DNS label
//       namespace: shop             # DNS label, default "default"
//       cluster: static             # optional, default "static"
//       network: net-a              # optional default for the endpoints, default "" (no network)
//       ports: [ { name: pg, port: 5432, protocol: tcp, targetPort: 5432 } ]
//       endpoints:
//         - address: 10.1.2.3       # an IP address; hostnames are not resolved
//           ports: { pg: 15432 }    # optional, by port name; default each port's targetPort
//           locality: us-east1/us-east1-b
//           labels: { role: primary }
//           network: net-b
//           weight: 1
import { isIP } from 'node:net';
import type { LocalityParts } from '../../../proto/model/locality';
import { parseLocality } from '../../../proto/model/locality';
import { isDnsLabel, serviceKey } from '../../../proto/model/service';
import { isValidName } from '../../../proto/model/spiffe';
import { deepFreeze, type Doc } from '../../../proto/model/validate';

/** Protocols a service entry port may declare. */
export const ENTRY_PROTOCOLS: readonly string[] = ['tcp', 'http', 'http2', 'grpc', 'tls'];

/** The cluster name static endpoints carry unless the entry names one. */
export const STATIC_CLUSTER = 'static';

const ENTRY_FIELDS = ['name', 'namespace', 'cluster', 'network', 'ports', 'endpoints'] as const;
const PORT_FIELDS = ['name', 'port', 'targetPort', 'protocol'] as const;
const ENDPOINT_FIELDS = ['address', 'ports', 'locality', 'labels', 'network', 'weight'] as const;

/** One validated service entry. */
export interface ServiceEntry {
  name: string;
  namespace: string;
  cluster: string;
  ports: { name: string; port: number; targetPort: number; protocol: string }[];
  endpoints: ServiceEntryEndpoint[];
}

/** One endpoint of a service entry, with every default applied. */
export interface ServiceEntryEndpoint {
  address: string;
  /** Port by port name: the endpoint's own override, else the port's targetPort. */
  ports: Record<string, number>;
  locality: LocalityParts;
  labels: Record<string, string>;
  network: string;
  weight: number;
}

/** Validates `serviceEntries` (pass the list's Doc, e.g. `root.at('serviceEntries')`; missing is an empty list). */
export function parseServiceEntries(list: Doc): readonly ServiceEntry[] {
  const seen = new Map<string, string>();
  const entries = list.list().map((doc) => {
    const entry = parseEntry(doc);
    const key = serviceKey(entry);
    const first = seen.get(key);
    if (first) doc.fail(`service ${key} is already defined at ${first}: list all its endpoints in one entry`);
    seen.set(key, doc.path);
    return entry;
  });
  return deepFreeze(entries);
}

function parseEntry(doc: Doc): ServiceEntry {
  doc.object(ENTRY_FIELDS);
  const name = doc.at('name').string();
  if (!isDnsLabel(name)) doc.at('name').fail(`invalid service name "${name}": use a DNS label (lowercase letters, digits and '-', at most 63)`);
  const namespace = doc.at('namespace').string('default');
  if (!isDnsLabel(namespace)) doc.at('namespace').fail(`invalid namespace "${namespace}": use a DNS label (lowercase letters, digits and '-', at most 63)`);
  const cluster = doc.at('cluster').string(STATIC_CLUSTER);
  if (!isValidName(cluster)) doc.at('cluster').fail(`invalid cluster name "${cluster}": use lowercase letters, digits, '-' and '.'`);
  const network = doc.at('network').isMissing() ? '' : doc.at('network').string();

  const portDocs = doc.at('ports').list();
  if (portDocs.length === 0) doc.at('ports').fail('needs at least one port, such as { name: pg, port: 5432, protocol: tcp }');
  const ports = portDocs.map((p) => parsePort(p));
  for (let i = 0; i < ports.length; i++) {
    for (let j = 0; j < i; j++) {
      if (ports[j]!.name === ports[i]!.name) portDocs[i]!.at('name').fail(`port name "${ports[i]!.name}" is used twice`);
      if (ports[j]!.port === ports[i]!.port) portDocs[i]!.at('port').fail(`port ${ports[i]!.port} is used twice`);
    }
  }

  const endpointDocs = doc.at('endpoints').list();
  if (endpointDocs.length === 0) doc.at('endpoints').fail('needs at least one endpoint, such as { address: 10.1.2.3 }');
  const addresses = new Set<string>();
  const endpoints = endpointDocs.map((e) => {
    const ep = parseEndpoint(e, ports, network);
    if (addresses.has(ep.address)) e.at('address').fail(`${ep.address} is listed twice`);
    addresses.add(ep.address);
    return ep;
  });
  return { name, namespace, cluster, ports, endpoints };
}

function parsePort(doc: Doc): ServiceEntry['ports'][number] {
  doc.object(PORT_FIELDS);
  const name = doc.at('name').string();
  if (!isDnsLabel(name)) doc.at('name').fail(`invalid port name "${name}": use a DNS label (lowercase letters, digits and '-')`);
  const port = doc.at('port').port();
  const protocol = doc.at('protocol').string('tcp');
  if (!ENTRY_PROTOCOLS.includes(protocol)) doc.at('protocol').fail(`unknown protocol "${protocol}": use one of ${ENTRY_PROTOCOLS.join(', ')}`);
  return { name, port, targetPort: doc.at('targetPort').port(port), protocol };
}

function parseEndpoint(doc: Doc, ports: ServiceEntry['ports'], defaultNetwork: string): ServiceEntryEndpoint {
  doc.object(ENDPOINT_FIELDS);
  const address = doc.at('address').string();
  if (isIP(address) === 0) doc.at('address').fail(`"${address}" is not an IP address: service entry endpoints need IP addresses (hostnames are not resolved)`);
  if (address === '0.0.0.0' || address === '::') doc.at('address').fail(`${address} is the unspecified address, not an endpoint`);
  const byName: Record<string, number> = {};
  for (const p of ports) byName[p.name] = p.targetPort;
  const overrides = doc.at('ports');
  overrides.optionalObject();
  for (const key of overrides.keys()) {
    if (!(key in byName)) overrides.at(key).fail(`no port named "${key}" in this entry (ports: ${ports.map((p) => p.name).join(', ')})`);
    byName[key] = overrides.at(key).port();
  }
  const labels = doc.at('labels');
  labels.optionalObject();
  return {
    address,
    ports: byName,
    locality: doc.at('locality').isMissing() ? parseLocality(undefined) : doc.at('locality').parse(parseLocality),
    labels: labels.stringMap(),
    network: doc.at('network').isMissing() ? defaultNetwork : doc.at('network').string(),
    weight: doc.at('weight').int(1, 1, 1_000_000),
  };
}
