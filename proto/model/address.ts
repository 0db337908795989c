import { isIP } from 'node:net';
import { KedgeError } from './errors';

/** A host and port to listen on or dial. */
export interface HostPort {
  host: string;
  port: number;
}

/** Parses `host:port` or `[v6]:port`; names the field in the error. */
export function parseHostPort(s: string, field: string): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new KedgeError('KEDGE_BAD_ADDRESS', `${field}: invalid address ${JSON.stringify(s)}; expected HOST:PORT such as 127.0.0.1:15012`);
  }
  return { host: m[1], port };
}

export function formatHostPort(hp: HostPort): string {
  return isIP(hp.host) === 6 ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}
