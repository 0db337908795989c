// Reads the SNI of a TLS ClientHello without terminating TLS. The east-west
// gateway routes a connection on the server name and then passes every
// byte, the ClientHello included, through untouched; the inbound capture
// front (capture-front.ts) tells mesh TLS from an app's own TLS by it.
//
// Pure and allocation-light: the common case (the whole ClientHello in one
// record in one TCP segment) is parsed in place and allocates only the
// returned name. A ClientHello split across TLS records is stitched into one
// buffer, and bytes arriving in several TCP segments are accumulated by
// ClientHelloReader, both rare.
//
// Wire format: RFC 8446 §5.1 (records), §4.1.2 (ClientHello), RFC 6066 §3
// (server_name). Every length is checked before it is used, so no input,
// however malformed, can make the parser read out of bounds or throw.

/** What the first bytes of a connection say: its SNI, not enough bytes yet, a ClientHello without SNI, or not a ClientHello at all. */
export type ClientHelloResult =
  | { kind: 'sni'; name: string }
  | { kind: 'need-more' }
  | { kind: 'no-sni' }
  | { kind: 'invalid'; reason: string; tooLarge?: true };

/**
 * Largest ClientHello accepted, as handshake-message length. Real ones are
 * under 2 KiB (about 1.8 KiB with a post-quantum key share); RFC 8446 allows
 * up to 16 MiB, which no gateway should buffer before deciding anything.
 */
export const MAX_CLIENT_HELLO = 16 * 1024;

/**
 * Most TLS records one ClientHello may span. Clients send it in one or two
 * records (a record carries at most 16 KiB); the bound keeps a peer that
 * sends one-byte records from making the gateway buffer five header bytes
 * per payload byte.
 */
export const MAX_CLIENT_HELLO_RECORDS = 64;

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
// Every TLS record carries major version 3 (SSL 3.0 to TLS 1.3: clients
// send 3,1 or 3,3 even for TLS 1.3).
const TLS_MAJOR = 0x03;
const MAX_MINOR = 0x04;
const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
// A plaintext record carries at most 2^14 bytes (RFC 8446 §5.1).
const MAX_RECORD = 16384;
const EXT_SERVER_NAME = 0x0000;
const NAME_TYPE_HOST = 0x00;
// A DNS name is at most 253 characters; the wire allows 2^16, names longer
// than a DNS name are not names.
const MAX_NAME = 255;

const NEED_MORE: ClientHelloResult = Object.freeze({ kind: 'need-more' });
const NO_SNI: ClientHelloResult = Object.freeze({ kind: 'no-sni' });

function invalid(reason: string): ClientHelloResult {
  return { kind: 'invalid', reason };
}

function u16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

/**
 * Parses the ClientHello at the start of `buf`: TLS handshake records, the
 * first of which starts at offset 0. Returns `need-more` while every byte
 * seen so far is consistent with a ClientHello still arriving, and
 * `invalid` as soon as one is not (garbage is rejected on its first byte, a
 * huge ClientHello on its handshake header). Never throws.
 */
export function parseClientHello(buf: Uint8Array): ClientHelloResult {
  let at = 0;
  let records = 0;
  // The handshake message's length once its 4-byte header has been seen
  // (the header itself may be split across records), -1 before.
  let messageLength = -1;
  // Handshake bytes seen so far, over all records.
  let have = 0;
  for (;;) {
    // Check the header bytes that have arrived, so garbage is refused on
    // its first byte rather than after a timeout.
    const avail = buf.length - at;
    if (avail >= 1 && buf[at] !== RECORD_HANDSHAKE) return invalid(records === 0 ? `not a TLS handshake record (first byte 0x${hex(buf[at]!)})` : `record ${records + 1} of the ClientHello is not a handshake record`);
    if (avail >= 2 && buf[at + 1] !== TLS_MAJOR) return invalid(`not a TLS record (version major ${buf[at + 1]})`);
    if (avail >= 3 && buf[at + 2]! > MAX_MINOR) return invalid(`not a TLS record (version minor ${buf[at + 2]})`);
    if (avail < RECORD_HEADER) return NEED_MORE;
    const len = u16(buf, at + 3);
    if (len === 0 || len > MAX_RECORD) return invalid(`TLS record length ${len} out of range 1..${MAX_RECORD}`);
    if (++records > MAX_CLIENT_HELLO_RECORDS) return invalid(`ClientHello spread over more than ${MAX_CLIENT_HELLO_RECORDS} TLS records`);
    const start = at + RECORD_HEADER;
    const arrived = Math.min(len, buf.length - start);
    // The header can be judged as soon as its 4 bytes have arrived, even
    // when the rest of the record has not.
    if (messageLength < 0 && have + arrived >= HANDSHAKE_HEADER) {
      const header = handshakeHeader(buf, have, start);
      if (header[0] !== HANDSHAKE_CLIENT_HELLO) return invalid(`handshake message type ${header[0]} is not a ClientHello`);
      messageLength = (header[1]! << 16) | (header[2]! << 8) | header[3]!;
      if (messageLength > MAX_CLIENT_HELLO) return { kind: 'invalid', reason: `ClientHello of ${messageLength} bytes exceeds the ${MAX_CLIENT_HELLO}-byte limit`, tooLarge: true };
    } else if (messageLength < 0 && arrived > 0 && have === 0 && buf[start] !== HANDSHAKE_CLIENT_HELLO) {
      return invalid(`handshake message type ${buf[start]} is not a ClientHello`);
    }
    if (arrived < len) return NEED_MORE;
    have += len;
    at = start + len;
    if (messageLength >= 0 && have >= HANDSHAKE_HEADER + messageLength) break;
  }
  const total = HANDSHAKE_HEADER + messageLength;
  if (records === 1) return readClientHello(buf, RECORD_HEADER, RECORD_HEADER + total);
  // Rare: the message spans records; join the fragments without headers.
  const joined = new Uint8Array(total);
  let filled = 0;
  for (let p = 0; filled < total; ) {
    const len = u16(buf, p + 3);
    const take = Math.min(len, total - filled);
    joined.set(buf.subarray(p + RECORD_HEADER, p + RECORD_HEADER + take), filled);
    filled += take;
    p += RECORD_HEADER + len;
  }
  return readClientHello(joined, 0, total);
}

// The 4 handshake header bytes, the first `have` of which came in earlier
// records (always few, since the header is judged as soon as it is whole).
function handshakeHeader(buf: Uint8Array, have: number, start: number): number[] {
  const out: number[] = [];
  if (have > 0) {
    // Walk the earlier records again; at most 3 bytes precede.
    for (let p = 0; out.length < have; ) {
      const len = u16(buf, p + 3);
      for (let i = 0; i < len && out.length < have; i++) out.push(buf[p + RECORD_HEADER + i]!);
      p += RECORD_HEADER + len;
    }
  }
  for (let i = 0; out.length < HANDSHAKE_HEADER; i++) out.push(buf[start + i]!);
  return out;
}

// Walks a whole ClientHello message, buf[from, to) with its 4-byte header,
// to the server_name extension.
function readClientHello(buf: Uint8Array, from: number, to: number): ClientHelloResult {
  const bad = (what: string): ClientHelloResult => invalid(`malformed ClientHello: ${what}`);
  let p = from + HANDSHAKE_HEADER;
  if (to - p < 2 + 32 + 1) return bad('too short for version, random and session id');
  if (buf[p] !== TLS_MAJOR) return bad(`legacy_version ${buf[p]}.${buf[p + 1]}`);
  p += 2 + 32;
  const sessionId = buf[p]!;
  if (sessionId > 32) return bad(`session id of ${sessionId} bytes`);
  p += 1 + sessionId;
  if (to - p < 2) return bad('truncated before cipher_suites');
  const suites = u16(buf, p);
  if (suites === 0 || suites % 2 !== 0) return bad(`cipher_suites length ${suites}`);
  p += 2 + suites;
  if (to - p < 1) return bad('truncated before compression_methods');
  const compression = buf[p]!;
  if (compression === 0) return bad('no compression method');
  p += 1 + compression;
  if (p > to) return bad('truncated in compression_methods');
  // No extensions at all (allowed before TLS 1.3): no SNI.
  if (p === to) return NO_SNI;
  if (to - p < 2) return bad('truncated extensions length');
  const end = p + 2 + u16(buf, p);
  if (end !== to) return bad(end > to ? 'extensions overrun the message' : 'bytes after the extensions');
  p += 2;
  let name: ClientHelloResult | undefined;
  while (p < end) {
    if (end - p < 4) return bad('truncated extension header');
    const type = u16(buf, p);
    const len = u16(buf, p + 2);
    p += 4;
    if (len > end - p) return bad(`extension ${type} overruns the extensions`);
    if (type === EXT_SERVER_NAME) {
      // RFC 8446 §4.2: at most one extension of each type.
      if (name !== undefined) return bad('two server_name extensions');
      name = serverName(buf, p, p + len);
      if (name.kind === 'invalid') return name;
    }
    p += len;
  }
  return name ?? NO_SNI;
}

// server_name extension data, buf[from, to): a u16-length list of entries
// (u8 name type, u16 length, name). The first host_name is the SNI.
function serverName(buf: Uint8Array, from: number, to: number): ClientHelloResult {
  const bad = (what: string): ClientHelloResult => invalid(`malformed server_name: ${what}`);
  if (to - from < 2) return bad('no server name list');
  if (from + 2 + u16(buf, from) !== to) return bad('list length does not match the extension');
  let p = from + 2;
  let found: ClientHelloResult | undefined;
  while (p < to) {
    if (to - p < 3) return bad('truncated entry');
    const type = buf[p]!;
    const len = u16(buf, p + 1);
    p += 3;
    if (len > to - p) return bad('entry overruns the list');
    if (type === NAME_TYPE_HOST) {
      if (found !== undefined) return bad('two host names');
      found = hostName(buf, p, p + len);
      if (found.kind === 'invalid') return found;
    }
    p += len;
  }
  // A list with no host_name entry names nothing this gateway can route on.
  return found ?? NO_SNI;
}

// A host name is printable ASCII (RFC 6066: internationalised names travel
// as A-labels); anything else is not a name a mesh could have issued.
function hostName(buf: Uint8Array, from: number, to: number): ClientHelloResult {
  const len = to - from;
  if (len === 0 || len > MAX_NAME) return invalid(`malformed server_name: host name of ${len} bytes`);
  for (let i = from; i < to; i++) {
    const c = buf[i]!;
    if (c < 0x21 || c > 0x7e) return invalid(`malformed server_name: byte 0x${hex(c)} in the host name`);
  }
  return { kind: 'sni', name: Buffer.from(buf.buffer, buf.byteOffset + from, len).toString('latin1') };
}

function hex(b: number): string {
  return b.toString(16).padStart(2, '0');
}

/**
 * Accumulates a connection's first bytes until parseClientHello decides,
 * keeping every byte so the caller can forward them untouched. The first
 * chunk is kept by reference; later chunks are copied into one growing
 * buffer (capacity doubles, so n small chunks cost O(n) copies overall).
 */
export class ClientHelloReader {
  private buf: Buffer | undefined;
  private used = 0;
  private owned = false;
  private result: ClientHelloResult = NEED_MORE;

  /** Adds `chunk` and returns the verdict on everything read so far; once decided, further chunks are only accumulated. */
  push(chunk: Buffer): ClientHelloResult {
    this.append(chunk);
    if (this.result.kind === 'need-more') this.result = parseClientHello(this.bytes());
    return this.result;
  }

  /** The verdict so far. */
  get state(): ClientHelloResult {
    return this.result;
  }

  /** Every byte read so far (a view, not a copy). */
  bytes(): Buffer {
    return this.buf === undefined ? Buffer.alloc(0) : this.buf.subarray(0, this.used);
  }

  private append(chunk: Buffer): void {
    if (this.buf === undefined) {
      this.buf = chunk;
      this.used = chunk.length;
      return;
    }
    const need = this.used + chunk.length;
    // The first chunk is the caller's; the first append copies it into a
    // buffer of our own, with room to grow.
    if (!this.owned || need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * this.used, 2048));
      this.buf.copy(grown, 0, 0, this.used);
      this.buf = grown;
      this.owned = true;
    }
    chunk.copy(this.buf, this.used);
    this.used = need;
  }
}
