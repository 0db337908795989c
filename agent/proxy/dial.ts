// One connection attempt to an endpoint. Meshed: TCP and mTLS to the
// endpoint's inbound port with the service's SNI, the endpoint's SPIFFE ID
// checked on every handshake (resumed ones too), and the session kept for
// resumption. Plaintext (no Kedge proxy in front): plain TCP to the app's
// own port, with the same timeout and error codes, and nothing to verify.
import * as net from 'node:net';
import * as tls from 'node:tls';
import { formatHostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import { uriSans } from '../../proto/model/spiffe';
import { type IdentityContexts, type SessionCache, checkPeerIdentity } from './tls';
import type { EndpointView } from './types';

/** The client side of mesh TLS as it stands now; replaced as a whole on rotation. */
export interface ClientTls {
  contexts: IdentityContexts;
  sessions: SessionCache;
}

/**
 * Connects and verifies one endpoint within `timeoutMs`; `track` sees the
 * socket at once (for drain on close). Rejects with a KedgeError and never
 * leaves a socket open on failure.
 */
export function dialEndpoint(ep: EndpointView, sni: string, clientTls: ClientTls, timeoutMs: number, track: (s: net.Socket) => void, alpn?: readonly string[]): Promise<tls.TLSSocket> {
  const addr = formatHostPort({ host: ep.address, port: ep.mtlsPort });
  const sessionKey = `${addr}/${sni}`;
  const { contexts, sessions } = clientTls;
  const offered = sessions.get(sessionKey);
  return new Promise((resolve, reject) => {
    const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
      host: ep.address,
      port: ep.mtlsPort,
      servername: sni,
      secureContext: contexts.client,
      session: offered?.session,
      rejectUnauthorized: true,
      // The mesh names peers by SPIFFE ID, not DNS name; the check is done
      // below for every connection, because Node skips this callback on
      // resumed sessions (and reports no peer certificate for them).
      checkServerIdentity: () => undefined,
      // Honoured by tls.connect (passed to the TCP socket) though missing
      // from @types/node's ConnectionOptions.
      allowHalfOpen: true,
      // What the connection carries (http/1.1 for pooled HTTP/1.1); none
      // for opaque TCP, which a server proxy of any version splices.
      ...(alpn !== undefined ? { ALPNProtocols: [...alpn] } : {}),
    };
    const socket = tls.connect(options);
    track(socket);
    let tcpConnected = false;
    let verified = false;
    let pendingSession: Buffer | undefined;
    socket.once('connect', () => (tcpConnected = true));
    // TLS 1.3 tickets can arrive before the identity check; keep only
    // sessions with a verified endpoint.
    socket.on('session', (s: Buffer) => (verified ? sessions.set(sessionKey, { session: s, peer: ep.identity }) : (pendingSession = s)));
    const fail = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (err instanceof KedgeError) return reject(err);
      const [code, what] = tcpConnected ? ['KEDGE_UPSTREAM_TLS_FAILED', 'TLS handshake with'] : ['KEDGE_UPSTREAM_CONNECT_FAILED', 'cannot connect to'];
      reject(new KedgeError(code, `${what} endpoint ${addr} (${ep.workload}) failed: ${errorMessage(err)}`, { cause: err }));
    };
    const timer = setTimeout(
      () => fail(new KedgeError('KEDGE_CONNECT_TIMEOUT', `endpoint ${addr} (${ep.workload}) did not complete TCP and TLS setup within ${timeoutMs} ms; check that its port ${ep.mtlsPort} is reachable`)),
      timeoutMs,
    );
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      // A resumed session proves the server holds the session it was
      // issued with; its identity is the one verified back then.
      const presented = socket.isSessionReused() ? (offered ? [offered.peer] : []) : uriSans(socket.getPeerCertificate().subjectaltname);
      const mismatch = checkPeerIdentity(presented, ep.identity);
      if (mismatch) {
        sessions.delete(sessionKey);
        return fail(new KedgeError(mismatch.code, `endpoint ${addr} (${ep.workload}): ${mismatch.message}`));
      }
      clearTimeout(timer);
      verified = true;
      if (pendingSession !== undefined) sessions.set(sessionKey, { session: pendingSession, peer: ep.identity });
      // tls.connect keeps Nagle on whatever noDelay says (STYLE.md point 8):
      // a pooled request-response connection without this waits ~40 ms.
      socket.setNoDelay(true);
      // `fail` stays attached: until splice adds its handler an error must
      // not go unhandled, and destroying the socket is right either way.
      resolve(socket);
    });
  });
}

/**
 * Connects to a plaintext endpoint's `port` within `timeoutMs`: plain TCP,
 * so no SNI and no identity check (nothing authenticates the endpoint).
 * Same contract as dialEndpoint: `track` sees the socket at once, failures
 * reject with a KedgeError and leave no socket open.
 */
export function dialPlaintext(ep: EndpointView, port: number, timeoutMs: number, track: (s: net.Socket) => void): Promise<net.Socket> {
  const addr = formatHostPort({ host: ep.address, port });
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: ep.address, port, allowHalfOpen: true });
    track(socket);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (err instanceof KedgeError) return reject(err);
      reject(new KedgeError('KEDGE_UPSTREAM_CONNECT_FAILED', `cannot connect to plaintext endpoint ${addr} (${ep.workload}): ${errorMessage(err)}; check that its app listens on port ${port}`, { cause: err }));
    };
    const timer = setTimeout(
      () => fail(new KedgeError('KEDGE_CONNECT_TIMEOUT', `plaintext endpoint ${addr} (${ep.workload}) did not accept a TCP connection within ${timeoutMs} ms; check that its port ${port} is reachable from this host`)),
      timeoutMs,
    );
    // Stays attached after connect, as in dialEndpoint: until splice adds
    // its handler an error must not go unhandled.
    socket.once('error', fail);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}
