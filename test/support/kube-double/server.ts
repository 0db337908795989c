// A Kubernetes API server double: HTTPS with bearer-token auth, speaking the
// real wire protocol for what Kedge uses (Services, Nodes and EndpointSlices
// list/watch with resourceVersion, bookmarks, 410 Gone; TokenReview), so
// tests drive it through the real @kubernetes/client-node. Faults (hang,
// garbage, dropped watches, down/up, compaction) are switched on by tests.
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { sliceEndpoint, type SliceEndpointSpec } from '../fixtures/kube';
import { KubeObjectStore, RESOURCES, type KubeObject, type Resource, type StoredEvent } from './objects';
import { apiServerTls } from './tls';

/** Options of one double. */
export interface KubeApiDoubleOptions {
  /** Cluster name: names the CA and shows in logs. */
  name?: string;
  /** Bearer tokens accepted for API access; one random token when omitted (see `token`). */
  tokens?: string[];
  /** Send a BOOKMARK to watches that asked for them every this many ms (0: only on `sendBookmarks()`). */
  bookmarkIntervalMs?: number;
  /** Events kept for watches; older ones are compacted away (410 Gone). */
  maxHistory?: number;
}

/** A fault the double injects into matching requests. */
export type KubeFault =
  /** Accept the request and never answer. */
  | { kind: 'hang' }
  /** 200 application/json with a body that is not JSON. */
  | { kind: 'garbage' }
  /** Bytes that are not HTTP at all, then close. */
  | { kind: 'not-http' }
  /** A Status error with this HTTP code (e.g. 500, 503). */
  | { kind: 'status'; code: number };

/** Who a bearer token authenticates as in TokenReview. */
export interface ReviewableToken {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
  /** Audiences the token was issued for; default the API server's own. */
  audiences?: string[];
}

/** The audience a token has when none is requested, as kube-apiserver's --api-audiences default. */
export const API_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';

interface ActiveWatch {
  resource: Resource;
  namespace: string | undefined;
  bookmarks: boolean;
  selector: (o: KubeObject) => boolean;
  res: ServerResponse;
}

interface ApiToken {
  canReviewTokens: boolean;
}

/** A running Kubernetes API double on 127.0.0.1 (random port). */
export class KubeApiDouble {
  readonly store: KubeObjectStore;
  readonly name: string;
  /** The first accepted bearer token. */
  readonly token: string;
  /** PEM of the CA that signed the serving certificate. */
  readonly caPem: string;
  port = 0;
  /** False: the Gateway API CRDs are not installed, so httproutes and grpcroutes answer 404 as a real cluster does. */
  gatewayApiInstalled = true;
  /** False: Istio's security CRDs are not installed, so authorizationpolicies and peerauthentications answer 404. */
  istioInstalled = true;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly watches = new Set<ActiveWatch>();
  private readonly apiTokens = new Map<string, ApiToken>();
  private readonly reviewable = new Map<string, ReviewableToken>();
  private readonly counts = new Map<string, number>();
  private fault: { fault: KubeFault; match: RegExp } | undefined;
  private bookmarkTimer: NodeJS.Timeout | undefined;
  private isDown = true;

  private constructor(opts: KubeApiDoubleOptions) {
    this.name = opts.name ?? 'cluster';
    this.store = new KubeObjectStore(opts.maxHistory);
    const tokens = opts.tokens ?? [randomBytes(16).toString('hex')];
    for (const t of tokens) this.apiTokens.set(t, { canReviewTokens: true });
    this.token = tokens[0] ?? '';
    const tls = apiServerTls(this.name);
    this.caPem = tls.ca.certPem;
    this.server = createServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => this.handle(req, res));
    // Track raw TCP sockets, not TLS ones: down() must also kill connections still in their handshake.
    this.server.on('connection', (s: Socket) => {
      if (this.isDown) {
        s.destroy();
        return;
      }
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    // A client that gives up mid-handshake must not crash the double.
    this.server.on('tlsClientError', () => {});
    this.store.subscribe((ev) => this.broadcast(ev));
    if (opts.bookmarkIntervalMs) {
      this.bookmarkTimer = setInterval(() => this.sendBookmarks(), opts.bookmarkIntervalMs);
      this.bookmarkTimer.unref();
    }
  }

  /** Starts a double listening on 127.0.0.1:0. */
  static async start(opts: KubeApiDoubleOptions = {}): Promise<KubeApiDouble> {
    const d = new KubeApiDouble(opts);
    await d.up();
    return d;
  }

  /** https://127.0.0.1:<port> */
  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  // ---- objects -----------------------------------------------------------

  /** Creates or replaces objects, each a write with its own resourceVersion. */
  apply(...objs: KubeObject[]): KubeObject[] {
    return objs.map((o) => this.store.apply(o));
  }

  delete(resource: Resource, namespace: string | undefined, name: string): boolean {
    return this.store.delete(resource, namespace, name);
  }

  /** Replaces the endpoints of a slice, as the controller does when a deployment scales. */
  setEndpoints(namespace: string, sliceName: string, endpoints: SliceEndpointSpec[]): void {
    const slice = this.store.get('endpointslices', namespace, sliceName);
    if (!slice) throw new Error(`kube double ${this.name}: no EndpointSlice ${namespace}/${sliceName}`);
    this.store.apply({ ...slice, endpoints: endpoints.map((e) => sliceEndpoint(e, namespace)) } as KubeObject);
  }

  // ---- credentials -------------------------------------------------------

  /** Accepts another bearer token for API access. */
  addApiToken(token: string, opts: { canReviewTokens?: boolean } = {}): void {
    this.apiTokens.set(token, { canReviewTokens: opts.canReviewTokens ?? true });
  }

  /** Makes `token` reviewable: TokenReview reports it authenticated as `who`. */
  registerToken(token: string, who: ReviewableToken): void {
    this.reviewable.set(token, who);
  }

  /** A projected service-account token of a pod, as the kubelet mounts it. */
  registerServiceAccountToken(token: string, sa: { namespace: string; serviceAccount: string; podName?: string; podUid?: string; audiences?: string[] }): void {
    const extra: Record<string, string[]> = { 'authentication.kubernetes.io/credential-id': [`JTI=${randomUUID()}`] };
    if (sa.podName) extra['authentication.kubernetes.io/pod-name'] = [sa.podName];
    if (sa.podUid) extra['authentication.kubernetes.io/pod-uid'] = [sa.podUid];
    this.registerToken(token, {
      username: `system:serviceaccount:${sa.namespace}:${sa.serviceAccount}`,
      uid: randomUUID(),
      groups: ['system:serviceaccounts', `system:serviceaccounts:${sa.namespace}`, 'system:authenticated'],
      extra,
      ...(sa.audiences ? { audiences: sa.audiences } : {}),
    });
  }

  // ---- faults ------------------------------------------------------------

  /** Injects `fault` into requests whose path+query matches `match` (default: all); null clears it. */
  setFault(fault: KubeFault | null, match: RegExp = /.*/): void {
    this.fault = fault ? { fault, match } : undefined;
  }

  /** Drops every open watch connection abruptly (as a load balancer reset would). */
  disconnectWatches(): number {
    const n = this.watches.size;
    for (const w of this.watches) w.res.socket?.destroy();
    return n;
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allows them. */
  sendBookmarks(): void {
    for (const w of this.watches) {
      if (!w.bookmarks) continue;
      const info = RESOURCES[w.resource];
      writeEvent(w.res, 'BOOKMARK', { kind: info.kind, apiVersion: info.apiVersion, metadata: { resourceVersion: String(this.store.rv) } });
    }
  }

  /** Fake etcd compaction: every watch resuming from before now gets 410 Gone. */
  compact(): void {
    this.store.compact();
  }

  /** Number of open watch streams (optionally of one resource). */
  activeWatches(resource?: Resource): number {
    return [...this.watches].filter((w) => resource === undefined || w.resource === resource).length;
  }

  /** How many lists (`list`) or watches (`watch`) of `resource` were served. */
  count(verb: 'list' | 'watch', resource: Resource): number {
    return this.counts.get(`${verb} ${resource}`) ?? 0;
  }

  /** Stops listening and drops every connection (connection refused from now on). */
  async down(): Promise<void> {
    if (this.isDown) return;
    this.isDown = true;
    const closed = once(this.server, 'close');
    this.server.close();
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** Listens again, on the same port once one was assigned. */
  async up(): Promise<void> {
    if (!this.isDown) return;
    this.server.listen(this.port, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as { port: number }).port;
    this.isDown = false;
  }

  async close(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    await this.down();
  }

  // ---- HTTP --------------------------------------------------------------

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'https://double');
    if (this.fault && this.fault.match.test(url.pathname + url.search)) {
      this.injectFault(this.fault.fault, req, res);
      return;
    }
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '';
    const caller = this.apiTokens.get(token);
    if (!caller) {
      sendStatus(res, 401, 'Unauthorized', 'Unauthorized');
      return;
    }
    if (req.method === 'POST' && url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews') {
      if (!caller.canReviewTokens) {
        sendStatus(res, 403, 'Forbidden', 'tokenreviews.authentication.k8s.io is forbidden: User "kedge-federation" cannot create resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope');
        return;
      }
      void this.tokenReview(req, res);
      return;
    }
    const route = parseRoute(url.pathname);
    const missingCrd = (!this.gatewayApiInstalled && (route?.resource === 'httproutes' || route?.resource === 'grpcroutes')) || (!this.istioInstalled && (route?.resource === 'authorizationpolicies' || route?.resource === 'peerauthentications'));
    if (!route || req.method !== 'GET' || missingCrd) {
      sendStatus(res, 404, 'NotFound', 'the server could not find the requested resource');
      return;
    }
    const q = url.searchParams;
    if (route.name !== undefined) {
      const obj = this.store.get(route.resource, route.namespace, route.name);
      if (!obj) sendStatus(res, 404, 'NotFound', `${route.resource} "${route.name}" not found`);
      else sendJson(res, 200, obj);
      return;
    }
    let selector: (o: KubeObject) => boolean;
    try {
      selector = labelSelector(q.get('labelSelector') ?? '');
    } catch (err) {
      sendStatus(res, 400, 'BadRequest', (err as Error).message);
      return;
    }
    if (q.get('watch') === 'true' || q.get('watch') === '1') this.watch(route.resource, route.namespace, selector, q, req, res);
    else this.list(route.resource, route.namespace, selector, q, res);
  }

  private list(resource: Resource, namespace: string | undefined, selector: (o: KubeObject) => boolean, q: URLSearchParams, res: ServerResponse): void {
    this.bump(`list ${resource}`);
    const rv = q.get('resourceVersion');
    if (rv && q.get('resourceVersionMatch') === 'Exact' && Number(rv) < this.store.compactedRv) {
      sendStatus(res, 410, 'Expired', `The resourceVersion for the provided list is too old.`);
      return;
    }
    const info = RESOURCES[resource];
    // Items of a typed list carry no apiVersion/kind, as the real API server sends them.
    const items = this.store.list(resource, namespace).filter(selector).map(({ apiVersion: _a, kind: _k, ...rest }) => rest);
    sendJson(res, 200, { kind: info.listKind, apiVersion: info.apiVersion, metadata: { resourceVersion: String(this.store.rv) }, items });
  }

  private watch(resource: Resource, namespace: string | undefined, selector: (o: KubeObject) => boolean, q: URLSearchParams, req: IncomingMessage, res: ServerResponse): void {
    this.bump(`watch ${resource}`);
    const rvParam = q.get('resourceVersion') ?? '';
    const fromRv = rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    if (fromRv !== undefined && !Number.isInteger(fromRv)) {
      sendStatus(res, 400, 'BadRequest', `invalid resource version "${rvParam}"`);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache, private', 'transfer-encoding': 'chunked' });
    // Headers go out now: the client waits for them before reading events.
    res.flushHeaders();
    if (fromRv === undefined) {
      // "Any" resourceVersion: synthetic ADDED events for the current state first.
      for (const o of this.store.list(resource, namespace).filter(selector)) writeEvent(res, 'ADDED', o);
    } else {
      const events = this.store.eventsSince(resource, fromRv, namespace);
      if (events === 'expired') {
        // The API server answers a compacted resourceVersion inside the stream, then closes it.
        writeEvent(res, 'ERROR', statusObject(410, 'Expired', `too old resource version: ${fromRv} (${this.store.compactedRv})`));
        res.end();
        return;
      }
      for (const ev of events) if (selector(ev.object)) writeEvent(res, ev.type, ev.object);
    }
    const w: ActiveWatch = { resource, namespace, bookmarks: q.get('allowWatchBookmarks') === 'true' || q.get('allowWatchBookmarks') === '1', selector, res };
    this.watches.add(w);
    const timeoutSeconds = Number(q.get('timeoutSeconds') ?? 0);
    const timer = timeoutSeconds > 0 ? setTimeout(() => res.end(), timeoutSeconds * 1000) : undefined;
    const done = () => {
      if (timer) clearTimeout(timer);
      this.watches.delete(w);
    };
    req.on('close', done);
    res.on('close', done);
  }

  private broadcast(ev: StoredEvent): void {
    for (const w of this.watches) {
      if (w.resource !== ev.resource) continue;
      if (w.namespace !== undefined && ev.object.metadata?.namespace !== w.namespace) continue;
      if (!w.selector(ev.object)) continue;
      writeEvent(w.res, ev.type, ev.object);
    }
  }

  private async tokenReview(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: { apiVersion?: string; kind?: string; spec?: { token?: string; audiences?: string[] } };
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
    } catch {
      sendStatus(res, 400, 'BadRequest', 'the request body is not a TokenReview');
      return;
    }
    if (body.kind !== 'TokenReview' || typeof body.spec?.token !== 'string' || body.spec.token === '') {
      sendStatus(res, 400, 'BadRequest', 'TokenReview.authentication.k8s.io is invalid: spec.token: Required value');
      return;
    }
    const requested = body.spec.audiences?.length ? body.spec.audiences : [API_AUDIENCE];
    const who = this.reviewable.get(body.spec.token);
    const review = { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec: body.spec };
    let status: Record<string, unknown>;
    if (!who) {
      status = { user: {}, error: '[invalid bearer token, square/go-jose: error in cryptographic primitive, token lookup failed]' };
    } else {
      const tokenAud = who.audiences ?? [API_AUDIENCE];
      const audiences = requested.filter((a) => tokenAud.includes(a));
      status =
        audiences.length === 0
          ? { user: {}, error: `[invalid bearer token, token audiences ${JSON.stringify(tokenAud)} is invalid for the target audiences ${JSON.stringify(requested)}]` }
          : { authenticated: true, user: { username: who.username, uid: who.uid ?? randomUUID(), groups: who.groups ?? ['system:authenticated'], ...(who.extra ? { extra: who.extra } : {}) }, audiences };
    }
    sendJson(res, 201, { ...review, status });
  }

  private injectFault(fault: KubeFault, req: IncomingMessage, res: ServerResponse): void {
    switch (fault.kind) {
      case 'hang':
        // Read the request, answer nothing; the socket dies on down()/close().
        req.resume();
        return;
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('<html><body>502 Bad Gateway</body></html>\n{"kind": \n');
        return;
      case 'not-http':
        req.socket.end('SSH-2.0-OpenSSH_9.6\r\n\0\0garbage\r\n');
        return;
      case 'status':
        sendStatus(res, fault.code, fault.code >= 500 ? 'InternalError' : 'BadRequest', `injected failure ${fault.code}`);
        return;
    }
  }

  private bump(key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }
}

function parseRoute(pathname: string): { resource: Resource; namespace: string | undefined; name: string | undefined } | undefined {
  const core = /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?(services|nodes)(?:\/([^/]+))?$/.exec(pathname);
  const disc = /^\/apis\/discovery\.k8s\.io\/v1\/(?:namespaces\/([^/]+)\/)?(endpointslices)(?:\/([^/]+))?$/.exec(pathname);
  const gateway = /^\/apis\/gateway\.networking\.k8s\.io\/v1\/(?:namespaces\/([^/]+)\/)?(httproutes|grpcroutes)(?:\/([^/]+))?$/.exec(pathname);
  const security = /^\/apis\/security\.istio\.io\/v1\/(?:namespaces\/([^/]+)\/)?(authorizationpolicies|peerauthentications)(?:\/([^/]+))?$/.exec(pathname);
  const m = core ?? disc ?? gateway ?? security;
  if (!m) return undefined;
  const resource = m[2] as Resource;
  if (resource === 'nodes' && m[1] !== undefined) return undefined;
  return { resource, namespace: m[1], name: m[3] };
}

/** Equality-based label selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated. */
function labelSelector(s: string): (o: KubeObject) => boolean {
  if (s.trim() === '') return () => true;
  const terms = s.split(',').map((t) => {
    const term = t.trim();
    let m: RegExpExecArray | null;
    if ((m = /^([\w./-]+)\s*!=\s*([\w.-]*)$/.exec(term))) return { key: m[1]!, op: '!=', value: m[2]! };
    if ((m = /^([\w./-]+)\s*==?\s*([\w.-]*)$/.exec(term))) return { key: m[1]!, op: '=', value: m[2]! };
    if ((m = /^!([\w./-]+)$/.exec(term))) return { key: m[1]!, op: '!', value: '' };
    if ((m = /^([\w./-]+)$/.exec(term))) return { key: m[1]!, op: 'exists', value: '' };
    throw new Error(`unable to parse requirement: ${term}`);
  });
  return (o) => {
    const labels = o.metadata?.labels ?? {};
    return terms.every((t) => {
      const v = labels[t.key];
      if (t.op === '=') return v === t.value;
      if (t.op === '!=') return v !== t.value;
      if (t.op === '!') return v === undefined;
      return v !== undefined;
    });
  };
}

function statusObject(code: number, reason: string, message: string): object {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function sendStatus(res: ServerResponse, code: number, reason: string, message: string): void {
  sendJson(res, code, statusObject(code, reason, message));
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

function writeEvent(res: ServerResponse, type: string, object: object): void {
  if (res.writableEnded || res.destroyed) return;
  res.write(`${JSON.stringify({ type, object })}\n`);
}
