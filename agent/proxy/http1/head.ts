// Writing a parsed head on to the next hop: the original bytes of every
// line that stays, hop-by-hop headers dropped (RFC 9110 §7.6.1: Connection
// and what it names, Keep-Alive, Proxy-Connection, TE, Upgrade), edits
// applied, and one Buffer out, so each message head is one write.
// Transfer-Encoding stays: the body is forwarded in its original framing.
import type { HeaderLine } from './parse';

const CRLF = Buffer.from('\r\n');

/** Hop-by-hop headers every hop removes. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade']);

/** Changes to a head on its way: names to drop (lowercase), lines to append, a replacement first line. */
export interface HeadEdit {
  remove?: ReadonlySet<string>;
  add?: readonly (readonly [string, string])[];
  /** Replaces the request or status line (without CRLF). */
  firstLine?: string;
  /** Keep Connection/Upgrade (a tunnel's handshake goes through as it came). */
  keepHopByHop?: boolean;
}

/** The names the Connection header lists, which are hop-by-hop too. */
function connectionNamed(headers: readonly HeaderLine[]): Set<string> {
  const out = new Set<string>();
  for (const h of headers) if (h.name === 'connection') for (const t of h.value.split(',')) out.add(t.trim().toLowerCase());
  return out;
}

/** The head to send to the next hop; see the file comment. */
export function rewriteHead(raw: Buffer, lineEnd: number, headers: readonly HeaderLine[], edit: HeadEdit): Buffer {
  const named = edit.keepHopByHop ? undefined : connectionNamed(headers);
  const parts: Buffer[] = [edit.firstLine !== undefined ? Buffer.from(`${edit.firstLine}\r\n`, 'latin1') : raw.subarray(0, lineEnd + 2)];
  // Runs of kept lines are copied as one slice.
  let runStart = -1;
  let runEnd = -1;
  for (const h of headers) {
    const drop = (!edit.keepHopByHop && (HOP_BY_HOP.has(h.name) || named!.has(h.name))) || (edit.remove?.has(h.name) ?? false);
    if (drop) {
      if (runStart >= 0) parts.push(raw.subarray(runStart, runEnd));
      runStart = -1;
      continue;
    }
    if (runStart < 0) runStart = h.start;
    runEnd = h.end + 2;
  }
  if (runStart >= 0) parts.push(raw.subarray(runStart, runEnd));
  if (edit.add !== undefined && edit.add.length > 0) {
    let extra = '';
    for (const [n, v] of edit.add) extra += `${n}: ${v}\r\n`;
    parts.push(Buffer.from(extra, 'latin1'));
  }
  parts.push(CRLF);
  return Buffer.concat(parts);
}

/** A complete response the proxy answers itself, closing the connection when `close`. */
export function localResponse(status: number, reason: string, body: string, extra: readonly (readonly [string, string])[] = [], close = true): Buffer {
  let head = `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`;
  for (const [n, v] of extra) head += `${n}: ${v}\r\n`;
  if (close) head += 'connection: close\r\n';
  return Buffer.from(`${head}\r\n${body}`, 'latin1');
}

/** Reason phrases for the statuses the proxy answers itself. */
export const REASONS: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  404: 'Not Found',
  414: 'URI Too Long',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};
