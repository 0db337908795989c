// HTTP/2 sessions the proxy opens: to endpoints' proxies over mTLS (ALPN
// h2) and to local apps in h2c. One multiplexed session per endpoint and
// SNI, opened on first use (concurrent first requests share the one being
// opened), dropped when it closes or receives GOAWAY, and closed when the
// pool is closed. Streams are the unit of balancing; sessions are only
// transport.
import * as http2 from 'node:http2';
import type * as net from 'node:net';

interface Entry {
  endpoint: string;
  session: Promise<http2.ClientHttp2Session>;
  live: http2.ClientHttp2Session | undefined;
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
  private readonly sessions = new Map<string, Entry>();

  /** The session for `key` (endpoint address:port, plus SNI), opened with `open` when there is none. */
  get(key: string, endpoint: string, open: () => Promise<http2.ClientHttp2Session>): Promise<http2.ClientHttp2Session> {
    const e = this.sessions.get(key);
    if (e !== undefined && (e.live === undefined || (!e.live.closed && !e.live.destroyed))) return e.session;
    const entry: Entry = { endpoint, session: open(), live: undefined };
    this.sessions.set(key, entry);
    entry.session.then(
      (s) => {
        entry.live = s;
        const drop = (): void => {
          if (this.sessions.get(key) === entry) this.sessions.delete(key);
        };
        s.once('close', drop);
        s.once('goaway', drop);
        s.once('error', drop);
      },
      () => {
        if (this.sessions.get(key) === entry) this.sessions.delete(key);
      },
    );
    return entry.session;
  }

  /** Sessions open now, for tests and the admin endpoint. */
  get size(): number {
    return this.sessions.size;
  }

  /** Closes sessions whose endpoint `keep` rejects. */
  prune(keep: (endpoint: string) => boolean): void {
    for (const [key, e] of this.sessions) {
      if (keep(e.endpoint)) continue;
      this.sessions.delete(key);
      void e.session.then((s) => s.close(), () => undefined);
    }
  }

  /** Closes every session gracefully (GOAWAY; open streams finish). */
  close(): void {
    for (const e of this.sessions.values()) void e.session.then((s) => s.close(), () => undefined);
    this.sessions.clear();
  }
}
