// An in-memory pino logger for tests that run proxies in process and assert
// on what they logged.
import { Writable } from 'node:stream';
import pino from 'pino';
import type { Logger } from '../../proto/model/log';

/** One parsed log line. */
export type LogLine = Record<string, unknown> & { msg: string; level: number };

/** A logger at info level whose lines are parsed into `lines` as they are written. */
export function logCapture(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}
