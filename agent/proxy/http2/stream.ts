// Carrying one HTTP/2 stream (an HTTP/2 request or a gRPC call) from a
// downstream session to an upstream one: headers, data with flow control
// (a slow reader slows the writer: nothing is buffered past the streams'
// windows except the replay copy), trailers, trailers-only answers, and
// RST_STREAM both ways (a client's cancel reaches the server, a server's
// reset reaches the client). A request body that fits the replay buffer
// can be sent again on a retry. Timeouts answer 504, or DEADLINE_EXCEEDED
// for gRPC, and cancel the upstream stream so the server sees it.
import * as http2 from 'node:http2';
import type { Outcome } from '../balancer/outlier';
import type { RequestTrace } from '../request-record';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;
/** END_STREAM on a HEADERS frame: a trailers-only answer. */
const FLAG_END_STREAM = 0x1;

/** gRPC status codes the proxy writes itself. */
export const GRPC = { OK: 0, CANCELLED: 1, UNKNOWN: 2, DEADLINE_EXCEEDED: 4, RESOURCE_EXHAUSTED: 8, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14 } as const;

/** Headers a proxy never forwards between HTTP/2 hops (RFC 9113 §8.2.2 connection-specific ones are refused by Node anyway). */
const DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']);

/** An upstream for one attempt of a stream. */
export interface H2Upstream {
  /** Opens the attempt's stream (on a pooled session, counted there). */
  request(headers: http2.OutgoingHttpHeaders, options: http2.ClientSessionRequestOptions): http2.ClientHttp2Stream;
  host: string;
  /** The attempt is over; `outcome` goes to outlier detection. */
  done(outcome: Outcome | undefined): void;
}

/** An answer the proxy gives itself. */
export interface H2Answer {
  /** HTTP status; for gRPC the proxy answers 200 with `grpcStatus`. */
  status: number;
  grpcStatus: number;
  code: string;
  message: string;
  flag: string;
  /** Extra response headers (a rate limit's retry-after). */
  headers?: Readonly<Record<string, string>>;
}

/**
 * grpc-message as the gRPC HTTP/2 spec percent-encodes it: only bytes
 * outside space..~ and `%` itself (encodeURIComponent also encodes `:` and
 * spaces, which grpc-js then shows undecoded).
 */
export function grpcMessage(text: string): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

/** What one stream is routed with. */
export interface StreamPlan {
  trace: RequestTrace;
  grpc: boolean;
  /** Extra request headers (x-request-id, route filters); names lowercase. */
  setHeaders: Record<string, string>;
  removeHeaders: ReadonlySet<string>;
  /** Replaces :path (URLRewrite). */
  path?: string;
  answer?: H2Answer;
  retry?: { httpStatuses: ReadonlySet<number>; grpcStatuses: ReadonlySet<number>; attempts: number; backoffMs: number };
  /** Whole-stream limit in ms (the route's timeout capped by grpc-timeout); 0 or undefined: none. */
  timeoutMs?: number;
  /** Per-attempt limit in ms (the route's timeouts.backendRequest); 0 or undefined: none. */
  attemptTimeoutMs?: number;
  /** Admits a retry of a retryable answer (circuit breaker maxRetries, retry budget); absent: always. */
  admitRetry?: () => boolean;
  /** Copies of the request (RequestMirror): each sees the request's bytes; nothing comes back. */
  taps?: readonly StreamTap[];
  delayMs?: number;
  responseSet: Record<string, string>;
  responseRemove: ReadonlySet<string>;
  /** Telemetry's hook: sees the response headers that go downstream (the peer's metadata header). */
  onResponse?: (h: http2.IncomingHttpHeaders) => void;
}

/**
 * A copy of the request stream (RequestMirror). It gets the outgoing
 * headers once, then every request body chunk and the end; the primary
 * never waits for it, and it must never throw.
 */
export interface StreamTap {
  start(headers: http2.OutgoingHttpHeaders): void;
  data(d: Buffer): void;
  end(): void;
  /** The client cancelled the request. */
  cancel(): void;
  /** The primary finished: the copy has a bounded time left. */
  settle(): void;
}

/** How a side connects an attempt. */
export type Connect = (tried: Set<string>) => Promise<H2Upstream | H2Answer>;

/** Bytes of request body kept for a retry (as HTTP/1.1). */
export const REPLAY_BYTES = 64 * 1024;

const isAnswer = (x: H2Upstream | H2Answer): x is H2Answer => 'flag' in x;

/** gRPC's grpc-timeout header (RFC: digits and a unit H, M, S, m, u, n) in ms; undefined when absent or malformed. */
export function grpcTimeoutMs(v: string | string[] | undefined): number | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(v);
  if (m === null) return undefined;
  const n = Number(m[1]);
  const scale: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
  return n * scale[m[2]!]!;
}

/** What a finished answer tells outlier detection. */
function outcomeOf(status: number, grpcStatus: number): Outcome {
  if (grpcStatus === GRPC.UNAVAILABLE || status === 502 || status === 503 || status === 504) return 'gateway-error';
  // Busy, not broken: the balancer backs the endpoint off (balancer/backoff.ts).
  if (status === 429 || grpcStatus === GRPC.RESOURCE_EXHAUSTED) return 'rate-limited';
  return status >= 500 ? 'http-5xx' : 'success';
}

/**
 * The longest gRPC message either proxy carries: far above grpc-js's 4 MiB
 * default (apps that raise it still pass) and what the tests send (several
 * MiB), and still a bound, so a length prefix of up to 4 GiB cannot make
 * the app behind a proxy allocate it.
 */
export const GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * Reads the length prefixes of gRPC messages in a byte stream fed chunk by
 * chunk: counts the messages, and stops at the first one longer than
 * `limit` (its declared length is then in `tooLong`).
 */
export class MessageCounter {
  count = 0;
  tooLong: number | undefined;
  private need = 5;
  private header = Buffer.alloc(5);
  private inHeader = true;
  private got = 0;

  constructor(private readonly limit: number) {}

  /** Feeds a chunk; returns how many of its bytes may be forwarded (all, unless a prefix in it declares an over-long message). */
  feed(b: Buffer): number {
    if (this.tooLong !== undefined) return 0;
    let i = 0;
    while (i < b.length) {
      if (this.inHeader) {
        const start = i - this.got;
        const n = Math.min(5 - this.got, b.length - i);
        b.copy(this.header, this.got, i, i + n);
        this.got += n;
        i += n;
        if (this.got === 5) {
          const length = this.header.readUInt32BE(1);
          if (length > this.limit) {
            this.tooLong = length;
            // The prefix may have begun in an earlier chunk, already sent.
            return Math.max(0, start);
          }
          this.count++;
          this.need = length;
          this.inHeader = this.need === 0;
          this.got = 0;
        }
      } else {
        const n = Math.min(this.need, b.length - i);
        this.need -= n;
        i += n;
        if (this.need === 0) this.inHeader = true;
      }
    }
    return b.length;
  }
}

/**
 * Forwards `down` (a server stream of the downstream session) with its
 * request `headers` to attempts made by `connect`, until an answer is
 * complete, the client cancels, or the plan's timeout fires.
 */
export function forwardStream(down: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, plan: StreamPlan, connect: Connect, onDone?: () => void): void {
  const t = plan.trace;
  const replay: Buffer[] = [];
  let replayBytes = 0;
  let overflow = false;
  let reqEnded = false;
  let finished = false;
  let retries = 0;
  const tried = new Set<string>();
  const reqMessages = new MessageCounter(GRPC_MAX_MESSAGE_BYTES);
  const resMessages = new MessageCounter(GRPC_MAX_MESSAGE_BYTES);
  /** Trailers the proxy sends in place of the upstream's (it ended a gRPC answer it had begun to forward). */
  let ownTrailers: http2.OutgoingHttpHeaders | undefined;
  let current: { up: H2Upstream; out: http2.ClientHttp2Stream; responded: boolean; timer: NodeJS.Timeout | undefined } | undefined;
  let timer: NodeJS.Timeout | undefined;

  const outHeaders: http2.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || DROP.has(k) || plan.removeHeaders.has(k)) continue;
    outHeaders[k] = v;
  }
  for (const [k, v] of Object.entries(plan.setHeaders)) outHeaders[k] = v;
  if (plan.path !== undefined) outHeaders[':path'] = plan.path;
  const taps = plan.answer === undefined ? (plan.taps ?? []) : [];

  const finish = (code: string): void => {
    if (finished) return;
    finished = true;
    if (timer !== undefined) clearTimeout(timer);
    t.requestMessages = reqMessages.count;
    t.responseMessages = resMessages.count;
    t.finish(code);
    for (const tap of taps) tap.settle();
    onDone?.();
  };

  // The proxy answers: a status, or for gRPC a trailers-only 200 with grpc-status.
  const answer = (a: H2Answer): void => {
    if (finished) return;
    t.responseCode = plan.grpc ? 200 : a.status;
    if (plan.grpc) t.grpcStatus = a.grpcStatus;
    if (a.flag !== '-') t.flag(a.flag);
    if (!down.destroyed && !down.headersSent) {
      const h: http2.OutgoingHttpHeaders = plan.grpc
        ? { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(a.grpcStatus), 'grpc-message': grpcMessage(a.message), 'x-kedge-response-flags': a.flag, 'x-kedge-proxy-error': a.code, ...a.headers }
        : { ':status': a.status, 'content-type': 'text/plain', 'x-kedge-response-flags': a.flag, ...(a.status >= 500 ? { 'x-kedge-proxy-error': a.code } : {}), ...a.headers };
      try {
        if (plan.grpc) down.respond(h, { endStream: true });
        else {
          down.respond(h);
          down.end(`${a.message}\n`);
        }
      } catch {
        down.close(NGHTTP2_CANCEL);
      }
    } else if (!down.destroyed) down.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    finish(a.status >= 400 || a.grpcStatus > 0 ? a.code : '');
  };

  // Ends the stream with the proxy's own status: an answer when nothing
  // went downstream yet, otherwise the proxy's trailers after what was sent.
  const fail = (a: H2Answer): void => {
    if (finished) return;
    if (!down.headersSent) return answer(a);
    t.flag(a.flag);
    t.grpcStatus = a.grpcStatus;
    ownTrailers = { 'grpc-status': String(a.grpcStatus), 'grpc-message': grpcMessage(a.message), 'x-kedge-proxy-error': a.code };
    if (!down.destroyed) down.end();
    finish(a.code);
  };

  const dropAttempt = (outcome: Outcome | undefined): void => {
    const c = current;
    if (c === undefined) return;
    current = undefined;
    if (c.timer !== undefined) clearTimeout(c.timer);
    c.out.removeAllListeners('response').removeAllListeners('data').removeAllListeners('trailers').removeAllListeners('end');
    // 'close' stays: the session counts its streams there; this attempt's handler ignores a dropped attempt.
    c.out.on('error', () => undefined);
    if (!c.out.destroyed) c.out.close(NGHTTP2_CANCEL);
    c.up.done(outcome);
  };

  // A retryable answer is retried while attempts are left, the body is
  // still in the replay buffer and the breaker admits it; otherwise it
  // goes to the client flagged URX, as Envoy does.
  const retryable = (status: number, grpcStatus: number): boolean => {
    const r = plan.retry;
    if (r === undefined || !(r.httpStatuses.has(status) || (grpcStatus >= 0 && r.grpcStatuses.has(grpcStatus)))) return false;
    if (overflow || retries >= r.attempts || !(plan.admitRetry?.() ?? true)) {
      t.flag('URX');
      return false;
    }
    return true;
  };

  const retryAfter = (host: string, code: string, outcome: Outcome | undefined): void => {
    retries++;
    tried.add(host);
    t.attemptFailed(host, code);
    dropAttempt(outcome);
    const backoff = plan.retry?.backoffMs ?? 0;
    if (backoff > 0) setTimeout(() => void attempt(), backoff);
    else void attempt();
  };

  // The route's backendRequest timeout for one attempt: before any answer
  // it is a 504 the route may retry (Envoy's per-try timeout); mid-answer
  // the stream is reset, as for the whole-request timeout.
  const attemptTimedOut = (c: NonNullable<typeof current>): void => {
    if (finished || current !== c) return;
    if (c.responded) {
      t.flag('UT');
      dropAttempt(undefined);
      if (!down.destroyed) down.close(NGHTTP2_CANCEL);
      return finish('KEDGE_REQUEST_TIMEOUT');
    }
    if (retryable(504, GRPC.DEADLINE_EXCEEDED)) return retryAfter(c.up.host, 'KEDGE_ATTEMPT_TIMEOUT', 'gateway-error');
    dropAttempt('gateway-error');
    answer({ status: 504, grpcStatus: GRPC.DEADLINE_EXCEEDED, code: 'KEDGE_REQUEST_TIMEOUT', message: `no answer within the backend request timeout of ${plan.attemptTimeoutMs} ms`, flag: 'UT' });
  };

  const attempt = async (): Promise<void> => {
    const up = await connect(tried);
    if (finished) {
      if (!isAnswer(up)) up.done(undefined);
      return;
    }
    if (isAnswer(up)) return answer(up);
    t.upstreamHost = up.host;
    let out: http2.ClientHttp2Stream;
    try {
      out = up.request(outHeaders, { endStream: false });
    } catch (err) {
      up.done('reset');
      t.attemptFailed(up.host, 'KEDGE_UPSTREAM_RESET');
      if (retries++ < 2) return void attempt();
      return answer({ status: 503, grpcStatus: GRPC.UNAVAILABLE, code: 'KEDGE_UPSTREAM_RESET', message: `cannot open a stream to ${up.host}: ${(err as Error).message}`, flag: 'UC' });
    }
    const c: NonNullable<typeof current> = { up, out, responded: false, timer: undefined };
    current = c;
    if (plan.attemptTimeoutMs !== undefined && plan.attemptTimeoutMs > 0) c.timer = setTimeout(() => attemptTimedOut(c), plan.attemptTimeoutMs);
    out.on('error', () => undefined);
    for (const b of replay) out.write(b);
    if (reqEnded) out.end();
    let status = 0;
    let grpcStatus = -1;
    out.on('response', (h, flags: number) => {
      status = Number(h[':status'] ?? 0);
      const trailersOnly = (flags & FLAG_END_STREAM) !== 0;
      if (trailersOnly && h['grpc-status'] !== undefined) grpcStatus = Number(h['grpc-status']);
      // A 503 a Kedge server proxy answered for an unreachable app never reached it: try elsewhere.
      if (h['x-kedge-proxy-error'] === 'KEDGE_TARGET_CONNECT_FAILED' && !overflow && retries < 2) {
        retries++;
        tried.add(up.host);
        t.attemptFailed(up.host, 'KEDGE_TARGET_CONNECT_FAILED');
        dropAttempt('connect-failure');
        void attempt();
        return;
      }
      // The HTTP status is known from the headers (a 503 with a body is
      // retried too: nothing went to the client yet); a gRPC status only
      // from a trailers-only answer.
      if (retryable(status, grpcStatus)) return retryAfter(up.host, 'KEDGE_UPSTREAM_RETRYABLE_STATUS', outcomeOf(status, grpcStatus));
      t.responseCode = status;
      if (grpcStatus >= 0) t.grpcStatus = grpcStatus;
      plan.onResponse?.(h);
      const rh: http2.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(h)) if (v !== undefined && !DROP.has(k) && !plan.responseRemove.has(k)) rh[k] = v;
      for (const [k, v] of Object.entries(plan.responseSet)) rh[k] = v;
      c.responded = true;
      if (down.destroyed) return;
      try {
        down.respond(rh, trailersOnly ? { endStream: true } : { waitForTrailers: true });
      } catch {
        return;
      }
      if (!trailersOnly) {
        down.once('wantTrailers', () => {
          try {
            down.sendTrailers(ownTrailers ?? trailers);
          } catch {
            // the stream went away
          }
        });
      }
      if (trailersOnly) {
        dropAttempt(outcomeOf(status, grpcStatus));
        finish(grpcStatus > 0 || status >= 500 ? 'KEDGE_UPSTREAM_ERROR' : '');
      }
    });
    let trailers: http2.OutgoingHttpHeaders = {};
    out.on('trailers', (h) => {
      trailers = {};
      for (const [k, v] of Object.entries(h)) if (v !== undefined && v !== null) trailers[k] = v as http2.OutgoingHttpHeaders[string];
      if (h['grpc-status'] !== undefined) {
        grpcStatus = Number(h['grpc-status']);
        t.grpcStatus = grpcStatus;
      }
    });
    out.on('data', (d: Buffer) => {
      t.responseBytes += d.length;
      if (plan.grpc) {
        const ok = resMessages.feed(d);
        if (resMessages.tooLong !== undefined) {
          if (ok > 0) down.write(d.subarray(0, ok));
          dropAttempt(undefined);
          return fail({ status: 502, grpcStatus: GRPC.RESOURCE_EXHAUSTED, code: 'KEDGE_GRPC_MESSAGE_TOO_LARGE', message: `the upstream ${up.host} sent a gRPC message of ${resMessages.tooLong} bytes, over the proxy's limit of ${GRPC_MAX_MESSAGE_BYTES}`, flag: 'UPE' });
        }
      }
      if (!down.write(d)) {
        out.pause();
        down.once('drain', () => out.resume());
      }
    });
    out.on('end', () => {
      if (current !== c) return;
      if (!down.destroyed) down.end();
    });
    out.on('close', () => {
      if (current !== c) return;
      if (c.timer !== undefined) clearTimeout(c.timer);
      const rst = out.rstCode ?? NGHTTP2_NO_ERROR;
      if (!c.responded) {
        // Refused or reset before any answer: never reached the app when refused.
        if (rst === NGHTTP2_REFUSED_STREAM && retries < 2 && !overflow) {
          retries++;
          t.attemptFailed(up.host, 'KEDGE_REFUSED_STREAM');
          dropAttempt(undefined);
          void attempt();
          return;
        }
        dropAttempt('reset');
        return answer({ status: 503, grpcStatus: GRPC.UNAVAILABLE, code: 'KEDGE_UPSTREAM_RESET', message: `the upstream ${up.host} reset the stream (code ${rst}) before answering`, flag: 'UC' });
      }
      current = undefined;
      up.done(rst === NGHTTP2_NO_ERROR ? outcomeOf(status, grpcStatus) : 'reset');
      if (rst !== NGHTTP2_NO_ERROR) {
        t.flag('UC');
        if (!down.destroyed) down.close(rst);
        return finish('KEDGE_UPSTREAM_RESET');
      }
      finish(grpcStatus > 0 || status >= 500 ? 'KEDGE_UPSTREAM_ERROR' : '');
    });
  };

  down.on('data', (d: Buffer) => {
    t.requestBytes += d.length;
    if (plan.grpc) {
      const ok = reqMessages.feed(d);
      if (reqMessages.tooLong !== undefined) {
        const c = current;
        if (ok > 0 && c !== undefined && !c.out.destroyed) c.out.write(d.subarray(0, ok));
        // The upstream sees a cancel; the client a clear status naming the limit.
        dropAttempt(undefined);
        for (const tap of taps) tap.cancel();
        return fail({ status: 413, grpcStatus: GRPC.RESOURCE_EXHAUSTED, code: 'KEDGE_GRPC_MESSAGE_TOO_LARGE', message: `a gRPC request message of ${reqMessages.tooLong} bytes is over the proxy's limit of ${GRPC_MAX_MESSAGE_BYTES}`, flag: 'DPE' });
      }
    }
    for (const tap of taps) tap.data(d);
    if (!overflow) {
      if (replayBytes + d.length > REPLAY_BYTES) {
        overflow = true;
        replay.length = 0;
      } else {
        replay.push(d);
        replayBytes += d.length;
      }
    }
    const c = current;
    if (c !== undefined && !c.out.destroyed && !c.out.write(d)) {
      down.pause();
      c.out.once('drain', () => down.resume());
    }
  });
  down.on('end', () => {
    reqEnded = true;
    for (const tap of taps) tap.end();
    const c = current;
    if (c !== undefined && !c.out.destroyed) c.out.end();
  });
  down.on('error', () => undefined);
  down.on('close', () => {
    if (finished) return;
    // The client cancelled (RST_STREAM) or went away: the server sees a cancel.
    t.flag('DC');
    for (const tap of taps) tap.cancel();
    dropAttempt(undefined);
    finish('KEDGE_DOWNSTREAM_CLOSED');
  });

  if (plan.answer !== undefined) return answer(plan.answer);
  for (const tap of taps) tap.start(outHeaders);
  if (plan.timeoutMs !== undefined && plan.timeoutMs > 0) {
    timer = setTimeout(() => {
      if (finished) return;
      const c = current;
      if (c !== undefined && c.responded) {
        // Mid-answer: a gRPC client gets DEADLINE_EXCEEDED from its own deadline; the stream is reset.
        t.flag('UT');
        dropAttempt(undefined);
        if (!down.destroyed) down.close(NGHTTP2_CANCEL);
        return finish('KEDGE_REQUEST_TIMEOUT');
      }
      dropAttempt(undefined);
      answer({ status: 504, grpcStatus: GRPC.DEADLINE_EXCEEDED, code: 'KEDGE_REQUEST_TIMEOUT', message: `no answer within ${plan.timeoutMs} ms`, flag: 'UT' });
    }, plan.timeoutMs);
  }
  const start = (): void => void attempt();
  if (plan.delayMs !== undefined && plan.delayMs > 0) setTimeout(start, plan.delayMs);
  else start();
}
