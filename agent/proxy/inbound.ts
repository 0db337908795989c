// The inbound listener (15006): terminates mesh mTLS, accepts the peer only
// as a SPIFFE ID of the mesh's trust domain whose certificate is not
// revoked, picks the local target from the SNI and forwards plaintext to
// it. One record per connection (reporter `destination`).
import * as net from 'node:net';
import * as tls from 'node:tls';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { parseSni } from '../../proto/model/sni';
import { ConnectionTrace, NO_SERVICE, destinationService, peerFromSpiffe } from './connection-record';
import type { PeerWorkload, RecordSink } from './record';
import { UNKNOWN_PEER } from './record';
import { splice } from './splice';
import type { AuthzMatcher } from '../../policy/authz/compile';
import { type AuthzConnection, RBAC_DENIED, RBAC_FLAG, authorizeTcp } from './authz';
import { RATE_LIMITED, RL_FLAG, type InboundRateLimits } from './ratelimit';
import { failureCode } from './stats';
import { type IdentityContexts, acceptPeerIdentity } from './tls';
import type { LocalTarget } from './types';
import { type Http1InboundDeps, appPool, serveHttp1Inbound } from './http1/inbound';
import type { ConnectionPool } from './http1/pool';
import type { Drainable } from './http1/session';
import { H2Sessions } from './http2/sessions';
import { type Http2InboundDeps, serveHttp2Inbound } from './http2/serve';

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

/** What the inbound listener is built with. */
export interface InboundDeps {
  logger: Logger;
  /** Where inbound records go (the proxy's counters and telemetry). */
  sink: RecordSink;
  /** This proxy's workload: the destination of its inbound records. */
  self: () => PeerWorkload;
  /** Trust domains whose SPIFFE IDs are accepted (the mesh's own, and federated ones). */
  trustDomains: () => ReadonlySet<string>;
  /** Connect limit to the local app for HTTP requests. */
  connectTimeoutMs: number;
  /** Open HTTP/1.1 and HTTP/2 sessions, so a closing proxy can drain them. */
  sessions: Set<Drainable>;
  /** Tracing on: the share of new traces sampled; undefined: trace headers pass through. */
  traceSample?: number | undefined;
  /** Local rate limits and quotas (agent/proxy/ratelimit.ts); absent: none. */
  rateLimits?: InboundRateLimits;
}

/** An open mesh connection as revocation sees it. */
export interface SerialTracked {
  destroy(): void;
  once(event: 'close', listener: () => void): unknown;
}

/** The inbound mTLS listener; see the file comment. */
export class InboundListener {
  readonly server: tls.Server;
  /** Raw TCP sockets (including ones still handshaking) and target sockets, for drain on close. */
  readonly sockets = new Set<net.Socket>();
  private targets: ReadonlyMap<string, LocalTarget>;
  private revoked: ReadonlySet<string> = new Set();
  /** The snapshot's compiled AuthorizationPolicies (agent/proxy/authz.ts). */
  private authorization: AuthzMatcher | undefined;
  /** Open mesh connections by the peer certificate's serial, so a revocation can close them. */
  private readonly bySerial = new Map<string, Set<SerialTracked>>();
  /** Keep-alive pools to the local apps, by host:port, for HTTP/1.1 mesh connections. */
  private readonly appPools = new Map<string, ConnectionPool>();
  private readonly http1: Http1InboundDeps;
  private readonly http2: Http2InboundDeps;
  /** h2c sessions to the local apps. */
  private readonly appSessions = new H2Sessions();

  constructor(
    contexts: IdentityContexts,
    targets: readonly LocalTarget[],
    private readonly deps: InboundDeps,
  ) {
    this.targets = indexTargets(targets);
    this.http1 = {
      logger: deps.logger,
      sink: deps.sink,
      connectTimeoutMs: deps.connectTimeoutMs,
      sessions: deps.sessions,
      track: (s) => this.track(s),
      authorization: () => this.authorization,
      traceSample: deps.traceSample,
      ...(deps.rateLimits ? { rateLimits: deps.rateLimits } : {}),
      appPool: (t) => {
        const key = `${t.host}:${t.targetPort}`;
        let p = this.appPools.get(key);
        if (p === undefined) this.appPools.set(key, (p = appPool(t, deps.connectTimeoutMs, (s) => this.track(s))));
        return p;
      },
    };
    this.http2 = { logger: deps.logger, sink: deps.sink, connectTimeoutMs: deps.connectTimeoutMs, track: (s) => this.track(s), apps: this.appSessions, sessions: deps.sessions, authorization: () => this.authorization, traceSample: deps.traceSample, ...(deps.rateLimits ? { rateLimits: deps.rateLimits } : {}) };
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
      // What a mesh connection carries: pooled HTTP/1.1 when the client
      // proxy asks for it; no ALPN means opaque bytes for the app.
      ALPNProtocols: ['h2', 'http/1.1'],
    });
    this.server.on('connection', (raw: net.Socket) => {
      this.track(raw);
      // On the TCP socket itself: a TLS socket's own setNoDelay does not
      // always reach it, and Nagle holds small answers for a delayed ACK.
      raw.setNoDelay(true);
    });
    this.server.on('secureConnection', (socket: tls.TLSSocket) => this.onSecureConnection(socket));
    this.server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => this.onHandshakeError(err, socket));
  }

  /** Presents `contexts` to new connections; connections already open keep the context they were made with. */
  setIdentity(contexts: IdentityContexts): void {
    this.server.setSecureContext(contexts.serverOptions);
  }

  setTargets(targets: readonly LocalTarget[]): void {
    this.targets = indexTargets(targets);
    const live = new Set(targets.map((t) => `${t.host}:${t.targetPort}`));
    for (const [key, pool] of this.appPools) {
      if (live.has(key)) continue;
      pool.close();
      this.appPools.delete(key);
    }
  }

  /** Closes the idle connections to the apps (shutdown). */
  closePools(): void {
    for (const p of this.appPools.values()) p.close();
    this.appPools.clear();
    this.appSessions.close();
  }

  /**
   * Takes the revoked serials of a new snapshot: later handshakes from them
   * are refused, and open connections from a serial not revoked before are
   * closed now. Returns how many connections were closed.
   */
  setRevoked(serials: ReadonlySet<string>): number {
    const before = this.revoked;
    this.revoked = serials;
    let closed = 0;
    for (const serial of serials) {
      if (before.has(serial)) continue;
      const open = this.bySerial.get(serial);
      if (open === undefined) continue;
      for (const s of open) {
        s.destroy();
        closed++;
      }
      this.deps.logger.warn({ serial, connections: open.size }, 'inbound connections closed: the peer certificate was revoked');
    }
    return closed;
  }

  /** Takes the compiled AuthorizationPolicies of a new snapshot: every later request and connection is checked against them. */
  setAuthorization(m: AuthzMatcher | undefined): void {
    this.authorization = m;
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private trace(peer: PeerWorkload): ConnectionTrace {
    return new ConnectionTrace(this.deps.sink, { reporter: 'destination', source: peer, destination: this.deps.self(), service: NO_SERVICE, connectionSecurityPolicy: 'mutual_tls', stack: 'opaque' });
  }

  private onHandshakeError(err: Error, socket: tls.TLSSocket): void {
    // A client certificate from another CA completes the handshake and is
    // then destroyed by Node (the error is just a hang-up); the verify result
    // in authorizationError is the real reason.
    const reason = socket.authorizationError ?? (err as NodeJS.ErrnoException).code ?? errorMessage(err);
    this.handshakeRefused(`${socket.remoteAddress}:${socket.remotePort}`, String(reason), errorMessage(err));
    socket.destroy();
  }

  /** Records and logs a refused handshake (Node's, or the native core's). */
  handshakeRefused(remote: string, reason: string, err: string): void {
    this.trace(UNKNOWN_PEER).finish('KEDGE_TLS_HANDSHAKE_FAILED', 0, 0);
    // Expected for clients outside the mesh; warn, since between meshes it
    // usually means the trust bundles do not match.
    this.deps.logger.warn({ remote, reason, err }, 'inbound TLS handshake refused: client has no certificate from the mesh trust bundle');
  }

  /**
   * The checks after a verified handshake, for Node's TLS server and the
   * native core alike: the peer's SPIFFE ID (`accepted`), its serial against
   * the revoked ones, and a local target for the SNI. Returns the record and
   * target, or undefined after recording, logging and `destroy`ing a refusal.
   */
  admit(sni: string, serial: string, accepted: { spiffeId: string } | KedgeError, destroy: () => void): { trace: ConnectionTrace; peer: PeerWorkload; target: LocalTarget } | undefined {
    const peer = accepted instanceof KedgeError ? UNKNOWN_PEER : peerFromSpiffe(accepted.spiffeId);
    const trace = this.trace(peer);
    const refuse = (err: KedgeError, fields: Record<string, unknown> = {}): undefined => {
      trace.finish(err.code, 0, 0);
      this.deps.logger.warn({ peer: peer.principal || '(none accepted)', sni, serial, ...fields, err: err.message, code: err.code }, 'inbound connection refused');
      destroy();
      return undefined;
    };
    if (accepted instanceof KedgeError) return refuse(accepted);
    if (serial !== '' && this.revoked.has(serial)) {
      return refuse(new KedgeError('KEDGE_PEER_CERT_REVOKED', `client ${accepted.spiffeId} presented certificate serial ${serial}, which the federation has revoked; the workload must get a new certificate (or was removed on purpose)`));
    }
    try {
      const { port, hostname } = parseSni(sni);
      trace.update({ service: destinationService(hostname, hostname, port) });
      const target = this.targets.get(targetKey(port, hostname));
      if (target === undefined) {
        throw new KedgeError('KEDGE_NO_LOCAL_TARGET', `no local target serves port ${port} of ${hostname}; check the workload's registered service ports`);
      }
      return { trace, peer, target };
    } catch (err) {
      return refuse(err instanceof KedgeError ? err : new KedgeError(failureCode(err, 'KEDGE_NO_LOCAL_TARGET'), errorMessage(err)));
    }
  }

  /**
   * The AuthorizationPolicies' and local rate limits' verdict on an opaque
   * connection, for both cores; a refusal is recorded here and the caller
   * closes the connection.
   */
  admitOpaque(trace: ConnectionTrace, peer: PeerWorkload, target: LocalTarget, c: AuthzConnection): boolean {
    if (!authorizeTcp(this.authorization, this.deps.logger, c)) {
      trace.finish(RBAC_DENIED, 0, 0, RBAC_FLAG);
      return false;
    }
    if (this.deps.rateLimits && !this.deps.rateLimits.tcp({ principal: peer.principal, hostname: target.hostname })) {
      trace.finish(RATE_LIMITED, 0, 0, RL_FLAG);
      return false;
    }
    return true;
  }

  private onSecureConnection(socket: tls.TLSSocket): void {
    const started = performance.now();
    const sni = typeof socket.servername === 'string' ? socket.servername : '';
    // Read now: once the socket closes Node no longer knows.
    const resumed = socket.isSessionReused();
    const cert = socket.getPeerCertificate();
    const serial = (cert?.serialNumber ?? '').toUpperCase();
    const admitted = this.admit(sni, serial, acceptPeerIdentity(cert, this.deps.trustDomains()), () => socket.destroy());
    if (admitted === undefined) return;
    const { trace, peer, target } = admitted;
    this.trackSerial(serial, socket);
    // Half-close is forwarded from here on (documented as settable before 'end').
    socket.allowHalfOpen = true;
    // Set after the handshake: TLS sockets ignore noDelay given at creation.
    socket.setNoDelay(true);
    if (socket.alpnProtocol === 'http/1.1') return serveHttp1Inbound(socket, target, peer, this.deps.self(), trace, this.http1, resumed);
    if (socket.alpnProtocol === 'h2') return serveHttp2Inbound(socket, target, peer, this.deps.self(), trace, this.http2);

    if (!this.admitOpaque(trace, peer, target, { principal: peer.principal, remoteAddress: socket.remoteAddress, localAddress: socket.localAddress, targetPort: target.targetPort, sni })) {
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
      trace.open(targetAddr);
    });
    // Piping before the target connects is fine: writes queue until it does.
    splice(socket, app, (err) => {
      const code = connected ? '' : 'KEDGE_TARGET_CONNECT_FAILED';
      trace.finish(code, socket.bytesWritten, socket.bytesRead);
      this.deps.logger.info(
        {
          peer: peer.principal,
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

  /** Closes `socket` when its peer's serial is revoked by a later snapshot (a TLS socket, or a native core connection). */
  trackSerial(serial: string, socket: SerialTracked): void {
    if (serial === '') return;
    let set = this.bySerial.get(serial);
    if (set === undefined) this.bySerial.set(serial, (set = new Set()));
    set.add(socket);
    socket.once('close', () => {
      set.delete(socket);
      if (set.size === 0 && this.bySerial.get(serial) === set) this.bySerial.delete(serial);
    });
  }
}
