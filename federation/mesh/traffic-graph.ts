// The service graph's edges, from the traffic aggregates agents report
// (federation/stats.ts): node ids are services, workloads that serve none,
// and `unknown` for plaintext traffic from outside the mesh.
//
// Which proxy's counts an edge shows: the client proxy's (reporter
// `source`), since it alone knows both ends; the server proxy's only for
// plaintext traffic from outside the mesh, whose client reports nothing.
// Server reports of mTLS traffic are left out of the graph so no request is
// counted twice (`kedge stat` uses them). Kiali makes the same choice for
// unknown sources.
import { bucketQuantile, type EdgeAggregate, type ReportedError } from '../stats';
import type { EdgeError, EndpointRow, TrafficEdgeRow } from '../ui/model/state';

/** What the graph needs of a registered workload. */
export interface GraphWorkload {
  /** namespace/name */
  id: string;
  namespace: string;
  /** Service names it registered (in its namespace). */
  services: readonly string[];
}

/** `svc:NAME.NS` when a workload serves exactly one service, else `wl:NS/NAME`. */
function workloadNode(id: string, workloads: ReadonlyMap<string, GraphWorkload>): { node: string; namespace: string } {
  const w = workloads.get(id);
  const namespace = id.split('/')[0] ?? '';
  if (w && w.services.length === 1) return { node: `svc:${w.services[0]}.${w.namespace}`, namespace: w.namespace };
  return { node: `wl:${id}`, namespace };
}

function outcome(e: ReportedError): string {
  const flags = e.responseFlags && e.responseFlags !== '-' ? ` ${e.responseFlags}` : '';
  if (e.grpcStatus > 0) return `grpc ${e.grpcStatus}${flags}`;
  if (e.responseCode > 0) return `${e.responseCode}${flags}`;
  return `${e.method ? 'no response' : 'connection failed'}${flags}`;
}

function edgeError(e: ReportedError): EdgeError {
  return { at: new Date(e.startMs).toISOString(), outcome: outcome(e), request: e.method ? `${e.method} ${e.path}` : '', upstream: e.upstreamHost, errorCode: e.errorCode };
}

/** mTLS of a client-reported edge: client proxies use mTLS to every meshed endpoint and plaintext to the others. */
function mtlsTo(service: string, endpoints: readonly EndpointRow[]): Pick<TrafficEdgeRow, 'mtls' | 'mtlsNote'> {
  const eps = endpoints.filter((e) => e.service === service);
  const plain = eps.filter((e) => !e.meshed).length;
  if (eps.length === 0) return { mtls: 'mutual_tls', mtlsNote: 'mTLS to meshed endpoints (none registered now)' };
  if (plain === 0) return { mtls: 'mutual_tls', mtlsNote: 'mTLS: every endpoint is meshed' };
  if (plain === eps.length) return { mtls: 'none', mtlsNote: 'plaintext: no endpoint of the service is meshed' };
  return { mtls: 'partial', mtlsNote: `partly plaintext: ${plain} of ${eps.length} endpoints are not meshed` };
}

/** The graph's edges over a window of `windowMs`, sorted by id. */
export function trafficEdges(aggs: readonly EdgeAggregate[], workloads: readonly GraphWorkload[], endpoints: readonly EndpointRow[], windowMs: number): TrafficEdgeRow[] {
  const byId = new Map(workloads.map((w) => [w.id, w]));
  const edges = new Map<string, { row: TrafficEdgeRow; buckets: number[]; failures: number }>();
  for (const a of aggs) {
    let from: { node: string; namespace: string };
    if (a.reporter === 'source' && a.sourceWorkload !== '') from = workloadNode(a.sourceWorkload, byId);
    else if (a.reporter === 'destination' && a.mtls === 0 && a.sourceWorkload === '') from = { node: 'unknown', namespace: '' };
    else continue;
    let to: { node: string; namespace: string };
    if (a.destinationService !== '') to = { node: `svc:${a.destinationService}`, namespace: a.destinationService.slice(a.destinationService.lastIndexOf('.') + 1) };
    else if (a.destinationWorkload !== '') to = workloadNode(a.destinationWorkload, byId);
    else continue; // passthrough to an address the mesh does not know
    const id = `${from.node}->${to.node}`;
    let e = edges.get(id);
    if (e === undefined) {
      const security = a.reporter === 'destination' ? { mtls: 'none' as const, mtlsNote: 'plaintext from outside the mesh' } : mtlsTo(a.destinationService, endpoints);
      e = {
        row: { id, from: from.node, to: to.node, fromNamespace: from.namespace, toNamespace: to.namespace, service: a.destinationService, reporter: a.reporter === 'destination' ? 'destination' : 'source', requests: 0, rps: 0, success: null, p99Ms: null, tcpConnections: 0, tcpBytes: 0, ...security, errors: [] },
        buckets: new Array<number>(a.latencyBuckets.length).fill(0),
        failures: 0,
      };
      edges.set(id, e);
    }
    e.row.requests += a.requests;
    e.failures += a.failures;
    e.row.tcpConnections += a.tcpConnections;
    e.row.tcpBytes += a.tcpBytes;
    a.latencyBuckets.forEach((c, i) => (e!.buckets[i] = (e!.buckets[i] ?? 0) + c));
    e.row.errors.push(...a.errors.map(edgeError));
  }
  const seconds = windowMs / 1000;
  return [...edges.values()]
    .map(({ row, buckets, failures }) => ({
      ...row,
      rps: row.requests / seconds,
      success: row.requests === 0 ? null : (row.requests - failures) / row.requests,
      p99Ms: bucketQuantile(0.99, buckets),
      errors: row.errors.sort((x, y) => y.at.localeCompare(x.at)).slice(0, 10),
    }))
    .sort((x, y) => x.id.localeCompare(y.id));
}
