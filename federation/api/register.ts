// Turns an agent's Register message into the stored AgentRecord, checking it
// against the identity the agent authenticated as. Pure.
import { isIP } from 'node:net';
import type { Register__Output } from '../../proto/loader';
import { KedgeError } from '../../proto/model/errors';
import { isDnsLabel } from '../../proto/model/service';
import { isValidName, parseSpiffeId } from '../../proto/model/spiffe';
import type { AgentRecord } from '../mesh/types';

const PROTOCOLS = new Set(['tcp', 'http', 'http2', 'grpc', 'tls']);

function bad(msg: string): never {
  throw new KedgeError('KEDGE_BAD_REQUEST', `invalid registration: ${msg}`);
}

/** Validates a Register from an agent authenticated as `identity`. */
export function recordFromRegister(msg: Register__Output, identity: string, replica: string, now: Date): AgentRecord {
  const id = parseSpiffeId(identity);
  const wl = msg.workload;
  if (!id || !wl) bad('workload is missing');
  if (wl.namespace !== id.namespace || wl.serviceAccount !== id.serviceAccount) {
    throw new KedgeError(
      'KEDGE_PERMISSION_DENIED',
      `workload ${wl.namespace}/${wl.name} runs as service account ${wl.serviceAccount} in namespace ${wl.namespace}, but its certificate is ${identity}; fix workload.namespace/serviceAccount in the agent config or join with a token for that identity`,
    );
  }
  if (!isValidName(wl.name)) bad(`workload name "${wl.name}" is not a valid name`);
  if (isIP(wl.address) === 0) bad(`workload address "${wl.address}" is not an IP address`);
  if (!(wl.inboundPort >= 1 && wl.inboundPort <= 65535)) bad(`inbound port ${wl.inboundPort} is out of range`);
  const seen = new Set<string>();
  const services = msg.services.map((s) => {
    if (!isDnsLabel(s.name)) bad(`service name "${s.name}" is not a DNS label`);
    if (s.namespace && s.namespace !== wl.namespace) bad(`service ${s.name} is in namespace ${s.namespace}, not the workload's ${wl.namespace}`);
    if (seen.has(s.name)) bad(`service ${s.name} is listed twice`);
    seen.add(s.name);
    if (s.ports.length === 0) bad(`service ${s.name} has no ports`);
    return {
      name: s.name,
      ports: s.ports.map((p) => {
        if (!(p.port >= 1 && p.port <= 65535) || !(p.targetPort >= 1 && p.targetPort <= 65535)) bad(`service ${s.name} port ${p.name} is out of range`);
        if (!PROTOCOLS.has(p.protocol)) bad(`service ${s.name} port ${p.name} has unknown protocol "${p.protocol}"`);
        return { name: p.name || `port-${p.port}`, port: p.port, targetPort: p.targetPort, protocol: p.protocol };
      }),
    };
  });
  const loc = wl.locality ?? { region: '', zone: '', subzone: '' };
  const gw = wl.gateway;
  if (gw) {
    if (gw.address && isIP(gw.address) === 0) bad(`gateway address "${gw.address}" is not an IP address`);
    if (!(gw.port >= 1 && gw.port <= 65535)) bad(`gateway port ${gw.port} is out of range`);
    if (!wl.network) bad('a gateway needs workload.network: it is the gateway of that network');
  }
  return {
    id: `${wl.namespace}/${wl.name}`,
    identity,
    workload: {
      name: wl.name,
      namespace: wl.namespace,
      serviceAccount: wl.serviceAccount,
      address: wl.address,
      locality: { region: loc.region, zone: loc.zone, subzone: loc.subzone },
      network: wl.network,
      labels: { ...wl.labels },
      inboundPort: wl.inboundPort,
    },
    services,
    health: {},
    ...(gw ? { gateway: { address: gw.address || wl.address, port: gw.port } } : {}),
    host: msg.host,
    replica,
    connectedAt: now.toISOString(),
    agentVersion: msg.agentVersion,
  };
}
