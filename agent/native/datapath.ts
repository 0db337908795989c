// The proxy's listeners served by the native forwarding core (core.ts):
// the core accepts, does mTLS and splices; this file makes every decision
// with the same code the TypeScript path uses (the snapshot, the balancer
// and connectAttempts, checkPeerIdentity, InboundListener.admit with the
// revoked serials and the SNI's target, the AuthorizationPolicies) and
// keeps the one record per connection (ConnectionTrace, fed from the
// core's batched events).
//
// Narrow on purpose: only opaque (tcp) connections stay in the core. An
// upstream connection whose port is not `tcp` (HTTP, HTTP/2, detection),
// or that the TypeScript path would refuse (unknown service or port), is
// released to Node with its bytes unread and handled by the TypeScript
// listener; an inbound ClientHello that offers ALPN (pooled HTTP/1.1,
// HTTP/2), or is not a ClientHello, is handed to Node's TLS server before
// any byte is consumed.
import * as dns from 'node:dns/promises';
import * as net from 'node:net';
import { formatHostPort, type HostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { buildSni } from '../../proto/model/sni';
import { type Connector, connectAttempts, logOutlier } from '../proxy/attempts';
import type { MeshEndpoint } from '../proxy/balancers';
import { destinationService } from '../proxy/connection-record';
import type { InboundListener } from '../proxy/inbound';
import { silentEndOutcome } from '../proxy/outcome';
import { stackFor } from '../proxy/protocol';
import { acceptPeerUris, checkPeerIdentity } from '../proxy/tls';
import type { ServiceView, TlsIdentity } from '../proxy/types';
import { type UpstreamDeps, type UpstreamListener, outboundTrace } from '../proxy/upstream';
import { endpointPeer } from '../telemetry/peer-metadata';
import { type CoreEvent, NativeCore } from './core';

/** A connection held by the core, as JS tracks it: what its next events resolve. */
class NativeConn {
  closed = false;
  private readonly closeListeners: Array<() => void> = [];
  /** Resolves the pending dial. */
  dialed: ((e: Extract<CoreEvent, { type: 'dialed' }>) => void) | undefined;
  onOpened: (() => void) | undefined;
  onClosed: ((e: Extract<CoreEvent, { type: 'closed' }>) => void) | undefined;
  onReleased: ((fd: number) => void) | undefined;

  constructor(
    readonly id: number,
    private readonly core: NativeCore,
  ) {}

  /** For revocation (InboundListener.trackSerial): closes both sides now. */
  destroy(): void {
    if (!this.closed) this.core.close(this.id);
  }

  once(_event: 'close', listener: () => void): this {
    this.closeListeners.push(listener);
    return this;
  }

  emitClose(): void {
    this.closed = true;
    for (const l of this.closeListeners.splice(0)) l();
  }
}

/** What the native data path serves. */
export interface NativeDataPathOptions {
  identity: TlsIdentity;
  upstreams: readonly UpstreamListener[];
  /** The upstream listeners' dependencies (snapshot, balancers, records), as the TypeScript path gets them. */
  deps: UpstreamDeps;
  /** The inbound listener whose checks and Node TLS server are used; undefined: the core does not serve the inbound port. */
  inbound: InboundListener | undefined;
  inboundLogger: Logger;
  /** Trust domains whose SPIFFE IDs the inbound port accepts now. */
  trustDomains: () => ReadonlySet<string>;
  connectTimeoutMs: number;
}

/** Numeric address of `host` (targets may name a host; the core connects to addresses only). */
async function numericHost(host: string): Promise<string> {
  return net.isIP(host) !== 0 ? host : (await dns.lookup(host)).address;
}

/** The native data path of one proxy; see the file comment. */
export class NativeDataPath {
  private readonly core: NativeCore;
  private readonly conns = new Map<number, NativeConn>();
  /** Native listener id -> what it serves. */
  private readonly listeners = new Map<number, { upstream?: UpstreamListener; bound: HostPort }>();
  private readonly upstreamBound = new Map<UpstreamListener, HostPort>();
  private inboundBound: HostPort | undefined;

  constructor(private readonly o: NativeDataPathOptions) {
    this.core = new NativeCore((e) => this.onEvent(e));
    try {
      this.setIdentity(o.identity);
    } catch (err) {
      this.core.destroy();
      throw err;
    }
  }

  /** New connections, both directions, use `id`; open ones keep theirs. Throws KEDGE_TLS_IDENTITY_INVALID and keeps the old one. */
  setIdentity(id: TlsIdentity): void {
    this.core.setTls(id.certChainPem, id.keyPem, id.trustBundlePem);
  }

  /** Binds the upstream listener `u` in the core; throws an Error with the errno code (the proxy turns it into KEDGE_LISTEN_FAILED). */
  listenUpstream(u: UpstreamListener, at: HostPort): HostPort {
    const l = this.core.listen(at.host, at.port, false);
    const bound = { host: at.host, port: l.port };
    this.listeners.set(l.id, { upstream: u, bound });
    this.upstreamBound.set(u, bound);
    return bound;
  }

  /** Binds the inbound mTLS port in the core. */
  listenInbound(at: HostPort): HostPort {
    const l = this.core.listen(at.host, at.port, true);
    const bound = { host: at.host, port: l.port };
    this.listeners.set(l.id, { bound });
    this.inboundBound = bound;
    return bound;
  }

  upstreamAddress(u: UpstreamListener): HostPort | undefined {
    return this.upstreamBound.get(u);
  }

  inboundAddress(): HostPort | undefined {
    return this.inboundBound;
  }

  /** Stops accepting on every native listener. */
  stopListening(): void {
    for (const id of this.listeners.keys()) this.core.unlisten(id);
    this.listeners.clear();
    this.upstreamBound.clear();
    this.inboundBound = undefined;
  }

  /** Sockets the core holds for connections JS knows (two per spliced connection), as the proxy counts its own. */
  open(): number {
    return this.conns.size * 2;
  }

  /** Closes every connection (their records are written) and stops the I/O thread. */
  destroy(): void {
    this.core.destroy();
  }

  private onEvent(e: CoreEvent): void {
    switch (e.type) {
      case 'accept':
        return this.onAccept(e);
      case 'handoff':
        return this.onHandoff(e);
      case 'secured':
        return void this.onSecured(e);
      case 'handshake-failed':
        this.o.inbound?.handshakeRefused(formatHostPort({ host: e.remoteAddress || '?', port: e.remotePort }), e.reason, e.message);
        return;
      case 'dialed':
        return this.conns.get(e.id)?.dialed?.(e);
      case 'opened':
        return this.conns.get(e.id)?.onOpened?.();
      case 'closed': {
        const c = this.conns.get(e.id);
        if (c === undefined) return;
        this.conns.delete(e.id);
        c.emitClose();
        c.dialed?.({ type: 'dialed', id: e.id, ok: false, uris: [], resumed: false, code: 'KEDGE_CLIENT_CLOSED', message: 'the connection was closed' });
        return c.onClosed?.(e);
      }
      case 'released': {
        const c = this.conns.get(e.id);
        this.conns.delete(e.id);
        c?.emitClose();
        return c?.onReleased?.(e.fd);
      }
    }
  }

  private conn(id: number): NativeConn {
    const c = new NativeConn(id, this.core);
    this.conns.set(id, c);
    return c;
  }

  // ---- client side: an upstream listener's connection ----

  private onAccept(e: Extract<CoreEvent, { type: 'accept' }>): void {
    const c = this.conn(e.id);
    const u = this.listeners.get(e.listener)?.upstream;
    const service = u && this.o.deps.snapshot().services.get(u.spec.service);
    const protocol = service?.ports.find((p) => p.port === u!.spec.port)?.protocol;
    if (u === undefined || service === undefined || protocol === undefined || stackFor(protocol) !== 'opaque') {
      // Everything but a known opaque port goes the TypeScript way,
      // refusals included, with the client's bytes still unread.
      c.onReleased = (fd) => {
        if (u === undefined) return void net.Socket.prototype.destroy.call(new net.Socket({ fd }));
        const socket = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true, pauseOnCreate: true } as net.SocketConstructorOpts);
        u.server.emit('connection', socket);
      };
      return this.core.release(e.id);
    }
    void this.forwardOpaque(c, u, service);
  }

  private async forwardOpaque(c: NativeConn, u: UpstreamListener, service: ServiceView): Promise<void> {
    const { deps } = this.o;
    const port = u.spec.port;
    const fields = { service: service.key, port };
    const trace = outboundTrace(deps);
    trace.update({ service: destinationService(service.key, service.hostname, port), stack: 'opaque' });
    const entry = deps.balancers.entry(service);
    const timeoutMs = entry.balancer.connectTimeoutMs() ?? deps.connectTimeoutMs;
    const sni = buildSni(port, service.hostname);
    const endpointFields = (ep: MeshEndpoint): Record<string, unknown> => (ep.view.plaintext ? { plaintext: true } : { sni, peer: ep.view.identity });
    const started = performance.now();
    const connect: Connector<boolean> = async (ep) => {
      const host = await numericHost(ep.view.address);
      const dialPort = ep.view.plaintext ? ep.port : ep.view.mtlsPort;
      const addr = formatHostPort({ host: ep.view.address, port: dialPort });
      const r = await new Promise<Extract<CoreEvent, { type: 'dialed' }>>((resolve) => {
        c.dialed = resolve;
        this.core.dial(c.id, host, dialPort, { tls: ep.view.plaintext !== true, sni, timeoutMs });
      });
      c.dialed = undefined;
      if (!r.ok) {
        if (r.code === 'KEDGE_CLIENT_CLOSED') throw new KedgeError(r.code, r.message);
        const what = r.code === 'KEDGE_CONNECT_TIMEOUT' ? `did not complete TCP and TLS setup within ${timeoutMs} ms` : r.code === 'KEDGE_UPSTREAM_TLS_FAILED' ? `TLS handshake failed: ${r.message}` : `cannot be connected: ${r.message}`;
        throw new KedgeError(r.code, `endpoint ${addr} (${ep.view.workload}) ${what}`);
      }
      if (ep.view.plaintext === true) return r.resumed;
      const mismatch = checkPeerIdentity(r.uris, ep.view.identity);
      if (mismatch) {
        this.core.dropUpstream(c.id);
        throw new KedgeError(mismatch.code, `endpoint ${addr} (${ep.view.workload}): ${mismatch.message}`);
      }
      return r.resumed;
    };
    const r = await connectAttempts({ entry, servicePort: port, fields, gone: () => c.closed }, deps, trace, connect, endpointFields);
    if (!('pick' in r)) {
      if (r.code === 'KEDGE_CLIENT_CLOSED' || c.closed) return void trace.finish('KEDGE_CLIENT_CLOSED', 0, 0);
      trace.finish(r.code, 0, 0);
      deps.logger.warn({ ...fields, code: r.code, err: r.message }, 'outbound connection refused');
      return this.core.close(c.id);
    }
    const { pick, attempts } = r;
    const ep = pick.endpoint;
    if (c.closed) {
      pick.onEnd();
      return void trace.finish('KEDGE_CLIENT_CLOSED', 0, 0);
    }
    trace.open(ep.key, endpointPeer(ep.view));
    const connectedAt = deps.balancers.now();
    c.onClosed = (e) => {
      // Outlier detection as watchOutcome judges it: a byte from the
      // endpoint is a success, a silent end gets silentEndOutcome's verdict.
      const how = e.upstreamEnd === 'none' ? 'close' : e.upstreamEnd;
      const outcome = e.receivedUp > 0 ? 'success' : silentEndOutcome({ how, clientEndedFirst: e.downstreamEndedFirst, elapsedMs: deps.balancers.now() - connectedAt });
      if (outcome !== undefined) logOutlier(deps.logger, pick.report(outcome), ep, fields, outcome);
      pick.onEnd();
      trace.finish('', e.sentDown, e.receivedDown);
      deps.logger.info(
        {
          ...fields,
          ...endpointFields(ep),
          endpoint: ep.key,
          workload: ep.view.workload,
          ...(pick.priority >= 0 ? { priority: pick.priority } : {}),
          attempts,
          bytesIn: e.sentDown,
          bytesOut: e.receivedDown,
          durationMs: Math.round(performance.now() - started),
          core: 'native',
          ...(ep.view.plaintext ? {} : { resumed: r.conn }),
          ...(e.message ? { err: e.message } : {}),
        },
        'outbound',
      );
    };
    this.core.splice(c.id);
  }

  // ---- server side: the inbound mTLS port ----

  private onHandoff(e: Extract<CoreEvent, { type: 'handoff' }>): void {
    const socket = new net.Socket({ fd: e.fd, readable: true, writable: true });
    if (this.o.inbound === undefined) return void socket.destroy();
    this.o.inbound.server.emit('connection', socket);
  }

  private async onSecured(e: Extract<CoreEvent, { type: 'secured' }>): Promise<void> {
    const inbound = this.o.inbound;
    const c = this.conn(e.id);
    if (inbound === undefined) return this.core.close(e.id);
    const started = performance.now();
    // Readable URI SANs only, as uriSans reads Node's subjectaltname; every
    // URI SAN counts towards "exactly one".
    const readable = e.uris.filter((u) => !/[\x7f,"\\]/.test(u));
    const rawCount = e.tooManyUris ? e.uris.length + 1 : e.uris.length;
    const accepted = acceptPeerUris(e.serial || '?', rawCount, readable, this.trustDomains());
    const admitted = inbound.admit(e.sni, e.serial, accepted, () => this.core.close(e.id));
    if (admitted === undefined) return;
    const { trace, peer, target } = admitted;
    inbound.trackSerial(e.serial, c);
    if (!inbound.admitOpaque(trace, peer, target, { principal: peer.principal, remoteAddress: e.remoteAddress, localAddress: e.localAddress, targetPort: target.targetPort, sni: e.sni })) {
      return this.core.close(e.id);
    }
    const targetAddr = `${target.host}:${target.targetPort}`;
    let connected = false;
    c.onOpened = () => {
      connected = true;
      trace.open(targetAddr);
    };
    c.onClosed = (ev) => {
      const code = connected ? '' : 'KEDGE_TARGET_CONNECT_FAILED';
      trace.finish(code, ev.sentDown, ev.receivedDown);
      this.o.inboundLogger.info(
        {
          peer: peer.principal,
          sni: e.sni,
          target: targetAddr,
          bytesIn: ev.sentUp,
          bytesOut: ev.receivedUp,
          durationMs: Math.round(performance.now() - started),
          resumed: e.resumed,
          core: 'native',
          ...(ev.message && ev.message !== 'closed by the proxy' ? { err: ev.message } : {}),
          ...(code ? { code } : {}),
        },
        'inbound',
      );
    };
    let host: string;
    try {
      host = await numericHost(target.host);
    } catch (err) {
      trace.finish('KEDGE_TARGET_CONNECT_FAILED', 0, 0);
      this.o.inboundLogger.warn({ target: targetAddr, err: errorMessage(err) }, 'inbound target does not resolve');
      c.onClosed = undefined;
      return this.core.close(e.id);
    }
    this.core.dial(e.id, host, target.targetPort, { tls: false, timeoutMs: this.o.connectTimeoutMs, autoSplice: true });
  }

  private trustDomains(): ReadonlySet<string> {
    return this.o.trustDomains();
  }
}
