// Turns an agent's Register message into the stored AgentRecord, checking it
// against the identity the agent authenticated as. Pure.
import { isIP } from 'node:net';
import type { Register__Output } from '../../proto/loader';
import { KedgeError } from '../../proto/model/errors';
import { isDnsLabel, isLabelKey, isLabelValue } from '../../proto/model/service';
import { isValidName, parseSpiffeId } from '../../proto/model/spiffe';
import type { AgentRecord } from '../mesh/types';
import { AGENT_VERSION_MAX_CHARS, HOST_FACT_MAX_ADDRESSES, HOST_FACT_MAX_CHARS, REGISTRATION_LIMITS_DEFAULTS, type RegistrationLimits } from './limits';

const PROTOCOLS = new Set(['tcp', 'http', 'http2', 'grpc', 'tls']);
const PORT_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function clip(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function bad(msg: string): never {
  throw new KedgeError('KEDGE_BAD_REQUEST', `invalid registration: ${msg}`);
}

/** Validates a Register from an agent authenticated as `identity`. */
export function recordFromRegister(msg: Register__Output, identity: string, replica: string, now: Date, limits: RegistrationLimits = REGISTRATION_LIMITS_DEFAULTS): AgentRecord {
  const id = parseSpiffeId(identity);
  const wl = msg.workload;
  if (!id || !wl) bad('workload is missing');
  if (msg.services.length > limits.servicesPerWorkload) bad(`${msg.services.length} services in one registration; the limit is ${limits.servicesPerWorkload} (registrationLimits.servicesPerWorkload)`);
  if (msg.subscriptions.length > limits.subscriptionsPerAgent) bad(`${msg.subscriptions.length} subscriptions; the limit is ${limits.subscriptionsPerAgent} (registrationLimits.subscriptionsPerAgent)`);
  const labelKeys = Object.keys(wl.labels);
  if (labelKeys.length > limits.labelsPerWorkload) bad(`${labelKeys.length} labels; the limit is ${limits.labelsPerWorkload} (registrationLimits.labelsPerWorkload)`);
  for (const k of labelKeys) {
    if (!isLabelKey(k) || !isLabelValue(wl.labels[k]!)) bad(`label ${clip(k)}=${clip(wl.labels[k]!)} is not a valid label (keys and values up to 63 characters of letters, digits, '-', '_', '.')`);
  }
  if (wl.namespace !== id.namespace || wl.serviceAccount !== id.serviceAccount) {
    throw new KedgeError(
      'KEDGE_PERMISSION_DENIED',
      `workload ${wl.namespace}/${wl.name} runs as service account ${wl.serviceAccount} in namespace ${wl.namespace}, but its certificate is ${identity}; fix workload.namespace/serviceAccount in the agent config or join with a token for that identity`,
    );
  }
  if (wl.name.length > 253 || !isValidName(wl.name)) bad(`workload name "${clip(wl.name)}" is not a valid name (DNS-1123: up to 253 lowercase letters, digits, '-' and '.')`);
  if (isIP(wl.address) === 0) bad(`workload address "${wl.address}" is not an IP address`);
  if (!(wl.inboundPort >= 1 && wl.inboundPort <= 65535)) bad(`inbound port ${wl.inboundPort} is out of range`);
  const seen = new Set<string>();
  const services = msg.services.map((s) => {
    if (!isDnsLabel(s.name)) bad(`service name "${clip(s.name)}" is not a DNS label (up to 63 lowercase letters, digits and '-')`);
    if (s.namespace && s.namespace !== wl.namespace) bad(`service ${s.name} is in namespace ${s.namespace}, not the workload's ${wl.namespace}`);
    if (seen.has(s.name)) bad(`service ${s.name} is listed twice`);
    seen.add(s.name);
    if (s.ports.length === 0) bad(`service ${s.name} has no ports`);
    if (s.ports.length > limits.portsPerService) bad(`service ${s.name} has ${s.ports.length} ports; the limit is ${limits.portsPerService} (registrationLimits.portsPerService)`);
    return {
      name: s.name,
      ports: s.ports.map((p) => {
        if (!(p.port >= 1 && p.port <= 65535) || !(p.targetPort >= 1 && p.targetPort <= 65535)) bad(`service ${s.name} port ${p.name} is out of range`);
        if (!PROTOCOLS.has(p.protocol)) bad(`service ${s.name} port ${clip(p.name)} has unknown protocol "${clip(p.protocol)}"`);
        if (p.name && !PORT_NAME.test(p.name)) bad(`service ${s.name} port name "${clip(p.name)}" is not a DNS label`);
        return { name: p.name || `port-${p.port}`, port: p.port, targetPort: p.targetPort, protocol: p.protocol };
      }),
    };
  });
  const loc = wl.locality ?? { region: '', zone: '', subzone: '' };
  for (const part of [loc.region, loc.zone, loc.subzone, wl.network]) {
    if (part.length > 253 || /[\s/]/.test(part)) bad(`locality or network "${clip(part)}" is not a name (up to 253 characters, no spaces or '/')`);
  }
  const host = msg.host;
  if (host) {
    for (const v of [host.hostname, host.os, host.osRelease, host.kernel, host.arch]) {
      if (v.length > HOST_FACT_MAX_CHARS) bad(`host fact "${clip(v)}" is longer than ${HOST_FACT_MAX_CHARS} characters`);
    }
    if (host.addresses.length > HOST_FACT_MAX_ADDRESSES) bad(`${host.addresses.length} host addresses; the limit is ${HOST_FACT_MAX_ADDRESSES}`);
    for (const a of host.addresses) if (a.length > 64) bad(`host address "${clip(a)}" is too long`);
  }
  if (msg.agentVersion.length > AGENT_VERSION_MAX_CHARS) bad(`agent version "${clip(msg.agentVersion)}" is longer than ${AGENT_VERSION_MAX_CHARS} characters`);
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
      ...(wl.metricsPort >= 1 && wl.metricsPort <= 65535 ? { metricsPort: wl.metricsPort } : {}),
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
