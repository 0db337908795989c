// The opaque stack: one upstream connection per client connection, bytes
// spliced both ways unread. Serves `tcp` ports (over mTLS, or plain TCP to
// a plaintext endpoint), and with a raw TCP connector the gateway's TLS
// passthrough. The endpoint's outcome for outlier detection comes from
// watching the upstream's first byte (outcome.ts).
// No node:tls import here: the gateway uses this stack and must not even
// load Node's TLS implementation (it holds no keys; its test checks).
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import type { KedgeError } from '../../proto/model/errors';
import { errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { type AttemptDeps, type AttemptTarget, type Connector, connectAttempts, logOutlier } from './attempts';
import type { MeshEndpoint } from './balancers';
import { endpointPeer } from '../telemetry/peer-metadata';
import type { ConnectionTrace } from './connection-record';
import { watchOutcome } from './outcome';
import { splice } from './splice';

/** How a refused client connection is closed: at once, with a TCP RST, or by a caller-specific way (the gateway's TLS alert). */
export type RefuseHow = 'destroy' | 'reset';

/** Destroys `socket`, with a TCP RST when `reset` and the socket still has a handle. */
export function closeClient(socket: net.Socket, reset: boolean): void {
  if (reset && !socket.destroyed) socket.resetAndDestroy();
  else socket.destroy();
}

/** Records, logs and closes a refused connection. */
export function refuseConnection(client: net.Socket, trace: ConnectionTrace, err: KedgeError, logger: Logger, msg: string, fields: Record<string, unknown>, how: RefuseHow = 'destroy'): void {
  trace.finish(err.code, 0, 0);
  logger.warn({ ...fields, code: err.code, err: err.message }, msg);
  closeClient(client, how === 'reset');
}

/** What one opaque forward needs beyond the attempt target. */
export interface OpaqueOptions {
  connect: Connector<net.Socket>;
  /** Bytes already read from the client (the gateway's ClientHello, a detection prefix), written first. */
  prefix?: Buffer;
  /** Access-log message ('outbound', 'gateway'). */
  msg: string;
  /** How to close the client when no endpoint could be reached. */
  refuse: (err: KedgeError) => void;
  /** Extra access-log fields for the chosen endpoint (SNI and identity, or plaintext). */
  endpointFields?: (ep: MeshEndpoint) => Record<string, unknown>;
  /** Outlier detection from the first byte (off for the gateway, which sees only TLS records). */
  watch?: boolean;
  now: () => number;
}

/**
 * Carries `client` (paused, so nothing it sent is lost on a retry) to an
 * endpoint: attempts as connectAttempts makes them, then the splice, the
 * record and the access log line.
 */
export async function forwardOpaque(client: net.Socket, t: AttemptTarget, trace: ConnectionTrace, deps: AttemptDeps, o: OpaqueOptions): Promise<void> {
  const started = performance.now();
  const r = await connectAttempts(t, deps, trace, o.connect, o.endpointFields);
  if (!('pick' in r)) {
    if (r.code === 'KEDGE_CLIENT_CLOSED') return void trace.finish(r.code, 0, 0);
    return o.refuse(r);
  }
  const { pick, conn: upstream, attempts } = r;
  const ep = pick.endpoint;
  if (client.destroyed) {
    pick.onEnd();
    upstream.destroy();
    return void trace.finish('KEDGE_CLIENT_CLOSED', 0, 0);
  }
  trace.open(ep.key, endpointPeer(ep.view));
  const isTls = 'isSessionReused' in upstream;
  const resumed = isTls && (upstream as tls.TLSSocket).isSessionReused();
  upstream.setNoDelay(true);
  client.setNoDelay(true);
  // Written rather than unshifted: a client that already sent its FIN
  // cannot take bytes back into its ended stream.
  if (o.prefix !== undefined && o.prefix.length > 0) upstream.write(o.prefix);
  const connectedAt = o.now();
  splice(client, upstream, (err) => {
    pick.onEnd();
    trace.finish('', client.bytesWritten, client.bytesRead);
    deps.logger.info(
      {
        ...t.fields,
        ...o.endpointFields?.(ep),
        endpoint: ep.key,
        workload: ep.view.workload,
        ...(pick.priority >= 0 ? { priority: pick.priority } : {}),
        attempts,
        bytesIn: client.bytesWritten,
        bytesOut: client.bytesRead,
        durationMs: Math.round(performance.now() - started),
        ...(isTls ? { resumed } : {}),
        ...(err ? { err: errorMessage(err) } : {}),
      },
      o.msg,
    );
  });
  // After splice: pipe() has made the upstream flow, so watching its first
  // byte takes nothing from the client.
  if (o.watch !== false) watchOutcome(upstream, client, connectedAt, o.now, (outcome) => logOutlier(deps.logger, pick.report(outcome), ep, t.fields, outcome));
}
