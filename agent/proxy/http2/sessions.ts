// HTTP/2 sessions the proxy opens: to endpoints' proxies over mTLS (ALPN
// h2) and to local apps in h2c. One active multiplexed session per
// endpoint and SNI, opened on first use (concurrent first requests share
// the one being opened). A session that carried maxRequestsPerConnection
// streams is retired: it takes no new stream, finishes the ones it has
// (still counted as a connection, as Envoy counts draining ones) and
// closes; the next stream opens a new one. A session with no stream for
// the idle timeout is closed. Streams are the unit of balancing; sessions
// are only transport.
import * as http2 from 'node:http2';
import type * as net from 'node:net';

/** What a session is kept under: TrafficPolicy's maxRequestsPerConnection (0: unlimited) and poolIdleTimeout (0: never). */
export interface H2Limits {
  maxRequestsPerConnection: number;
  idleTimeoutMs: number;
}

const NO_LIMITS: H2Limits = { maxRequestsPerConnection: 0, idleTimeoutMs: 0 };

/** One session of a pool key, opening, active or retired. */
export class H2Conn {
  live: http2.ClientHttp2Session | undefined;
  /** Streams open on it now. */
  active = 0;
  /** Streams it carried. */
  total = 0;
  /** Streams promised to requests (reserve), opened or about to be. */
  reserved = 0;
  /** Takes no new stream (maxRequestsPerConnection reached, GOAWAY, closed). */
  retired = false;
  private idle: NodeJS.Timeout | undefined;

  constructor(
    readonly endpoint: string,
    readonly ready: Promise<http2.ClientHttp2Session>,
    public limits: H2Limits,
  ) {}

  /**
   * Promises a stream to one request, within maxRequestsPerConnection;
   * false when the session cannot take it (look for another). Several
   * requests may be handed the same session before any opens its stream.
   */
  reserve(): boolean {
    if (!this.usable) return false;
    this.reserved++;
    return true;
  }

  /** A reserved stream will not be opened after all. */
  unreserve(): void {
    this.reserved--;
    if (this.active > 0) return;
    if (this.retired) this.retire();
    else this.idleSoon();
  }

  /** Opens a reserved stream on the session, counting it; retires the session when it reached its stream limit. */
  request(headers: http2.OutgoingHttpHeaders, options: http2.ClientSessionRequestOptions): http2.ClientHttp2Stream {
    const s = this.live!;
    const stream = s.request(headers, options);
    this.active++;
    this.total++;
    if (this.idle !== undefined) clearTimeout(this.idle);
    this.idle = undefined;
    stream.once('close', () => {
      this.active--;
      if (this.active > 0) return;
      if (this.retired) this.closeLive();
      else this.idleSoon();
    });
    const max = this.limits.maxRequestsPerConnection;
    if (max > 0 && this.total >= max) this.retire();
    return stream;
  }

  private idleSoon(): void {
    if (this.retired || this.limits.idleTimeoutMs <= 0) return;
    if (this.idle !== undefined) clearTimeout(this.idle);
    this.idle = setTimeout(() => this.retire(), this.limits.idleTimeoutMs);
    this.idle.unref();
  }

  /**
   * Takes no new stream; closes once the open ones finished. (Closing at
   * once would refuse a stream whose HEADERS Node has not sent yet.)
   */
  retire(): void {
    this.retired = true;
    if (this.idle !== undefined) clearTimeout(this.idle);
    if (this.active === 0 && this.reserved === this.total) this.closeLive();
  }

  private closeLive(): void {
    if (this.live !== undefined && !this.live.closed) this.live.close();
  }

  /** Usable for a new stream now: open, not retired, with room under maxRequestsPerConnection. */
  get usable(): boolean {
    const max = this.limits.maxRequestsPerConnection;
    return this.live !== undefined && !this.retired && !this.live.closed && !this.live.destroyed && (max === 0 || this.reserved < max);
  }

  /** Might still take a stream: being opened with room, or usable. */
  get open(): boolean {
    const max = this.limits.maxRequestsPerConnection;
    return this.live === undefined ? !this.retired && (max === 0 || this.reserved < max) : this.usable;
  }
}

/**
 * Settings for proxy-opened sessions: a large connection window so one
 * slow stream does not stall the others, and the stream window Node uses.
 */
const SESSION_OPTIONS: http2.ClientSessionOptions = { settings: { enablePush: false, initialWindowSize: 1024 * 1024 } };

/** Opens an HTTP/2 client session over a connected socket (TLS with ALPN h2, or plain TCP for h2c). */
export function sessionOver(socket: net.Socket, authority: string): http2.ClientHttp2Session {
  const s = http2.connect(authority, { ...SESSION_OPTIONS, createConnection: () => socket });
  s.on('error', () => undefined);
  // A local window far above the default 64 KiB, so multi-MiB messages flow at line rate.
  s.once('connect', () => {
    try {
      s.setLocalWindowSize(16 * 1024 * 1024);
    } catch {
      // closed already
    }
  });
  return s;
}

/** Sessions by key; see the file comment. */
export class H2Sessions {
  /** Every session of a key: the newest may be active, older ones are retired and draining. */
  private readonly byKey = new Map<string, H2Conn[]>();

  /** The active session of `key`, if one is open and takes streams under `limits` (the policy now). */
  ready(key: string, limits?: H2Limits): H2Conn | undefined {
    const list = this.byKey.get(key);
    const last = list?.[list.length - 1];
    if (last === undefined) return undefined;
    if (limits !== undefined) last.limits = limits;
    if (last.usable) return last;
    // Full under a (perhaps lowered) maxRequestsPerConnection: it drains and closes; a new one takes the streams.
    this.retireIfFull(last);
    return undefined;
  }

  /**
   * A session full under a (perhaps lowered) maxRequestsPerConnection
   * drains and closes; a new one takes the streams. One with a reserved
   * stream not yet opened is left alone: opening it retires the session.
   */
  private retireIfFull(c: H2Conn): void {
    if (c.live !== undefined && !c.retired && c.reserved > 0 && c.reserved === c.total) c.retire();
  }

  /** Whether `key` has any session (opening, active or draining). */
  has(key: string): boolean {
    return (this.byKey.get(key)?.length ?? 0) > 0;
  }

  /**
   * The session for `key` (endpoint address:port, plus SNI): the active
   * one, the one being opened, or a new one opened with `open`. `onClose`
   * runs when a session opened here closes (a connection became free).
   */
  get(key: string, endpoint: string, open: () => Promise<http2.ClientHttp2Session>, limits: H2Limits = NO_LIMITS, onClose?: () => void): Promise<H2Conn> {
    const list = this.byKey.get(key) ?? [];
    const last = list[list.length - 1];
    if (last !== undefined) {
      last.limits = limits;
      if (last.open) return last.ready.then(() => last);
      this.retireIfFull(last);
    }
    const conn = new H2Conn(endpoint, open(), limits);
    list.push(conn);
    this.byKey.set(key, list);
    const drop = (): void => {
      conn.retired = true;
      const l = this.byKey.get(key);
      const i = l?.indexOf(conn) ?? -1;
      if (l === undefined || i < 0) return;
      l.splice(i, 1);
      if (l.length === 0) this.byKey.delete(key);
      onClose?.();
    };
    return conn.ready.then(
      (s) => {
        conn.live = s;
        s.once('close', drop);
        // GOAWAY from the peer: no new streams here; it still counts until it closes.
        s.once('goaway', () => (conn.retired = true));
        s.once('error', () => (conn.retired = true));
        if (s.closed || s.destroyed) drop();
        return conn;
      },
      (err: unknown) => {
        drop();
        throw err;
      },
    );
  }

  /** Sessions open or opening to `endpoints` now (active and draining), for maxConnections. */
  connections(endpoints: Iterable<string>): number {
    const want = new Set(endpoints);
    let n = 0;
    for (const list of this.byKey.values()) for (const c of list) if (want.has(c.endpoint)) n++;
    return n;
  }

  /** Sessions open now, for tests and the admin endpoint. */
  get size(): number {
    let n = 0;
    for (const list of this.byKey.values()) n += list.length;
    return n;
  }

  /** Closes sessions whose endpoint `keep` rejects. */
  prune(keep: (endpoint: string) => boolean): void {
    for (const [key, list] of this.byKey) {
      if (list.length === 0 || keep(list[0]!.endpoint)) continue;
      this.byKey.delete(key);
      for (const c of list) void c.ready.then((s) => s.close(), () => undefined);
    }
  }

  /** Closes every session gracefully (GOAWAY; open streams finish). */
  close(): void {
    for (const list of this.byKey.values()) for (const c of list) void c.ready.then((s) => s.close(), () => undefined);
    this.byKey.clear();
  }
}
