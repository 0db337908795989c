// Trace context across a proxy hop: W3C `traceparent`/`tracestate` and B3
// (single `b3` header or the `x-b3-*` set), read from a request and written
// to the request the proxy forwards, the hop's own span becoming the parent
// of the next one. Pure (randomness passed in); the forwarding engine calls
// hopContext on each request and outgoingTraceHeaders for the upstream, and
// puts the hop's ids in the request's record for the span exporter.

/** What a request carried. */
export interface IncomingTrace {
  traceId: string;
  /** The caller's span: this hop's parent. */
  spanId: string;
  /** undefined: the caller left the decision to us (B3 without a sampling state). */
  sampled: boolean | undefined;
  /** W3C tracestate, passed on unchanged ('' when none). */
  tracestate: string;
  /** Which B3 form came in, so the same is sent on; undefined for W3C only. */
  b3: 'single' | 'multi' | undefined;
}

/** This hop's span. */
export interface HopTrace {
  traceId: string;
  spanId: string;
  /** '' for a new trace. */
  parentSpanId: string;
  sampled: boolean;
  tracestate: string;
  b3: 'single' | 'multi' | undefined;
}

/** Headers as Node gives them (lower-case names). */
export type Headers = Readonly<Record<string, string | string[] | undefined>>;

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
const ZERO32 = '0'.repeat(32);
const ZERO16 = '0'.repeat(16);

function first(h: string | string[] | undefined): string | undefined {
  return Array.isArray(h) ? h[0] : h;
}

/** A W3C traceparent (`00-<trace>-<span>-<flags>`), undefined when it is not a valid one. */
export function parseTraceparent(v: string | undefined): { traceId: string; spanId: string; sampled: boolean } | undefined {
  if (v === undefined) return undefined;
  const parts = v.trim().toLowerCase().split('-');
  const [version, traceId, spanId, flags] = parts;
  if (version === undefined || traceId === undefined || spanId === undefined || flags === undefined) return undefined;
  // Version ff is invalid; a future version may carry more fields, version 00 exactly four.
  if (!/^[0-9a-f]{2}$/.test(version) || version === 'ff' || (version === '00' && parts.length !== 4)) return undefined;
  if (!HEX32.test(traceId) || traceId === ZERO32 || !HEX16.test(spanId) || spanId === ZERO16 || !/^[0-9a-f]{2}$/.test(flags)) return undefined;
  return { traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

/** A B3 trace id: 128-bit, or 64-bit padded on the left as B3 specifies. */
function b3TraceId(v: string): string | undefined {
  const t = v.toLowerCase();
  if (HEX32.test(t) && t !== ZERO32) return t;
  if (HEX16.test(t) && t !== ZERO16) return `${ZERO16}${t}`;
  return undefined;
}

function b3Sampled(v: string | undefined, debug?: string): boolean | undefined {
  if (debug === '1' || v === 'd') return true;
  if (v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  return undefined;
}

/** The trace a request carried: traceparent first (W3C), else B3; undefined when none is valid. */
export function incomingTrace(h: Headers): IncomingTrace | undefined {
  const tracestate = first(h.tracestate) ?? '';
  const single = first(h.b3);
  const multi = first(h['x-b3-traceid']);
  const b3 = single !== undefined ? 'single' : multi !== undefined ? 'multi' : undefined;
  const w3c = parseTraceparent(first(h.traceparent));
  if (w3c) return { ...w3c, tracestate, b3 };
  if (single !== undefined) {
    const [t, s, sampled] = single.trim().split('-');
    const traceId = t === undefined ? undefined : b3TraceId(t);
    const spanId = s?.toLowerCase();
    if (traceId && spanId && HEX16.test(spanId) && spanId !== ZERO16) return { traceId, spanId, sampled: b3Sampled(sampled), tracestate, b3 };
    return undefined;
  }
  if (multi !== undefined) {
    const traceId = b3TraceId(multi.trim());
    const spanId = first(h['x-b3-spanid'])?.trim().toLowerCase();
    if (traceId && spanId && HEX16.test(spanId) && spanId !== ZERO16) return { traceId, spanId, sampled: b3Sampled(first(h['x-b3-sampled'])?.trim(), first(h['x-b3-flags'])?.trim()), tracestate, b3 };
  }
  return undefined;
}

function hex(bytes: number, random: () => number): string {
  let s = '';
  for (let i = 0; i < bytes; i++) s += Math.floor(random() * 256).toString(16).padStart(2, '0');
  return s;
}

/**
 * This hop's span: in the caller's trace with the caller's span as parent,
 * or a new trace. A caller's sampling decision is kept; a new trace (or a
 * B3 caller that left it open) is sampled with probability `sampleRate`.
 */
export function hopContext(incoming: IncomingTrace | undefined, sampleRate: number, random: () => number = Math.random): HopTrace {
  let spanId = hex(8, random);
  while (spanId === ZERO16) spanId = hex(8, random);
  if (incoming) {
    return { traceId: incoming.traceId, spanId, parentSpanId: incoming.spanId, sampled: incoming.sampled ?? random() < sampleRate, tracestate: incoming.tracestate, b3: incoming.b3 };
  }
  let traceId = hex(16, random);
  while (traceId === ZERO32) traceId = hex(16, random);
  return { traceId, spanId, parentSpanId: '', sampled: random() < sampleRate, tracestate: '', b3: undefined };
}

/**
 * The trace headers of the forwarded request: traceparent (and tracestate
 * as received) always, naming this hop's span as the parent; B3 in the
 * form the request came with, rewritten the same way. Callers replace any
 * trace headers the request had with these.
 */
export function outgoingTraceHeaders(hop: HopTrace): Record<string, string> {
  const out: Record<string, string> = { traceparent: `00-${hop.traceId}-${hop.spanId}-${hop.sampled ? '01' : '00'}` };
  if (hop.tracestate !== '') out.tracestate = hop.tracestate;
  if (hop.b3 === 'single') out.b3 = `${hop.traceId}-${hop.spanId}-${hop.sampled ? '1' : '0'}${hop.parentSpanId ? `-${hop.parentSpanId}` : ''}`;
  if (hop.b3 === 'multi') {
    out['x-b3-traceid'] = hop.traceId;
    out['x-b3-spanid'] = hop.spanId;
    if (hop.parentSpanId) out['x-b3-parentspanid'] = hop.parentSpanId;
    out['x-b3-sampled'] = hop.sampled ? '1' : '0';
  }
  return out;
}

/** Every header name outgoingTraceHeaders may replace (remove these from the request first). */
export const TRACE_HEADERS: readonly string[] = ['traceparent', 'tracestate', 'b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags'];
