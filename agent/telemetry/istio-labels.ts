// Istio's standard metric labels from one record, with the semantics of
// istio/proxy's stats filter (source/extensions/filters/http/istio_stats):
// the reporter writes its own side from its own workload and the other side
// from the peer metadata the record carries; a missing value is `unknown`,
// except a peer's canonical revision, which is `latest`; the client side
// cannot know the connection's security policy and writes `unknown`. Pure.
import type { DestinationService, PeerWorkload, RecordBase, RequestRecord } from '../proxy/record';

/** The labels every Istio request and TCP metric has, in the order the stats filter adds them. */
export const PEER_LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_service_name',
  'destination_service_namespace',
  'destination_cluster',
] as const;

/** Labels of istio_requests_total and the request histograms. */
export const REQUEST_LABELS = [...PEER_LABELS, 'request_protocol', 'response_code', 'grpc_response_status', 'response_flags', 'connection_security_policy'];

/** Labels of the istio_tcp_* metrics (no response code or gRPC status, as in Istio). */
export const TCP_LABELS = [...PEER_LABELS, 'request_protocol', 'response_flags', 'connection_security_policy'];

const UNKNOWN = 'unknown';
const LATEST = 'latest';

const or = (v: string, fallback: string): string => (v === '' ? fallback : v);

/** The namespace of a SPIFFE ID (`spiffe://td/ns/N/sa/S`), '' when it names none. */
export function principalNamespace(principal: string): string {
  const at = principal.indexOf('/ns/');
  if (at < 0) return '';
  const start = at + 4;
  const end = principal.indexOf('/', start);
  return end < 0 ? principal.slice(start) : principal.slice(start, end);
}

/** What the peer-side labels of a record read. */
export type PeerInput = Pick<RecordBase, 'reporter' | 'source' | 'destination' | 'service' | 'connectionSecurityPolicy'> & { responseFlags?: string; errorCode?: string };

/**
 * The 20 PEER_LABELS values of a record reported by `local`. The local
 * side's metadata comes from `local` (this agent knows itself best); its
 * principal from the record when the engine set it, else from `local` when
 * the hop was mutual TLS, else `unknown` (plaintext has no local identity,
 * as Istio's local SAN is empty then).
 */
export function peerLabelValues(r: PeerInput, local: PeerWorkload): string[] {
  const svc: DestinationService = r.service;
  if (r.reporter === 'destination') {
    const peer = r.source;
    const mtls = r.connectionSecurityPolicy === 'mutual_tls';
    const localPrincipal = r.destination.principal || (mtls ? local.principal : '');
    return [
      'destination',
      or(peer.workload, UNKNOWN),
      or(peer.canonicalService, UNKNOWN),
      or(peer.canonicalRevision, LATEST),
      or(principalNamespace(peer.principal) || peer.namespace, UNKNOWN),
      or(peer.principal, UNKNOWN),
      or(peer.app, UNKNOWN),
      or(peer.version, UNKNOWN),
      or(peer.cluster, UNKNOWN),
      or(local.workload, UNKNOWN),
      or(local.namespace, UNKNOWN),
      or(localPrincipal, UNKNOWN),
      or(local.app, UNKNOWN),
      or(local.version, UNKNOWN),
      or(svc.hostname || local.canonicalService, UNKNOWN),
      or(local.canonicalService, UNKNOWN),
      or(local.canonicalRevision, LATEST),
      or(svc.name || local.canonicalService, UNKNOWN),
      or(local.namespace, UNKNOWN),
      or(local.cluster, UNKNOWN),
    ];
  }
  const peer = r.destination;
  const peerNs = principalNamespace(peer.principal) || peer.namespace;
  const localPrincipal = r.source.principal || (peer.principal !== '' ? local.principal : '');
  return [
    'source',
    or(local.workload, UNKNOWN),
    or(local.canonicalService, UNKNOWN),
    or(local.canonicalRevision, LATEST),
    or(local.namespace, UNKNOWN),
    or(localPrincipal, UNKNOWN),
    or(local.app, UNKNOWN),
    or(local.version, UNKNOWN),
    or(local.cluster, UNKNOWN),
    or(peer.workload, UNKNOWN),
    or(peerNs, UNKNOWN),
    or(peer.principal, UNKNOWN),
    or(peer.app, UNKNOWN),
    or(peer.version, UNKNOWN),
    or(svc.hostname, UNKNOWN),
    or(peer.canonicalService, UNKNOWN),
    or(peer.canonicalRevision, LATEST),
    or(svc.name || clientFallbackServiceName(svc, responseFlagsOf(r)), UNKNOWN),
    or(svc.namespace || peerNs, UNKNOWN),
    or(peer.cluster, UNKNOWN),
  ];
}

/**
 * Istio's client proxy names traffic to no known service after the cluster
 * that carried it: PassthroughCluster (allow-any) or BlackHoleCluster
 * (registry-only refusal, which Kedge flags NR).
 */
function clientFallbackServiceName(svc: DestinationService, flags: string): string {
  if (svc.hostname !== '') return '';
  return flags.split(',').includes('NR') ? 'BlackHoleCluster' : 'PassthroughCluster';
}

/** Istio's connection_security_policy: the client proxy writes `unknown` whatever the record says. */
function securityPolicy(r: Pick<RecordBase, 'reporter' | 'connectionSecurityPolicy'>): string {
  return r.reporter === 'source' ? UNKNOWN : r.connectionSecurityPolicy === 'mutual_tls' ? 'mutual_tls' : 'none';
}

/** The labels after PEER_LABELS on request metrics. */
export const REQUEST_TAIL_LABELS = ['request_protocol', 'response_code', 'grpc_response_status', 'response_flags', 'connection_security_policy'] as const;
/** The labels after PEER_LABELS on TCP metrics. */
export const TCP_TAIL_LABELS = ['request_protocol', 'response_flags', 'connection_security_policy'] as const;

/**
 * Envoy's response flag for a record the engine finished with an error code
 * but no flags: what Envoy would have written for the same failure (UF
 * upstream connection failure, UH no healthy upstream, NR no route, DC
 * downstream disconnect, UAEX refused by policy, UPE upstream protocol
 * error). Codes with no Envoy counterpart stay `-`.
 */
export const FLAG_OF_CODE: Readonly<Record<string, string>> = Object.freeze({
  KEDGE_UPSTREAM_CONNECT_FAILED: 'UF',
  KEDGE_CONNECT_TIMEOUT: 'UF',
  KEDGE_TARGET_CONNECT_FAILED: 'UF',
  KEDGE_PASSTHROUGH_CONNECT_FAILED: 'UF',
  KEDGE_UPSTREAM_TLS_FAILED: 'UF',
  KEDGE_PEER_IDENTITY_MISMATCH: 'UF',
  KEDGE_UPSTREAM_UNAVAILABLE: 'UH',
  KEDGE_NO_ENDPOINTS: 'UH',
  KEDGE_UNKNOWN_SERVICE: 'NR',
  KEDGE_UNKNOWN_SERVICE_PORT: 'NR',
  KEDGE_NO_LOCAL_TARGET: 'NR',
  KEDGE_OUTBOUND_NOT_IN_REGISTRY: 'NR',
  KEDGE_BAD_SNI: 'NR',
  KEDGE_GATEWAY_NO_SNI: 'NR',
  KEDGE_CLIENT_CLOSED: 'DC',
  KEDGE_PEER_IDENTITY_REFUSED: 'UAEX',
  KEDGE_PEER_CERT_REVOKED: 'UAEX',
  KEDGE_INBOUND_PLAINTEXT_REFUSED: 'UAEX',
});

/** The record's flags, or the flag its error code implies when it has none. */
export function responseFlagsOf(r: { responseFlags?: string; errorCode?: string }): string {
  const f = r.responseFlags;
  if (f !== undefined && f !== '' && f !== '-') return f;
  return (r.errorCode !== undefined && FLAG_OF_CODE[r.errorCode]) || '-';
}

/** The REQUEST_TAIL_LABELS values of a request record. */
export function requestTailValues(r: RequestRecord): string[] {
  return [
    r.protocol,
    String(r.responseCode),
    // Istio writes '' (not unknown) for a plain HTTP request and for a gRPC call that got no status.
    r.protocol === 'grpc' && r.grpcStatus >= 0 ? String(r.grpcStatus) : '',
    responseFlagsOf(r),
    securityPolicy(r),
  ];
}

/** The TCP_TAIL_LABELS values of a connection (at open: flags `-`). */
export function tcpTailValues(r: PeerInput): string[] {
  return ['tcp', responseFlagsOf(r), securityPolicy(r)];
}

/** The REQUEST_LABELS values of a request record. */
export function requestLabelValues(r: RequestRecord, local: PeerWorkload): string[] {
  return [...peerLabelValues(r, local), ...requestTailValues(r)];
}

/** The TCP_LABELS values of a connection. */
export function tcpLabelValues(r: PeerInput, local: PeerWorkload): string[] {
  return [...peerLabelValues(r, local), ...tcpTailValues(r)];
}
