// DNS messages in and out, as pure functions over buffers. Queries are
// checked here before anything else looks at them, so a garbled or hostile
// message becomes a FORMERR/NOTIMP answer or is dropped, never an exception.
// Responses are written by hand: the question is echoed byte for byte (case
// and all, which some resolvers check), answers point back at it.
import * as dnsPacket from 'dns-packet';
import { isIP } from 'node:net';

/** Response codes the proxy sends itself (RFC 1035 §4.1.1). */
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** The largest UDP query or response without EDNS (RFC 1035 §4.2.1). */
export const PLAIN_UDP_MAX = 512;
/** The largest query accepted on either transport; real queries are far smaller. */
export const MAX_QUERY_BYTES = 4096;
/** The UDP payload size the proxy advertises in EDNS (the 2020 DNS flag day value). */
export const EDNS_UDP_SIZE = 1232;

const HEADER_BYTES = 12;
const QR = 0x8000;
const OPCODE_MASK = 0x7800;
const AA = 0x0400;
const TC = 0x0200;
const RD = 0x0100;
const RA = 0x0080;
const CD = 0x0010;
const TYPE_A = 1;
const TYPE_AAAA = 28;
const TYPE_OPT = 41;
const CLASS_IN = 1;

/** The one question of a query, as dns-packet names its type and class. */
export interface DnsQuestion {
  name: string;
  type: string;
  class: string;
}

/** A query that passed every check: what the resolver and response builder need. */
export interface ParsedQuery {
  id: number;
  /** The raw header flags word (opcode is QUERY). */
  flags: number;
  question: DnsQuestion;
  /** The question section exactly as received, echoed in local answers. */
  questionBytes: Buffer;
  /** Present when the query carried an OPT record. */
  edns?: { udpPayloadSize: number; version: number };
}

/** The verdict on one received message. */
export type QueryInspection =
  | { kind: 'query'; query: ParsedQuery }
  | { kind: 'reject'; rcode: number; reason: string; response: Buffer }
  | { kind: 'drop'; reason: string };

/**
 * A header-only error response: the query's id, opcode, RD and CD, QR and RA
 * set, no records. Needs only the first four bytes of the query.
 */
export function headerOnlyResponse(msg: Buffer, rcode: number): Buffer {
  const out = Buffer.alloc(HEADER_BYTES);
  out.writeUInt16BE(msg.readUInt16BE(0), 0);
  const flags = msg.readUInt16BE(2);
  out.writeUInt16BE(QR | (flags & (OPCODE_MASK | RD | CD)) | RA | (rcode & 0xf), 2);
  return out;
}

/** The end offset of the question at `offset`, or a reason it is malformed. */
function questionEnd(msg: Buffer, offset: number): number | string {
  let total = 0;
  for (;;) {
    const len = msg[offset];
    if (len === undefined) return 'question name runs past the end of the message';
    if (len === 0) break;
    // Compression in the first name could only point into the header.
    if ((len & 0xc0) !== 0) return 'compressed or extended label in the question';
    total += len + 1;
    if (total > 254) return 'question name longer than 255 bytes';
    offset += len + 1;
  }
  offset += 1 + 4;
  return offset > msg.length ? 'question type and class run past the end of the message' : offset;
}

/**
 * Checks one received message. Shorter than id + flags, or a response rather
 * than a query: dropped (answering a response could start a loop). Any opcode
 * but QUERY: NOTIMP. Everything else wrong: FORMERR — a short header, more
 * than MAX_QUERY_BYTES, not exactly one question, bytes that do not decode or
 * trail the last record, several OPT records, or over 512 bytes on UDP
 * without EDNS.
 */
export function inspectQuery(msg: Buffer, transport: 'udp' | 'tcp'): QueryInspection {
  if (msg.length < 4) return { kind: 'drop', reason: `${msg.length}-byte message has no DNS header` };
  const flags = msg.readUInt16BE(2);
  if ((flags & QR) !== 0) return { kind: 'drop', reason: 'message is a response, not a query' };
  const reject = (rcode: number, reason: string): QueryInspection => ({ kind: 'reject', rcode, reason, response: headerOnlyResponse(msg, rcode) });
  const opcode = (flags & OPCODE_MASK) >> 11;
  if (opcode !== 0) return reject(RCODE.NOTIMP, `opcode ${opcode} is not supported; only QUERY is`);
  if (msg.length < HEADER_BYTES) return reject(RCODE.FORMERR, `${msg.length}-byte message is shorter than a DNS header`);
  if (msg.length > MAX_QUERY_BYTES) return reject(RCODE.FORMERR, `${msg.length}-byte query is over the ${MAX_QUERY_BYTES}-byte limit`);
  const qdcount = msg.readUInt16BE(4);
  if (qdcount !== 1) return reject(RCODE.FORMERR, `query has ${qdcount} questions; exactly one is supported`);
  const qEnd = questionEnd(msg, HEADER_BYTES);
  if (typeof qEnd === 'string') return reject(RCODE.FORMERR, qEnd);

  // Every record takes at least 11 bytes (root name, type, class, TTL,
  // length). Checking the counts first keeps a forged header from making the
  // decoder allocate room for 3 × 65535 records.
  const records = msg.readUInt16BE(6) + msg.readUInt16BE(8) + msg.readUInt16BE(10);
  if (records * 11 > msg.length - qEnd) return reject(RCODE.FORMERR, `header claims ${records} records, more than the message can hold`);

  let decoded: dnsPacket.DecodedPacket;
  try {
    decoded = dnsPacket.decode(msg);
  } catch (err) {
    return reject(RCODE.FORMERR, `query does not decode: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (dnsPacket.decode.bytes !== msg.length) return reject(RCODE.FORMERR, `${msg.length - dnsPacket.decode.bytes} bytes after the last record`);
  const q = decoded.questions?.[0];
  if (q === undefined) return reject(RCODE.FORMERR, 'question does not decode');
  const opts = (decoded.additionals ?? []).filter((a): a is dnsPacket.OptAnswer => a.type === 'OPT');
  if (opts.length > 1) return reject(RCODE.FORMERR, `query has ${opts.length} OPT records; at most one is allowed`);
  const opt = opts[0];
  if (transport === 'udp' && opt === undefined && msg.length > PLAIN_UDP_MAX) {
    return reject(RCODE.FORMERR, `${msg.length}-byte UDP query without EDNS is over ${PLAIN_UDP_MAX} bytes`);
  }
  const query: ParsedQuery = {
    id: msg.readUInt16BE(0),
    flags,
    question: { name: q.name, type: String(q.type), class: String(q.class ?? 'IN') },
    questionBytes: msg.subarray(HEADER_BYTES, qEnd),
  };
  if (opt !== undefined) query.edns = { udpPayloadSize: opt.udpPayloadSize, version: opt.ednsVersion };
  return { kind: 'query', query };
}

/** The largest UDP response the client accepts: 512, or its EDNS size (at most 4096). */
export function udpResponseLimit(q: ParsedQuery): number {
  return q.edns === undefined ? PLAIN_UDP_MAX : Math.min(MAX_QUERY_BYTES, Math.max(PLAIN_UDP_MAX, q.edns.udpPayloadSize));
}

/** What a locally built response says. */
export interface LocalResponse {
  rcode: number;
  a?: readonly string[];
  aaaa?: readonly string[];
  ttlSeconds?: number;
  /** AA: the mesh is the authority for its names; off for errors. */
  authoritative?: boolean;
}

/** The 4 or 16 bytes of an address, or undefined when `ip` is not one of `family`. */
export function addressBytes(ip: string, family: 4 | 6): Buffer | undefined {
  if (isIP(ip) !== family) return undefined;
  if (family === 4) return Buffer.from(ip.split('.').map(Number));
  let text = ip;
  let v4tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    v4tail = text.slice(lastColon + 1).split('.').map(Number);
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [left = '', right] = text.split('::');
  const l = left === '' ? [] : left.split(':');
  const r = right === undefined || right === '' ? [] : right.split(':');
  const groups = right === undefined ? l : [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  if (v4tail.length === 4) Buffer.from(v4tail).copy(out, 12);
  return out;
}

function addressRecord(type: number, rdata: Buffer, ttl: number): Buffer {
  const rr = Buffer.alloc(12 + rdata.length);
  rr.writeUInt16BE(0xc000 | HEADER_BYTES, 0); // the name: a pointer to the question's
  rr.writeUInt16BE(type, 2);
  rr.writeUInt16BE(CLASS_IN, 4);
  rr.writeUInt32BE(ttl >>> 0, 6);
  rr.writeUInt16BE(rdata.length, 10);
  rdata.copy(rr, 12);
  return rr;
}

function optRecord(): Buffer {
  const rr = Buffer.alloc(11);
  // name: root (0); type OPT; class: our UDP payload size; TTL: extended
  // rcode 0, version 0, no flags (the proxy does not validate DNSSEC).
  rr.writeUInt16BE(TYPE_OPT, 1);
  rr.writeUInt16BE(EDNS_UDP_SIZE, 3);
  return rr;
}

/**
 * A response to `q` built here: the echoed question, A then AAAA records
 * (addresses that do not parse are left out), and an OPT record when the
 * query had one. When the whole does not fit in `maxBytes` the answers are
 * dropped and TC is set, so the client retries over TCP.
 */
export function buildResponse(q: ParsedQuery, r: LocalResponse, maxBytes = Number.POSITIVE_INFINITY): Buffer {
  const ttl = r.ttlSeconds ?? 0;
  const answers: Buffer[] = [];
  for (const ip of r.a ?? []) {
    const b = addressBytes(ip, 4);
    if (b) answers.push(addressRecord(TYPE_A, b, ttl));
  }
  for (const ip of r.aaaa ?? []) {
    const b = addressBytes(ip, 6);
    if (b) answers.push(addressRecord(TYPE_AAAA, b, ttl));
  }
  const additionals = q.edns === undefined ? [] : [optRecord()];
  const size = (rrs: Buffer[]): number => HEADER_BYTES + q.questionBytes.length + [...rrs, ...additionals].reduce((n, b) => n + b.length, 0);
  const truncated = size(answers) > maxBytes;
  const sent = truncated ? [] : answers;

  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt16BE(q.id, 0);
  let flags = QR | (q.flags & (RD | CD)) | RA | (r.rcode & 0xf);
  if (r.authoritative) flags |= AA;
  if (truncated) flags |= TC;
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(sent.length, 6);
  header.writeUInt16BE(0, 8);
  header.writeUInt16BE(additionals.length, 10);
  return Buffer.concat([header, q.questionBytes, ...sent, ...additionals]);
}

/** The id of a DNS message, or undefined when it has none. */
export function messageId(msg: Buffer): number | undefined {
  return msg.length >= 2 ? msg.readUInt16BE(0) : undefined;
}

/** True when `msg` is a response (QR set) with the given id. */
export function isResponseTo(msg: Buffer, id: number): boolean {
  return msg.length >= HEADER_BYTES && msg.readUInt16BE(0) === id && (msg.readUInt16BE(2) & QR) !== 0;
}

/** The rcode of a response (low 4 bits; extended rcodes are not needed here). */
export function responseCode(msg: Buffer): number | undefined {
  return msg.length >= 4 ? msg.readUInt16BE(2) & 0xf : undefined;
}
