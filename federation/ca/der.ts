// A minimal, bounds-checked DER reader and PEM helpers.
//
// The CA needs the exact bytes that were signed (a CSR's
// certificationRequestInfo, a CA certificate's subject) rather than a
// re-encoding of them: re-encoding a lenient parse can produce different
// bytes, which would either fail a valid signature or, worse, make the CA
// certify something other than what it verified. Every read checks its
// bounds and throws DerError, which callers turn into their own KedgeError.

/** A malformed DER structure; callers wrap it in a KedgeError with context. */
export class DerError extends Error {
  override readonly name = 'DerError';
}

/** One tag-length-value element: `raw` is the whole element, `content` its value bytes. */
export interface Tlv {
  /** The identifier octet (class, constructed bit and tag number < 31). */
  tag: number;
  raw: Buffer;
  content: Buffer;
}

/** Identifier octets Kedge reads. */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  SEQUENCE: 0x30,
  SET: 0x31,
  CONTEXT_0: 0xa0,
  CONTEXT_3: 0xa3,
  /** [6] IMPLICIT IA5String: uniformResourceIdentifier in GeneralName. */
  GN_URI: 0x86,
} as const;

/** Reads the element starting at `offset`; it must end within `buf`. */
export function readTlv(buf: Buffer, offset = 0): Tlv {
  if (offset + 2 > buf.length) throw new DerError('truncated element header');
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte tags are not supported');
  let len = buf[offset + 1] as number;
  let header = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    // Four length octets already allow 4 GB; nothing Kedge reads is near that.
    if (n === 0) throw new DerError('indefinite length is not DER');
    if (n > 4) throw new DerError('length field too long');
    if (offset + 2 + n > buf.length) throw new DerError('truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[offset + 2 + i] as number);
    if (len < 0x80 || (n > 1 && buf[offset + 2] === 0)) throw new DerError('non-minimal length is not DER');
    header += n;
  }
  const end = offset + header + len;
  if (end > buf.length) throw new DerError('element runs past the end of its container');
  return { tag, raw: buf.subarray(offset, end), content: buf.subarray(offset + header, end) };
}

/** Reads `buf` as exactly one element of the expected tag, with nothing after it. */
export function readOnly(buf: Buffer, tag: number, what: string): Tlv {
  const t = readTlv(buf, 0);
  if (t.raw.length !== buf.length) throw new DerError(`trailing bytes after ${what}`);
  return expectTag(t, tag, what);
}

/** Throws unless `t` has the given tag. */
export function expectTag(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined) throw new DerError(`missing ${what}`);
  if (t.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${t.tag.toString(16)}`);
  return t;
}

/** The elements inside a constructed element, in order. */
export function children(t: Tlv): Tlv[] {
  if ((t.tag & 0x20) === 0) throw new DerError(`tag 0x${t.tag.toString(16)} is not constructed`);
  const out: Tlv[] = [];
  let off = 0;
  while (off < t.content.length) {
    const c = readTlv(t.content, off);
    out.push(c);
    off += c.raw.length;
  }
  return out;
}

/** Decodes an OBJECT IDENTIFIER element to dotted form. */
export function readOid(t: Tlv | undefined, what: string): string {
  const c = expectTag(t, TAG.OID, what).content;
  if (c.length === 0) throw new DerError(`${what}: empty OID`);
  const arcs: number[] = [];
  let v = 0;
  for (let i = 0; i < c.length; i++) {
    const b = c[i] as number;
    v = v * 128 + (b & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 128) throw new DerError(`${what}: OID arc too large`);
    if ((b & 0x80) === 0) {
      arcs.push(v);
      v = 0;
    } else if (i === c.length - 1) {
      throw new DerError(`${what}: truncated OID`);
    }
  }
  const first = arcs.shift() as number;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...arcs].join('.');
}

/** The bytes of a BIT STRING with no unused bits (keys, signatures). */
export function bitStringBytes(t: Tlv | undefined, what: string): Buffer {
  const c = expectTag(t, TAG.BIT_STRING, what).content;
  if (c.length === 0 || c[0] !== 0) throw new DerError(`${what}: BIT STRING with unused bits`);
  return c.subarray(1);
}

/** Encodes a definite length. */
function encodeLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Encodes one element from its tag and content. */
export function encodeTlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(content.length), content]);
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\s]*?)-----END \1-----/g;

/** The DER bodies of every PEM block with the given label, in order. */
export function pemBlocks(pem: string, label: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of pem.matchAll(PEM_BLOCK)) {
    if (m[1] === label) out.push(Buffer.from((m[2] as string).replace(/\s+/g, ''), 'base64'));
  }
  return out;
}

/** PEM-encodes DER with 64-character lines, as OpenSSL writes it. */
export function toPem(der: Buffer, label: string): string {
  const b64 = der.toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n';
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}
