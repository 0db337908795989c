// The inbound listener (15006): terminates mesh mTLS, picks the local target
// from the SNI and forwards plaintext to it.
import * as net from 'node:net';
import * as tls from 'node:tls';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { parseSni } from '../../proto/model/sni';
import { splice } from './splice';
import { type DirectionCounters, failureCode } from './stats';
import { type IdentityContexts, peerSpiffeId } from './tls';
import type { LocalTarget } from './types';

// A client that connects and never finishes the handshake holds a socket;
// Node's default (120 s) is far longer than any mesh handshake needs.
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Lookup key of a local target: service port and hostname, as the SNI names them. */
function targetKey(port: number, hostname: string): string {
  return `${port}/${hostname}`;
}

/** Builds the target lookup once per setTargets, so each connection does one map get. */
export function indexTargets(targets: readonly LocalTarget[]): ReadonlyMap<string, LocalTarget> {
  return new Map(targets.map((t) => [targetKey(t.servicePort, t.hostname), t]));
}

/** The inbound mTLS listener; see the file comment. */
export class InboundListener {
  readonly server: tls.Server;
  /** Raw TCP sockets (including ones still handshaking) and target sockets, for drain on close. */
  readonly sockets = new Set<net.Socket>();
  private targets: ReadonlyMap<string, LocalTarget>;

  constructor(
    contexts: IdentityContexts,
    targets: readonly LocalTarget[],
    private readonly logger: Logger,
    private readonly stats: DirectionCounters,
  ) {
    this.targets = indexTargets(targets);
    this.server = tls.createServer({
      ...contexts.serverOptions,
      // The client chain is verified against the trust bundle only; Node
      // checks the result before 'secureConnection', so a client without a
      // mesh certificate never reaches a target.
      requestCert: true,
      rejectUnauthorized: true,
      // Not half-open during the handshake: a client that hangs up mid-
      // handshake would otherwise sit in CLOSE_WAIT until the handshake
      // timeout. Switched on per connection once the handshake is done.
      allowHalfOpen: false,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    });
    this.server.on('connection', (raw: net.Socket) => this.track(raw));
    this.server.on('secureConnection', (socket: tls.TLSSocket) => this.onSecureConnection(socket));
    this.server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => this.onHandshakeError(err, socket));
  }

  /** Presents `contexts` to new connections; connections already open keep the context they were made with. */
  setIdentity(contexts: IdentityContexts): void {
    this.server.setSecureContext(contexts.serverOptions);
  }

  setTargets(targets: readonly LocalTarget[]): void {
    this.targets = indexTargets(targets);
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private onHandshakeError(err: Error, socket: tls.TLSSocket): void {
    this.stats.totals.total++;
    this.stats.totals.failed++;
    this.stats.failure('KEDGE_TLS_HANDSHAKE_FAILED');
    // A client certificate from another CA completes the handshake and is
    // then destroyed by Node (the error is just a hang-up); the verify result
    // in authorizationError is the real reason.
    const reason = socket.authorizationError ?? (err as NodeJS.ErrnoException).code ?? errorMessage(err);
    // Expected for clients outside the mesh; warn, since between meshes it
    // usually means the trust bundles do not match.
    this.logger.warn({ remote: `${socket.remoteAddress}:${socket.remotePort}`, reason: String(reason), err: errorMessage(err) }, 'inbound TLS handshake refused: client has no certificate from the mesh trust bundle');
    socket.destroy();
  }

  private onSecureConnection(socket: tls.TLSSocket): void {
    const started = performance.now();
    const peer = peerSpiffeId(socket.getPeerCertificate()) ?? '(no SPIFFE ID)';
    const sni = typeof socket.servername === 'string' ? socket.servername : '';
    // Read now: once the socket closes Node no longer knows.
    const resumed = socket.isSessionReused();
    const byPeer = this.stats.key(peer);
    this.stats.totals.total++;
    byPeer.total++;

    let target: LocalTarget | undefined;
    try {
      const { port, hostname } = parseSni(sni);
      target = this.targets.get(targetKey(port, hostname));
      if (target === undefined) {
        throw new KedgeError('KEDGE_NO_LOCAL_TARGET', `no local target serves port ${port} of ${hostname}; check the workload's registered service ports`);
      }
    } catch (err) {
      this.stats.totals.failed++;
      byPeer.failed++;
      this.stats.failure(failureCode(err, 'KEDGE_NO_LOCAL_TARGET'));
      this.logger.warn({ peer, sni, err: errorMessage(err), code: failureCode(err, 'KEDGE_NO_LOCAL_TARGET') }, 'inbound connection refused');
      socket.destroy();
      return;
    }

    const targetAddr = `${target.host}:${target.targetPort}`;
    const app = net.connect({ host: target.host, port: target.targetPort, allowHalfOpen: true });
    this.track(app);
    let connected = false;
    app.once('connect', () => {
      connected = true;
      app.setNoDelay(true);
    });
    // Half-close is forwarded from here on (documented as settable before 'end').
    socket.allowHalfOpen = true;
    // Set after the handshake: TLS sockets ignore noDelay given at creation.
    socket.setNoDelay(true);
    this.stats.totals.active++;
    byPeer.active++;
    // Piping before the target connects is fine: writes queue until it does.
    splice(socket, app, (err) => {
      this.stats.totals.active--;
      byPeer.active--;
      let code: string | undefined;
      if (!connected) {
        code = 'KEDGE_TARGET_CONNECT_FAILED';
        this.stats.totals.failed++;
        byPeer.failed++;
        this.stats.failure(code);
      }
      this.logger.info(
        {
          peer,
          sni,
          target: targetAddr,
          bytesIn: app.bytesWritten,
          bytesOut: app.bytesRead,
          durationMs: Math.round(performance.now() - started),
          resumed,
          ...(err ? { err: errorMessage(err) } : {}),
          ...(code ? { code } : {}),
        },
        'inbound',
      );
    });
  }
}
