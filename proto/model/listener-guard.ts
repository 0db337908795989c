// Connection limits and the idle timeout of one listener, applied at accept
// before any of the listener's own code runs: a connection over the
// listener's or its source address's limit is closed at once (its
// descriptor freed), and an accepted one that stays silent, both ways, for
// the idle timeout is closed. One refusal warning per window names the
// limit and the setting that raises it; the rest are counted.
//
// The timer sits on the accepted TCP socket; Node resets it on every read
// and write, including those of a TLS socket wrapping it, so a busy mTLS
// connection is never taken for idle.
import type * as net from 'node:net';
import type { Logger } from './log';
import type { ListenerLimits, LogRateLimits } from './limits';
import { BoundedLog } from './bounded-log';

/** What a guarded listener counts. */
export interface GuardStats {
  open: number;
  refusedListener: number;
  refusedPeer: number;
  idleClosed: number;
}

/** The guard of one listener. */
export interface ListenerGuard {
  stats(): GuardStats;
  /** Open connections from one address (an IPv4-mapped address counts as the IPv4 one). */
  openFrom(address: string): number;
  /** Stops the idle timer of an accepted socket (a connection that must stay, such as an upgraded WebSocket with its own keep-alive). */
  exempt(socket: net.Socket): void;
}

/** The IP of a socket's peer, IPv4-mapped IPv6 written as IPv4. */
export function peerAddress(socket: net.Socket): string {
  const a = socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

/**
 * Guards `server`: its existing 'connection' listeners (the handler given to
 * createServer, or the TLS and HTTP servers' own) run only for connections
 * within the limits. Call it after creating the server and before listening.
 * `setting` names the configuration group in log lines (`limits.inbound`).
 */
export function guardListener(server: net.Server, o: { name: string; setting: string; limits: ListenerLimits; logger: Logger; log?: LogRateLimits; idle?: boolean }): ListenerGuard {
  const { limits } = o;
  const perPeer = new Map<string, number>();
  const stats: GuardStats = { open: 0, refusedListener: 0, refusedPeer: 0, idleClosed: 0 };
  const refused = new BoundedLog(o.logger, `${o.name}: connection refused`, o.log ?? { linesPerWindow: 10, windowMs: 10_000 });
  const idle = new BoundedLog(o.logger, `${o.name}: idle connection closed`, o.log ?? { linesPerWindow: 10, windowMs: 10_000 }, 'info');
  const inner = server.listeners('connection') as ((s: net.Socket) => void)[];
  server.removeAllListeners('connection');
  const onTimeout = (socket: net.Socket) => () => {
    stats.idleClosed++;
    idle.log({ peer: peerAddress(socket), idleTimeoutMs: limits.idleTimeoutMs, setting: `${o.setting}.idleTimeout` });
    socket.destroy();
  };
  server.on('connection', (socket: net.Socket) => {
    const peer = peerAddress(socket);
    const fromPeer = perPeer.get(peer) ?? 0;
    if (stats.open >= limits.maxConnections || fromPeer >= limits.maxConnectionsPerPeer) {
      const listenerFull = stats.open >= limits.maxConnections;
      if (listenerFull) stats.refusedListener++;
      else stats.refusedPeer++;
      refused.log(
        listenerFull
          ? { peer, open: stats.open, limit: limits.maxConnections, setting: `${o.setting}.maxConnections`, reason: `the listener has ${stats.open} connections open, its limit` }
          : { peer, open: fromPeer, limit: limits.maxConnectionsPerPeer, setting: `${o.setting}.maxConnectionsPerPeer`, reason: `${peer} has ${fromPeer} connections open, the limit per source address` },
      );
      socket.destroy();
      return;
    }
    stats.open++;
    perPeer.set(peer, fromPeer + 1);
    socket.once('close', () => {
      stats.open--;
      const n = (perPeer.get(peer) ?? 1) - 1;
      if (n <= 0) perPeer.delete(peer);
      else perPeer.set(peer, n);
    });
    // idle: false leaves the timeout to a listener with its own (DNS spares a connection with queries in flight).
    if (o.idle !== false) socket.setTimeout(limits.idleTimeoutMs, onTimeout(socket));
    for (const l of inner) l.call(server, socket);
  });
  server.once('close', () => {
    refused.close();
    idle.close();
  });
  return {
    stats: () => ({ ...stats }),
    openFrom: (address) => perPeer.get(address.startsWith('::ffff:') ? address.slice(7) : address) ?? 0,
    exempt: (socket) => {
      socket.setTimeout(0);
    },
  };
}
