// The agent's DNS proxy: UDP and TCP listeners (15053 by default) in front
// of the query handler. Only socket work lives here: binding, TCP framing,
// idle timeouts, back-pressure and shutdown.
import * as dgram from 'node:dgram';
import { setMaxListeners } from 'node:events';
import * as net from 'node:net';
import { networkInterfaces } from 'node:os';
import { formatHostPort, type HostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { DEFAULT_DOMAIN } from '../../proto/model/service';
import { createQueryHandler, type DnsStats } from './handler';
import { MAX_QUERY_BYTES } from './message';
import type { MeshLookup } from './names';
import { upstreamsWithoutSelf } from './resolvconf';
import { forwardQuery } from './upstream';
import { LIMITS, type ListenerLimits } from '../../proto/model/limits';
import { guardListener } from '../../proto/model/listener-guard';

/** The agent's DNS port (ARCHITECTURE.md, Ports). */
export const DEFAULT_DNS_PORT = 15053;

/** Defaults for every optional DnsServerOptions field, in one place. */
export const DNS_DEFAULTS = {
  domain: DEFAULT_DOMAIN,
  // Per upstream: with the usual 2–3 nameservers a failing query still ends
  // before glibc's own 5 s timeout.
  upstreamTimeoutMs: 2_000,
  // VIPs are stable; 30 s (Istio's DNS proxy uses the same) bounds how long
  // a deleted service lingers in client caches.
  ttlSeconds: 30,
  // A first lookup subscribes the agent; the federation usually pushes the
  // service within a few hundred ms.
  unknownWaitMs: 1_000,
  rewaitAfterMs: 30_000,
  pollIntervalMs: 25,
  tcpIdleTimeoutMs: LIMITS.agent.dnsTcp.idleTimeoutMs,
  maxTcpConnections: LIMITS.agent.dnsTcp.maxConnections,
  maxTcpConnectionsPerPeer: LIMITS.agent.dnsTcp.maxConnectionsPerPeer,
  // Queries one TCP connection may have in flight before reading pauses.
  maxTcpPipeline: 16,
  // Queries in flight over UDP before new datagrams are dropped.
  maxUdpInFlight: 1_024,
} as const;

/** What startDnsServer needs; see docs/dns.md. */
export interface DnsServerOptions {
  /** Where to serve UDP and TCP; port 0 picks a free port (tests). */
  listen: HostPort;
  /** Service DNS domain (default cluster.local). */
  domain?: string;
  /** The workload's namespace: a bare `name` means `name.<ownNamespace>`. */
  ownNamespace: string;
  /** The agent's pushed services by `name.namespace`. Called on the hot path: keep it a map lookup. */
  lookup: (key: string) => MeshLookup;
  /** Called for every mesh-shaped name looked up, so the agent can subscribe to it. */
  onLookup?: (key: string) => void;
  /**
   * Optional: resolves when `key` is no longer 'unknown-yet' (its push
   * arrived or the federation said no such service). Without it the server
   * polls `lookup`. Either way it waits at most `unknownWaitMs`.
   */
  resolveWait?: (key: string, signal: AbortSignal) => Promise<MeshLookup>;
  /** Resolvers for everything else, normally parseResolvConf(...).nameservers; IP addresses only. */
  upstreams: HostPort[];
  logger: Logger;
  upstreamTimeoutMs?: number;
  ttlSeconds?: number;
  /** Longest wait for an 'unknown-yet' service before answering without it. */
  unknownWaitMs?: number;
  /** After a wait that ended 'unknown-yet', how long that key is answered without waiting. */
  rewaitAfterMs?: number;
  tcpIdleTimeoutMs?: number;
  maxTcpConnections?: number;
  maxTcpConnectionsPerPeer?: number;
}

/** A running DNS proxy. */
export interface DnsServer {
  /** Bound addresses; with port 0 the two ports may differ. */
  readonly udp: HostPort;
  readonly tcp: HostPort;
  /** The upstreams in use, after removing any that point back at this server. */
  readonly upstreams: readonly HostPort[];
  stats(): DnsStats & { tcpConnections: number };
  /** Stops both listeners, closes open TCP connections and ends pending waits. */
  close(): Promise<void>;
}

function listenTcp(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function bindUdp(host: string, port: number): Promise<dgram.Socket> {
  const sock = dgram.createSocket(net.isIP(host) === 6 ? 'udp6' : 'udp4');
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      sock.close();
      reject(err);
    };
    sock.once('error', onError);
    sock.bind({ address: host, port, exclusive: true }, () => {
      sock.off('error', onError);
      resolve(sock);
    });
  });
}

function closeTcp(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * Binds TCP then UDP on the same port. With port 0, TCP picks the port and
 * UDP follows; if that UDP port is taken it tries a few fresh TCP ports, then
 * gives up on matching and lets UDP pick its own.
 */
async function bindBoth(listen: HostPort, tcp: net.Server): Promise<dgram.Socket> {
  const where = formatHostPort(listen);
  try {
    if (listen.port !== 0) {
      await listenTcp(tcp, listen.host, listen.port);
      try {
        return await bindUdp(listen.host, listen.port);
      } catch (err) {
        await closeTcp(tcp);
        throw err;
      }
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      await listenTcp(tcp, listen.host, 0);
      try {
        return await bindUdp(listen.host, (tcp.address() as net.AddressInfo).port);
      } catch (err) {
        await closeTcp(tcp);
        if ((err as { code?: string }).code !== 'EADDRINUSE') throw err;
      }
    }
    await listenTcp(tcp, listen.host, 0);
    return await bindUdp(listen.host, 0);
  } catch (err) {
    throw new KedgeError(
      'KEDGE_DNS_LISTEN',
      `cannot serve DNS on ${where} (${errorMessage(err)}): another resolver or agent may hold the port, or the address is not on this host; choose a free listen address`,
      { cause: err },
    );
  }
}

function localAddresses(): Set<string> {
  return new Set(
    Object.values(networkInterfaces())
      .flat()
      .map((i) => i?.address)
      .filter((a): a is string => a !== undefined),
  );
}

/** Starts the DNS proxy; resolves once both sockets are bound. */
export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  const log = opts.logger;
  for (const u of opts.upstreams) {
    if (net.isIP(u.host.replace(/%.*$/, '')) === 0) {
      // A name would need resolving, possibly through this very proxy.
      throw new KedgeError('KEDGE_DNS_CONFIG', `DNS upstream "${u.host}" is not an IP address: list resolvers by address, as /etc/resolv.conf does`);
    }
  }
  const idleMs = opts.tcpIdleTimeoutMs ?? DNS_DEFAULTS.tcpIdleTimeoutMs;
  const tcp = net.createServer({ allowHalfOpen: true, pauseOnConnect: false });
  const udp = await bindBoth(opts.listen, tcp);
  const tcpAddr = tcp.address() as net.AddressInfo;
  const udpAddr = udp.address();
  const bound = { udp: { host: udpAddr.address, port: udpAddr.port }, tcp: { host: tcpAddr.address, port: tcpAddr.port } };

  const upstreams = upstreamsWithoutSelf(opts.upstreams, [bound.udp, bound.tcp], localAddresses());
  for (const u of opts.upstreams) {
    if (!upstreams.includes(u)) log.warn({ upstream: formatHostPort(u) }, 'DNS: skipping an upstream that points at this DNS proxy (it would loop)');
  }
  if (upstreams.length === 0) log.warn('DNS: no upstream resolvers; names outside the mesh will get SERVFAIL (check /etc/resolv.conf)');

  const shutdown = new AbortController();
  // Every query in flight (waiting for a service, or forwarded upstream)
  // listens on it and stops listening when it ends; many in flight at once
  // is normal load, not a leak, so Node's warning at 11 listeners is off.
  setMaxListeners(0, shutdown.signal);
  const timeoutMs = opts.upstreamTimeoutMs ?? DNS_DEFAULTS.upstreamTimeoutMs;
  const handler = createQueryHandler({
    domain: opts.domain ?? DNS_DEFAULTS.domain,
    ownNamespace: opts.ownNamespace,
    lookup: opts.lookup,
    ...(opts.onLookup ? { onLookup: opts.onLookup } : {}),
    ...(opts.resolveWait ? { resolveWait: opts.resolveWait } : {}),
    unknownWaitMs: opts.unknownWaitMs ?? DNS_DEFAULTS.unknownWaitMs,
    rewaitAfterMs: opts.rewaitAfterMs ?? DNS_DEFAULTS.rewaitAfterMs,
    pollIntervalMs: DNS_DEFAULTS.pollIntervalMs,
    ttlSeconds: opts.ttlSeconds ?? DNS_DEFAULTS.ttlSeconds,
    forward: async (query, transport) => (await forwardQuery(query, transport, upstreams, timeoutMs, shutdown.signal)).response,
    logger: log,
    signal: shutdown.signal,
  });
  let closed = false;

  // UDP: one datagram, one query.
  let udpInFlight = 0;
  udp.on('error', (err) => log.warn({ err: errorMessage(err) }, 'DNS: UDP socket error'));
  udp.on('message', (msg, rinfo) => {
    if (udpInFlight >= DNS_DEFAULTS.maxUdpInFlight) {
      handler.countDropped();
      return;
    }
    udpInFlight++;
    void handler.handle(msg, 'udp').then((response) => {
      udpInFlight--;
      if (response === undefined || closed) return;
      udp.send(response, rinfo.port, rinfo.address, (err) => {
        if (err) log.debug({ err: errorMessage(err), client: rinfo.address }, 'DNS: could not send a UDP response');
      });
    });
  });

  // TCP: 2-byte length framing, several queries per connection, answered in
  // completion order (RFC 7766 §6.2.1.1 allows it; ids tell them apart).
  const conns = new Set<net.Socket>();
  tcp.on('connection', (sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    serveTcp(sock);
  });
  // Connection limits (limits.dnsTcp); the idle timeout is serveTcp's own, which spares a connection with queries in flight.
  const tcpLimits: ListenerLimits = {
    maxConnections: opts.maxTcpConnections ?? DNS_DEFAULTS.maxTcpConnections,
    maxConnectionsPerPeer: Math.min(opts.maxTcpConnectionsPerPeer ?? DNS_DEFAULTS.maxTcpConnectionsPerPeer, opts.maxTcpConnections ?? DNS_DEFAULTS.maxTcpConnections),
    idleTimeoutMs: idleMs,
  };
  guardListener(tcp, { name: 'DNS TCP', setting: 'limits.dnsTcp', limits: tcpLimits, logger: log, idle: false });
  tcp.on('error', (err) => log.warn({ err: errorMessage(err) }, 'DNS: TCP listener error'));

  function serveTcp(sock: net.Socket): void {
    const maxPipeline = DNS_DEFAULTS.maxTcpPipeline;
    let pending: Buffer = Buffer.alloc(0);
    let inFlight = 0;
    let ended = false;
    let closing = false;
    sock.setNoDelay(true);
    sock.setTimeout(idleMs);
    sock.on('timeout', () => {
      if (inFlight === 0) sock.destroy();
      else sock.setTimeout(idleMs);
    });
    sock.on('error', (err) => log.debug({ err: errorMessage(err) }, 'DNS: TCP client connection error'));
    sock.on('end', () => {
      ended = true;
      if (inFlight === 0) sock.end();
    });

    const finishOne = (): void => {
      inFlight--;
      if (!closing) drain(); // frames held back by the pipeline limit
      if ((ended || closing) && inFlight === 0) sock.end();
    };

    // Takes complete frames off `pending`, at most maxPipeline in flight;
    // reading pauses meanwhile, so one connection buffers at most ~64 KiB.
    const drain = (): void => {
      while (!closing && inFlight < maxPipeline && pending.length >= 2) {
        const len = pending.readUInt16BE(0);
        if (pending.length < 2 + len) break;
        const msg = Buffer.from(pending.subarray(2, 2 + len));
        pending = pending.subarray(2 + len);
        // An oversized frame is answered (FORMERR) and then the connection
        // closes: a client that sends one is broken or hostile.
        if (len > MAX_QUERY_BYTES) closing = true;
        inFlight++;
        void handler.handle(msg, 'tcp').then((response) => {
          if (response !== undefined && !sock.destroyed && sock.writable) {
            const frame = Buffer.alloc(2 + response.length);
            frame.writeUInt16BE(response.length, 0);
            response.copy(frame, 2);
            sock.write(frame);
          }
          finishOne();
        });
      }
      if (closing) sock.pause();
      else if (inFlight >= maxPipeline) sock.pause();
      else sock.resume();
    };

    sock.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      drain();
    });
  }

  log.info({ udp: formatHostPort(bound.udp), tcp: formatHostPort(bound.tcp), upstreams: upstreams.map(formatHostPort) }, 'DNS proxy listening');

  return {
    udp: bound.udp,
    tcp: bound.tcp,
    upstreams,
    stats: () => ({ ...handler.stats(), tcpConnections: conns.size }),
    async close() {
      if (closed) return;
      closed = true;
      shutdown.abort();
      const tcpClosed = closeTcp(tcp);
      for (const s of conns) s.destroy();
      await Promise.all([tcpClosed, new Promise<void>((resolve) => udp.close(() => resolve()))]);
    },
  };
}
