// The inbound port with capture on: a plain TCP server in front of the mesh
// TLS server. It reads a connection's first bytes and hands mesh TLS to the
// TLS server untouched (the bytes put back first); captured plaintext goes
// to the local app on its original destination port (PERMISSIVE) or is
// refused (STRICT), and so does, in PERMISSIVE, TLS whose SNI is not a mesh
// name (an app's own TLS client talking to the app: passed through, never
// terminated). Which of the two applies is decided per original destination
// port by the PeerAuthentications in force (DISABLE accepts plaintext as
// PERMISSIVE does), the agent's configured mode standing in until the
// federation has said.
import type { PeerAuthResolution } from '../../policy/peer-auth/model';
import { modeOnPort } from '../../policy/peer-auth/resolve';
import type { AuthzMatcher } from '../../policy/authz/compile';
import { RBAC_DENIED, RBAC_FLAG, authorizeTcp } from './authz';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import { formatHostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { parseSni } from '../../proto/model/sni';
import type { OriginalDst } from '../native';
import type { OriginalDstReader } from './outbound';
import { forwardDirect } from './passthrough';
import { type ClientHelloResult, parseClientHello } from './client-hello';
import { classifyFirstBytes } from './sniff';
import { failureCode } from './stats';
import { type Prefix, readPrefix } from './prefix';
import { closeClient } from './opaque';
import { ConnectionTrace, NO_SERVICE } from './connection-record';
import { type PeerWorkload, type RecordSink, UNKNOWN_PEER } from './record';

/** What to do with captured plaintext: forward it to the app, or refuse it. */
export type InboundMode = 'PERMISSIVE' | 'STRICT';

/**
 * How long a client may stay silent before it is taken for plaintext: a
 * server-speaks-first protocol (SMTP, MySQL) waits for the app's greeting,
 * while a TLS client sends its ClientHello at once. 200 ms is well above a
 * client's own send delay and short enough not to time such protocols out.
 */
export const DEFAULT_DETECT_TIMEOUT_MS = 200;
// The ClientHello's remainder after its first bytes; the same budget the TLS
// server gives a whole handshake.
const HELLO_TIMEOUT_MS = 10_000;

/** Where a connection on the inbound port goes: the mesh TLS server, straight to the app, or nowhere. */
export type InboundRoute = 'mtls' | 'passthrough' | 'refuse';

/**
 * Decides a connection from its first bytes. TLS goes to the mesh TLS
 * server, except in PERMISSIVE mode when a whole ClientHello carries no mesh
 * SNI; a ClientHello that could not be read is the TLS server's to refuse.
 */
export function decideInbound(first: 'tls' | 'plaintext', hello: ClientHelloResult | undefined, mode: InboundMode): InboundRoute {
  if (first === 'plaintext') return mode === 'PERMISSIVE' ? 'passthrough' : 'refuse';
  if (mode === 'STRICT' || hello === undefined || hello.kind === 'need-more' || hello.kind === 'invalid') return 'mtls';
  return isMeshSni(hello.kind === 'sni' ? hello.name : undefined) ? 'mtls' : 'passthrough';
}

function isMeshSni(sni: string | undefined): boolean {
  try {
    parseSni(sni);
    return true;
  } catch {
    return false;
  }
}

/** What the capture front needs from the proxy. */
export interface CaptureFrontDeps {
  /** The mesh TLS server that accepted connections are handed to. */
  tlsServer: tls.Server;
  mode: InboundMode;
  originalDst: OriginalDstReader;
  /** Where the app listens (its ports are the original destination ports). */
  appHost: string;
  detectTimeoutMs: number;
  connectTimeoutMs: number;
  logger: Logger;
  /** Where inbound records go. */
  sink: RecordSink;
  /** This proxy's workload: the destination of its records. */
  self: () => PeerWorkload;
  /** The current snapshot's PeerAuthentications; undefined until the federation sent them (then `mode` decides). */
  peerAuthentication?: () => PeerAuthResolution | undefined;
  /** The current snapshot's AuthorizationPolicies; captured plaintext is checked as TCP with no principal (authz helper's hook). */
  authorization?: () => AuthzMatcher | undefined;
}

/** The inbound capture front; see the file comment. */
export class CaptureFront {
  readonly server: net.Server;
  /** Sockets being sniffed or passed through, for drain on close (mesh TLS ones are the TLS server's). */
  readonly sockets = new Set<net.Socket>();
  private readonly passthrough: CaptureFrontDeps & { track: (s: net.Socket) => void };

  constructor(private readonly deps: CaptureFrontDeps) {
    this.passthrough = { ...deps, track: (s) => this.track(s) };
    // Half-open, so a plaintext client may send and half-close before the
    // decision; switched off before a hand-over, where the TLS socket
    // inherits it and a client hanging up mid-handshake must not linger.
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => void this.onConnection(socket));
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** The mode on a captured port (undefined: the original destination is unknown), and what set it. */
  private modeFor(port: number | undefined): { mode: InboundMode; by: string } {
    const r = this.deps.peerAuthentication?.();
    if (r === undefined) return { mode: this.deps.mode, by: 'the agent\'s inboundMode' };
    const m = modeOnPort(r, port);
    const by = r.from.length ? `PeerAuthentication ${r.from[r.from.length - 1]}${port !== undefined && r.ports.has(port) ? ` (port ${port})` : ''}` : 'the agent\'s inboundMode (no PeerAuthentication applies)';
    return { mode: m === 'STRICT' ? 'STRICT' : 'PERMISSIVE', by };
  }

  private async onConnection(socket: net.Socket): Promise<void> {
    this.track(socket);
    socket.on('error', () => undefined);
    // The original destination is known at accept (SO_ORIGINAL_DST): the port's mode can differ.
    let dst: OriginalDst | undefined;
    let dstError: unknown;
    try {
      dst = this.deps.originalDst(socket);
    } catch (err) {
      dstError = err;
    }
    const { mode, by } = this.modeFor(dst?.port);
    let prefix = await readPrefix(socket, Buffer.alloc(0), (b) => classifyFirstBytes(b) !== 'more', this.deps.detectTimeoutMs);
    if (socket.destroyed || (prefix.ended && prefix.buf.length === 0)) return void socket.destroy(); // gone before saying anything
    const first = classifyFirstBytes(prefix.buf) === 'tls' ? 'tls' : 'plaintext';
    let hello: ClientHelloResult | undefined;
    if (first === 'tls' && mode === 'PERMISSIVE') {
      const done = (b: Buffer) => parseClientHello(b).kind !== 'need-more';
      if (!done(prefix.buf) && !prefix.ended) prefix = await readPrefix(socket, prefix.buf, done, HELLO_TIMEOUT_MS);
      if (socket.destroyed) return;
      hello = parseClientHello(prefix.buf);
    }
    const route = decideInbound(first, hello, mode);
    if (route === 'mtls') return this.handOver(socket, prefix);
    const sni = hello?.kind === 'sni' ? hello.name : undefined;
    return this.capture(socket, prefix.buf, route, first === 'tls' ? 'tls-passthrough' : 'plaintext', sni, { mode, by, dst, dstError });
  }

  private trace(csp: 'mutual_tls' | 'none'): ConnectionTrace {
    return new ConnectionTrace(this.deps.sink, { reporter: 'destination', source: UNKNOWN_PEER, destination: this.deps.self(), service: NO_SERVICE, connectionSecurityPolicy: csp, stack: 'opaque' });
  }

  // Gives the socket, first bytes put back, to the TLS server as if it had
  // accepted it: the server builds the TLS socket with its current secure
  // context (rotation applies) and its handshake timeout.
  private handOver(socket: net.Socket, prefix: Prefix): void {
    if (prefix.ended || prefix.timedOut) {
      // A TLS client that half-closes or stalls mid-ClientHello.
      this.trace('mutual_tls').finish('KEDGE_TLS_HANDSHAKE_FAILED', 0, 0);
      this.deps.logger.warn({ remote: remoteOf(socket), bytes: prefix.buf.length }, 'inbound TLS refused: the ClientHello did not arrive whole');
      return void socket.destroy();
    }
    this.sockets.delete(socket);
    socket.unshift(prefix.buf);
    socket.allowHalfOpen = false;
    this.deps.tlsServer.emit('connection', socket);
  }

  // Plaintext, or TLS that is not the mesh's: forwarded to the app on the
  // port the client originally asked for, or refused.
  private capture(socket: net.Socket, prefix: Buffer, route: 'passthrough' | 'refuse', kind: string, sni: string | undefined, how: { mode: InboundMode; by: string; dst: OriginalDst | undefined; dstError: unknown }): void {
    const { logger } = this.deps;
    const trace = this.trace('none');
    const fields: Record<string, unknown> = { capture: 'inbound', mode: how.mode, modeFrom: how.by, route: kind, remote: remoteOf(socket), ...(sni !== undefined ? { sni } : {}) };
    const refuse = (err: KedgeError): void => {
      trace.finish(err.code, 0, 0);
      logger.warn({ ...fields, code: err.code, err: err.message }, 'inbound connection refused');
      closeClient(socket, true);
    };
    const dst = how.dst;
    if (dst === undefined) {
      const err = how.dstError;
      if (route === 'refuse') return refuse(strictError(undefined, how.by));
      return refuse(new KedgeError(failureCode(err, 'KEDGE_ORIGINAL_DST_UNAVAILABLE'), `${errorMessage(err)}; a client that dials the inbound port directly must speak mesh mTLS`, { cause: err }));
    }
    fields.originalDst = formatHostPort({ host: dst.address, port: dst.port });
    if (route === 'refuse') return refuse(strictError(fields.originalDst as string, how.by));
    // The app is reached on the original port; this very port would loop.
    if (dst.port === socket.localPort) {
      return refuse(new KedgeError('KEDGE_ORIGINAL_DST_LOOP', `the original destination ${fields.originalDst} is the inbound port itself; plaintext sent there directly has nowhere to go`));
    }
    trace.update({ service: { ...NO_SERVICE, port: dst.port }, stack: kind === 'plaintext' ? 'opaque' : 'tls' });
    if (!authorizeTcp(this.deps.authorization?.(), logger, { principal: '', remoteAddress: socket.remoteAddress, localAddress: dst.address, targetPort: dst.port, sni: sni ?? '' })) {
      trace.finish(RBAC_DENIED, 0, 0, RBAC_FLAG);
      return closeClient(socket, true);
    }
    forwardDirect(socket, { host: this.deps.appHost, port: dst.port }, trace, this.passthrough, { msg: 'inbound', fields, failCode: 'KEDGE_TARGET_CONNECT_FAILED' }, prefix);
  }
}

function strictError(originalDst: string | undefined, by: string): KedgeError {
  return new KedgeError('KEDGE_INBOUND_PLAINTEXT_REFUSED', `plaintext${originalDst ? ` to ${originalDst}` : ''} refused: the mTLS mode is STRICT (set by ${by}), only mesh mTLS is accepted; a PeerAuthentication with mode PERMISSIVE (for this workload, or portLevelMtls for this port) lets clients outside the mesh in`);
}

function remoteOf(socket: net.Socket): string {
  return formatHostPort({ host: socket.remoteAddress ?? '?', port: socket.remotePort ?? 0 });
}
