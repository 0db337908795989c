// Agent configuration: loaded once from YAML, validated into a frozen
// object, defaults in one table. A bad file names the file and the field and
// the agent exits before binding anything.
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { KedgeError } from '../proto/model/errors';
import { HostPort, parseHostPort } from '../proto/model/address';
import { LocalityParts, parseLocality } from '../proto/model/locality';
import { isDnsLabel, parseServiceKey, serviceKey } from '../proto/model/service';
import { isValidName, isValidTrustDomain } from '../proto/model/spiffe';
import { Doc, deepFreeze } from '../proto/model/validate';
import { parseDuration } from '../proto/model/duration';
import { parseHealthCheck, type HealthCheckConfig } from './health';
import { ACCESS_LOG_DEFAULTS, type AccessLogConfig } from './telemetry/access-log';
import { TRACING_DEFAULTS, type TracingConfig } from './telemetry/tracing';
import { GATEWAY_PORT } from '../proto/model/ports';
import { LIMITS, parseLimits, type AgentLimits } from '../proto/model/limits';

/** Defaults for every optional agent setting, in one place. */
export const AGENT_DEFAULTS = Object.freeze({
  inboundListen: '0.0.0.0:15006',
  adminListen: '127.0.0.1:15000',
  metricsListen: '0.0.0.0:15020',
  network: '',
  protocol: 'tcp',
  appHost: '127.0.0.1',
  dataDir: '/var/lib/kedge/agent',
  trustDomain: '',
  connectTimeout: '5s',
  inboundMode: 'PERMISSIVE',
  outboundPolicy: 'allow-any',
});

const PROTOCOLS = ['tcp', 'http', 'http2', 'grpc', 'tls'] as const;

/** A port a local service exposes through the mesh. */
export interface ServicePortConfig {
  name: string;
  port: number;
  targetPort: number;
  protocol: string;
}

/** A service this workload serves. */
export interface ServiceConfig {
  name: string;
  ports: readonly ServicePortConfig[];
  /** The probe whose result the federation turns into this service's endpoint health. */
  health: HealthCheckConfig | undefined;
}

/** An explicit upstream: a local listener forwarding to a mesh service. */
export interface UpstreamConfig {
  service: string;
  port: number;
  listen: HostPort;
}

/** The validated, frozen agent configuration. */
export interface AgentConfig {
  file: string;
  federation: {
    addresses: readonly HostPort[];
    rootCertFile: string;
    tokenFile: string | undefined;
    /** A pod's projected service-account token, checked by the federation with `cluster`'s TokenReview. */
    kubernetesTokenFile: string | undefined;
    cluster: string | undefined;
    /** Expected trust domain of the federation's SPIFFE ID; '' accepts the one its pinned root vouches for. */
    trustDomain: string;
  };
  workload: {
    name: string;
    namespace: string;
    serviceAccount: string;
    /** undefined: detect from the host's interfaces. */
    address: string | undefined;
    locality: LocalityParts;
    network: string;
    labels: Readonly<Record<string, string>>;
  };
  services: readonly ServiceConfig[];
  upstreams: readonly UpstreamConfig[];
  proxy: {
    inboundListen: HostPort;
    appHost: string;
    connectTimeoutMs: number;
    /** With inbound capture: plaintext from outside the mesh is served (PERMISSIVE) or refused (STRICT). */
    inboundMode: 'PERMISSIVE' | 'STRICT';
    /** With outbound capture: destinations outside the mesh pass through (allow-any) or are refused. */
    outboundPolicy: 'allow-any' | 'registry-only';
    /** The forwarding core for opaque (tcp) traffic: typescript, native (agent/native) or auto; absent: $KEDGE_PROXY_CORE, else typescript. */
    core?: 'typescript' | 'native' | 'auto';
  };
  /** listen: the admin endpoint (localhost); metricsListen: Prometheus /metrics (15020, like Istio's sidecar). */
  admin: { listen: HostPort; metricsListen: HostPort };
  /** What the agent records about traffic. */
  telemetry: TelemetryConfig;
  dataDir: string;
  /** The raw `capture:` block, validated by agent/capture when capture is used. */
  captureDoc: Doc;
  /** For `--mode gateway`: where to listen (15443) and the address other networks reach it at. */
  gateway: { listen: HostPort; address: string | undefined };
  /** Connections and idle timeouts per listener (proto/model/limits.ts, docs/limits.md). */
  limits: AgentLimits;
}

/** The `telemetry:` block. */
export interface TelemetryConfig {
  /** istio_* metrics from every request and connection (default true). */
  metrics: boolean;
  /** One JSON line per request and connection. */
  accessLog: AccessLogConfig;
  /** A span per hop over OTLP/HTTP. */
  tracing: TracingConfig;
  /** How often the traffic summary for `kedge stat` goes to the federation (default 10 s). */
  statsIntervalMs: number;
}

const ACCESS_LOG_LEVELS = ['off', 'trace', 'debug', 'info', 'warn', 'error'] as const;

const TOP = ['federation', 'workload', 'services', 'upstreams', 'proxy', 'admin', 'dataDir', 'capture', 'gateway', 'telemetry', 'limits'] as const;

/** Reads and validates an agent config file. */
export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new KedgeError('KEDGE_BAD_CONFIG', `cannot read agent config ${file}: ${(err as NodeJS.ErrnoException).code ?? err}; pass --config FILE`, { cause: err });
  }
  return parseAgentConfig(text, file);
}

/** Parses agent config text; `file` names the source in errors and anchors relative paths. */
export function parseAgentConfig(text: string, file: string): AgentConfig {
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch (err) {
    throw new KedgeError('KEDGE_BAD_CONFIG', `${file}: not valid YAML: ${(err as Error).message}`, { cause: err });
  }
  const base = path.dirname(path.resolve(file));
  const rel = (p: string) => path.resolve(base, p);
  const doc = new Doc(file, value).object(TOP);

  const fed = doc.at('federation').object(['address', 'rootCert', 'tokenFile', 'trustDomain', 'kubernetesTokenFile', 'cluster']);
  const kubernetesTokenFile = fed.at('kubernetesTokenFile').optionalString();
  const cluster = fed.at('cluster').optionalString();
  if ((kubernetesTokenFile === undefined) !== (cluster === undefined)) fed.at(cluster === undefined ? 'cluster' : 'kubernetesTokenFile').fail('kubernetesTokenFile and cluster go together: a pod joins with its service-account token, checked by that cluster');
  const addrDoc = fed.at('address');
  const addresses = Array.isArray(addrDoc.value)
    ? addrDoc.list().map((d) => d.parse((s) => parseHostPort(s, 'address')))
    : [addrDoc.parse((s) => parseHostPort(s, 'address'))];
  if (addresses.length === 0) addrDoc.fail('must name at least one federation address');
  const trustDomain = fed.at('trustDomain').optionalString() ?? AGENT_DEFAULTS.trustDomain;
  if (trustDomain && !isValidTrustDomain(trustDomain)) fed.at('trustDomain').fail(`invalid trust domain "${trustDomain}"`);

  const wl = doc.at('workload').object(['name', 'namespace', 'serviceAccount', 'address', 'locality', 'network', 'labels']);
  const name = nameField(wl.at('name'));
  const namespace = nameField(wl.at('namespace'));
  const serviceAccount = nameField(wl.at('serviceAccount'));
  const address = wl.at('address').optionalString();
  if (address !== undefined && !/^[0-9a-fA-F:.]+$/.test(address)) wl.at('address').fail(`"${address}" is not an IP address`);

  const appHost = (doc.at('proxy').value as { appHost?: unknown } | undefined)?.appHost;
  const services = doc.at('services').list().map((s) => {
    s.object(['name', 'ports', 'health']);
    const sname = s.at('name').string();
    if (!isDnsLabel(sname)) s.at('name').fail(`"${sname}" is not a valid service name (lowercase letters, digits and '-', at most 63)`);
    const ports = s.at('ports').list().map((p) => {
      p.object(['name', 'port', 'targetPort', 'protocol']);
      const port = p.at('port').port();
      const protocol = p.at('protocol').string(AGENT_DEFAULTS.protocol);
      if (!(PROTOCOLS as readonly string[]).includes(protocol)) p.at('protocol').fail(`must be one of ${PROTOCOLS.join(', ')}`);
      return { name: p.at('name').string(`port-${port}`), port, targetPort: p.at('targetPort').port(port), protocol };
    });
    if (ports.length === 0) s.at('ports').fail('a service needs at least one port');
    const seen = new Set<number>();
    for (const [i, p] of ports.entries()) {
      if (seen.has(p.port)) s.at('ports').at(i).at('port').fail(`port ${p.port} is listed twice`);
      seen.add(p.port);
    }
    return { name: sname, ports, health: parseHealthCheck(s.at('health'), typeof appHost === 'string' ? { appHost } : {}) };
  });
  const svcNames = new Set<string>();
  for (const [i, s] of services.entries()) {
    if (svcNames.has(s.name)) doc.at('services').at(i).at('name').fail(`service "${s.name}" is listed twice`);
    svcNames.add(s.name);
  }
  // Two services of one workload cannot share a service port: the inbound
  // listener routes on the SNI's port and hostname, but the app behind it is
  // reached by targetPort alone.

  const upstreams = doc.at('upstreams').list().map((u) => {
    u.object(['service', 'port', 'listen']);
    const service = serviceKey(u.at('service').parse((s) => parseServiceKey(s)));
    return { service, port: u.at('port').port(), listen: u.at('listen').parse((s) => parseHostPort(s, 'listen')) };
  });
  const listens = new Set<string>();
  for (const [i, u] of upstreams.entries()) {
    const k = `${u.listen.host}:${u.listen.port}`;
    if (listens.has(k)) doc.at('upstreams').at(i).at('listen').fail(`${k} is used by two upstreams`);
    listens.add(k);
  }

  const proxy = doc.at('proxy').optionalObject(['inboundListen', 'appHost', 'connectTimeout', 'inboundMode', 'outboundPolicy', 'core']) ?? doc.at('proxy');
  const inboundMode = proxy.at('inboundMode').string(AGENT_DEFAULTS.inboundMode);
  if (inboundMode !== 'PERMISSIVE' && inboundMode !== 'STRICT') proxy.at('inboundMode').fail('must be PERMISSIVE or STRICT');
  const outboundPolicy = proxy.at('outboundPolicy').string(AGENT_DEFAULTS.outboundPolicy);
  if (outboundPolicy !== 'allow-any' && outboundPolicy !== 'registry-only') proxy.at('outboundPolicy').fail('must be allow-any or registry-only');
  const core = proxy.at('core').string('');
  if (core !== '' && core !== 'typescript' && core !== 'native' && core !== 'auto') proxy.at('core').fail('must be typescript, native or auto');
  const admin = doc.at('admin').optionalObject(['listen', 'metricsListen']) ?? doc.at('admin');
  const tel = doc.at('telemetry').optionalObject(['metrics', 'accessLog', 'tracing', 'statsInterval']) ?? doc.at('telemetry');
  const tr = tel.at('tracing').optionalObject(['otlpEndpoint', 'sample']) ?? tel.at('tracing');
  const otlpEndpoint = tr.at('otlpEndpoint').string(TRACING_DEFAULTS.otlpEndpoint);
  if (otlpEndpoint !== '' && !/^https?:\/\/[^/\s]+/.test(otlpEndpoint)) tr.at('otlpEndpoint').fail(`"${otlpEndpoint}" is not an http(s) URL; write the collector's OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces`);
  const trSample = tr.at('sample').isMissing() ? TRACING_DEFAULTS.sample : tr.at('sample').value;
  if (typeof trSample !== 'number' || !(trSample >= 0 && trSample <= 1)) tr.at('sample').fail('must be a number from 0 to 1: the share of new traces sampled');
  const al = tel.at('accessLog').optionalObject(['level', 'filter', 'sample']) ?? tel.at('accessLog');
  const alLevel = al.at('level').string(ACCESS_LOG_DEFAULTS.level);
  if (!(ACCESS_LOG_LEVELS as readonly string[]).includes(alLevel)) al.at('level').fail(`must be one of ${ACCESS_LOG_LEVELS.join(', ')}`);
  const alFilter = al.at('filter').string(ACCESS_LOG_DEFAULTS.filter);
  if (alFilter !== 'all' && alFilter !== 'errors') al.at('filter').fail('must be all or errors (errors: only failed requests and connections)');
  const alSample = al.at('sample').isMissing() ? ACCESS_LOG_DEFAULTS.sample : al.at('sample').value;
  if (typeof alSample !== 'number' || !(alSample >= 0 && alSample <= 1)) al.at('sample').fail('must be a number from 0 to 1: the share of successful requests logged (errors are always logged)');
  const tokenFile = fed.at('tokenFile').optionalString();

  return deepFreeze({
    file,
    federation: {
      addresses,
      rootCertFile: rel(fed.at('rootCert').string()),
      tokenFile: tokenFile === undefined ? undefined : rel(tokenFile),
      kubernetesTokenFile: kubernetesTokenFile === undefined ? undefined : rel(kubernetesTokenFile),
      cluster,
      trustDomain,
    },
    workload: {
      name,
      namespace,
      serviceAccount,
      address,
      locality: wl.at('locality').isMissing() ? parseLocality('') : wl.at('locality').parse(parseLocality),
      network: wl.at('network').optionalString() ?? AGENT_DEFAULTS.network,
      labels: wl.at('labels').stringMap(),
    },
    services,
    upstreams,
    proxy: {
      inboundListen: proxy.at('inboundListen').parse((s) => parseHostPort(s, 'inboundListen'), AGENT_DEFAULTS.inboundListen),
      appHost: proxy.at('appHost').string(AGENT_DEFAULTS.appHost),
      connectTimeoutMs: proxy.at('connectTimeout').parse((s) => parseDuration(s, 'connectTimeout'), AGENT_DEFAULTS.connectTimeout),
      inboundMode: inboundMode as 'PERMISSIVE' | 'STRICT',
      outboundPolicy: outboundPolicy as 'allow-any' | 'registry-only',
      ...(core !== '' ? { core: core as 'typescript' | 'native' | 'auto' } : {}),
    },
    admin: {
      listen: admin.at('listen').parse((s) => parseHostPort(s, 'listen'), AGENT_DEFAULTS.adminListen),
      metricsListen: admin.at('metricsListen').parse((s) => parseHostPort(s, 'metricsListen'), AGENT_DEFAULTS.metricsListen),
    },
    telemetry: {
      metrics: tel.at('metrics').bool(true),
      accessLog: { level: alLevel as AccessLogConfig['level'], filter: alFilter as AccessLogConfig['filter'], sample: alSample as number },
      tracing: { otlpEndpoint, sample: trSample as number },
      statsIntervalMs: tel.at('statsInterval').parse((v) => parseDuration(v, 'statsInterval'), '10s'),
    },
    dataDir: rel(doc.at('dataDir').string(AGENT_DEFAULTS.dataDir)),
    captureDoc: doc.at('capture'),
    gateway: {
      listen: doc.at('gateway').at('listen').parse((v) => parseHostPort(v, 'listen'), `0.0.0.0:${GATEWAY_PORT}`),
      address: (doc.at('gateway').optionalObject(['listen', 'address']) ?? doc.at('gateway')).at('address').optionalString(),
    },
    limits: parseLimits(doc.at('limits'), LIMITS.agent),
  });
}

function nameField(d: Doc): string {
  const v = d.string();
  if (!isValidName(v)) d.fail(`"${v}" is not a valid name (lowercase letters, digits, '-' and '.')`);
  return v;
}
