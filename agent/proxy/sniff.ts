// What a connection's first bytes say about it, without terminating
// anything: TLS or plaintext, and the SNI of a TLS ClientHello. Pure; the
// inbound capture front (capture-front.ts) feeds it what it has read so far.
// The east-west gateway can use the same ClientHello parser to route on SNI.

/** Verdict on a connection's first bytes: TLS, plaintext, or too few bytes to tell. */
export type FirstBytes = 'tls' | 'plaintext' | 'more';

// TLS record type "handshake".
const HANDSHAKE = 0x16;
// Handshake message type "client_hello".
const CLIENT_HELLO = 0x01;
// Every TLS (and SSL 3.0) record carries major version 3, and clients send
// 3,1 in the ClientHello record even for TLS 1.3 (RFC 8446 §5.1); SSL 2 and
// plaintext protocols never start with 0x16 0x03 (0x16 is a control
// character no text protocol opens with).
const TLS_MAJOR = 0x03;

/** Classifies a connection from its first bytes: a TLS ClientHello record starts 0x16 0x03. */
export function classifyFirstBytes(buf: Uint8Array): FirstBytes {
  if (buf.length === 0) return 'more';
  if (buf[0] !== HANDSHAKE) return 'plaintext';
  if (buf.length === 1) return 'more';
  return buf[1] === TLS_MAJOR ? 'tls' : 'plaintext';
}

/** A ClientHello read whole (with its SNI, if any), not yet whole, or not a ClientHello at all. */
export type ClientHelloResult = { state: 'complete'; sni: string | undefined } | { state: 'more' } | { state: 'invalid'; reason: string };

/**
 * Largest ClientHello accepted, as handshake-message length. Real ones are
 * under 2 KiB (about 1.8 KiB with a post-quantum key share); anything near
 * this bound is not worth buffering before deciding.
 */
export const MAX_CLIENT_HELLO = 16 * 1024;

/**
 * Parses the ClientHello at the start of `buf` (TLS records, possibly
 * several: a handshake message may be split across records) and returns
 * its server_name. Never throws.
 */
export function parseClientHello(buf: Uint8Array): ClientHelloResult {
  const hs = handshakeBytes(buf);
  if (typeof hs === 'string') return hs === 'more' ? { state: 'more' } : { state: 'invalid', reason: hs };
  return readClientHello(hs);
}

// Joins record fragments until the handshake message's own length is
// covered; 'more' when it is not yet, or a reason when the records are not
// a handshake.
function handshakeBytes(buf: Uint8Array): Uint8Array | string {
  const parts: Uint8Array[] = [];
  let have = 0;
  let need = -1;
  let at = 0;
  for (;;) {
    if (buf.length < at + 5) return 'more';
    if (buf[at] !== HANDSHAKE || buf[at + 1] !== TLS_MAJOR) return 'not a TLS handshake record';
    const len = u16(buf, at + 3);
    // A ClientHello travels in plaintext records: 1 to 2^14 bytes (RFC 8446 §5.1).
    if (len === 0 || len > 16384) return `TLS record length ${len} out of range`;
    if (buf.length < at + 5 + len) return 'more';
    const frag = buf.subarray(at + 5, at + 5 + len);
    parts.push(frag);
    have += frag.length;
    at += 5 + len;
    if (need < 0 && have >= 4) {
      const first = parts.length === 1 ? frag : concat(parts, have);
      if (first[0] !== CLIENT_HELLO) return `handshake message type ${first[0]} is not a ClientHello`;
      need = 4 + ((first[1]! << 16) | u16(first, 2));
      if (need > 4 + MAX_CLIENT_HELLO) return `ClientHello of ${need - 4} bytes exceeds ${MAX_CLIENT_HELLO}`;
    }
    if (need >= 0 && have >= need) return (parts.length === 1 ? frag : concat(parts, have)).subarray(0, need);
  }
}

// Walks a whole ClientHello message (header included) to the server_name
// extension (RFC 6066 §3).
function readClientHello(m: Uint8Array): ClientHelloResult {
  const bad = (reason: string): ClientHelloResult => ({ state: 'invalid', reason: `malformed ClientHello: ${reason}` });
  let p = 4 + 2 + 32; // header, legacy_version, random
  if (m.length < p + 1) return bad('truncated before session_id');
  p += 1 + m[p]!;
  if (m.length < p + 2) return bad('truncated before cipher_suites');
  p += 2 + u16(m, p);
  if (m.length < p + 1) return bad('truncated before compression_methods');
  p += 1 + m[p]!;
  if (p > m.length) return bad('truncated in compression_methods');
  if (p === m.length) return { state: 'complete', sni: undefined }; // no extensions (SSL 3.0 style)
  if (m.length < p + 2) return bad('truncated extensions length');
  const end = p + 2 + u16(m, p);
  if (end > m.length) return bad('extensions overrun the message');
  p += 2;
  while (p + 4 <= end) {
    const type = u16(m, p);
    const len = u16(m, p + 2);
    p += 4;
    if (p + len > end) return bad('extension overruns the extensions');
    if (type === 0) return serverName(m.subarray(p, p + len));
    p += len;
  }
  return { state: 'complete', sni: undefined };
}

function serverName(ext: Uint8Array): ClientHelloResult {
  // server_name_list: u16 length, then entries of u8 type, u16 length, name.
  let p = 2;
  const end = Math.min(ext.length, 2 + (ext.length >= 2 ? u16(ext, 0) : 0));
  while (p + 3 <= end) {
    const type = ext[p]!;
    const len = u16(ext, p + 1);
    p += 3;
    if (p + len > end) break;
    // host_name (0) is the only type defined; names are ASCII (A-labels).
    if (type === 0) return { state: 'complete', sni: Buffer.from(ext.subarray(p, p + len)).toString('latin1') };
    p += len;
  }
  return { state: 'invalid', reason: 'malformed ClientHello: server_name extension without a host_name' };
}

function u16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  return Buffer.concat(parts, total);
}
