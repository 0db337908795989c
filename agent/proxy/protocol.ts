// Which stack serves a port, as linkerd2-proxy's outbound `Protocol`
// switch: the port's declared protocol selects it, and only a port whose
// protocol is unknown is detected from the client's first bytes (an
// HTTP/1 request line, the HTTP/2 connection preface, a TLS ClientHello),
// waiting at most a short timeout and falling back to opaque. Pure.

/** A service port's protocol as the mesh carries it. */
export type PortProtocol = 'tcp' | 'http' | 'http2' | 'grpc' | 'tls';

/** The stack that forwards a client connection. */
export type Stack = 'opaque' | 'tls' | 'http1' | 'http2';

/** What a port's protocol says: a stack, or detect from the first bytes. */
export type StackChoice = Stack | 'detect';

const BY_PROTOCOL: Readonly<Record<string, Stack>> = {
  tcp: 'opaque',
  tls: 'tls',
  http: 'http1',
  http2: 'http2',
  grpc: 'http2',
};

/**
 * The stack for a declared port protocol (case-insensitive, as Kubernetes
 * appProtocol and Consul meta spell it in either case); `detect` for an
 * empty or unknown one.
 *
 * Stacks the engine does not have yet are carried opaque (IMPLEMENTED):
 * the application's own connection goes end to end inside one mTLS
 * connection, balanced per connection.
 */
export function stackFor(protocol: string | undefined): StackChoice {
  const s = BY_PROTOCOL[(protocol ?? '').toLowerCase()];
  if (s === undefined) return 'detect';
  return IMPLEMENTED.has(s) ? s : 'opaque';
}

/** The stacks the engine has; the others fall back to opaque. */
export const IMPLEMENTED: ReadonlySet<Stack> = new Set<Stack>(['opaque', 'tls', 'http1', 'http2']);

/** How long detection waits for a client's first bytes before taking it for opaque (a server-speaks-first protocol). */
export const DETECT_TIMEOUT_MS = 200;

/** The HTTP/2 connection preface (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

// Methods a request line may start with: the registered ones a client
// sends to an origin (RFC 9110 §9, PATCH from RFC 5789, the WebDAV set
// clients use). A token method outside this list is taken for opaque.
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', 'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'REPORT', 'SEARCH'];
const LONGEST_METHOD = Math.max(...METHODS.map((m) => m.length));

/** What a connection's first bytes say: a stack, or too few bytes to tell yet. */
export type Detected = Stack | 'more';

/**
 * Classifies the first bytes of a connection whose port protocol is
 * unknown. `ended` says the client sent nothing more (EOF or the detection
 * timeout), so a partial match is decided as opaque.
 */
export function detectStack(buf: Uint8Array, ended: boolean): Detected {
  if (buf.length === 0) return ended ? 'opaque' : 'more';
  if (buf[0] === 0x16) {
    if (buf.length === 1) return ended ? 'opaque' : 'more';
    return buf[1] === 0x03 ? 'tls' : 'opaque';
  }
  // The preface begins with "PRI "; no HTTP/1 method is PRI.
  const n = Math.min(buf.length, H2_PREFACE.length);
  if (Buffer.from(buf.buffer, buf.byteOffset, n).equals(H2_PREFACE.subarray(0, n))) {
    if (n === H2_PREFACE.length) return 'http2';
    return ended ? 'opaque' : 'more';
  }
  const space = Buffer.from(buf.buffer, buf.byteOffset, Math.min(buf.length, LONGEST_METHOD + 1)).indexOf(0x20);
  if (space < 0) {
    if (buf.length > LONGEST_METHOD) return 'opaque';
    const head = Buffer.from(buf.buffer, buf.byteOffset, buf.length).toString('latin1');
    return !ended && METHODS.some((m) => m.startsWith(head)) ? 'more' : 'opaque';
  }
  const method = Buffer.from(buf.buffer, buf.byteOffset, space).toString('latin1');
  return METHODS.includes(method) ? 'http1' : 'opaque';
}
