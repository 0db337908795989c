// RequestMirror on HTTP/2 and gRPC ports: a copy of the request stream
// goes to the mirror service (its own pick, breaker and pooled session)
// and its answer is read and dropped. Fire and forget: the primary never
// waits for the mirror and never sees its failures. The copy is streamed
// as the request arrives; until the mirror's stream is open, and while it
// is slower than the primary, at most REPLAY_BYTES wait for it, past that
// the mirror is cancelled (logged), so a mirror cannot hold memory or
// slow the client. After the primary finished, the mirror has the route's
// timeout (or MIRROR_GRACE_MS) to finish; then it is cancelled.
import * as http2 from 'node:http2';
import type { MirrorFilter } from '../../../policy/routes/types';
import type { MeshDeps } from '../engine';
import { streamConnector } from './connect';
import { type H2Answer, type H2Upstream, REPLAY_BYTES, type StreamTap } from './stream';

/** How long a mirror may outlive its primary when the route sets no timeout. */
export const MIRROR_GRACE_MS = 10_000;

const { NGHTTP2_CANCEL } = http2.constants;
const isAnswer = (x: H2Upstream | H2Answer): x is H2Answer => 'flag' in x;

/** What a mirror of one request needs. */
export interface MirrorArgs {
  mirror: MirrorFilter;
  /** The request as the picker sees it. */
  request: { method: string; path: string; authority: string };
  fields: Record<string, unknown>;
  /** The route's request timeout, bounding the mirror after the primary finished. */
  timeoutMs: number | undefined;
}

/** A tap sending one request's copy to `args.mirror`. */
export function mirrorTap(deps: MeshDeps, args: MirrorArgs): StreamTap {
  const { mirror, fields } = args;
  const log = { ...fields, mirror: `${mirror.service}:${mirror.port}` };
  let out: http2.ClientHttp2Stream | undefined;
  let grace: NodeJS.Timeout | undefined;
  let waiting: Buffer[] = [];
  let waitingBytes = 0;
  let ended = false;
  let over = false;
  const releases: Array<() => void> = [];

  const stop = (reason: string | undefined): void => {
    if (over) return;
    over = true;
    waiting = [];
    if (grace !== undefined) clearTimeout(grace);
    if (reason !== undefined) deps.logger.warn({ ...log, reason }, 'request not mirrored');
    if (out !== undefined && !out.destroyed) out.close(NGHTTP2_CANCEL);
    if (out === undefined) for (const r of releases.splice(0)) r();
  };

  const send = (d: Buffer): void => {
    if (out === undefined) {
      waiting.push(d);
      waitingBytes += d.length;
    } else out.write(d);
    // The mirror is not keeping up (or not connected yet): never buffer more than a replay's worth for it.
    const queued = out === undefined ? waitingBytes : out.writableLength;
    if (queued > REPLAY_BYTES) stop(`the mirror fell ${queued} bytes behind the request (limit ${REPLAY_BYTES})`);
  };

  return {
    start(headers) {
      const view = deps.service(mirror.service);
      if (view === undefined) return stop('the mirror service is not in the mesh view');
      const connect = streamConnector(deps, { backend: { service: view, port: mirror.port }, request: args.request, fields: log, gone: () => over, log: { attemptFailed: () => undefined }, releases });
      void connect(new Set()).then((u) => {
        if (isAnswer(u)) return stop(`${u.code}: ${u.message}`);
        if (over) {
          u.done(undefined);
          for (const r of releases.splice(0)) r();
          return;
        }
        let s: http2.ClientHttp2Stream;
        try {
          s = u.request(headers, { endStream: false });
        } catch (err) {
          u.done('reset');
          return stop(`cannot open a stream: ${(err as Error).message}`);
        }
        out = s;
        s.on('error', () => undefined);
        let status = 0;
        s.on('response', (h) => (status = Number(h[':status'] ?? 0)));
        // The answer is dropped, but read, so the mirror's flow-control window keeps moving.
        s.resume();
        s.once('close', () => {
          over = true;
          if (grace !== undefined) clearTimeout(grace);
          for (const r of releases.splice(0)) r();
          const rst = s.rstCode ?? 0;
          u.done(rst !== 0 ? (status === 0 ? 'reset' : undefined) : status >= 500 ? 'http-5xx' : 'success');
        });
        for (const d of waiting) s.write(d);
        waiting = [];
        if (ended) s.end();
      });
    },
    data: (d) => {
      if (!over) send(d);
    },
    end() {
      ended = true;
      if (!over && out !== undefined) out.end();
    },
    cancel: () => stop(undefined),
    settle() {
      if (over) return;
      const ms = args.timeoutMs ?? MIRROR_GRACE_MS;
      grace = setTimeout(() => stop(`no answer from the mirror within ${ms} ms of the request's end`), ms);
      grace.unref();
    },
  };
}
