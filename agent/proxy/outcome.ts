// What a forwarded connection says about its endpoint, for passive outlier
// detection. A completed mTLS handshake proves only that the endpoint's
// proxy is up: a Kedge proxy accepts mesh connections even when the app
// behind it is dead, connects to the app only after the handshake, and when
// that fails closes the TLS connection at once without a byte. So an
// endpoint counts as working once it has sent data (or held a connection
// open a while before closing cleanly), and as failing when it resets, or
// closes without a byte soon after the handshake while the client was still
// there. A plaintext endpoint (plain TCP straight to its app) is judged by
// the same rules: its connect proves only that something listens.
import type { Socket } from 'node:net';
import type { Outcome } from './balancer/outlier';

/**
 * A close without a byte within this long of the handshake is taken for the
 * app behind a live proxy being dead. The server proxy gives up on its app
 * in well under this (a refused local connect takes microseconds); a healthy
 * app that closes a request without answering this fast is rare enough, and
 * costs only one count towards ejection.
 */
export const DEAD_APP_WINDOW_MS = 1_000;

/** How the upstream side of a forwarded connection ended, before it sent any byte. */
export interface SilentEnd {
  /** 'error': reset or any socket error; 'end': a clean EOF; 'close': closed by us (the client went away). */
  how: 'error' | 'end' | 'close';
  /** The client had half-closed or gone before the upstream ended. */
  clientEndedFirst: boolean;
  /** From the handshake to the end. */
  elapsedMs: number;
}

/**
 * The verdict on an endpoint that ended a connection without sending a byte
 * (an endpoint that sent data has already counted as a success), or
 * undefined when the connection says nothing about it:
 * - reset or error: 'reset';
 * - a clean close while the client was still there: 'reset' within
 *   DEAD_APP_WINDOW_MS (the app behind the proxy is dead), 'success' after
 *   (something held the connection, then closed it properly);
 * - a close that followed the client's own (a client that sent a request
 *   and half-closed, or one that connected and left): no verdict, since the
 *   endpoint only followed the client.
 */
export function silentEndOutcome(e: SilentEnd): Outcome | undefined {
  if (e.how === 'error') return 'reset';
  if (e.how === 'close' || e.clientEndedFirst) return undefined;
  return e.elapsedMs < DEAD_APP_WINDOW_MS ? 'reset' : 'success';
}

/**
 * Watches a spliced connection and calls `report` at most once: 'success'
 * at the upstream's first byte, or the verdict of silentEndOutcome when it
 * ends first. Listeners only: no timer, and the 'data' listener goes after
 * the first chunk (pipe() already made the stream flow, so this takes
 * nothing away from the client).
 */
export function watchOutcome(upstream: Socket, client: Socket, startedAt: number, now: () => number, report: (outcome: Outcome) => void): void {
  let done = false;
  let clientEnded = false;
  const finish = (outcome: Outcome | undefined): void => {
    if (done) return;
    done = true;
    upstream.off('data', onData);
    upstream.off('end', onEnd);
    upstream.off('error', onError);
    upstream.off('close', onClose);
    client.off('end', onClientEnd);
    client.off('close', onClientEnd);
    if (outcome !== undefined) report(outcome);
  };
  const silent = (how: SilentEnd['how']): void => finish(silentEndOutcome({ how, clientEndedFirst: clientEnded, elapsedMs: now() - startedAt }));
  const onData = (): void => finish('success');
  const onEnd = (): void => silent('end');
  const onError = (): void => silent('error');
  const onClose = (): void => silent('close');
  const onClientEnd = (): void => {
    clientEnded = true;
  };
  upstream.on('data', onData);
  upstream.on('end', onEnd);
  upstream.on('error', onError);
  upstream.on('close', onClose);
  client.on('end', onClientEnd);
  client.on('close', onClientEnd);
}
