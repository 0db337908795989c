// Joins two sockets both ways: backpressure through pipe(), half-close
// through end() (both sockets must be allowHalfOpen), and an abort on either
// side destroys the other so no socket waits forever on a dead peer.
import type { Socket } from 'node:net';

/**
 * Pipes `a` and `b` into each other and calls `done` once, after both have
 * closed, with the first error either side raised.
 */
export function splice(a: Socket, b: Socket, done: (err: Error | undefined) => void): void {
  let firstError: Error | undefined;
  let open = 2;
  const fail = (err: Error): void => {
    firstError ??= err;
    a.destroy();
    b.destroy();
  };
  const closed = (self: Socket, other: Socket) => (): void => {
    // A socket that closes before reading its peer's EOF or flushing its own
    // end was aborted (reset, destroyed on drain); the other side would
    // otherwise stay half-open forever. A graceful close implies the other
    // side has already ended and finishes on its own.
    if (!self.readableEnded || !self.writableFinished) other.destroy();
    if (--open === 0) done(firstError);
  };
  a.on('error', fail);
  b.on('error', fail);
  a.once('close', closed(a, b));
  b.once('close', closed(b, a));
  a.pipe(b);
  b.pipe(a);
}
