import pino from 'pino';

/** The logger type inner code takes; created once at the process edge. */
export type Logger = pino.Logger;

/** JSON-lines logger on stderr, level from KEDGE_LOG_LEVEL (default info). */
export function createLogger(name: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ name, level: process.env.KEDGE_LOG_LEVEL ?? 'info', base: { pid: process.pid, ...bindings } }, pino.destination(2));
}

/** A logger that drops everything, for pure-code tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
