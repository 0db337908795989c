// Reading a connection's first bytes before deciding what it is (capture
// front, protocol detection), without losing any: the socket is left
// paused, and the caller hands the bytes on.
import type * as net from 'node:net';

/** What has been read of a connection before deciding. */
export interface Prefix {
  buf: Buffer;
  ended: boolean;
  timedOut: boolean;
}

/**
 * Reads on from `initial` until `enough` says so, the client ends, closes, or
 * `timeoutMs` passes; leaves the socket paused so no later byte is lost.
 */
export function readPrefix(socket: net.Socket, initial: Buffer, enough: (buf: Buffer) => boolean, timeoutMs: number): Promise<Prefix> {
  return new Promise((resolve) => {
    let buf = initial;
    let ended = false;
    const finish = (timedOut: boolean): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onClose);
      socket.pause();
      resolve({ buf, ended, timedOut });
    };
    const onData = (d: Buffer): void => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      if (enough(buf)) finish(false);
    };
    const onEnd = (): void => {
      ended = true;
      finish(false);
    };
    const onClose = (): void => finish(false);
    const timer = setTimeout(() => finish(true), timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onClose);
    // A socket paused by an earlier read does not flow again on its own.
    socket.resume();
  });
}
