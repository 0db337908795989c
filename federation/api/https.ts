// HTTPS on the federation's HTTP port. Each connection's first byte says
// what it speaks: 0x16 (a TLS handshake record) is served over TLS with a
// certificate from the mesh CA, anything else as plain HTTP. One port keeps
// one address in join strings and configs.
//
// The certificate names the address the client connected to (an IP SAN per
// local address, issued on first use and cached) plus the SNI host name the
// client sent, so curl --cacert and the CLI verify it by the very address
// they dialled, whichever interface of the host that was.
import * as net from 'node:net';
import * as tls from 'node:tls';
import type * as http from 'node:http';
import type { Logger } from '../../proto/model/log';
import { errorMessage } from '../../proto/model/errors';
import type { ListenerLimits, LogRateLimits } from '../../proto/model/limits';
import { guardListener, type ListenerGuard } from '../../proto/model/listener-guard';

/** Issues a serving certificate (chain PEM and key PEM) for the given names. */
export type ServingIssuer = (names: { ipAddresses: string[]; dnsNames: string[] }) => { chainPem: string; keyPem: string; notAfter: Date };

const TLS_HANDSHAKE = 0x16;

/** Normalises an IPv4-mapped IPv6 address (::ffff:1.2.3.4) to plain IPv4. */
export function plainAddress(a: string): string {
  return a.startsWith('::ffff:') && net.isIPv4(a.slice(7)) ? a.slice(7) : a;
}

/** Secure contexts per (local address, SNI name), renewed at half their lifetime. */
export class ServingContexts {
  private readonly cache = new Map<string, { ctx: tls.SecureContext; renewAt: number }>();

  constructor(private readonly issue: ServingIssuer, private readonly clock: () => number = Date.now) {}

  /** Forgets every context (the CA's roots changed): the next connection gets a certificate from the current root. */
  clear(): void {
    this.cache.clear();
  }

  /** The context for a connection to `localAddress`, naming `servername` when it is a DNS name. */
  get(localAddress: string, servername: string | undefined): tls.SecureContext {
    const ip = plainAddress(localAddress);
    const dns = servername && !net.isIP(servername) ? servername.toLowerCase() : undefined;
    const key = `${ip}|${dns ?? ''}`;
    const now = this.clock();
    const hit = this.cache.get(key);
    if (hit && hit.renewAt > now) return hit.ctx;
    const issued = this.issue({ ipAddresses: [ip], dnsNames: dns ? [dns] : [] });
    const ctx = tls.createSecureContext({ cert: issued.chainPem, key: issued.keyPem, minVersion: 'TLSv1.2' });
    // A bounded cache: an SNI name is client input.
    if (this.cache.size > 1024) this.cache.clear();
    this.cache.set(key, { ctx, renewAt: now + (issued.notAfter.getTime() - now) / 2 });
    return ctx;
  }
}

/** Whether a peer address is loopback (127.0.0.0/8, ::1, or IPv4-mapped loopback). */
export function isLoopbackAddress(a: string | undefined): boolean {
  if (!a) return false;
  const p = plainAddress(a);
  return p === '::1' || (net.isIPv4(p) && p.startsWith('127.'));
}

/** The answer to plain HTTP where only HTTPS is served: JSON with a stable code, as every API error. */
export const HTTPS_ONLY_MESSAGE = 'this Kedge federation serves HTTPS only: use https:// (plain HTTP is only for loopback development, with kedge federation --insecure-http)';
const HTTPS_ONLY_BODY = `${JSON.stringify({ code: 'KEDGE_HTTPS_ONLY', message: HTTPS_ONLY_MESSAGE })}\n`;
const HTTPS_ONLY = `HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(HTTPS_ONLY_BODY)}\r\nconnection: close\r\n\r\n${HTTPS_ONLY_BODY}`;

/**
 * Accepts connections on `server`'s behalf: TLS ones are unwrapped with a
 * context from `contexts`, then go to the HTTP server. Plain HTTP goes there
 * only with `plaintext: true` (--insecure-http) and from a loopback peer;
 * otherwise it is answered with a 400 that says to use https://.
 */
export function serveHttpAndHttps(server: http.Server, contexts: ServingContexts, opts: { plaintext: boolean; logger: Logger; limits?: ListenerLimits; log?: LogRateLimits; firstByteTimeoutMs?: number }): net.Server & { guard?: ListenerGuard } {
  // The TCP socket under each TLS one, so an upgraded WebSocket can leave the idle timer.
  const rawOf = new WeakMap<net.Socket, net.Socket>();
  const front: net.Server & { guard?: ListenerGuard } = net.createServer({ pauseOnConnect: true }, (socket) => {
    socket.once('error', () => socket.destroy());
    // A client that connects and sends nothing holds a descriptor: it has as
    // long as a request head may take to send its first byte.
    const silent = opts.firstByteTimeoutMs === undefined ? undefined : setTimeout(() => socket.destroy(), opts.firstByteTimeoutMs);
    socket.once('close', () => clearTimeout(silent));
    socket.once('readable', () => {
      clearTimeout(silent);
      const first: Buffer | null = socket.read(1);
      if (!first) {
        socket.destroy();
        return;
      }
      socket.unshift(first);
      if (first[0] === TLS_HANDSHAKE) {
        let initial: tls.SecureContext;
        try {
          initial = contexts.get(socket.localAddress ?? '127.0.0.1', undefined);
        } catch (err) {
          // No certificate can be issued (the CA key is unavailable): this
          // connection fails, the federation keeps serving.
          opts.logger.warn({ err: errorMessage(err), peer: socket.remoteAddress }, 'HTTPS connection refused: no serving certificate');
          socket.destroy();
          return;
        }
        const secure = new tls.TLSSocket(socket, {
          isServer: true,
          secureContext: initial,
          SNICallback: (name, cb) => {
            try {
              cb(null, contexts.get(socket.localAddress ?? '127.0.0.1', name));
            } catch (err) {
              cb(err as Error);
            }
          },
        });
        rawOf.set(secure, socket);
        secure.once('error', (err) => {
          opts.logger.debug({ err: errorMessage(err), peer: socket.remoteAddress }, 'HTTPS handshake failed');
          secure.destroy();
        });
        server.emit('connection', secure);
      } else if (opts.plaintext && isLoopbackAddress(socket.remoteAddress)) {
        server.emit('connection', socket);
      } else {
        socket.end(HTTPS_ONLY);
      }
    });
    socket.resume();
  });
  if (opts.limits) {
    const guard = guardListener(front, { name: 'federation HTTP', setting: 'limits.http', limits: opts.limits, logger: opts.logger, ...(opts.log ? { log: opts.log } : {}) });
    front.guard = guard;
    // The dashboard's feed is quiet while nothing changes; it authenticates
    // within seconds or is dropped by the feed itself.
    server.prependListener('upgrade', (_req: http.IncomingMessage, socket: net.Socket) => guard.exempt(rawOf.get(socket) ?? socket));
  }
  // Keep the HTTP server's own close() and closeAllConnections() meaningful.
  server.once('close', () => front.close());
  return front;
}
