// The traffic summary an agent reports on its Connect stream (TrafficStats
// in federation.proto), as both sides hold it: the agent builds these rows
// (agent/telemetry/stats-summary.ts), the federation keeps and aggregates
// them (federation/stats.ts) for `kedge stat` and the dashboard's graph.

/** One failure, as the dashboard lists it for an edge (TrafficError). */
export interface TrafficError {
  /** When the request or connection started, ms since the epoch. */
  startMs: number;
  /** HTTP status sent to the client; 0 when none (reset, TCP). */
  responseCode: number;
  /** gRPC status; -1 when not gRPC. */
  grpcStatus: number;
  responseFlags: string;
  errorCode: string;
  method: string;
  path: string;
  upstreamHost: string;
}

/** One aggregate per reporter, source workload, destination workload and service (TrafficStat). */
export interface TrafficStatRow {
  /** `source` (the client proxy) or `destination` (the server proxy). */
  reporter: string;
  /** namespace/name of each side; '' when unknown. */
  sourceWorkload: string;
  destinationWorkload: string;
  /** name.namespace; '' for passthrough. */
  destinationService: string;
  requests: number;
  failures: number;
  /** Counts per Envoy default bucket, and a last one for longer. */
  latencyBuckets: number[];
  tcpConnections: number;
  tcpSentBytes: number;
  tcpReceivedBytes: number;
  /** Records that arrived over mutual TLS (destination reporter only). */
  mtls: number;
  /** The latest failures, oldest first. */
  errors: TrafficError[];
}
