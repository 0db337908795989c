// Every limit Kedge puts on what others may make it hold, with its default,
// in one table. The agent's `limits:` block and the federation's `limits:`
// (and `registrationLimits:`) block override any of them; docs/limits.md
// lists them with the reason for each number.
//
// The numbers are far above what a large real deployment uses and far below
// what lets one client hold a process's descriptors or memory: the finding
// that started this table was 1,099 idle TCP connections to the
// federation's HTTP port blocking /healthz and Sign for 90 s (one
// descriptor limit shared by every listener), and 2,000 idle mTLS
// connections to an agent's inbound port holding 4,022 descriptors.
import { parseDuration } from './duration';
import type { Doc } from './validate';

/** What one listener accepts: connections at once, from one source address, and how long one may stay silent. */
export interface ListenerLimits {
  /** Connections open at once on the listener; more are closed at accept. */
  maxConnections: number;
  /** Connections open at once from one source address; more are closed at accept. */
  maxConnectionsPerPeer: number;
  /** A connection with no byte read or written for this long is closed. */
  idleTimeoutMs: number;
}

/** Limits of the federation's HTTP port besides its connections. */
export interface HttpLimits extends ListenerLimits {
  /** Request line and headers; larger is answered 431. */
  maxHeaderBytes: number;
  /** Request body; larger is answered 413. */
  maxBodyBytes: number;
  /** From the first byte of a request to its last header; slower is closed (408). */
  headersTimeoutMs: number;
}

/**
 * Limits of the federation's gRPC port besides its connections (the message
 * size is registrationLimits.maxMessageBytes). Agents' streams carry the
 * server's keep-alive pings every 10 s, so only silent connections idle out.
 */
export interface GrpcLimits extends ListenerLimits {
  /** Concurrent calls on one connection (HTTP/2 streams). */
  maxConcurrentStreams: number;
}

/** How Sign calls are bounded and throttled. */
export interface SignLimits {
  /** Sign calls being worked on at once across the replica; more are answered RESOURCE_EXHAUSTED. */
  maxPending: number;
  /** Sign attempts per second one source address may make (token bucket refill). */
  perSourceRate: number;
  /** Sign attempts one source address may make in a burst (token bucket size). */
  perSourceBurst: number;
  /** Consecutive failed Sign attempts (wrong or used token, rejected credential) from one source before it must wait. */
  failuresBeforeBackoff: number;
  /** First wait after that many failures; doubled per further consecutive failure. */
  failureBackoffMs: number;
  /** Longest wait after consecutive failures. */
  maxFailureBackoffMs: number;
  /** Source addresses remembered at once (the oldest is forgotten beyond). */
  trackedSources: number;
}

/** What one agent may register and subscribe to. */
export interface RegistrationLimits {
  /** Services in one Register. */
  servicesPerWorkload: number;
  /** Ports of one service. */
  portsPerService: number;
  /** Service keys one stream may be subscribed to at once. */
  subscriptionsPerAgent: number;
  /** Labels on one workload. */
  labelsPerWorkload: number;
  /** Bytes of one gRPC message from an agent (Register, Subscribe, health). */
  maxMessageBytes: number;
}

/** How many lines of one kind of warning a process writes per window; the rest are counted and the count logged. */
export interface LogRateLimits {
  linesPerWindow: number;
  windowMs: number;
}

/** The federation's limits. */
export interface FederationLimits {
  http: HttpLimits;
  grpc: GrpcLimits;
  sign: SignLimits;
  log: LogRateLimits;
}

/** The agent's limits, per listener. */
export interface AgentLimits {
  /** Inbound mesh mTLS (and captured plaintext) port, 15006. */
  inbound: ListenerLimits;
  /** Each explicit upstream listener. */
  upstream: ListenerLimits;
  /** The outbound capture listener, 15001. */
  outbound: ListenerLimits;
  /** The east-west gateway's port, 15443. */
  gateway: ListenerLimits;
  /** The admin endpoint, 15000. */
  admin: ListenerLimits;
  /** Prometheus /metrics, 15020 (kept open across scrapes: its keep-alive is 65 s). */
  metrics: ListenerLimits;
  /** The DNS proxy's TCP listener, 15053 (RFC 7766 asks for idle timeouts of seconds). */
  dnsTcp: ListenerLimits;
  log: LogRateLimits;
}

const S = 1_000;
const MIN = 60 * S;
const H = 60 * MIN;

/**
 * The one table. Data-plane idle timeouts are an hour, as Envoy's and
 * Istio's TCP and HTTP connection idle timeouts: a database connection that
 * is quiet for minutes is normal. Control and admin ports use seconds to
 * minutes: their clients send something at once or not at all.
 */
export const LIMITS = Object.freeze({
  federation: Object.freeze({
    http: Object.freeze({ maxConnections: 512, maxConnectionsPerPeer: 64, idleTimeoutMs: 2 * MIN, maxHeaderBytes: 16 * 1024, maxBodyBytes: 64 * 1024, headersTimeoutMs: 10 * S }),
    grpc: Object.freeze({ maxConnections: 16_384, maxConnectionsPerPeer: 1_024, idleTimeoutMs: MIN, maxConcurrentStreams: 100 }),
    sign: Object.freeze({ maxPending: 256, perSourceRate: 20, perSourceBurst: 100, failuresBeforeBackoff: 5, failureBackoffMs: 100, maxFailureBackoffMs: 30 * S, trackedSources: 10_000 }),
    log: Object.freeze({ linesPerWindow: 10, windowMs: 10 * S }),
  }) as FederationLimits,
  registration: Object.freeze({ servicesPerWorkload: 64, portsPerService: 64, subscriptionsPerAgent: 5_000, labelsPerWorkload: 64, maxMessageBytes: 1024 * 1024 }) as RegistrationLimits,
  agent: Object.freeze({
    inbound: Object.freeze({ maxConnections: 16_384, maxConnectionsPerPeer: 4_096, idleTimeoutMs: H }),
    upstream: Object.freeze({ maxConnections: 4_096, maxConnectionsPerPeer: 4_096, idleTimeoutMs: H }),
    outbound: Object.freeze({ maxConnections: 16_384, maxConnectionsPerPeer: 16_384, idleTimeoutMs: H }),
    gateway: Object.freeze({ maxConnections: 16_384, maxConnectionsPerPeer: 4_096, idleTimeoutMs: H }),
    admin: Object.freeze({ maxConnections: 64, maxConnectionsPerPeer: 64, idleTimeoutMs: MIN }),
    metrics: Object.freeze({ maxConnections: 64, maxConnectionsPerPeer: 16, idleTimeoutMs: 2 * MIN }),
    dnsTcp: Object.freeze({ maxConnections: 256, maxConnectionsPerPeer: 64, idleTimeoutMs: 10 * S }),
    log: Object.freeze({ linesPerWindow: 10, windowMs: 10 * S }),
  }) as AgentLimits,
});

const COUNT_MAX = 1024 * 1024 * 1024;
const DURATION_KEYS = new Set(['idleTimeoutMs', 'headersTimeoutMs', 'failureBackoffMs', 'maxFailureBackoffMs', 'windowMs']);

/** The YAML name of a field: durations are written without `Ms` (`idleTimeout: 30s`). */
export function yamlKey(field: string): string {
  return DURATION_KEYS.has(field) ? field.slice(0, -2) : field;
}

/**
 * Reads one group of limits (`limits.http`, `limits.inbound`, ...) over its
 * defaults: counts are whole numbers of at least 1, durations strings with
 * a unit. Unknown keys are refused, naming the known ones.
 */
export function parseLimitGroup<T extends object>(d: Doc, defaults: T): T {
  const out = { ...defaults } as Record<string, number>;
  if (d.isMissing()) return out as T;
  const fields = Object.keys(defaults);
  d.object(fields.map(yamlKey));
  for (const f of fields) {
    const at = d.at(yamlKey(f));
    if (at.isMissing()) continue;
    if (DURATION_KEYS.has(f)) {
      const ms = at.parse((s) => parseDuration(s, yamlKey(f)));
      if (ms < 1) at.fail('must be at least 1ms');
      out[f] = ms;
    } else {
      out[f] = at.int(undefined, 1, COUNT_MAX);
    }
  }
  // Lowering maxConnections alone lowers the per-address default with it; both given and at odds is refused.
  if (out.maxConnectionsPerPeer !== undefined && out.maxConnections !== undefined && out.maxConnectionsPerPeer > out.maxConnections && d.at('maxConnectionsPerPeer').isMissing()) {
    out.maxConnectionsPerPeer = out.maxConnections;
  }
  if (out.maxConnectionsPerPeer !== undefined && out.maxConnections !== undefined && out.maxConnectionsPerPeer > out.maxConnections) {
    d.at('maxConnectionsPerPeer').fail(`is ${out.maxConnectionsPerPeer}, more than maxConnections (${out.maxConnections}): lower it or raise maxConnections`);
  }
  return out as T;
}

/** Reads a whole `limits:` block: one group per key of `defaults`. */
export function parseLimits<T extends object>(d: Doc, defaults: T): T {
  const groups = Object.keys(defaults);
  if (!d.isMissing()) d.object(groups);
  const out: Record<string, unknown> = {};
  for (const g of groups) out[g] = parseLimitGroup(d.at(g), (defaults as Record<string, object>)[g]!);
  return out as T;
}
