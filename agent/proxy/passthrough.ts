// Forwarding a captured connection as plain TCP, outside mesh TLS: outbound
// to a destination outside the mesh (allow-any), inbound plaintext or
// non-mesh TLS to the local app (PERMISSIVE). The proxy never looks inside.
import * as net from 'node:net';
import { type HostPort, formatHostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import type { ConnectionTrace } from './connection-record';
import { closeClient } from './opaque';
import { splice } from './splice';

/** What a passthrough needs: where to log, how long a connect may take, and drain tracking. */
export interface PassthroughDeps {
  logger: Logger;
  connectTimeoutMs: number;
  track: (socket: net.Socket) => void;
}

/** How one passthrough reports itself: its access-log message, fields, and the code for a failed connect. */
export interface PassthroughReport {
  /** Access-log message: 'outbound' or 'inbound'. */
  msg: string;
  fields: Record<string, unknown>;
  /** Recorded and logged when `to` cannot be reached. */
  failCode: string;
}

/**
 * Connects to `to`, writes `prefix` (bytes already read from the client),
 * then splices `client` (allowHalfOpen, paused) to it, finishing `trace`
 * when both sides are closed. Until the connect succeeds nothing is piped,
 * so a failure resets the client as a refused direct connect would.
 */
export function forwardDirect(client: net.Socket, to: HostPort, trace: ConnectionTrace, deps: PassthroughDeps, report: PassthroughReport, prefix?: Buffer): void {
  const { logger } = deps;
  const started = performance.now();
  const target = formatHostPort(to);
  const app = net.connect({ host: to.host, port: to.port, allowHalfOpen: true });
  deps.track(app);
  const fail = (err: Error): void => {
    clearTimeout(timer);
    app.destroy();
    trace.finish(report.failCode, 0, 0);
    logger.warn({ ...report.fields, target, code: report.failCode, err: errorMessage(err) }, `${report.msg} passthrough failed: cannot connect to ${target}`);
    closeClient(client, true);
  };
  const timer = setTimeout(() => fail(new KedgeError('KEDGE_CONNECT_TIMEOUT', `no answer within ${deps.connectTimeoutMs} ms`)), deps.connectTimeoutMs);
  app.once('error', fail);
  app.once('connect', () => {
    clearTimeout(timer);
    app.off('error', fail);
    if (client.destroyed) {
      app.destroy();
      return void trace.finish('KEDGE_CLIENT_CLOSED', 0, 0);
    }
    app.setNoDelay(true);
    client.setNoDelay(true);
    trace.open(target);
    // Written here rather than unshifted: a client that already sent its
    // FIN cannot take bytes back into its ended stream.
    if (prefix !== undefined && prefix.length > 0) app.write(prefix);
    splice(client, app, (err) => {
      trace.finish('', client.bytesWritten, client.bytesRead);
      logger.info(
        {
          ...report.fields,
          target,
          bytesIn: app.bytesWritten,
          bytesOut: app.bytesRead,
          durationMs: Math.round(performance.now() - started),
          ...(err ? { err: errorMessage(err) } : {}),
        },
        report.msg,
      );
    });
  });
}
