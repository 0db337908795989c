// The east-west gateway (15443): the way into a network for mesh traffic
// from other networks. For each connection it reads the TLS ClientHello,
// routes on its SNI (`outbound_.<port>_._.<hostname>`) to a local endpoint
// of that service port, and passes every byte through untouched, both
// ways. The mTLS session runs end to end between the client proxy and the
// endpoint's proxy: the gateway holds no certificate, no key and no TLS
// context at all (this file does not even load node:tls), so it can neither
// read nor forge the traffic it carries.
import * as net from 'node:net';
import { type HostPort, formatHostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { GATEWAY_PORT } from '../../proto/model/ports';
import type { ListenerLimits } from '../../proto/model/limits';
import { guardListener } from '../../proto/model/listener-guard';
import { MAX_ATTEMPTS } from '../proxy/attempts';
import type { Random } from '../proxy/balancer/types';
import { MeshBalancers, UNKNOWN_TOPOLOGY } from '../proxy/balancers';
import { ClientHelloReader } from '../proxy/client-hello';
import { ConnectionTrace, NO_SERVICE, destinationService } from '../proxy/connection-record';
import { forwardOpaque } from '../proxy/opaque';
import { NULL_SINK, type RecordSink, UNKNOWN_PEER, fanOut } from '../proxy/record';
import type { EndpointView, ProxySnapshot } from '../proxy/types';
import { type GatewayRoute, hostnameIndex, resolveRoute, routeView } from './route';
import { GatewayCounters, type GatewayStats } from './stats';

export type { GatewayStats, EndpointCounters, RouteCounters } from './stats';

/** The east-west gateway's well-known port (defined in proto/model for the federation too). */
export { GATEWAY_PORT };
/**
 * How long a client may take to send its whole ClientHello, counted from
 * accept. A real client sends it at once; this only bounds the sockets a
 * silent or trickling client can hold.
 */
export const DEFAULT_HELLO_TIMEOUT_MS = 5_000;
/** TCP connect to one endpoint; a slower endpoint is skipped for the next one. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** How long close() lets open connections finish before destroying them. */
export const DEFAULT_DRAIN_MS = 2_000;

/** How the agent configures its gateway. */
export interface GatewayOptions {
  /** Where to listen; normally port GATEWAY_PORT on the address other networks reach. */
  listen: HostPort;
  /** The current mesh view: the services this gateway routes to, with only its own network's endpoints. Read once per connection. */
  snapshot: () => ProxySnapshot;
  logger: Logger;
  /** Connection limits and idle timeout (limits.gateway); none when absent. */
  limits?: ListenerLimits;
  helloTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Where every finished record goes besides the gateway's own counters (telemetry). */
  records?: RecordSink;
  /** The balancer's random source; Math.random by default. */
  random?: Random;
}

// A fatal TLS alert, unrecognized_name (RFC 6066 §3), in a plaintext
// record: sent before closing a connection whose SNI names nothing here, so
// the client reports "unrecognized name" instead of a bare reset. It is not
// TLS termination: alerts before the ServerHello are plaintext by design.
const ALERT_UNRECOGNIZED_NAME = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);

// Listen failures operators hit, with what to check.
const LISTEN_HINTS: Record<string, string> = {
  EADDRINUSE: 'another process (maybe another Kedge agent) already listens there',
  EACCES: 'ports below 1024 need CAP_NET_BIND_SERVICE',
  EADDRNOTAVAIL: 'the address is not assigned to any interface of this host',
};

/**
 * How a refused connection is closed: with an unrecognized_name alert, at
 * once, or with a TCP RST (after failed connects, so the client proxy sees a
 * reset, as from a refused connect, and retries elsewhere).
 */
type Close = 'alert' | 'destroy' | 'reset';

/** The east-west gateway; see the file comment. */
export class EastWestGateway {
  readonly server: net.Server;
  /** Client and endpoint sockets, for drain on close. */
  readonly sockets = new Set<net.Socket>();
  private readonly counters = new GatewayCounters();
  private readonly sink: RecordSink;
  /** The shared balancer, one entry per route (`<port>/<hostname>`); the gateway knows no locality of its own. */
  private readonly balancers = new MeshBalancers(UNKNOWN_TOPOLOGY);
  private readonly random: Random;
  private synced: ProxySnapshot | undefined;
  private readonly logger: Logger;
  private readonly helloTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private closing: Promise<void> | undefined;

  constructor(private readonly opts: GatewayOptions) {
    this.logger = opts.logger.child({ component: 'gateway' });
    this.helloTimeoutMs = opts.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.sink = fanOut(this.counters, opts.records ?? NULL_SINK);
    this.random = opts.random ?? Math.random;
    // Half-open both ways once spliced: a client may finish sending and
    // still read the answer.
    this.server = net.createServer({ allowHalfOpen: true }, (client) => this.onConnection(client));
    if (opts.limits) guardListener(this.server, { name: 'east-west gateway', setting: 'limits.gateway', limits: opts.limits, logger: this.logger });
  }

  /** Binds the listener; rejects with KEDGE_LISTEN_FAILED naming what to check. */
  start(): Promise<void> {
    const at = this.opts.listen;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        const code = err.code ?? 'error';
        const hint = LISTEN_HINTS[code] ?? 'check the gateway address in the agent configuration';
        reject(new KedgeError('KEDGE_LISTEN_FAILED', `east-west gateway cannot listen on ${formatHostPort(at)} (${code}): ${hint}`, { cause: err }));
      };
      this.server.once('error', onError);
      this.server.listen(at.port, at.host, () => {
        this.server.off('error', onError);
        this.logger.info({ listen: formatHostPort(this.address()) }, 'gateway listening');
        resolve();
      });
    });
  }

  /** Where the gateway is bound. */
  address(): HostPort {
    const a = this.server.address() as net.AddressInfo | null;
    if (a === null) throw new KedgeError('KEDGE_NOT_LISTENING', 'the gateway is not listening; call start() first');
    return { host: a.address, port: a.port };
  }

  /** A copy of the counters. */
  stats(): GatewayStats {
    return this.counters.snapshot();
  }

  /** Stops accepting, lets open connections finish for up to `drainMs`, then destroys the rest. Idempotent. */
  close(drainMs = DEFAULT_DRAIN_MS): Promise<void> {
    this.closing ??= this.shutdown(drainMs);
    return this.closing;
  }

  private async shutdown(drainMs: number): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const deadline = performance.now() + drainMs;
    // Polling only runs during shutdown; the hot path keeps no idle callbacks.
    while (this.sockets.size > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (this.sockets.size > 0) {
      this.logger.warn({ sockets: this.sockets.size, drainMs }, 'gateway drain timed out; destroying open connections');
      for (const s of [...this.sockets]) s.destroy();
    }
    await stopped;
    this.logger.info({}, 'gateway closed');
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private onConnection(client: net.Socket): void {
    this.track(client);
    const trace = new ConnectionTrace(this.sink, { reporter: 'source', source: UNKNOWN_PEER, destination: UNKNOWN_PEER, service: NO_SERVICE, connectionSecurityPolicy: 'unknown', stack: 'tls' });
    // Until splice installs its own handler, an error (a reset mid-hello)
    // must not go unhandled; the socket is destroyed either way.
    client.on('error', () => undefined);
    const reader = new ClientHelloReader();
    let decided = false;
    const stop = (): void => {
      decided = true;
      clearTimeout(timer);
      client.off('data', onData);
      client.off('end', onEnd);
      client.pause();
    };
    const onData = (chunk: Buffer): void => {
      const r = reader.push(chunk);
      if (r.kind === 'need-more') return;
      stop();
      if (r.kind === 'sni') return void this.forward(client, trace, r.name, reader.bytes());
      if (r.kind === 'no-sni') return this.refuse(client, trace, 'KEDGE_GATEWAY_NO_SNI', 'the ClientHello names no server; mesh clients always send an SNI', 'alert');
      this.refuse(client, trace, r.tooLarge ? 'KEDGE_GATEWAY_HELLO_TOO_LARGE' : 'KEDGE_GATEWAY_BAD_HELLO', r.reason, 'destroy');
    };
    const onEnd = (): void => {
      stop();
      this.refuse(client, trace, 'KEDGE_GATEWAY_HELLO_TRUNCATED', `the client closed after ${reader.bytes().length} bytes, before a whole ClientHello`, 'destroy');
    };
    const timer = setTimeout(() => {
      stop();
      this.refuse(client, trace, 'KEDGE_GATEWAY_HELLO_TIMEOUT', `no whole ClientHello within ${this.helloTimeoutMs} ms (${reader.bytes().length} bytes read)`, 'destroy');
    }, this.helloTimeoutMs);
    client.on('data', onData);
    client.once('end', onEnd);
    // A reset (or any close) mid-hello: counted like a client that hung up.
    client.once('close', () => {
      if (decided) return;
      stop();
      this.refuse(client, trace, 'KEDGE_GATEWAY_HELLO_TRUNCATED', `the connection closed after ${reader.bytes().length} bytes, before a whole ClientHello`, 'destroy');
    });
  }

  /** Records, logs and closes a connection that is not forwarded. */
  private refuse(client: net.Socket, trace: ConnectionTrace, code: string, reason: string, how: Close, fields: Record<string, unknown> = {}): void {
    trace.finish(code, 0, 0);
    this.logger.warn({ ...fields, remote: client.remoteAddress, code, err: reason }, 'gateway connection refused');
    if (client.destroyed) return;
    if (how === 'alert') client.end(ALERT_UNRECOGNIZED_NAME, () => client.destroy());
    else if (how === 'reset') client.resetAndDestroy();
    else client.destroy();
  }

  /**
   * Hands the connection to the forwarding engine's opaque stack: the
   * shared picker over the route's local endpoints (round robin, outlier
   * detection, retries on other endpoints), a raw TCP connector to the
   * endpoint's mTLS port, `prefix` (every byte read so far) written first.
   * `client` is paused: what it sends meanwhile waits.
   */
  private async forward(client: net.Socket, trace: ConnectionTrace, sni: string, prefix: Buffer): Promise<void> {
    let route: GatewayRoute;
    try {
      route = resolveRoute(this.currentSnapshot(), sni);
    } catch (err) {
      const code = err instanceof KedgeError ? err.code : 'KEDGE_BAD_SNI';
      return this.refuse(client, trace, code, errorMessage(err), 'alert', { sni });
    }
    const fields = { sni, service: route.service.key, port: route.port };
    trace.update({ service: destinationService(route.service.key, route.service.hostname, route.port) });
    const entry = this.balancers.ensure(routeView(route));
    await forwardOpaque(
      client,
      { entry, servicePort: route.port, fields, gone: () => client.destroyed },
      trace,
      { logger: this.logger, random: this.random, maxAttempts: MAX_ATTEMPTS },
      {
        connect: (ep) => this.connect(ep.view, ep.key),
        prefix,
        msg: 'gateway',
        refuse: (err) => this.refuse(client, trace, err.code, err.message, 'reset', fields),
        // The gateway sees only TLS records: a first byte is the endpoint
        // proxy's ServerHello, which says nothing about the app behind it.
        watch: false,
        now: this.balancers.now,
      },
    );
  }

  /** The snapshot now; endpoints' balancer state for routes whose service left is dropped when it changes. */
  private currentSnapshot(): ProxySnapshot {
    const s = this.opts.snapshot();
    if (s !== this.synced) {
      this.synced = s;
      const hosts = hostnameIndex(s);
      this.balancers.prune((key) => hosts.has(key.slice(key.indexOf('/') + 1)));
    }
    return s;
  }

  /** TCP to an endpoint's mTLS port within the connect timeout; never leaves a socket open on failure. */
  private connect(ep: EndpointView, epKey: string): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: ep.address, port: ep.mtlsPort, allowHalfOpen: true });
      this.track(socket);
      let settled = false;
      const fail = (err: KedgeError): void => {
        socket.destroy();
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new KedgeError('KEDGE_CONNECT_TIMEOUT', `endpoint ${epKey} (${ep.workload}) did not accept a TCP connection within ${this.connectTimeoutMs} ms; check that its port ${ep.mtlsPort} is reachable from the gateway`)),
        this.connectTimeoutMs,
      );
      // Stays attached after connect: until splice adds its handler an
      // error must not go unhandled, and destroying the socket is right.
      socket.on('error', (err) => fail(new KedgeError('KEDGE_UPSTREAM_CONNECT_FAILED', `cannot connect to endpoint ${epKey} (${ep.workload}): ${errorMessage(err)}`, { cause: err })));
      socket.once('connect', () => {
        settled = true;
        clearTimeout(timer);
        resolve(socket);
      });
    });
  }
}
