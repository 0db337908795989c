// A pool of keep-alive connections to one upstream (an endpoint's proxy
// over mTLS, a plaintext endpoint, or the local app): idle connections are
// reused newest first, a connection that closes while idle leaves the pool,
// and one idle longer than the idle timeout is closed. Many short client
// connections thus ride a few warm mTLS connections instead of paying a
// handshake each.
import type * as net from 'node:net';

const ignore = (): void => undefined;

/** One connection taken from a pool. */
export interface Lease {
  socket: net.Socket;
  /** It carried an earlier request: a failure before any response byte may be a close that crossed our write. */
  reused: boolean;
  /** Requests this connection has carried, this one included. */
  requests: number;
}

interface Idle {
  socket: net.Socket;
  requests: number;
  timer: NodeJS.Timeout;
  onGone: () => void;
}

/** What a pool is built with. */
export interface PoolOptions {
  connect: () => Promise<net.Socket>;
  idleTimeoutMs: number;
  /** Idle connections kept; more are closed on release. */
  maxIdle: number;
  /** Requests a connection carries before it is closed (0: unlimited; TrafficPolicy maxRequestsPerConnection). */
  maxRequestsPerConnection: number;
}

/** The pool of one upstream; see the file comment. */
export class ConnectionPool {
  private readonly idle: Idle[] = [];
  /** Connections leased now. */
  busy = 0;
  /** Connections being set up now. */
  dialing = 0;
  private closed = false;

  constructor(private opts: PoolOptions) {}

  /** Takes new limits (a policy change); existing connections keep going. */
  configure(opts: Omit<PoolOptions, 'connect'>): void {
    this.opts = { ...this.opts, ...opts };
  }

  get idleCount(): number {
    return this.idle.length;
  }

  /** An idle connection, or a new one; rejects as the connect function does. */
  async acquire(): Promise<Lease> {
    while (this.idle.length > 0) {
      const it = this.idle.pop()!;
      this.unwatch(it);
      if (it.socket.destroyed || !it.socket.writable) continue;
      this.busy++;
      return { socket: it.socket, reused: true, requests: it.requests + 1 };
    }
    this.dialing++;
    let socket: net.Socket;
    try {
      socket = await this.opts.connect();
    } finally {
      this.dialing--;
    }
    // Errors are read by whoever holds the lease (through 'close' and the
    // exchange's own handlers); one with no listener must not crash the agent.
    socket.on('error', ignore);
    this.busy++;
    return { socket, reused: false, requests: 1 };
  }

  /** Gives a leased connection back: kept idle when `reusable`, closed otherwise. */
  release(lease: Lease, reusable: boolean): void {
    this.busy--;
    const { socket } = lease;
    const max = this.opts.maxRequestsPerConnection;
    if (!reusable || this.closed || socket.destroyed || !socket.writable || (max > 0 && lease.requests >= max) || this.idle.length >= this.opts.maxIdle) {
      socket.destroy();
      return;
    }
    const onGone = (): void => {
      const i = this.idle.indexOf(it);
      if (i >= 0) {
        this.idle.splice(i, 1);
        this.unwatch(it);
      }
      socket.destroy();
    };
    const it: Idle = { socket, requests: lease.requests, timer: setTimeout(onGone, this.opts.idleTimeoutMs), onGone };
    it.timer.unref();
    // An idle connection must not be read by anyone: data now is a protocol
    // error (an unsolicited response), an end or error means it is gone.
    socket.on('data', onGone);
    socket.once('end', onGone);
    socket.once('close', onGone);
    socket.on('error', onGone);
    socket.resume();
    this.idle.push(it);
  }

  private unwatch(it: Idle): void {
    clearTimeout(it.timer);
    it.socket.off('data', it.onGone);
    it.socket.off('end', it.onGone);
    it.socket.off('close', it.onGone);
    it.socket.off('error', it.onGone);
    it.socket.pause();
  }

  /** Closes the idle connections and refuses to keep any more. */
  close(): void {
    this.closed = true;
    for (const it of this.idle.splice(0)) {
      this.unwatch(it);
      it.socket.destroy();
    }
  }
}
