// The four probes of a local app. Each resolves (never rejects) with a
// result and a one-line detail an operator can act on, within its timeout,
// and leaves nothing behind: sockets and HTTP/2 sessions are destroyed and
// exec'd process groups killed. An aborted signal ends a probe early.
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { errorMessage } from '../../proto/model/errors';
import type { ExecProbeConfig, GrpcProbeConfig, HttpProbeConfig, ProbeConfig, TcpProbeConfig } from './config';
import { HEALTH_CHECK_PATH, decodeHealthCheckResponse, encodeHealthCheckRequest } from './grpc-health';

/** The outcome of one probe run. */
export interface ProbeResult {
  ok: boolean;
  detail: string;
}

/**
 * Runs one probe; the HealthChecker takes one of these so its tests need no
 * sockets. It resolves within about `timeoutMs`, and soon after `signal` aborts.
 */
export type ProbeRunner = (probe: ProbeConfig, timeoutMs: number, signal?: AbortSignal) => Promise<ProbeResult>;

/** Exec output kept for the detail: the tail, where failures usually explain themselves. */
export const EXEC_OUTPUT_LIMIT = 1024;

// After the command exits, how long its output pipes may stay open.
const EXEC_PIPE_GRACE_MS = 50;

/** Runs `probe` with its timeout. */
export const runProbe: ProbeRunner = (probe, timeoutMs, signal) => {
  switch (probe.kind) {
    case 'http':
      return httpProbe(probe, timeoutMs, signal);
    case 'tcp':
      return tcpProbe(probe, timeoutMs, signal);
    case 'grpc':
      return grpcProbe(probe, timeoutMs, signal);
    case 'exec':
      return execProbe(probe, timeoutMs, signal);
  }
};

/**
 * Calls `body` with a `finish` that settles once, after running the cleanup
 * registered so far; a timer and the abort signal both finish with failure.
 */
function bounded(
  timeoutMs: number,
  signal: AbortSignal | undefined,
  onTimeout: () => string,
  body: (finish: (r: ProbeResult) => void, onCleanup: (fn: () => void) => void) => void,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const cleanups: Array<() => void> = [];
    let done = false;
    const finish = (r: ProbeResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', abort);
      for (const fn of cleanups) {
        try {
          fn();
        } catch {
          // Cleanup is best effort: the result is already decided.
        }
      }
      resolve(r);
    };
    const abort = (): void => finish({ ok: false, detail: 'probe cancelled' });
    const timer = setTimeout(() => finish({ ok: false, detail: onTimeout() }), timeoutMs);
    if (signal?.aborted) return abort();
    signal?.addEventListener('abort', abort, { once: true });
    try {
      body(finish, (fn) => (done ? fn() : cleanups.push(fn)));
    } catch (err) {
      finish({ ok: false, detail: errorMessage(err) });
    }
  });
}

function hostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Connection errors as the operator should read them: code first, then what to check. */
function connectError(err: unknown, target: string): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return `connection refused by ${target}: is the app listening on that port?`;
  return `cannot reach ${target}: ${code ?? errorMessage(err)}`;
}

/** GET the path; 2xx and 3xx are healthy. Redirects are not followed, as in Kubernetes' httpGet before it learnt to. */
export function httpProbe(p: HttpProbeConfig, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  const url = `http://${hostPort(p.host, p.port)}${p.path}`;
  return bounded(timeoutMs, signal, () => `GET ${url} timed out after ${timeoutMs}ms`, (finish, onCleanup) => {
    // agent: false and Connection: close: a probe must see a fresh
    // connection every time, not a pooled one that outlived the app.
    const req = http.request({
      host: p.host,
      port: p.port,
      path: p.path,
      method: 'GET',
      agent: false,
      headers: { 'user-agent': 'kedge-health-probe/1', accept: '*/*', connection: 'close' },
    });
    onCleanup(() => req.destroy());
    req.on('error', (err) => finish({ ok: false, detail: connectError(err, url) }));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      // Only the status matters; the body is not read.
      res.destroy();
      finish({ ok: status >= 200 && status < 400, detail: `GET ${url}: HTTP ${status}` });
    });
    req.end();
  });
}

/** Connect and close; connected is healthy. */
export function tcpProbe(p: TcpProbeConfig, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  const target = hostPort(p.host, p.port);
  return bounded(timeoutMs, signal, () => `TCP connect to ${target} timed out after ${timeoutMs}ms`, (finish, onCleanup) => {
    const sock = net.connect({ host: p.host, port: p.port });
    onCleanup(() => sock.destroy());
    sock.on('connect', () => finish({ ok: true, detail: `TCP connect to ${target} succeeded` }));
    sock.on('error', (err) => finish({ ok: false, detail: connectError(err, target) }));
  });
}

/**
 * grpc.health.v1.Health/Check with a deadline; only SERVING is healthy.
 *
 * Spoken over node:http2 on a connection of its own that is destroyed when
 * the probe ends, rather than through a grpc-js channel: a closed grpc-js
 * channel whose subchannel is in TRANSIENT_FAILURE goes on reconnecting with
 * backoff (grpc-js 1.14.7: five probes closed against a non-gRPC port made
 * five more connections in the next 5 s), and a long-lived channel would
 * answer from its reconnect backoff rather than from the app. Messages are
 * encoded by the protobuf definition in grpc-health.ts; the tests probe a
 * real grpc-js server.
 */
export function grpcProbe(p: GrpcProbeConfig, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  const target = hostPort(p.host, p.port);
  const what = `gRPC health of ${p.service === '' ? 'the server' : `service "${p.service}"`} at ${target}`;
  return bounded(timeoutMs, signal, () => `${what} timed out after ${timeoutMs}ms`, (finish, onCleanup) => {
    const fail = (detail: string): void => finish({ ok: false, detail: `${what}: ${detail}` });
    const session = http2.connect(`http://${target}`, { settings: { enablePush: false } });
    onCleanup(() => session.destroy());
    session.on('error', (err) => fail(describeHttp2Error(err)));
    const msg = encodeHealthCheckRequest({ service: p.service });
    const frame = Buffer.alloc(5 + msg.length);
    frame.writeUInt32BE(msg.length, 1); // byte 0: not compressed
    msg.copy(frame, 5);
    const req = session.request({
      ':method': 'POST',
      ':path': HEALTH_CHECK_PATH,
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': `${timeoutMs}m`,
      'user-agent': 'kedge-health-probe/1',
    });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    let body = Buffer.alloc(0);
    req.on('response', (h) => (headers = h));
    req.on('trailers', (t) => (trailers = t));
    req.on('data', (chunk: Buffer) => {
      // One small message is expected; anything large is not a health answer.
      if (body.length + chunk.length > MAX_GRPC_RESPONSE) return fail('response too large for a HealthCheckResponse');
      body = Buffer.concat([body, chunk]);
    });
    // A failed connection cancels the stream first; the session's error,
    // which says why, follows in the same turn.
    req.on('error', (err) => setImmediate(() => fail(describeHttp2Error(err))));
    req.on('end', () => finish(readHealthAnswer(what, timeoutMs, headers, trailers, body)));
    // After 'end' this is a no-op; without it the stream was reset (deferred
    // like 'error', so a session error that explains it wins).
    req.on('close', () => setImmediate(() => fail(`the call was reset (HTTP/2 error code ${req.rstCode})`)));
    req.end(frame);
  });
}

function describeHttp2Error(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return 'connection refused: is the app listening on that port?';
  if (code === 'ERR_HTTP2_ERROR' || code === 'ERR_HTTP2_SESSION_ERROR') return `not an HTTP/2 (gRPC) server: check the port (${errorMessage(err)})`;
  if (code === 'ERR_HTTP2_STREAM_CANCEL') return 'the connection failed';
  return `call failed: ${code ?? errorMessage(err)}`;
}

// A HealthCheckResponse is 2 bytes; a few KiB leaves room for padding and
// unknown fields a newer server might add.
const MAX_GRPC_RESPONSE = 4096;

/** Reads a finished Check call: HTTP status, grpc-status (trailers, or headers for trailers-only), then the message. */
function readHealthAnswer(what: string, timeoutMs: number, headers: http2.IncomingHttpHeaders, trailers: http2.IncomingHttpHeaders, body: Buffer): ProbeResult {
  const fail = (detail: string): ProbeResult => ({ ok: false, detail: `${what}: ${detail}` });
  const httpStatus = Number(headers[':status']);
  if (httpStatus !== 200) return fail(`not a gRPC answer (HTTP ${httpStatus || 'without a status'}): check the port`);
  const rawStatus = trailers['grpc-status'] ?? headers['grpc-status'];
  if (rawStatus === undefined) return fail('the answer has no grpc-status');
  const code = Number(rawStatus);
  if (code === grpc.status.UNIMPLEMENTED) return fail('the server does not implement grpc.health.v1.Health');
  if (code === grpc.status.NOT_FOUND) return fail('the server does not know the service (NOT_FOUND)');
  // The server saw the grpc-timeout pass: the same timeout as ours.
  if (code === grpc.status.DEADLINE_EXCEEDED) return { ok: false, detail: `${what} timed out after ${timeoutMs}ms` };
  if (code !== grpc.status.OK) {
    const raw = trailers['grpc-message'] ?? headers['grpc-message'];
    let message = typeof raw === 'string' ? raw : '';
    try {
      message = decodeURIComponent(message);
    } catch {
      // grpc-message is percent-encoded; a server that got it wrong still gets its text shown.
    }
    return fail(`${grpc.status[code] ?? `status ${code}`}${message ? `: ${message}` : ''}`);
  }
  if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) return fail('the answer is not one uncompressed HealthCheckResponse');
  let status: string;
  try {
    status = decodeHealthCheckResponse(body.subarray(5)).status;
  } catch (err) {
    return fail(`the answer is not a HealthCheckResponse: ${errorMessage(err)}`);
  }
  return { ok: status === 'SERVING', detail: `${what}: ${status}` };
}

/**
 * Runs the command in its own process group; exit 0 is healthy. On timeout
 * or abort the whole group is killed, so a shell script's children go too.
 */
export function execProbe(p: ExecProbeConfig, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  const [file, ...args] = p.command as [string, ...string[]];
  const shown = p.command.join(' ');
  let output = Buffer.alloc(0);
  const tail = (): string => {
    const s = output.toString('utf8').trim();
    return s === '' ? '' : `: ${s}`;
  };
  return bounded(timeoutMs, signal, () => `${shown}: timed out after ${timeoutMs}ms${tail()}`, (finish, onCleanup) => {
    const child = spawn(file, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    // Always kill the group when the probe ends: after a timeout that stops
    // the command; after a normal exit it stops anything it left running.
    onCleanup(() => {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // ESRCH: the group is already gone.
        }
      }
      child.stdout?.destroy();
      child.stderr?.destroy();
    });
    const collect = (chunk: Buffer): void => {
      output = Buffer.concat([output, chunk]);
      if (output.length > EXEC_OUTPUT_LIMIT) output = output.subarray(output.length - EXEC_OUTPUT_LIMIT);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.on('error', (err) => finish({ ok: false, detail: `cannot run ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}` }));
    const report = (code: number | null, sig: NodeJS.Signals | null): void => {
      if (code === 0) return finish({ ok: true, detail: `${shown}: exit 0${tail()}` });
      finish({ ok: false, detail: `${shown}: ${code === null ? `killed by ${sig}` : `exit ${code}`}${tail()}` });
    };
    // 'close' waits for the output pipes, so the detail has all of it; a
    // background process the command left holding them open must not turn
    // its exit status into a timeout, so the pipes get a short grace only.
    child.on('close', report);
    child.on('exit', (code, sig) => {
      const grace = setTimeout(() => report(code, sig), EXEC_PIPE_GRACE_MS);
      onCleanup(() => clearTimeout(grace));
    });
  });
}
