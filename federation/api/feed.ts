// The dashboard's live feed: a WebSocket at /api/v1/feed. Browsers cannot
// set an Authorization header on a WebSocket and a token must never sit in
// a URL, so the first message the page sends is {type:'auth', token}. The
// server then sends every section of the state, and afterwards, every
// tick, only what changed: whole sections, except the keyed ones (services,
// endpoints, workloads), which go row by row (the rows added or changed, the
// keys removed) unless most of their rows changed. An agent dying, an
// endpoint turning unhealthy or a route applied reaches the page within a
// tick, and one workload's change in a mesh of 5,000 sends one row.
import type * as http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { KEYED_SECTIONS, SECTIONS, type DashboardState, type FeedMessage, type KeyedSection, type Role } from '../ui/model/state';

/** Where the feed is served. */
export const FEED_PATH = '/api/v1/feed';

/** How often the state is compared with what was sent (well under the one second the dashboard promises). */
export const FEED_TICK_MS = 250;

// A page that has not authenticated by then is dropped.
const AUTH_TIMEOUT_MS = 5_000;

/** Close codes the page reads (4000–4999 are the application's). */
export const FEED_CLOSE = { unauthorized: 4401, timeout: 4408, shutdown: 1001 } as const;

/** What the feed needs from the API. */
export interface FeedDeps {
  /** Admin or viewer for a presented token; otherwise the error to show. */
  authenticate: (token: string) => { role: Role } | { code: string; message: string };
  state: (role: Role) => Promise<DashboardState>;
  logger: Logger;
  tickMs?: number;
}

interface Client {
  ws: WebSocket;
  /** Checked again every tick: a viewer token that expires (or is deleted) ends the feed. */
  token: string;
  role: Role;
  /** JSON of each section as last sent. */
  sent: Map<string, string>;
  /** JSON of each row of the keyed sections as last sent, by key. */
  sentRows: Map<KeyedSection, Map<string, string>>;
}

/** One role's state of a tick, serialized once for every page of that role. */
interface TickJson {
  sections: Map<string, string>;
  rows: Map<KeyedSection, Map<string, string>>;
}

const KEYED = Object.keys(KEYED_SECTIONS) as KeyedSection[];

function serialize(st: DashboardState): TickJson {
  const sections = new Map<string, string>();
  const rows = new Map<KeyedSection, Map<string, string>>();
  for (const s of SECTIONS) {
    if (s in KEYED_SECTIONS) {
      const key = KEYED_SECTIONS[s as KeyedSection] as (r: unknown) => string;
      const m = new Map<string, string>();
      for (const r of st[s as KeyedSection] as unknown[]) m.set(key(r), JSON.stringify(r));
      rows.set(s as KeyedSection, m);
      sections.set(s, `[${[...m.values()].join(',')}]`);
    } else {
      sections.set(s, JSON.stringify(st[s]));
    }
  }
  return { sections, rows };
}

/** The row changes from `before` to `after` as JSON, or undefined when most rows changed (the whole section is cheaper). */
function rowChanges(before: Map<string, string>, after: Map<string, string>): string | undefined {
  const upsert: string[] = [];
  const remove: string[] = [];
  for (const [k, json] of after) if (before.get(k) !== json) upsert.push(json);
  for (const k of before.keys()) if (!after.has(k)) remove.push(JSON.stringify(k));
  if (upsert.length + remove.length > Math.max(1, after.size / 2)) return undefined;
  return `{"upsert":[${upsert.join(',')}],"remove":[${remove.join(',')}]}`;
}

/** Serves the feed on `server`'s upgrade requests; returns a closer. */
export function attachFeed(server: http.Server, deps: FeedDeps): () => void {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 });
  const clients = new Set<Client>();
  let timer: NodeJS.Timeout | undefined;
  let ticking = false;

  const send = (ws: WebSocket, msg: FeedMessage) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
  };

  // One state per role per tick, however many pages are open.
  const tick = async () => {
    if (ticking || clients.size === 0) return;
    ticking = true;
    try {
      const byRole = new Map<Role, TickJson>();
      for (const c of clients) {
        const auth = deps.authenticate(c.token);
        if (!('role' in auth)) {
          send(c.ws, { type: 'error', code: auth.code, message: auth.message });
          c.ws.close(FEED_CLOSE.unauthorized, auth.code);
          clients.delete(c);
          continue;
        }
        let json = byRole.get(c.role);
        if (!json) {
          json = serialize(await deps.state(c.role));
          byRole.set(c.role, json);
        }
        // meta carries the server's clock: it changes every tick, so it is sent with other changes only.
        const changed = SECTIONS.filter((s) => s !== 'meta' && c.sent.get(s) !== json.sections.get(s));
        if (changed.length === 0 && c.sent.size > 0) continue;
        const whole: string[] = [];
        const rows: string[] = [];
        for (const s of c.sent.size === 0 ? SECTIONS : (['meta', ...changed] as const)) {
          const delta = c.sent.size > 0 && s in KEYED_SECTIONS ? rowChanges(c.sentRows.get(s as KeyedSection)!, json.rows.get(s as KeyedSection)!) : undefined;
          if (delta !== undefined) rows.push(`"${s}":${delta}`);
          else whole.push(`"${s}":${json.sections.get(s)}`);
        }
        if (c.ws.readyState !== c.ws.OPEN) continue;
        c.ws.send(`{"type":"sections","sections":{${whole.join(',')}}${rows.length ? `,"rows":{${rows.join(',')}}` : ''}}`);
        for (const s of SECTIONS) c.sent.set(s, json.sections.get(s)!);
        for (const s of KEYED) c.sentRows.set(s, json.rows.get(s)!);
      }
    } catch (err) {
      deps.logger.warn({ err: errorMessage(err) }, 'dashboard feed: cannot build the state; retrying next tick');
    } finally {
      ticking = false;
    }
  };

  const ensureTimer = () => {
    if (clients.size > 0 && !timer) {
      timer = setInterval(() => void tick(), deps.tickMs ?? FEED_TICK_MS);
      timer.unref();
    } else if (clients.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  };

  wss.on('connection', (ws: WebSocket) => {
    let client: Client | undefined;
    const authTimer = setTimeout(() => ws.close(FEED_CLOSE.timeout, 'no auth message within 5 s'), AUTH_TIMEOUT_MS);
    authTimer.unref();
    ws.on('message', (data) => {
      if (client) return; // the page sends nothing after auth
      clearTimeout(authTimer);
      let token = '';
      try {
        const msg = JSON.parse(String(data)) as { type?: unknown; token?: unknown };
        if (msg.type === 'auth' && typeof msg.token === 'string') token = msg.token.trim();
      } catch {
        // handled below as a missing token
      }
      const auth = deps.authenticate(token);
      if (!('role' in auth)) {
        send(ws, { type: 'error', code: auth.code, message: auth.message });
        ws.close(FEED_CLOSE.unauthorized, auth.code);
        return;
      }
      client = { ws, token, role: auth.role, sent: new Map(), sentRows: new Map() };
      clients.add(client);
      ensureTimer();
      send(ws, { type: 'hello', role: auth.role });
      void tick();
    });
    ws.on('close', () => {
      clearTimeout(authTimer);
      if (client) clients.delete(client);
      ensureTimer();
    });
    ws.on('error', () => undefined);
  });

  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path !== FEED_PATH) {
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });

  return () => {
    if (timer) clearInterval(timer);
    timer = undefined;
    for (const c of wss.clients) c.close(FEED_CLOSE.shutdown, 'federation shutting down');
    for (const c of wss.clients) c.terminate();
    wss.close();
  };
}
