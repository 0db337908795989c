// What a connection's first bytes say about it, without terminating
// anything: TLS or plaintext. Pure; the inbound capture front
// (capture-front.ts) feeds it what it has read so far, then reads the SNI
// with the ClientHello parser it shares with the east-west gateway
// (client-hello.ts).

/** Verdict on a connection's first bytes: TLS, plaintext, or too few bytes to tell. */
export type FirstBytes = 'tls' | 'plaintext' | 'more';

// TLS record type "handshake".
const HANDSHAKE = 0x16;
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
