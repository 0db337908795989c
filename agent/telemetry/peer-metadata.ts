// Peer metadata: who the workload at the other end of a mesh hop is, so
// both reporters can fill the other side's labels (Istio's metadata
// exchange). Pure; the forwarding engine calls it (see docs/telemetry.md):
// - the client proxy knows its destination from the mesh view: the
//   endpoint it picked carries the workload's name, labels and cluster
//   (endpointPeer);
// - on HTTP, each proxy sends its own metadata in the `x-kedge-peer`
//   header (request: client to server; response: server to client), and
//   the receiving proxy strips it before the application sees it
//   (encodePeerHeader / decodePeerHeader);
// - on opaque TCP the server proxy has only the client's SPIFFE ID (and
//   address), from which the namespace follows (peerFromPrincipal).
// A header is self-asserted: the principal is never taken from it (only
// from the verified certificate), and metadata naming another namespace
// than the certificate's is dropped.
import type { PeerWorkload } from '../proxy/record';
import { UNKNOWN_PEER } from '../proxy/record';
import type { EndpointView } from '../proxy/types';
import { principalNamespace } from './istio-labels';
import { workloadMetadata } from './workload';

/** The header each proxy sends its own metadata in; stripped by the receiving proxy. */
export const PEER_HEADER = 'x-kedge-peer';

/** A header value longer than this is ignored (a bound on what a peer can make us parse). */
export const MAX_PEER_HEADER_BYTES = 1024;

const VERSION = 'v1';
// Field order of the header: short keys, values percent-encoded.
const FIELDS = [
  ['w', 'workload'],
  ['n', 'namespace'],
  ['a', 'app'],
  ['v', 'version'],
  ['cs', 'canonicalService'],
  ['cr', 'canonicalRevision'],
  ['c', 'cluster'],
] as const satisfies readonly (readonly [string, keyof PeerWorkload])[];

/** The `x-kedge-peer` value for this workload (computed once per agent, sent on every request). */
export function encodePeerHeader(self: PeerWorkload): string {
  let out = VERSION;
  for (const [k, f] of FIELDS) if (self[f] !== '') out += `;${k}=${encodeURIComponent(self[f])}`;
  return out;
}

// Decoded headers by value: a client sends the same value on every request,
// so this returns the same object each time (which the metrics sink's
// per-object cache relies on) and parses each distinct value once.
const decoded = new Map<string, PeerWorkload>();
const MAX_CACHED = 1024;

/**
 * The peer a header describes, its principal from the verified certificate
 * (`principal`, '' for plaintext); undefined when the header is absent,
 * too long, of another version or malformed (the caller then falls back to
 * peerFromPrincipal). When the header names another namespace than the
 * certificate, only the certificate is believed.
 */
export function decodePeerHeader(value: string | undefined, principal: string): PeerWorkload | undefined {
  if (value === undefined || value.length > MAX_PEER_HEADER_BYTES) return undefined;
  const key = `${principal} ${value}`;
  const hit = decoded.get(key);
  if (hit !== undefined) return hit;
  const parts = value.split(';');
  if (parts[0] !== VERSION) return undefined;
  const peer: { -readonly [K in keyof PeerWorkload]: string } = { ...UNKNOWN_PEER, principal };
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i]!;
    const eq = p.indexOf('=');
    if (eq <= 0) return undefined;
    const field = FIELDS.find(([k]) => k === p.slice(0, eq));
    if (field === undefined) continue; // a newer sender's field
    try {
      peer[field[1]] = decodeURIComponent(p.slice(eq + 1));
    } catch {
      return undefined;
    }
  }
  const certNs = principalNamespace(principal);
  const result: PeerWorkload = Object.freeze(certNs !== '' && peer.namespace !== '' && peer.namespace !== certNs ? peerFromPrincipal(principal) : peer);
  if (decoded.size >= MAX_CACHED) decoded.delete(decoded.keys().next().value as string);
  decoded.set(key, result);
  return result;
}

/** A peer known only by its SPIFFE ID: the namespace follows from it, the rest is unknown. */
export function peerFromPrincipal(principal: string): PeerWorkload {
  if (principal === '') return UNKNOWN_PEER;
  return Object.freeze({ ...UNKNOWN_PEER, principal, namespace: principalNamespace(principal) });
}

// One PeerWorkload per endpoint view: views are immutable and rebuilt only
// when their service changes, so the object is stable across requests.
const byView = new WeakMap<EndpointView, PeerWorkload>();

/**
 * The destination workload of an endpoint the client proxy picked, from
 * the mesh view: name (the federation writes `namespace/name`; Istio's
 * label is the name), namespace from the SPIFFE ID, app, version and
 * canonical labels from the endpoint's labels, and its cluster.
 */
export function endpointPeer(view: EndpointView): PeerWorkload {
  let p = byView.get(view);
  if (p === undefined) {
    const slash = view.workload.indexOf('/');
    const name = slash >= 0 ? view.workload.slice(slash + 1) : view.workload;
    const namespace = principalNamespace(view.identity) || (slash >= 0 ? view.workload.slice(0, slash) : '');
    if (view.workload === '' && view.identity === '') p = UNKNOWN_PEER;
    else {
      const m = workloadMetadata({ name, namespace, labels: view.labels ?? {}, principal: view.identity });
      // An endpoint's cluster is what the federation says (it writes `vms` for VM agents), unknown when it says nothing.
      p = Object.freeze({ ...m, cluster: view.cluster ?? '', canonicalService: name === '' ? m.app : m.canonicalService });
    }
    byView.set(view, p);
  }
  return p;
}
