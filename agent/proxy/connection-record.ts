// Builds the one ConnectionRecord of a connection: started where the
// connection is accepted, told about failed attempts and the moment it
// reaches its upstream (RecordSink.open), finished exactly once. Also the
// small helpers that fill a record's peer and service fields from what the
// proxy knows (a SPIFFE ID, a service view).
import { parseServiceKey } from '../../proto/model/service';
import { type AttemptFailure, type ConnectionRecord, type DestinationService, type PeerWorkload, type RecordSink, UNKNOWN_PEER } from './record';

/** A peer known only by its SPIFFE ID (and maybe its workload name): the namespace comes from the ID. */
export function peerFromSpiffe(principal: string, workload = ''): PeerWorkload {
  if (principal === '' && workload === '') return UNKNOWN_PEER;
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/.exec(principal);
  return { ...UNKNOWN_PEER, principal, workload, namespace: m?.[1] ?? '' };
}

/** The record's service fields for a service key (name.namespace), hostname and port. */
export function destinationService(key: string, hostname: string, port: number): DestinationService {
  let name = '';
  let namespace = '';
  try {
    ({ name, namespace } = parseServiceKey(key));
  } catch {
    // a key that does not parse leaves name and namespace unknown
  }
  return { hostname, name, namespace, port };
}

/** No destination service: passthrough traffic, or a connection refused before its service was known. */
export const NO_SERVICE: DestinationService = Object.freeze({ hostname: '', name: '', namespace: '', port: 0 });

/** What is known of a connection when it is accepted. */
export type ConnectionStart = Pick<ConnectionRecord, 'reporter' | 'source' | 'destination' | 'service' | 'connectionSecurityPolicy' | 'stack'>;

/** One connection's record in the making; see the file comment. */
export class ConnectionTrace {
  private readonly startMs = Date.now();
  private readonly t0 = performance.now();
  private readonly failures: AttemptFailure[] = [];
  private fields: ConnectionStart;
  private upstreamHost = '';
  private opened = false;
  private done = false;

  constructor(
    private readonly sink: RecordSink,
    start: ConnectionStart,
  ) {
    this.fields = start;
  }

  /** Fills in what was learned after accept (the service from the SNI, the peer's identity). */
  update(fields: Partial<ConnectionStart>): void {
    this.fields = { ...this.fields, ...fields };
  }

  get service(): DestinationService {
    return this.fields.service;
  }

  attemptFailed(endpoint: string, code: string): void {
    this.failures.push({ endpoint, code });
  }

  /** The connection reached `upstreamHost` (an endpoint, or the local app): counted as open from now. */
  open(upstreamHost: string, destination?: PeerWorkload): void {
    if (this.opened || this.done) return;
    this.opened = true;
    this.upstreamHost = upstreamHost;
    if (destination !== undefined) this.fields = { ...this.fields, destination };
    const f = this.fields;
    this.sink.open({ reporter: f.reporter, source: f.source, destination: f.destination, service: f.service, connectionSecurityPolicy: f.connectionSecurityPolicy, upstreamHost, stack: f.stack, failedAttempts: this.failures });
  }

  /** Ends the record; later calls do nothing. `errorCode` '' means it ended well. */
  finish(errorCode: string, sentBytes: number, receivedBytes: number, responseFlags = '-'): void {
    if (this.done) return;
    this.done = true;
    const f = this.fields;
    this.sink.finish({
      kind: 'connection',
      protocol: 'tcp',
      reporter: f.reporter,
      startMs: this.startMs,
      durationMs: performance.now() - this.t0,
      source: f.source,
      destination: f.destination,
      service: f.service,
      upstreamHost: this.upstreamHost,
      responseFlags,
      connectionSecurityPolicy: f.connectionSecurityPolicy,
      errorCode,
      failedAttempts: this.failures,
      sentBytes,
      receivedBytes,
      stack: f.stack,
      opened: this.opened,
    });
  }

  get finished(): boolean {
    return this.done;
  }
}
