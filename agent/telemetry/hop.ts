// What the forwarding engine does for telemetry at each HTTP hop, in one
// place so the engine's hooks stay one line each:
// - metadata exchange: the client proxy sends its own workload's metadata
//   in `x-kedge-peer` on the request, the server proxy on the response;
//   each side strips the header from what it receives before the app or
//   the client sees it, and strips any copy the local app wrote (an app's
//   claim about itself is never forwarded as a proxy's);
// - trace context: with tracing on, the hop gets its own span (parent: the
//   caller's) and the request goes on with trace headers naming it; with
//   tracing off the headers pass through untouched (a proxy that named
//   itself as parent without exporting its span would break the trace).
import type { PeerWorkload } from '../proxy/record';
import { PEER_HEADER, decodePeerHeader, encodePeerHeader } from './peer-metadata';
import { type Headers, type HopTrace, TRACE_HEADERS, hopContext, incomingTrace, outgoingTraceHeaders } from './trace-context';

export { PEER_HEADER };

// One header value per workload object: the proxy's self is rebuilt only
// when its identity rotates.
const headerOf = new WeakMap<PeerWorkload, string>();

/** The `x-kedge-peer` value this proxy sends (encoded once per workload object). */
export function peerHeaderOf(self: PeerWorkload): string {
  let v = headerOf.get(self);
  if (v === undefined) headerOf.set(self, (v = encodePeerHeader(self)));
  return v;
}

const TRACE_SET: ReadonlySet<string> = new Set(TRACE_HEADERS);

/** Names removed from what a hop receives when tracing is off: only the peer header. */
export const PEER_ONLY: ReadonlySet<string> = new Set([PEER_HEADER]);
/** Names removed from a request when tracing is on: the peer header and every trace header (replaced by the hop's). */
export const PEER_AND_TRACE: ReadonlySet<string> = new Set([PEER_HEADER, ...TRACE_HEADERS]);

/** The trace headers among HTTP/1.1 header lines (one pass, lower-case names); undefined when there are none. */
export function traceHeadersOf(lines: readonly { name: string; value: string }[]): Headers | undefined {
  let out: Record<string, string> | undefined;
  for (const h of lines) {
    if (!TRACE_SET.has(h.name)) continue;
    out ??= {};
    if (out[h.name] === undefined) out[h.name] = h.value;
  }
  return out;
}

/**
 * This hop's span when tracing is on (`sample` set: the share of new
 * traces sampled), in the trace the request carried or a new one;
 * undefined when tracing is off.
 */
export function startHop(headers: Headers | undefined, sample: number | undefined): HopTrace | undefined {
  if (sample === undefined) return undefined;
  return hopContext(headers === undefined ? undefined : incomingTrace(headers), sample);
}

/** What a hop removes from the request it forwards. */
export function requestRemove(hop: HopTrace | undefined): ReadonlySet<string> {
  return hop === undefined ? PEER_ONLY : PEER_AND_TRACE;
}

/**
 * The headers a hop adds to the request it forwards: its trace headers
 * (with tracing on) and, from the client proxy (`self`), its metadata.
 */
export function requestAdd(hop: HopTrace | undefined, self: PeerWorkload | undefined): [string, string][] {
  const out: [string, string][] = [];
  if (self !== undefined) out.push([PEER_HEADER, peerHeaderOf(self)]);
  if (hop !== undefined) for (const [k, v] of Object.entries(outgoingTraceHeaders(hop))) out.push([k, v]);
  return out;
}

/**
 * The peer a proxy's header describes, believed only from a peer whose
 * certificate the hop verified (`principal` non-empty); undefined for no
 * header, a bad one, or a peer without mTLS.
 */
export function peerFromHeader(value: string | string[] | undefined, principal: string): PeerWorkload | undefined {
  if (principal === '') return undefined;
  return decodePeerHeader(Array.isArray(value) ? value[0] : value, principal);
}
