// A Consul HTTP API double on 127.0.0.1:0 speaking the real wire protocol,
// for the read endpoints Kedge uses: /v1/catalog/services,
// /v1/health/service/<name>, /v1/catalog/datacenters and /v1/status/leader.
// Blocking queries (?index=&wait=) hold the request until the index moves
// past N or the wait (plus Consul's wait/16 jitter) elapses, and answer with
// X-Consul-Index, X-Consul-KnownLeader and X-Consul-LastContact. ACL tokens
// come from X-Consul-Token, `Authorization: Bearer` or ?token=; an unknown one
// gets 403 "ACL not found", and results a token may not read are filtered
// with X-Consul-Results-Filtered-By-ACLs, as Consul does. Faults (down, hang,
// garbage, no leader) let tests drive a client through real failures.
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ConsulCatalog, type CheckStatus, type InstanceFixture } from './catalog';

/** What a token may read; `denied` answers 403 "Permission denied" to every read. */
export interface DoubleAclToken {
  /** Service-name prefixes the token has service:read on ('' or '*' is every service). */
  services?: '*' | string[];
  denied?: boolean;
}

/** Options of the double. */
export interface ConsulDoubleOptions {
  /** The datacenter this agent serves (default dc1). */
  datacenter?: string;
  /** More names listed by /v1/catalog/datacenters; queries to them fail as unreachable. */
  otherDatacenters?: string[];
  /** Enables ACLs (default deny): tokens by secret. The anonymous token reads nothing. */
  acl?: { tokens: Record<string, DoubleAclToken> };
}

/** How the double answers while `garbage()` is on. */
export type GarbageMode = 'invalid-json' | 'wrong-shape' | 'html';

const MAX_WAIT_MS = 10 * 60_000;
const DEFAULT_WAIT_MS = 5 * 60_000;

/** A running Consul double; `address` is what a client dials. */
export class ConsulDouble {
  readonly catalog: ConsulCatalog;
  /** Every request's path and query, in arrival order. */
  readonly requests: { path: string; query: Record<string, string> }[] = [];
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly parked = new Set<http.ServerResponse>();
  private port = 0;
  private hanging = false;
  private garbageMode: GarbageMode | undefined;
  private leaderless = false;
  private listening = false;

  private constructor(private readonly opts: ConsulDoubleOptions) {
    this.catalog = new ConsulCatalog(opts.datacenter ?? 'dc1');
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  /** Starts a double on 127.0.0.1 with an ephemeral port. */
  static async start(opts: ConsulDoubleOptions = {}): Promise<ConsulDouble> {
    const d = new ConsulDouble(opts);
    await d.listen(0);
    return d;
  }

  get address(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get datacenter(): string {
    return this.catalog.datacenter;
  }

  // --- fixtures ------------------------------------------------------------

  registerInstance(f: InstanceFixture): string {
    return this.catalog.registerInstance(f);
  }

  deregister(id: string): boolean {
    return this.catalog.deregister(id);
  }

  setCheckStatus(id: string, status: CheckStatus): void {
    this.catalog.setCheckStatus(id, status);
  }

  setNodeHealth(node: string, status: CheckStatus): void {
    this.catalog.setNodeHealth(node, status);
  }

  // --- faults ------------------------------------------------------------

  /** Stops listening and drops every connection: clients see ECONNREFUSED / resets. */
  async down(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.parked.clear();
    await closed;
  }

  /** Listens again on the same port. */
  async up(): Promise<void> {
    if (!this.listening) await this.listen(this.port);
  }

  /** While on, requests are accepted and never answered; turning it off resets the held ones. */
  hang(on: boolean): void {
    this.hanging = on;
    if (!on) {
      for (const res of this.parked) res.socket?.destroy();
      this.parked.clear();
    }
  }

  /** While set, every API answer is 200 with a body that is not what Consul sends. */
  garbage(mode: GarbageMode | undefined): void {
    this.garbageMode = mode;
  }

  /** While on, reads fail with 500 "No cluster leader", as during a Consul election. */
  noLeader(on: boolean): void {
    this.leaderless = on;
  }

  async close(): Promise<void> {
    this.hang(false);
    await this.down();
  }

  // --- HTTP ----------------------------------------------------------------

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as AddressInfo).port;
        this.listening = true;
        resolve();
      });
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://consul');
    const query = Object.fromEntries(url.searchParams);
    this.requests.push({ path: url.pathname, query });
    if (this.hanging) return this.park(res);
    if (this.garbageMode) return this.sendGarbage(res, this.garbageMode);
    if (req.method !== 'GET') return sendText(res, 405, `method ${req.method} not allowed`);

    if (url.pathname === '/v1/status/leader') return sendJson(res, 200, '127.0.0.1:8300', {});
    if (url.pathname === '/v1/catalog/datacenters') {
      return sendJson(res, 200, [this.catalog.datacenter, ...(this.opts.otherDatacenters ?? [])].sort(), {});
    }
    const health = /^\/v1\/health\/service\/([^/]+)$/.exec(url.pathname);
    if (url.pathname !== '/v1/catalog/services' && !health) return sendText(res, 404, '404 page not found');

    // Consul checks the token, then the datacenter, then blocks.
    const acl = this.authorize(req, url);
    if (typeof acl === 'string') return sendText(res, 403, acl);
    const dc = url.searchParams.get('dc');
    if (dc && dc !== this.catalog.datacenter) return sendText(res, 500, 'No path to datacenter');
    if (this.leaderless) return sendText(res, 500, 'No cluster leader');

    const blocking = parseBlocking(url.searchParams);
    if (typeof blocking === 'string') return sendText(res, 400, blocking);

    const indexOf = health ? () => this.catalog.healthIndex(decodeURIComponent(health[1]!)) : () => this.catalog.catalogIndex();
    if (blocking.index > 0) {
      const w = this.catalog.waitFor(indexOf, blocking.index, blocking.waitMs);
      res.on('close', w.cancel);
      await w.done;
      if (res.destroyed || res.writableEnded || !this.listening) return;
      if (this.hanging) return this.park(res);
    }
    const result = health
      ? this.catalog.healthService(decodeURIComponent(health[1]!), { passingOnly: isTrue(url.searchParams.get('passing')), tag: url.searchParams.get('tag') ?? undefined }, acl)
      : this.catalog.catalogServices(acl);
    const headers: Record<string, string> = {
      'X-Consul-Index': String(indexOf()),
      'X-Consul-KnownLeader': 'true',
      'X-Consul-LastContact': '0',
      'X-Consul-Effective-Consistency': url.searchParams.has('stale') ? 'stale' : 'leader',
      'X-Consul-Query-Backend': 'blocking-query',
    };
    if (result.filtered) headers['X-Consul-Results-Filtered-By-ACLs'] = 'true';
    sendJson(res, 200, result.body, headers);
  }

  /** Returns which services the request's token may read, or the 403 message. */
  private authorize(req: http.IncomingMessage, url: URL): ((service: string) => boolean) | string {
    const acl = this.opts.acl;
    if (!acl) return () => true;
    const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const token = (req.headers['x-consul-token'] as string | undefined) ?? bearer ?? url.searchParams.get('token') ?? '';
    if (token === '') return () => false; // anonymous: default deny, reads are filtered
    const t = acl.tokens[token];
    if (!t) return 'ACL not found';
    if (t.denied) return 'Permission denied';
    const prefixes = t.services ?? '*';
    if (prefixes === '*') return () => true;
    return (service) => prefixes.some((p) => p === '*' || service.startsWith(p));
  }

  private park(res: http.ServerResponse): void {
    this.parked.add(res);
    res.on('close', () => this.parked.delete(res));
  }

  private sendGarbage(res: http.ServerResponse, mode: GarbageMode): void {
    const headers = { 'X-Consul-Index': '1', 'X-Consul-KnownLeader': 'true', 'X-Consul-LastContact': '0' };
    if (mode === 'invalid-json') {
      res.writeHead(200, { ...headers, 'Content-Type': 'application/json' }).end('{"reviews": ["v1", ');
    } else if (mode === 'wrong-shape') {
      res.writeHead(200, { ...headers, 'Content-Type': 'application/json' }).end(JSON.stringify('Consul Agent'));
    } else {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end('<html><body><h1>Welcome to nginx!</h1></body></html>');
    }
  }
}

/** Parses ?index= and ?wait= as Consul does (Go durations; wait capped at 10m, plus up to wait/16 jitter). */
function parseBlocking(params: URLSearchParams): { index: number; waitMs: number } | string {
  const rawIndex = params.get('index');
  let index = 0;
  if (rawIndex !== null && rawIndex !== '') {
    if (!/^\d+$/.test(rawIndex)) return 'Invalid index';
    index = Number(rawIndex);
  }
  let waitMs = DEFAULT_WAIT_MS;
  const rawWait = params.get('wait');
  if (rawWait !== null && rawWait !== '') {
    const w = parseGoDuration(rawWait);
    if (w === undefined) return 'Invalid wait time';
    waitMs = Math.min(w, MAX_WAIT_MS);
  }
  return { index, waitMs: waitMs + Math.floor(Math.random() * (waitMs / 16)) };
}

function parseGoDuration(s: string): number | undefined {
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * units[m[2]!]!;
    pos = re.lastIndex;
  }
  return pos === s.length && pos > 0 ? total : undefined;
}

function isTrue(v: string | null): boolean {
  // Consul treats a present flag with an empty value as true (?passing).
  return v !== null && v !== 'false' && v !== '0';
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'Content-Type': 'application/json', 'Vary': 'Accept-Encoding', 'Content-Length': Buffer.byteLength(text) }).end(text);
}

function sendText(res: http.ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) }).end(text);
}
