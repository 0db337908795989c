// The agent's data path as one object: the inbound mTLS listener (with a
// capture front when inbound capture is on), the explicit upstream
// listeners and the outbound capture listeners, sharing one identity, one
// snapshot and one set of counters. Control work (rotation, snapshot swaps)
// only replaces references; connections read whatever is current when they
// are accepted.
import type { AddressInfo, Server, Socket } from 'node:net';
import { type HostPort, formatHostPort } from '../../proto/model/address';
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { originalDst as nativeOriginalDst } from '../native';
import { nativeCoreMissing } from '../native/core';
import { NativeDataPath } from '../native/datapath';
import type { Random, Topology } from './balancer/types';
import { type BalancerState, MeshBalancers, UNKNOWN_TOPOLOGY } from './balancers';
import { CaptureFront, DEFAULT_DETECT_TIMEOUT_MS, type InboundMode } from './capture-front';
import { type DestinationIndex, type OutboundPolicy, buildDestinationIndex } from './destinations';
import { InboundListener } from './inbound';
import { type OriginalDstReader, OutboundListener } from './outbound';
import { peerFromSpiffe } from './connection-record';
import { NULL_SINK, type PeerWorkload, type RecordSink, fanOut } from './record';
import { type DirectionStats, type ProxyStats, inboundStats, outboundStats } from './stats';
import { Http1Pools } from './http1/pools';
import { Breakers } from './breaker';
import type { Drainable } from './http1/session';
import { H2Sessions } from './http2/sessions';
import { SessionCache, buildIdentityContexts, trustDomainOf } from './tls';
import type { LocalTarget, ProxySnapshot, TlsIdentity, UpstreamSpec } from './types';
import { type ClientTls, MAX_ATTEMPTS, UpstreamListener } from './upstream';
import type { AgentLimits } from '../../proto/model/limits';
import { guardListener, type GuardStats, type ListenerGuard } from '../../proto/model/listener-guard';

export type { ConnectionCounters, ProxyStats, RequestCounters } from './stats';
export type { InboundMode } from './capture-front';
export type { OutboundPolicy } from './destinations';
export type { OriginalDstReader } from './outbound';
export type { BalancerState } from './balancers';

/** Covers TCP connect and TLS handshake to one endpoint; a slower endpoint is skipped for the next one. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** How long close() lets open connections finish before destroying them. */
export const DEFAULT_DRAIN_MS = 2_000;

/** Inbound capture: what the inbound port does with captured connections that are not mesh mTLS. */
export interface InboundCaptureOptions {
  /** PERMISSIVE forwards plaintext (and non-mesh TLS) to the app; STRICT refuses it. */
  mode: InboundMode;
  /** Reads a captured connection's original destination; default the native addon. */
  originalDst?: OriginalDstReader;
  /** Where the app listens on its original ports; default 127.0.0.1. */
  appHost?: string;
  /** Silence after which a client is taken for plaintext (server speaks first); default 200 ms. */
  detectTimeoutMs?: number;
}

/** How the agent configures its proxy. */
export interface ProxyOptions {
  /** The server proxy's rate limits and quotas (agent/proxy/ratelimit.ts), fed by the agent's registration. */
  rateLimits?: import('./ratelimit').InboundRateLimits;
  inboundListen: HostPort;
  targets: readonly LocalTarget[];
  upstreams: readonly UpstreamSpec[];
  identity: TlsIdentity;
  logger: Logger;
  connectTimeoutMs?: number;
  /** Outbound capture listeners (127.0.0.1:15001 and [::1]:15001 with capture); none when absent or empty. */
  outboundListen?: readonly HostPort[];
  /** Destinations outside the mesh: passed through (allow-any, default) or refused (registry-only). */
  outboundPolicy?: OutboundPolicy;
  /** Reads a captured outbound connection's original destination; default the native addon. */
  originalDst?: OriginalDstReader;
  /** Inbound capture; without it the inbound port speaks mesh mTLS only. */
  inboundCapture?: InboundCaptureOptions;
  /**
   * Where this agent runs (the agent's workload locality, network and
   * labels): endpoints are ranked by locality from here. Without it every
   * endpoint is priority 0.
   */
  client?: Topology;
  /** The balancer's random source; Math.random by default, a seeded PRNG in tests. */
  random?: Random;
  /** Connect attempts per outbound connection (MAX_ATTEMPTS by default); 1 turns connect retries off. */
  maxAttempts?: number;
  /**
   * Where every finished record goes besides the proxy's own counters
   * (telemetry: metrics, access log). NULL_SINK when absent.
   */
  records?: RecordSink;
  /**
   * Trust domains whose SPIFFE IDs the inbound listener accepts besides the
   * mesh's own (the identity's): domains federated in configuration.
   */
  federatedTrustDomains?: readonly string[];
  /** This workload's metadata for records (name, app, version, ...); the principal always comes from the identity. */
  workload?: Partial<Omit<PeerWorkload, 'principal'>>;
  /** Tracing on (an OTLP endpoint is configured): the share of new traces sampled. Undefined: trace headers pass through untouched. */
  traceSample?: number | undefined;
  /**
   * Which forwarding core serves opaque (tcp) connections on the upstream
   * listeners and the inbound port: `typescript` (the default, and the
   * reference), `native` (agent/native: its own I/O thread with epoll and
   * OpenSSL; KEDGE_NATIVE_CORE_MISSING when it is not built), or `auto`
   * (native when built, else typescript). Default: $KEDGE_PROXY_CORE, else
   * typescript.
   */
  core?: ProxyCore;
  /** Connection limits and idle timeouts of the inbound, upstream and outbound listeners (limits.*); none when absent. */
  limits?: Pick<AgentLimits, 'inbound' | 'upstream' | 'outbound' | 'log'>;
}

/** The forwarding core a proxy runs; see ProxyOptions.core. */
export type ProxyCore = 'typescript' | 'native' | 'auto';

/** Whether `core` resolves to the native core here; throws KEDGE_NATIVE_CORE_MISSING for `native` without it, KEDGE_PROXY_CORE_INVALID for a wrong name. */
export function useNativeCore(core: string | undefined): boolean {
  const c = core ?? process.env.KEDGE_PROXY_CORE ?? 'typescript';
  if (c === 'typescript') return false;
  if (c !== 'native' && c !== 'auto') throw new KedgeError('KEDGE_PROXY_CORE_INVALID', `proxy core ${JSON.stringify(c)} is not one of typescript, native, auto (from ${core !== undefined ? 'the proxy options' : 'KEDGE_PROXY_CORE'})`);
  const missing = nativeCoreMissing();
  if (missing === undefined) return true;
  if (c === 'auto') return false;
  throw missing;
}

const NO_SERIALS: ReadonlySet<string> = new Set();
const EMPTY_SNAPSHOT: ProxySnapshot = Object.freeze({ version: '', services: new Map() });

// Listen failures operators hit, with what to check.
const LISTEN_HINTS: Record<string, string> = {
  EADDRINUSE: 'another process (maybe another Kedge agent) already listens there',
  EACCES: 'ports below 1024 need CAP_NET_BIND_SERVICE',
  EADDRNOTAVAIL: 'the address is not assigned to any interface of this host',
};

function listenFailed(err: NodeJS.ErrnoException, at: HostPort, what: string): KedgeError {
  const code = err.code ?? 'error';
  const hint = LISTEN_HINTS[code] ?? 'check the address in the agent configuration';
  return new KedgeError('KEDGE_LISTEN_FAILED', `${what} cannot listen on ${formatHostPort(at)} (${code}): ${hint}`, { cause: err });
}

function listen(server: Server, at: HostPort, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => reject(listenFailed(err, at, what));
    server.once('error', onError);
    server.listen(at.port, at.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Stops accepting; resolves once the server's accepted connections are gone (or it was not listening). */
function stopListening(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function addressOf(server: Server): HostPort {
  const a = server.address() as AddressInfo | null;
  if (a === null) throw new KedgeError('KEDGE_NOT_LISTENING', 'the proxy is not listening; call start() first');
  return { host: a.address, port: a.port };
}

/** The agent's proxy: inbound mTLS listener, explicit upstream listeners and, with capture, the outbound listener and inbound capture front. */
export class Proxy {
  private current: ProxySnapshot = EMPTY_SNAPSHOT;
  private clientTls: ClientTls;
  private readonly inbound: InboundListener;
  private readonly upstreams: UpstreamListener[];
  private readonly front: CaptureFront | undefined;
  private readonly outbound: OutboundListener | undefined;
  private destinations: DestinationIndex = new Map();
  private readonly balancers: MeshBalancers;
  private readonly inboundStats: DirectionStats = inboundStats();
  private readonly outboundStats: DirectionStats = outboundStats();
  private self: PeerWorkload;
  private readonly pools = new Http1Pools();
  private readonly sessions = new Set<Drainable>();
  private readonly h2 = new H2Sessions();
  private readonly breakers = new Breakers();
  private trustDomains: ReadonlySet<string>;
  private readonly logger: Logger;
  private closing: Promise<void> | undefined;
  /** The native forwarding core, when ProxyOptions.core selects it. */
  private readonly native: NativeDataPath | undefined;
  private readonly guards = new Map<string, ListenerGuard>();

  constructor(private readonly opts: ProxyOptions) {
    this.logger = opts.logger.child({ component: 'proxy' });
    const contexts = buildIdentityContexts(opts.identity);
    this.clientTls = { contexts, sessions: new SessionCache() };
    this.self = this.selfFor(opts.identity);
    this.trustDomains = this.trustDomainsFor(opts.identity);
    const extra = opts.records ?? NULL_SINK;
    const inboundSink = fanOut(this.inboundStats, extra);
    const outboundSink = fanOut(this.outboundStats, extra);
    this.inbound = new InboundListener(contexts, opts.targets, {
      logger: this.logger.child({ listener: 'inbound' }),
      sink: inboundSink,
      self: () => this.self,
      trustDomains: () => this.trustDomains,
      connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      sessions: this.sessions,
      traceSample: opts.traceSample,
      ...(opts.rateLimits ? { rateLimits: opts.rateLimits } : {}),
    });
    this.balancers = new MeshBalancers(opts.client ?? UNKNOWN_TOPOLOGY);
    const deps = {
      snapshot: () => this.current,
      clientTls: () => this.clientTls,
      logger: this.logger.child({ listener: 'upstream' }),
      sink: outboundSink,
      self: () => this.self,
      pools: this.pools,
      sessions: this.sessions,
      breakers: this.breakers,
      h2: this.h2,
      service: (key: string) => this.current.services.get(key),
      connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      balancers: this.balancers,
      random: opts.random ?? Math.random,
      maxAttempts: Math.max(1, opts.maxAttempts ?? MAX_ATTEMPTS),
      traceSample: opts.traceSample,
    };
    this.upstreams = opts.upstreams.map((spec) => new UpstreamListener(spec, deps));
    if (opts.outboundListen !== undefined && opts.outboundListen.length > 0) {
      this.outbound = new OutboundListener(opts.outboundListen, {
        ...deps,
        logger: this.logger.child({ listener: 'outbound' }),
        destinations: () => this.destinations,
        policy: opts.outboundPolicy ?? 'allow-any',
        originalDst: opts.originalDst ?? nativeOriginalDst,
      });
    }
    if (useNativeCore(opts.core)) {
      this.native = new NativeDataPath({
        identity: opts.identity,
        upstreams: this.upstreams,
        deps,
        // Inbound capture keeps its TypeScript front (it tells mesh mTLS from
        // an app's own traffic); the core then serves upstream listeners only.
        inbound: opts.inboundCapture === undefined ? this.inbound : undefined,
        inboundLogger: this.logger.child({ listener: 'inbound' }),
        trustDomains: () => this.trustDomains,
        connectTimeoutMs: deps.connectTimeoutMs,
      });
    }
    const capture = opts.inboundCapture;
    if (capture !== undefined) {
      this.front = new CaptureFront({
        tlsServer: this.inbound.server,
        mode: capture.mode,
        originalDst: capture.originalDst ?? nativeOriginalDst,
        appHost: capture.appHost ?? '127.0.0.1',
        detectTimeoutMs: capture.detectTimeoutMs ?? DEFAULT_DETECT_TIMEOUT_MS,
        connectTimeoutMs: deps.connectTimeoutMs,
        logger: this.logger.child({ listener: 'inbound' }),
        sink: inboundSink,
        self: () => this.self,
        authorization: () => this.current.authorization,
        peerAuthentication: () => this.current.peerAuthentication,
      });
    }
  }

  /** The server bound to the inbound port: the capture front, or the TLS server itself. */
  private get inboundServer(): Server {
    return this.front?.server ?? this.inbound.server;
  }

  /** Binds the inbound listener and every upstream; on any failure closes what was bound and rejects with KEDGE_LISTEN_FAILED. */
  async start(): Promise<void> {
    const native = this.native;
    const nativeBind = (bind: () => void, at: HostPort, what: string) => async (): Promise<void> => {
      try {
        bind();
      } catch (err) {
        throw listenFailed(err as NodeJS.ErrnoException, at, what);
      }
    };
    const binds: Array<[Server, HostPort, string, (() => Promise<void>) | undefined]> = [
      [this.inboundServer, this.opts.inboundListen, 'inbound listener', native && !this.front ? nativeBind(() => native.listenInbound(this.opts.inboundListen), this.opts.inboundListen, 'inbound listener') : undefined],
      ...this.upstreams.map((u): [Server, HostPort, string, (() => Promise<void>) | undefined] => {
        const what = `upstream listener for ${u.spec.service}:${u.spec.port}`;
        return [u.server, u.spec.listen, what, native ? nativeBind(() => native.listenUpstream(u, u.spec.listen), u.spec.listen, what) : undefined];
      }),
      ...(this.outbound?.servers ?? []).map((server, i): [Server, HostPort, string, undefined] => [server, this.outbound!.listen[i]!, 'outbound capture listener', undefined]),
    ];
    const l = this.opts.limits;
    if (l) {
      // Applied before the listeners' own code sees a connection (proto/model/listener-guard).
      const guard = (name: string, server: Server, setting: 'inbound' | 'upstream' | 'outbound') =>
        this.guards.set(name, guardListener(server, { name, setting: `limits.${setting}`, limits: l[setting], logger: this.logger, log: l.log }));
      guard('inbound', this.inboundServer, 'inbound');
      this.upstreams.forEach((u) => guard(`upstream ${formatHostPort(u.spec.listen)}`, u.server, 'upstream'));
      (this.outbound?.servers ?? []).forEach((server, i) => guard(`outbound ${formatHostPort(this.outbound!.listen[i]!)}`, server, 'outbound'));
    }
    const results = await Promise.allSettled(binds.map(([server, at, what, bind]) => (bind ? bind() : listen(server, at, what))));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure !== undefined) {
      native?.stopListening();
      await Promise.all(binds.map(([server, , , bind], i) => (results[i]?.status === 'fulfilled' && bind === undefined ? stopListening(server) : undefined)));
      throw failure.reason;
    }
    this.logger.info(
      {
        inbound: formatHostPort(this.inboundAddress()),
        upstreams: this.upstreamAddresses().map(formatHostPort),
        ...(this.outbound ? { outbound: this.outboundAddresses().map(formatHostPort), outboundPolicy: this.opts.outboundPolicy ?? 'allow-any' } : {}),
        ...(this.opts.inboundCapture ? { inboundCapture: this.opts.inboundCapture.mode } : {}),
        core: this.native ? 'native' : 'typescript',
      },
      'proxy listening',
    );
  }

  /** Rotates the certificate: new connections, both directions, use `id`; open connections continue undisturbed. Throws KEDGE_TLS_IDENTITY_INVALID and keeps the old identity if `id` does not load. */
  setIdentity(id: TlsIdentity): void {
    const contexts = buildIdentityContexts(id);
    this.native?.setIdentity(id);
    this.inbound.setIdentity(contexts);
    // Fresh sessions: a resumed session would keep the old client
    // certificate and a server chain checked against the old trust bundle.
    this.clientTls = { contexts, sessions: new SessionCache() };
    this.self = this.selfFor(id);
    this.trustDomains = this.trustDomainsFor(id);
    this.logger.info({ spiffeId: id.spiffeId, serial: id.serial, notAfter: id.notAfter.toISOString() }, 'proxy identity rotated');
  }

  /**
   * Swaps the mesh view in one step; connections accepted afterwards use it
   * (and, with outbound capture, its destination index, built here once).
   * Each service whose view changed updates its balancer; outlier state
   * carries over for endpoints that remain.
   */
  setSnapshot(s: ProxySnapshot): void {
    const index = this.outbound ? buildDestinationIndex(s) : this.destinations;
    this.balancers.sync(s);
    const live = new Set<string>();
    for (const e of this.balancers.endpointKeys()) live.add(e);
    this.pools.prune((ep) => live.has(ep));
    this.h2.prune((ep) => live.has(ep));
    this.breakers.prune((key) => s.services.has(key));
    this.current = s;
    this.destinations = index;
    this.inbound.setRevoked(s.revokedSerials ?? NO_SERIALS);
    this.inbound.setAuthorization(s.authorization);
  }

  private selfFor(id: TlsIdentity): PeerWorkload {
    return { ...peerFromSpiffe(id.spiffeId), ...this.opts.workload, principal: id.spiffeId };
  }

  private trustDomainsFor(id: TlsIdentity): ReadonlySet<string> {
    return new Set([trustDomainOf(id.spiffeId), ...(this.opts.federatedTrustDomains ?? [])].filter((d) => d !== ''));
  }

  /** Per service: each endpoint's priority, health, ejection and share of new connections, and whether the balancer is in panic. */
  describeBalancers(): BalancerState {
    return this.balancers.describe();
  }

  snapshot(): ProxySnapshot {
    return this.current;
  }

  /** Replaces the local targets behind the inbound listener. */
  setTargets(targets: readonly LocalTarget[]): void {
    this.inbound.setTargets(targets);
  }

  inboundAddress(): HostPort {
    return (!this.front && this.native?.inboundAddress()) || addressOf(this.inboundServer);
  }

  /** Where the outbound capture listeners are bound; empty without outbound capture. */
  outboundAddresses(): HostPort[] {
    return (this.outbound?.servers ?? []).map(addressOf);
  }

  upstreamAddresses(): HostPort[] {
    return this.upstreams.map((u) => this.native?.upstreamAddress(u) ?? addressOf(u.server));
  }

  /** Per guarded listener: connections open, refused at its limits and closed idle. */
  listenerStats(): Record<string, GuardStats> {
    return Object.fromEntries([...this.guards].map(([k, g]) => [k, g.stats()]));
  }

  /** A copy of the counters. */
  stats(): ProxyStats {
    const i = this.inboundStats.snapshot();
    const o = this.outboundStats.snapshot();
    return {
      inbound: { ...i.totals, byPeer: i.by, failures: i.failures, passthrough: i.passthrough, http: i.http, requests: i.requests },
      outbound: { ...o.totals, byEndpoint: o.by, failures: o.failures, passthrough: o.passthrough, http: o.http, requests: o.requests },
    };
  }

  /** Stops listening, lets open connections finish for up to `drainMs`, then destroys the rest. Idempotent. */
  close(drainMs = DEFAULT_DRAIN_MS): Promise<void> {
    this.closing ??= this.shutdown(drainMs);
    return this.closing;
  }

  private async shutdown(drainMs: number): Promise<void> {
    // The TLS server behind a capture front never listens; closing it is harmless.
    const servers = [this.inbound.server, ...(this.front ? [this.front.server] : []), ...this.upstreams.map((u) => u.server), ...(this.outbound?.servers ?? [])];
    const stopped = Promise.all(servers.map(stopListening));
    this.native?.stopListening();
    // Idle keep-alive connections would hold the drain for nothing: pools
    // close theirs, sessions close when idle or after their exchange.
    this.pools.close();
    this.h2.close();
    this.inbound.closePools();
    for (const s of this.sessions) s.drain();
    const sets = [this.inbound.sockets, ...(this.front ? [this.front.sockets] : []), ...this.upstreams.map((u) => u.sockets), ...(this.outbound ? [this.outbound.sockets] : [])];
    const open = (): number => sets.reduce((n, s) => n + s.size, 0) + (this.native?.open() ?? 0);
    // Polling only runs during shutdown; it keeps the hot path free of
    // per-connection idle callbacks.
    const deadline = performance.now() + drainMs;
    while (open() > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const left = open();
    if (left > 0) {
      this.logger.warn({ sockets: left, drainMs }, 'proxy drain timed out; destroying open connections');
      for (const set of sets) for (const s of [...set] as Socket[]) s.destroy();
    }
    // Closes what is still open in the core (each with its record) and stops its thread.
    this.native?.destroy();
    await stopped;
    this.logger.info({}, 'proxy closed');
  }
}
