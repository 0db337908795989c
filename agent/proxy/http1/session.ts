// One downstream HTTP/1.1 connection served request by request: each head
// is parsed (parse.ts), the request goes to an upstream the side picks for
// it (the client proxy: an endpoint's pooled mTLS connection, chosen per
// request; the server proxy: a pooled connection to the app), the original
// bytes are forwarded both ways with the body framing tracked (body.ts), and
// the upstream connection goes back to its pool when the exchange ends.
// Upgrade and CONNECT turn the rest of the connection into an opaque
// tunnel. Requests whose body fits the replay buffer can be retried on
// another attempt (a reused connection that closed under us, a retryable
// status of the route). One record per request.
import type * as net from 'node:net';
import { errorMessage } from '../../../proto/model/errors';
import type { Logger } from '../../../proto/model/log';
import type { Outcome } from '../balancer/outlier';
import type { RequestTrace } from '../request-record';
import { splice } from '../splice';
import { BodyTracker } from './body';
import { type HeadEdit, REASONS, localResponse, rewriteHead } from './head';
import { type HeadLimits, type RequestHead, type ResponseHead, DEFAULT_HEAD_LIMITS, headerValue, parseRequestHead, parseResponseHead } from './parse';
import type { Lease } from './pool';

/** A session a closing proxy asks to stop taking requests. */
export interface Drainable {
  drain(): void;
}

/** Linkerd's default: a request body up to this size is kept so the request can be sent again. */
export const DEFAULT_REPLAY_BYTES = 64 * 1024;
/** Bytes of pipelined input held before the downstream is paused. */
const MAX_BUFFERED = 256 * 1024;

/** A connected upstream for one attempt. */
export interface Upstream {
  lease: Lease;
  /** `address:port` for the record. */
  host: string;
  /** Gives the connection back (kept when `reusable`) and tells the balancer how the attempt went. */
  done(reusable: boolean, outcome: Outcome | undefined): void;
}

/** An answer the proxy gives itself instead of forwarding. */
export interface LocalAnswer {
  status: number;
  code: string;
  message: string;
  /** Envoy response flag, e.g. UH, UF, NR, UO. */
  flag: string;
  headers?: readonly (readonly [string, string])[];
  body?: string;
}

/** What the exchange needs to know about one request once its head is read. */
export interface RequestPlan {
  trace: RequestTrace;
  /** Edits for the head sent upstream. */
  edit: HeadEdit;
  /** Edits for the response head sent back. */
  responseEdit: HeadEdit;
  /** Answer at once (a redirect, a fault, no route). */
  answer?: LocalAnswer;
  /** Statuses that are retried on another attempt (route retry policy), with attempts after the first. */
  retry?: { statuses: ReadonlySet<number>; attempts: number; backoffMs: number };
  /**
   * Runs once the exchange has ended well, with the head sent upstream and
   * the whole body when it fitted the replay buffer (undefined otherwise):
   * RequestMirror sends its copy from here.
   */
  mirror?: (head: Buffer, body: readonly Buffer[] | undefined) => void;
  /** Hold the request this long before the first attempt (fault injection). */
  delayMs?: number;
  /** Whole-request and per-attempt limits in ms; 0 or undefined: none. */
  requestTimeoutMs?: number;
  attemptTimeoutMs?: number;
  /** Telemetry's hook: sees the final response head before it goes downstream (the peer's metadata header). */
  onResponse?: (res: ResponseHead) => void;
}

/** What differs between the client and the server proxy. */
export interface Http1Side {
  logger: Logger;
  /** Reads the head once: record, edits, route decisions. */
  plan(req: RequestHead): RequestPlan;
  /** An upstream for the next attempt; `tried` holds endpoints already used by this request. */
  connect(req: RequestHead, plan: RequestPlan, tried: Set<string>): Promise<Upstream | LocalAnswer>;
  /** A fresh connection for a tunnel (Upgrade, CONNECT), not pooled. */
  tunnel(req: RequestHead, plan: RequestPlan): Promise<{ socket: net.Socket; host: string; done: () => void } | LocalAnswer>;
  limits?: HeadLimits;
  replayBytes?: number;
  /** Admits a retry of a retryable status (circuit breaker maxRetries, retry budget); absent: always. */
  admitRetry?(plan: RequestPlan): boolean;
  /** Retry a 503 that a server proxy answered itself because its app was unreachable (the client side does). */
  retriesProxyErrors?: boolean;
}

/**
 * Names the error of an answer a Kedge proxy gave itself (5xx only), so the
 * proxy on the other side of the mesh can tell "the app said 503" from "the
 * server proxy could not reach the app" (Linkerd's l5d-proxy-error).
 */
export const PROXY_ERROR_HEADER = 'x-kedge-proxy-error';

/** What a response status tells outlier detection. */
export function statusOutcome(status: number): Outcome {
  if (status === 502 || status === 503 || status === 504) return 'gateway-error';
  // Busy, not broken: the balancer backs the endpoint off (balancer/backoff.ts).
  if (status === 429) return 'rate-limited';
  return status >= 500 ? 'http-5xx' : 'success';
}

const isAnswer = (x: unknown): x is LocalAnswer => typeof (x as LocalAnswer).status === 'number' && 'flag' in (x as object);

interface Attempt {
  up: Upstream;
  resBuf: Buffer;
  res: ResponseHead | undefined;
  resBody: BodyTracker | undefined;
  /** Bytes of the response already sent downstream (head included). */
  sentDown: number;
  /** The request head and the replayed body are written. */
  writing: boolean;
  onData: (d: Buffer) => void;
  onEnd: () => void;
  timer: NodeJS.Timeout | undefined;
}

interface Exchange {
  req: RequestHead;
  plan: RequestPlan;
  head: Buffer;
  body: BodyTracker;
  replay: Buffer[];
  replayBytes: number;
  /** The body outgrew the replay buffer: no retry any more. */
  overflow: boolean;
  reqDone: boolean;
  attempt: Attempt | undefined;
  tried: Set<string>;
  attempts: number;
  retries: number;
  timer: NodeJS.Timeout | undefined;
  finished: boolean;
}

/** Serves one downstream connection; see the file comment. */
export class Http1Session {
  private buf: Buffer;
  private ex: Exchange | undefined;
  private closing = false;
  private downEnded = false;
  private tunnelled = false;
  private readonly limits: HeadLimits;
  private readonly replayMax: number;
  private draining = false;

  constructor(
    private readonly down: net.Socket,
    private readonly side: Http1Side,
    initial: Buffer = Buffer.alloc(0),
  ) {
    this.buf = initial;
    this.limits = side.limits ?? DEFAULT_HEAD_LIMITS;
    this.replayMax = side.replayBytes ?? DEFAULT_REPLAY_BYTES;
  }

  /**
   * Stops taking requests (the proxy is closing): an idle connection is
   * closed now, a busy one once its exchange ends.
   */
  drain(): void {
    this.draining = true;
    if (this.ex === undefined && !this.tunnelled) this.endDown();
  }

  /** Starts reading; `done` runs once when the downstream connection has closed. */
  start(done: () => void): void {
    const d = this.down;
    d.setNoDelay(true);
    d.on('error', () => undefined);
    d.on('data', this.onDownData);
    d.on('end', this.onDownEnd);
    d.once('close', () => {
      if (!this.tunnelled) this.abort('DC', 'KEDGE_DOWNSTREAM_CLOSED');
      done();
    });
    d.resume();
    this.pump();
  }

  private readonly onDownData = (chunk: Buffer): void => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.pump();
  };

  private readonly onDownEnd = (): void => {
    this.downEnded = true;
    if (this.ex === undefined) this.endDown();
    else this.pump();
  };

  // Moves downstream bytes along: a new head when idle, body bytes to the
  // current attempt (or into the replay buffer until one is connected).
  private pump(): void {
    if (this.closing || this.tunnelled) return;
    if (this.ex === undefined) {
      if (this.buf.length === 0) {
        if (this.downEnded) this.endDown();
        return;
      }
      const r = parseRequestHead(this.buf, 0, this.limits);
      if (r.kind === 'more') {
        if (this.downEnded) this.endDown();
        return;
      }
      if (r.kind === 'error') return this.refuseHead(r.status, r.reason);
      this.buf = this.buf.subarray(r.end);
      void this.begin(r.head);
      return;
    }
    const ex = this.ex;
    if (!ex.reqDone && this.buf.length > 0) {
      const a = ex.attempt;
      const connected = a !== undefined && a.writing;
      // Until an attempt is connected the body waits in the replay buffer,
      // up to its size; beyond that the downstream is paused.
      const room = connected ? this.buf.length : Math.max(0, this.replayMax - ex.replayBytes);
      if (room > 0) {
        const slice = this.buf.subarray(0, room);
        const c = ex.body.consume(slice, 0);
        if ('error' in c) return this.badBody(c.error);
        const chunk = slice.subarray(0, c.used);
        this.buf = this.buf.subarray(c.used);
        if (c.done) ex.reqDone = true;
        this.keep(ex, chunk);
        if (connected && chunk.length > 0 && !a.up.lease.socket.write(chunk)) {
          this.down.pause();
          a.up.lease.socket.once('drain', () => this.down.resume());
        }
      }
      if (!connected && ex.replayBytes >= this.replayMax) this.down.pause();
    }
    if (ex.reqDone && this.downEnded && this.buf.length === 0) {
      // a client that half-closed after its request still gets the answer
    }
    if (this.buf.length > MAX_BUFFERED) this.down.pause();
    if (ex.reqDone && ex.attempt?.resBody?.done) this.complete(ex);
  }

  private keep(ex: Exchange, chunk: Buffer): void {
    if (ex.overflow || chunk.length === 0) return;
    if (ex.replayBytes + chunk.length > this.replayMax) {
      ex.overflow = true;
      ex.replay = [];
      return;
    }
    ex.replay.push(chunk);
    ex.replayBytes += chunk.length;
  }

  private async begin(req: RequestHead): Promise<void> {
    const plan = this.side.plan(req);
    const ex: Exchange = {
      req,
      plan,
      head: rewriteHead(req.raw, req.lineEnd, req.headers, { ...plan.edit, ...(req.tunnel ? { keepHopByHop: true } : {}) }),
      body: new BodyTracker(req.body),
      replay: [],
      replayBytes: 0,
      overflow: false,
      reqDone: req.body.type === 'none',
      attempt: undefined,
      tried: new Set(),
      attempts: 0,
      retries: 0,
      timer: undefined,
      finished: false,
    };
    this.ex = ex;
    if (plan.answer !== undefined) return this.answer(ex, plan.answer);
    if (req.tunnel) return this.tunnel(ex);
    if (plan.requestTimeoutMs !== undefined && plan.requestTimeoutMs > 0) {
      ex.timer = setTimeout(() => this.timeout(ex, 'request'), plan.requestTimeoutMs);
    }
    this.pump();
    if (plan.delayMs !== undefined && plan.delayMs > 0) await new Promise((r) => setTimeout(r, plan.delayMs));
    if (ex.finished) return;
    await this.attempt(ex);
  }

  private async attempt(ex: Exchange): Promise<void> {
    ex.attempts++;
    ex.plan.trace.attempts = ex.attempts;
    const up = await this.side.connect(ex.req, ex.plan, ex.tried);
    if (ex.finished) {
      if (!isAnswer(up)) up.done(false, undefined);
      return;
    }
    if (isAnswer(up)) return this.answer(ex, up);
    const socket = up.lease.socket;
    ex.plan.trace.upstreamHost = up.host;
    const a: Attempt = {
      up,
      resBuf: Buffer.alloc(0),
      res: undefined,
      resBody: undefined,
      sentDown: 0,
      writing: false,
      onData: (d) => this.onUpData(ex, a, d),
      onEnd: () => this.onUpGone(ex, a),
      timer: undefined,
    };
    ex.attempt = a;
    socket.on('data', a.onData);
    socket.once('end', a.onEnd);
    socket.once('close', a.onEnd);
    socket.resume();
    const t = ex.plan.attemptTimeoutMs;
    if (t !== undefined && t > 0) a.timer = setTimeout(() => this.timeout(ex, 'attempt'), t);
    // One write for the head and whatever body is already here.
    socket.write(ex.replay.length > 0 ? Buffer.concat([ex.head, ...ex.replay]) : ex.head);
    a.writing = true;
    this.down.resume();
    this.pump();
  }

  private detach(a: Attempt): void {
    const s = a.up.lease.socket;
    s.off('data', a.onData);
    s.off('end', a.onEnd);
    s.off('close', a.onEnd);
    if (a.timer !== undefined) clearTimeout(a.timer);
  }

  private onUpData(ex: Exchange, a: Attempt, d: Buffer): void {
    if (ex.attempt !== a || ex.finished) return;
    let head: Buffer | undefined;
    if (a.res === undefined) {
      a.resBuf = a.resBuf.length === 0 ? d : Buffer.concat([a.resBuf, d]);
      for (;;) {
        const r = parseResponseHead(a.resBuf, 0, ex.req.method, this.limits);
        if (r.kind === 'more') return;
        if (r.kind === 'error') {
          ex.plan.trace.flag('UPE');
          this.side.logger.warn({ endpoint: a.up.host, err: r.reason }, 'upstream sent a malformed HTTP/1.1 response');
          this.detach(a);
          a.up.done(false, 'reset');
          return this.answer(ex, { status: 502, code: 'KEDGE_UPSTREAM_PROTOCOL_ERROR', message: `the upstream sent a malformed response: ${r.reason}`, flag: 'UPE' });
        }
        const res = r.head;
        a.resBuf = a.resBuf.subarray(r.end);
        if (res.status >= 100 && res.status < 200 && res.status !== 101) {
          // Interim (100 Continue, 103 Early Hints): forwarded as it came.
          this.writeDown(a, res.raw);
          continue;
        }
        const proxyError = res.status === 503 ? headerValue(res.headers, PROXY_ERROR_HEADER) : undefined;
        if (proxyError === 'KEDGE_TARGET_CONNECT_FAILED' && !ex.overflow && this.side.retriesProxyErrors === true) {
          // The server proxy could not reach its app: the request never got
          // there, so it is as safe to send elsewhere as a refused connect,
          // and says as much about the endpoint.
          ex.tried.add(a.up.host);
          return this.retry(ex, a, proxyError, 'connect-failure', res.status);
        }
        if (this.shouldRetry(ex, res.status)) {
          ex.tried.add(a.up.host);
          return this.retry(ex, a, 'KEDGE_UPSTREAM_RETRYABLE_STATUS', statusOutcome(res.status), res.status);
        }
        a.res = res;
        ex.plan.onResponse?.(res);
        a.resBody = new BodyTracker(res.body);
        ex.plan.trace.responseCode = res.status;
        const close = this.mustCloseAfter(ex, res);
        const edit: HeadEdit = { ...ex.plan.responseEdit, add: [...(ex.plan.responseEdit.add ?? []), ...(close ? ([['connection', 'close']] as const) : [])] };
        head = rewriteHead(res.raw, res.lineEnd, res.headers, edit);
        d = a.resBuf;
        a.resBuf = Buffer.alloc(0);
        break;
      }
    }
    const body = a.resBody!;
    let out: Buffer | undefined;
    if (d.length > 0) {
      const c = body.consume(d, 0);
      if ('error' in c) {
        ex.plan.trace.flag('UPE');
        this.side.logger.warn({ endpoint: a.up.host, err: c.error }, 'upstream sent a malformed chunked body');
        return this.fail(ex, 'KEDGE_UPSTREAM_PROTOCOL_ERROR');
      }
      out = c.used === d.length ? d : d.subarray(0, c.used);
    }
    // Head and the body bytes that came with it in one write: separate
    // writes cost about 30% more per request (issue 16's measurements).
    if (head !== undefined) this.writeDown(a, out !== undefined && out.length > 0 ? Buffer.concat([head, out]) : head);
    else if (out !== undefined) this.writeDown(a, out);
    ex.plan.trace.responseBytes = body.payload;
    if (body.done) this.complete(ex);
  }

  private mustCloseAfter(ex: Exchange, res: ResponseHead): boolean {
    return !ex.req.keepAlive || res.body.type === 'close' || this.downEnded || this.draining;
  }

  private writeDown(a: Attempt, b: Buffer): void {
    if (b.length === 0) return;
    a.sentDown += b.length;
    if (!this.down.write(b)) {
      const s = a.up.lease.socket;
      s.pause();
      this.down.once('drain', () => s.resume());
    }
  }

  private shouldRetry(ex: Exchange, status: number): boolean {
    const r = ex.plan.retry;
    if (r === undefined || !r.statuses.has(status)) return false;
    if (ex.retries >= r.attempts || ex.overflow || !(this.side.admitRetry?.(ex.plan) ?? true)) {
      // Envoy's URX: the answer was retryable, but no retry was left or allowed.
      ex.plan.trace.flag('URX');
      return false;
    }
    return true;
  }

  /** Drops the current attempt and makes another, replaying the head and the body kept so far. */
  private retry(ex: Exchange, a: Attempt, code: string, outcome: Outcome | undefined, status?: number): void {
    this.detach(a);
    a.up.done(false, outcome);
    ex.plan.trace.attemptFailed(a.up.host, code);
    ex.retries++;
    ex.attempt = undefined;
    this.side.logger.info({ endpoint: a.up.host, ...(status !== undefined ? { status } : {}), code, retry: ex.retries }, 'retrying request on another attempt');
    const backoff = ex.plan.retry?.backoffMs ?? 0;
    if (backoff > 0) setTimeout(() => void this.attempt(ex), backoff);
    else void this.attempt(ex);
  }

  private onUpGone(ex: Exchange, a: Attempt): void {
    if (ex.attempt !== a || ex.finished) return;
    const body = a.resBody;
    if (a.res !== undefined && body !== undefined && body.framing.type === 'close') {
      // A body delimited by the close: this is its end.
      this.detach(a);
      a.up.done(false, 'success');
      ex.attempt = a;
      return this.complete(ex, true);
    }
    if (a.sentDown === 0) {
      // Nothing reached the client yet. A reused connection the upstream
      // closed as we wrote is always safe to try again; the request never
      // reached an app that answered.
      if (!ex.overflow && (a.up.lease.reused || ex.retries < (ex.plan.retry?.attempts ?? 0))) {
        // A stale pooled connection says nothing about the endpoint: the
        // same endpoint may be picked again.
        if (a.up.lease.reused) ex.tried.delete(a.up.host);
        return this.retry(ex, a, 'KEDGE_UPSTREAM_RESET', a.up.lease.reused ? undefined : 'reset');
      }
      this.detach(a);
      a.up.done(false, 'reset');
      return this.answer(ex, { status: 503, code: 'KEDGE_UPSTREAM_RESET', message: `the upstream ${a.up.host} closed the connection before answering`, flag: 'UC' });
    }
    ex.plan.trace.flag('UC');
    this.fail(ex, 'KEDGE_UPSTREAM_RESET');
  }

  private timeout(ex: Exchange, which: 'request' | 'attempt'): void {
    if (ex.finished) return;
    const a = ex.attempt;
    // A backendRequest timeout before any answer is a 504 the route may retry (Envoy's per-try timeout).
    if (which === 'attempt' && a !== undefined && a.sentDown === 0 && this.shouldRetry(ex, 504)) {
      ex.tried.add(a.up.host);
      return this.retry(ex, a, 'KEDGE_ATTEMPT_TIMEOUT', 'gateway-error', 504);
    }
    if (a !== undefined) {
      this.detach(a);
      a.up.done(false, undefined);
      ex.attempt = undefined;
    }
    if (a !== undefined && a.sentDown > 0) {
      ex.plan.trace.flag('UT');
      return this.fail(ex, 'KEDGE_REQUEST_TIMEOUT');
    }
    const ms = which === 'request' ? ex.plan.requestTimeoutMs : ex.plan.attemptTimeoutMs;
    this.answer(ex, { status: 504, code: 'KEDGE_REQUEST_TIMEOUT', message: `no answer within the ${which === 'request' ? 'request' : 'backend request'} timeout of ${ms} ms`, flag: 'UT' });
  }

  /** The exchange ended well: record it, give the upstream back, and go on with the next request (or close). */
  private complete(ex: Exchange, upstreamGone = false): void {
    if (ex.finished) return;
    const a = ex.attempt!;
    const res = a.res!;
    // The request must be whole before the downstream can go on; a response
    // that ended first (an early 4xx) leaves the rest of the body unread.
    const closeDown = !ex.reqDone || this.mustCloseAfter(ex, res);
    ex.finished = true;
    if (ex.timer !== undefined) clearTimeout(ex.timer);
    if (!upstreamGone) {
      this.detach(a);
      a.up.done(ex.reqDone && res.keepAlive && a.resBuf.length === 0, statusOutcome(res.status));
    }
    ex.plan.trace.requestBytes = ex.body.payload;
    ex.plan.trace.responseBytes = a.resBody?.payload ?? 0;
    ex.plan.trace.finish(res.status >= 500 ? 'KEDGE_UPSTREAM_5XX' : '');
    if (ex.plan.mirror !== undefined && ex.reqDone) ex.plan.mirror(ex.head, ex.overflow ? undefined : ex.replay);
    this.ex = undefined;
    if (closeDown) return this.endDown();
    this.down.resume();
    this.pump();
  }

  /** The proxy answers the request itself. */
  private answer(ex: Exchange, ans: LocalAnswer): void {
    if (ex.finished) return;
    ex.finished = true;
    if (ex.timer !== undefined) clearTimeout(ex.timer);
    const t = ex.plan.trace;
    t.responseCode = ans.status;
    if (ans.flag !== '-') t.flag(ans.flag);
    t.requestBytes = ex.body.payload;
    if (ans.status >= 500) this.side.logger.warn({ method: ex.req.method, path: ex.req.target, status: ans.status, code: ans.code, err: ans.message }, 'request answered by the proxy');
    t.finish(ans.status >= 400 ? ans.code : '');
    const close = !ex.reqDone || !ex.req.keepAlive || this.downEnded || this.draining;
    const extra: Array<readonly [string, string]> = [...(ans.headers ?? [])];
    if (ans.flag !== '-') extra.push(['x-kedge-response-flags', ans.flag]);
    if (ans.status >= 500) extra.push([PROXY_ERROR_HEADER, ans.code]);
    this.down.write(localResponse(ans.status, REASONS[ans.status] ?? 'Error', ans.body ?? `${ans.message}\n`, extra, close));
    this.ex = undefined;
    if (close) return this.endDown();
    this.pump();
  }

  /** A broken exchange after bytes went downstream: nothing to answer, the connection goes. */
  private fail(ex: Exchange, code: string): void {
    if (ex.finished) return;
    ex.finished = true;
    if (ex.timer !== undefined) clearTimeout(ex.timer);
    const a = ex.attempt;
    if (a !== undefined) {
      this.detach(a);
      a.up.done(false, 'reset');
    }
    ex.plan.trace.requestBytes = ex.body.payload;
    ex.plan.trace.finish(code);
    this.ex = undefined;
    this.closing = true;
    this.down.destroy();
  }

  /** The downstream went away mid-exchange. */
  private abort(flag: string, code: string): void {
    const ex = this.ex;
    if (ex === undefined || ex.finished) return;
    ex.plan.trace.flag(flag);
    this.fail(ex, code);
  }

  private badBody(reason: string): void {
    const ex = this.ex!;
    this.side.logger.warn({ method: ex.req.method, path: ex.req.target, err: reason }, 'malformed request body');
    if (ex.attempt === undefined || ex.attempt.sentDown === 0) {
      ex.reqDone = false;
      return this.answer(ex, { status: 400, code: 'KEDGE_BAD_REQUEST', message: reason, flag: 'DPE' });
    }
    ex.plan.trace.flag('DPE');
    this.fail(ex, 'KEDGE_BAD_REQUEST');
  }

  private refuseHead(status: number, reason: string): void {
    this.side.logger.warn({ status, err: reason, remote: this.down.remoteAddress }, 'malformed HTTP/1.1 request refused');
    this.closing = true;
    this.down.end(localResponse(status, REASONS[status] ?? 'Bad Request', `${reason}\n`, [['x-kedge-response-flags', 'DPE']]));
    this.down.off('data', this.onDownData);
  }

  private endDown(): void {
    if (this.closing) return;
    this.closing = true;
    this.down.off('data', this.onDownData);
    this.down.end();
  }

  /** Upgrade or CONNECT: the head goes through as it came, then both sides are spliced. */
  private async tunnel(ex: Exchange): Promise<void> {
    ex.attempts = 1;
    ex.plan.trace.attempts = 1;
    const t = await this.side.tunnel(ex.req, ex.plan);
    if (ex.finished) {
      if (!isAnswer(t)) {
        t.socket.destroy();
        t.done();
      }
      return;
    }
    if (isAnswer(t)) return this.answer(ex, t);
    ex.finished = true;
    this.tunnelled = true;
    this.ex = undefined;
    const trace = ex.plan.trace;
    trace.upstreamHost = t.host;
    const up = t.socket;
    up.setNoDelay(true);
    this.down.off('data', this.onDownData);
    this.down.off('end', this.onDownEnd);
    up.write(this.buf.length > 0 ? Buffer.concat([ex.head, this.buf]) : ex.head);
    this.buf = Buffer.alloc(0);
    let status = '';
    const readStatus = (d: Buffer): void => {
      status += d.subarray(0, 16).toString('latin1');
      if (status.length >= 12) {
        up.off('data', readStatus);
        trace.responseCode = Number(/^HTTP\/1\.[01] (\d{3})/.exec(status)?.[1] ?? 0);
      }
    };
    up.on('data', readStatus);
    const started = { down: this.down.bytesWritten, up: up.bytesWritten };
    splice(this.down, up, (err) => {
      t.done();
      trace.requestBytes = up.bytesWritten - started.up;
      trace.responseBytes = this.down.bytesWritten - started.down;
      trace.finish(err ? 'KEDGE_TUNNEL_CLOSED' : '');
      if (err) this.side.logger.info({ upstream: t.host, err: errorMessage(err) }, 'tunnel closed with an error');
    });
  }
}
