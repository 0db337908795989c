// The page's edge: the token in session storage (never in a URL), JSON
// requests to the API, and the WebSocket feed with reconnection.
import { applySections, emptyState, type DashboardState, type FeedMessage, type Role } from '../model/state';

const TOKEN_KEY = 'kedge.token';

/** The token of this tab's session, if logged in. */
export function savedToken(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

export function saveToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An API answer that was not 2xx, with the federation's code and message. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

/** GETs (or sends) JSON with the session's token. */
export async function api<T>(path: string, token: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${token}`, ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
    });
  } catch (err) {
    throw new ApiError(0, 'KEDGE_UNREACHABLE', `cannot reach the federation at ${location.host}: ${String(err)}`);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (!res.ok) {
    const b = (body ?? {}) as { code?: string; message?: string };
    throw new ApiError(res.status, b.code ?? `HTTP_${res.status}`, b.message ?? (text || `HTTP ${res.status}`));
  }
  return body as T;
}

/** Checks a token: the role it has, or the API's reason it is refused. */
export function whoami(token: string): Promise<{ role: Role; replica: string; trustDomain: string }> {
  return api('/api/v1/whoami', token);
}

/** What the feed reports to the page. */
export type FeedStatus =
  | { kind: 'connecting'; attempt: number }
  | { kind: 'live'; since: number }
  | { kind: 'lost'; reason: string; retryAt: number; attempt: number }
  | { kind: 'refused'; code: string; message: string };

// Reconnect delays: quick at first (a replica restarting), then every 5 s.
const BACKOFF_MS = [500, 1000, 2000, 5000];

/**
 * The live feed: connects to the origin the page was served from, sends
 * the token as its first message, applies sections as they arrive and
 * reconnects after a loss. A refused token stops it (the page logs out).
 */
export class Feed {
  private ws: WebSocket | undefined;
  private timer: number | undefined;
  private attempt = 0;
  private stopped = false;
  private state: DashboardState = emptyState();

  constructor(private readonly token: string, private readonly onState: (s: DashboardState) => void, private readonly onStatus: (s: FeedStatus) => void) {}

  start(): void {
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.ws?.close();
  }

  private connect(): void {
    if (this.stopped) return;
    this.onStatus({ kind: 'connecting', attempt: this.attempt });
    const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/api/v1/feed`;
    const ws = new WebSocket(url);
    this.ws = ws;
    let refused = false;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token: this.token }));
    ws.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data)) as FeedMessage;
      if (msg.type === 'hello') {
        this.attempt = 0;
        this.onStatus({ kind: 'live', since: Date.now() });
      } else if (msg.type === 'sections') {
        this.state = applySections(this.state, msg.sections, msg.rows);
        this.onState(this.state);
      } else if (msg.type === 'error') {
        refused = true;
        this.stopped = true;
        this.onStatus({ kind: 'refused', code: msg.code, message: msg.message });
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws || refused || this.stopped) return;
      const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)]!;
      this.attempt += 1;
      const reason = ev.code === 1001 ? 'the federation replica is shutting down' : ev.code === 1006 ? `the connection to ${location.host} dropped` : `the feed closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
      this.onStatus({ kind: 'lost', reason, retryAt: Date.now() + delay, attempt: this.attempt });
      this.timer = window.setTimeout(() => this.connect(), delay);
    };
  }
}
