// The `health:` block of a service in the agent config: one probe of the
// local app plus its timing and thresholds, validated into a frozen object.
// Errors name the field ("agent.yaml: services[0].health.http.port: ...").
import * as net from 'node:net';
import { parseDuration } from '../../proto/model/duration';
import { Doc, deepFreeze } from '../../proto/model/validate';

/** Defaults for every optional health setting, in one place. */
export const HEALTH_DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  httpPath: '/',
  grpcService: '',
  period: '5s',
  timeout: '1s',
  healthyThreshold: 1,
  unhealthyThreshold: 3,
  initialDelay: '0s',
});

/** The probe kinds, in the order the config documents them. */
export const PROBE_KINDS = ['http', 'tcp', 'grpc', 'exec'] as const;

/** GET http://host:port/path; any 2xx or 3xx status is healthy (redirects are not followed). */
export interface HttpProbeConfig {
  kind: 'http';
  host: string;
  port: number;
  path: string;
}

/** A TCP connect to host:port; connected is healthy. */
export interface TcpProbeConfig {
  kind: 'tcp';
  host: string;
  port: number;
}

/** grpc.health.v1.Health/Check for `service` ('' = the whole server); SERVING is healthy. */
export interface GrpcProbeConfig {
  kind: 'grpc';
  host: string;
  port: number;
  service: string;
}

/** Runs `command` (argv, no shell); exit status 0 is healthy. */
export interface ExecProbeConfig {
  kind: 'exec';
  command: readonly string[];
}

/** One probe of the local app. */
export type ProbeConfig = HttpProbeConfig | TcpProbeConfig | GrpcProbeConfig | ExecProbeConfig;

/** Consecutive results needed to change state. */
export interface HealthThresholds {
  /** Consecutive successes that turn a service healthy. */
  healthyThreshold: number;
  /** Consecutive failures that turn a healthy service unhealthy. */
  unhealthyThreshold: number;
}

/** A validated, frozen `services[].health` block. */
export interface HealthCheckConfig extends HealthThresholds {
  probe: ProbeConfig;
  periodMs: number;
  timeoutMs: number;
  initialDelayMs: number;
}

const FIELDS = [...PROBE_KINDS, 'period', 'timeout', 'healthyThreshold', 'unhealthyThreshold', 'initialDelay'] as const;

// A threshold above this is almost certainly a unit mistake (period: 5s with
// unhealthyThreshold: 1000 would take 83 minutes to notice a dead app).
const MAX_THRESHOLD = 100;

/**
 * Parses a service's `health:` block; undefined when the block is absent.
 * `opts.appHost` is the probe host when the block names none (the agent's
 * `proxy.appHost`, 127.0.0.1 by default).
 */
export function parseHealthCheck(doc: Doc, opts: { appHost?: string } = {}): HealthCheckConfig | undefined {
  if (doc.isMissing()) return undefined;
  doc.object(FIELDS);
  const kinds = PROBE_KINDS.filter((k) => !doc.at(k).isMissing());
  if (kinds.length === 0) doc.fail(`needs one probe: ${PROBE_KINDS.join(', ')}`);
  if (kinds.length > 1) doc.fail(`has ${kinds.join(' and ')} probes: choose one`);
  const kind = kinds[0] as (typeof PROBE_KINDS)[number];
  const host = opts.appHost ?? HEALTH_DEFAULTS.host;
  const probe = parseProbe(kind, doc.at(kind), host);

  const periodMs = duration(doc.at('period'), HEALTH_DEFAULTS.period);
  if (periodMs <= 0) doc.at('period').fail('must be more than 0');
  const timeoutMs = duration(doc.at('timeout'), HEALTH_DEFAULTS.timeout);
  if (timeoutMs <= 0) doc.at('timeout').fail('must be more than 0');
  return deepFreeze({
    probe,
    periodMs,
    timeoutMs,
    initialDelayMs: duration(doc.at('initialDelay'), HEALTH_DEFAULTS.initialDelay),
    healthyThreshold: doc.at('healthyThreshold').int(HEALTH_DEFAULTS.healthyThreshold, 1, MAX_THRESHOLD),
    unhealthyThreshold: doc.at('unhealthyThreshold').int(HEALTH_DEFAULTS.unhealthyThreshold, 1, MAX_THRESHOLD),
  });
}

function parseProbe(kind: (typeof PROBE_KINDS)[number], d: Doc, defaultHost: string): ProbeConfig {
  switch (kind) {
    case 'http': {
      d.object(['path', 'port', 'host']);
      const path = d.at('path').string(HEALTH_DEFAULTS.httpPath);
      // The path goes on the request line as written: anything a server
      // could read as a second header or request is refused here.
      if (!path.startsWith('/') || /[\s\x00-\x1f\x7f]/.test(path)) d.at('path').fail(`"${path}" must start with "/" and contain no spaces or control characters`);
      return { kind, host: hostField(d.at('host'), defaultHost), port: d.at('port').port(), path };
    }
    case 'tcp':
      d.object(['port', 'host']);
      return { kind, host: hostField(d.at('host'), defaultHost), port: d.at('port').port() };
    case 'grpc': {
      d.object(['port', 'host', 'service']);
      // '' is meaningful here (the server as a whole), so Doc.string's
      // non-empty rule does not apply.
      const s = d.at('service');
      if (!s.isMissing() && typeof s.value !== 'string') s.fail('must be a string ("" checks the whole server)');
      return { kind, host: hostField(d.at('host'), defaultHost), port: d.at('port').port(), service: s.isMissing() ? HEALTH_DEFAULTS.grpcService : (s.value as string) };
    }
    case 'exec': {
      d.object(['command']);
      const c = d.at('command');
      if (typeof c.value === 'string') c.fail('must be a list (the command runs without a shell): [ /usr/local/bin/check, --fast ] or [ sh, -c, "..." ]');
      const command = c.list().map((a) => a.string());
      if (command.length === 0) c.fail('must name the program to run, such as [ /usr/local/bin/check ]');
      return { kind, command };
    }
  }
}

function hostField(d: Doc, def: string): string {
  const host = d.string(def);
  if (net.isIP(host) === 0 && !/^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(host)) {
    d.fail(`"${host}" is not an IP address or host name`);
  }
  return host;
}

function duration(d: Doc, def: string): number {
  if (typeof d.value === 'number') d.fail(`needs a unit, such as ${d.value}s or ${d.value}ms`);
  return d.parse((s) => parseDuration(s, d.path.slice(d.path.lastIndexOf('.') + 1)), def);
}
