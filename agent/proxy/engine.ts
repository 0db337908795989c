// The forwarding engine's client side: what the upstream and capture
// listeners call with an accepted connection and the service port it is
// for. The port's protocol selects a stack (protocol.ts); an unknown one
// is detected from the first bytes. Every connection yields one record
// (connection-record.ts) into the sink the proxy passes in.
import type * as net from 'node:net';
import type { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { buildSni } from '../../proto/model/sni';
import type { AttemptDeps } from './attempts';
import type { MeshBalancers, MeshEndpoint } from './balancers';
import { type ConnectionTrace, destinationService } from './connection-record';
import { type ClientTls, dialEndpoint, dialPlaintext } from './dial';
import { closeClient, forwardOpaque } from './opaque';
import { readPrefix } from './prefix';
import { DETECT_TIMEOUT_MS, type Stack, detectStack, IMPLEMENTED, stackFor } from './protocol';
import type { EndpointView, ServiceView } from './types';
import type { PeerWorkload, RecordSink } from './record';
import type { Http1Pools } from './http1/pools';
import { serveHttp1Outbound } from './http1/outbound';
import type { Drainable } from './http1/session';
import type { H2Sessions } from './http2/sessions';
import { serveHttp2Outbound } from './http2/serve';
import type { Breakers } from './breaker';

/** What forwarding over the mesh needs; getters, so it always sees the current identity. */
export interface MeshDeps extends AttemptDeps {
  clientTls: () => ClientTls;
  logger: Logger;
  /** Per attempt, unless the service's traffic policy sets connectTimeout. */
  connectTimeoutMs: number;
  balancers: MeshBalancers;
  /** Registers a socket for drain on close. */
  track: (socket: net.Socket) => void;
  /** How long an unknown port waits for the client's first bytes. */
  detectTimeoutMs?: number;
  /** Where request and connection records go. */
  sink: RecordSink;
  /** This proxy's own workload now. */
  self: () => PeerWorkload;
  /** The HTTP/1.1 connection pools to endpoints. */
  pools: Http1Pools;
  /** Open HTTP/1.1 and HTTP/2 sessions, so a closing proxy can drain them. */
  sessions: Set<Drainable>;
  /** HTTP/2 sessions to endpoints. */
  h2: H2Sessions;
  /** Circuit breakers and retry budgets per destination service. */
  breakers: Breakers;
  /** A service of the current snapshot by name.namespace (route backends). */
  service: (key: string) => ServiceView | undefined;
  /** Tracing on: the share of new traces sampled (agent/telemetry/hop.ts); undefined: trace headers pass through. */
  traceSample?: number | undefined;
}

/** One client connection's way into the mesh: a service port, and an endpoint to try first. */
export interface MeshRoute {
  service: ServiceView;
  /** Service port; the SNI names it. */
  port: number;
  /** Tried first (the client addressed this endpoint directly). */
  preferred?: EndpointView;
  /** Extra fields for this connection's log lines (a captured connection's original destination). */
  log?: Record<string, unknown>;
}

/** Records, logs and closes a refused outbound connection (`reset`: with a TCP RST, so the client sees ECONNRESET). */
export function refuseOutbound(client: net.Socket, trace: ConnectionTrace, err: KedgeError, logger: Logger, fields: Record<string, unknown>, reset = false): void {
  trace.finish(err.code, 0, 0);
  logger.warn({ ...fields, code: err.code, err: err.message }, 'outbound connection refused');
  closeClient(client, reset);
}

// Log fields naming how an endpoint is reached: the SNI and the identity
// checked for mTLS, or that it went in plain TCP.
function transportFields(ep: MeshEndpoint, sni: string): Record<string, unknown> {
  return ep.view.plaintext ? { plaintext: true } : { sni, peer: ep.view.identity };
}

/**
 * Carries `client` (paused) to `route`: the stack its port's protocol
 * selects, or the one its first bytes show when the protocol is unknown.
 */
export async function forwardToService(client: net.Socket, route: MeshRoute, trace: ConnectionTrace, deps: MeshDeps): Promise<void> {
  const { service, port } = route;
  trace.update({ service: destinationService(service.key, service.hostname, port) });
  const protocol = service.ports.find((p) => p.port === port)?.protocol;
  let stack: Stack;
  let prefix: Buffer | undefined;
  const choice = stackFor(protocol);
  if (choice === 'detect') {
    const p = await readPrefix(client, Buffer.alloc(0), (b) => detectStack(b, false) !== 'more', deps.detectTimeoutMs ?? DETECT_TIMEOUT_MS);
    if (client.destroyed) return void trace.finish('KEDGE_CLIENT_CLOSED', 0, 0);
    const detected = detectStack(p.buf, true);
    stack = IMPLEMENTED.has(detected as Stack) ? (detected as Stack) : 'opaque';
    prefix = p.buf;
  } else stack = choice;
  trace.update({ stack });
  return forwardStack(client, route, stack, trace, deps, prefix);
}

function forwardStack(client: net.Socket, route: MeshRoute, stack: Stack, trace: ConnectionTrace, deps: MeshDeps, prefix: Buffer | undefined): Promise<void> {
  if (stack === 'http1') return Promise.resolve(serveHttp1Outbound(client, route, trace, deps, prefix));
  if (stack === 'http2') return Promise.resolve(serveHttp2Outbound(client, route, trace, deps, prefix));
  const { service, port } = route;
  const fields = { service: service.key, port, ...route.log };
  const entry = deps.balancers.entry(service);
  const timeoutMs = entry.balancer.connectTimeoutMs() ?? deps.connectTimeoutMs;
  const sni = buildSni(port, service.hostname);
  return forwardOpaque(
    client,
    { entry, servicePort: port, preferred: route.preferred ? entry.endpointFor(route.preferred, port) : undefined, fields, gone: () => client.destroyed },
    trace,
    deps,
    {
      connect: (ep) => (ep.view.plaintext ? dialPlaintext(ep.view, ep.port, timeoutMs, deps.track) : dialEndpoint(ep.view, sni, deps.clientTls(), timeoutMs, deps.track)),
      ...(prefix !== undefined ? { prefix } : {}),
      msg: 'outbound',
      refuse: (err) => refuseOutbound(client, trace, err, deps.logger, fields),
      endpointFields: (ep) => transportFields(ep, sni),
      now: deps.balancers.now,
    },
  );
}
