// Builders for the records the forwarding engine produces (agent/proxy/record.ts),
// for telemetry tests that feed sinks without a proxy.
import type { ConnectionRecord, PeerWorkload, RequestRecord } from '../../agent/proxy/record';
import { UNKNOWN_PEER } from '../../agent/proxy/record';

/** A peer with the given fields, the rest unknown (''). */
export function peer(p: Partial<PeerWorkload> = {}): PeerWorkload {
  return { ...UNKNOWN_PEER, ...p };
}

export const PRODUCTPAGE = peer({ principal: 'spiffe://cluster.local/ns/default/sa/productpage', workload: 'productpage-v1', namespace: 'default', app: 'productpage', version: 'v1', canonicalService: 'productpage', canonicalRevision: 'v1', cluster: 'vms' });
export const REVIEWS = peer({ principal: 'spiffe://cluster.local/ns/default/sa/reviews', workload: 'reviews-v2', namespace: 'default', app: 'reviews', version: 'v2', canonicalService: 'reviews', canonicalRevision: 'v2', cluster: 'east' });
export const REVIEWS_SERVICE = { hostname: 'reviews.default.svc.cluster.local', name: 'reviews', namespace: 'default', port: 9080 };

/** An HTTP request reported by the client proxy of productpage to reviews, 200 in 12 ms. */
export function requestRecord(r: Partial<RequestRecord> = {}): RequestRecord {
  return {
    kind: 'request',
    reporter: 'source',
    startMs: 1_700_000_000_000,
    durationMs: 12,
    source: PRODUCTPAGE,
    destination: REVIEWS,
    service: REVIEWS_SERVICE,
    upstreamHost: '10.0.0.7:15006',
    responseFlags: '-',
    connectionSecurityPolicy: 'unknown',
    errorCode: '',
    failedAttempts: [],
    protocol: 'http',
    httpVersion: 'HTTP/1.1',
    method: 'GET',
    path: '/reviews/1',
    authority: 'reviews:9080',
    responseCode: 200,
    grpcStatus: -1,
    requestBytes: 0,
    responseBytes: 1024,
    requestMessages: 0,
    responseMessages: 0,
    route: '',
    attempts: 1,
    requestId: 'req-1',
    traceId: '',
    ...r,
  };
}

/** A TCP connection reported by the client proxy of productpage to reviews. */
export function connectionRecord(r: Partial<ConnectionRecord> = {}): ConnectionRecord {
  return {
    kind: 'connection',
    protocol: 'tcp',
    reporter: 'source',
    startMs: 1_700_000_000_000,
    durationMs: 50,
    source: PRODUCTPAGE,
    destination: REVIEWS,
    service: REVIEWS_SERVICE,
    upstreamHost: '10.0.0.7:15006',
    responseFlags: '-',
    connectionSecurityPolicy: 'unknown',
    errorCode: '',
    failedAttempts: [],
    stack: 'opaque',
    opened: true,
    sentBytes: 300,
    receivedBytes: 100,
    ...r,
  };
}
