import { KedgeError } from './errors';

/**
 * The SNI a client proxy sends to a server proxy (or an east-west gateway):
 * `outbound_.<port>_._.<hostname>`, the form Istio uses, so a gateway can
 * route on it without terminating TLS. `port` is the service port.
 */
export function buildSni(port: number, hostname: string): string {
  return `outbound_.${port}_._.${hostname}`;
}

/** A parsed mesh SNI. */
export interface MeshSni {
  port: number;
  hostname: string;
}

const SNI = /^outbound_\.(\d{1,5})_\._\.(.+)$/;

/** Parses a mesh SNI; throws KEDGE_BAD_SNI when it is not one. */
export function parseSni(sni: string | undefined | false | null): MeshSni {
  const m = sni ? SNI.exec(sni) : null;
  const port = m ? Number(m[1]) : NaN;
  if (!m || !m[2] || !(port >= 1 && port <= 65535)) {
    throw new KedgeError('KEDGE_BAD_SNI', `TLS server name ${JSON.stringify(sni || '')} is not a mesh name; expected outbound_.<port>_._.<service hostname>`);
  }
  return { port, hostname: m[2] };
}
