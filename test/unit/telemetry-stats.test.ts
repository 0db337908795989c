import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { LATENCY_BUCKETS_MS, TrafficStatsStore, bucketQuantile } from '../../federation/stats';
import { MAX_ERRORS, StatsSummary } from '../../agent/telemetry/stats-summary';
import { ENVOY_DEFAULT_BUCKETS } from '../../agent/telemetry/istio-metrics';
import { PRODUCTPAGE, REVIEWS, connectionRecord, peer, requestRecord } from '../support/records';

test('the federation and the agents use the same buckets', () => {
  assert.deepEqual(LATENCY_BUCKETS_MS, ENVOY_DEFAULT_BUCKETS);
});

test('quantiles interpolate inside a bucket, as histogram_quantile does', () => {
  const counts = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  counts[7] = 100; // (100, 250]
  assert.equal(bucketQuantile(0.5, counts), 175);
  assert.equal(bucketQuantile(0.99, counts), 100 + 150 * 0.99);
  counts[counts.length - 1] = 1000;
  assert.equal(bucketQuantile(0.99, counts), 3600000, 'the overflow bucket reports its lower bound');
  assert.equal(bucketQuantile(0.5, new Array<number>(20).fill(0)), null);
});

test('an agent summarizes per reporter, workloads and service, and resets on take', () => {
  let now = 0;
  const s = new StatsSummary(PRODUCTPAGE, () => now);
  s.finish(requestRecord({ durationMs: 3 }));
  s.finish(requestRecord({ durationMs: 300, responseCode: 503 }));
  s.finish(connectionRecord());
  s.finish(connectionRecord({ stack: 'http1' }));
  now = 10_000;
  const r = s.take()!;
  assert.equal(r.intervalMs, 10_000);
  assert.equal(r.stats.length, 1);
  const st = r.stats[0]!;
  assert.deepEqual({ ...st, latencyBuckets: undefined, errors: undefined }, { reporter: 'source', sourceWorkload: 'default/productpage-v1', destinationWorkload: 'default/reviews-v2', destinationService: 'reviews.default', requests: 2, failures: 1, latencyBuckets: undefined, tcpConnections: 1, tcpSentBytes: 300, tcpReceivedBytes: 100, mtls: 0, errors: undefined });
  assert.deepEqual(st.errors, [{ startMs: 1_700_000_000_000, responseCode: 503, grpcStatus: -1, responseFlags: '-', errorCode: '', method: 'GET', path: '/reviews/1', upstreamHost: '10.0.0.7:15006' }]);
  assert.equal(st.latencyBuckets[2], 1); // (1, 5]
  assert.equal(st.latencyBuckets[8], 1); // (250, 500]
  assert.equal(s.take(), undefined);
});

test('rows: the server view by default, one client with from, a window', () => {
  let now = 1_000_000;
  const store = new TrafficStatsStore(() => now);
  const buckets = (i: number, n: number) => Object.assign(new Array<number>(20).fill(0), { [i]: n });
  const base = { sourceWorkload: 'default/productpage-v1', destinationWorkload: 'default/reviews-v2', destinationService: 'reviews.default', tcpConnections: 0, tcpSentBytes: 0, tcpReceivedBytes: 0, mtls: 0, errors: [] };
  store.add([{ ...base, reporter: 'destination', requests: 60, failures: 6, latencyBuckets: buckets(6, 60) }, { ...base, reporter: 'source', requests: 60, failures: 6, latencyBuckets: buckets(7, 60) }]);
  now += 120_000;
  store.add([{ ...base, reporter: 'destination', requests: 30, failures: 0, latencyBuckets: buckets(6, 30) }]);
  const last = store.query({ kind: 'services', windowMs: 60_000 });
  assert.deepEqual(last.map((r) => [r.name, r.requests, r.success, r.rps]), [['reviews.default', 30, 1, 0.5]]);
  const all = store.query({ kind: 'workloads', windowMs: 3_600_000 });
  assert.deepEqual(all.map((r) => [r.name, r.requests, r.success]), [['default/reviews-v2', 90, 84 / 90]]);
  const from = store.query({ kind: 'services', windowMs: 3_600_000, from: 'default/productpage-v1' });
  assert.equal(from[0]!.p50Ms, 175, 'the client side saw its own latency buckets');
  assert.deepEqual(store.query({ kind: 'services', windowMs: 3_600_000, name: 'ratings.default' }), []);
});

test('the server side keeps mTLS apart from plaintext, and keeps only the newest failures', () => {
  const s = new StatsSummary(REVIEWS);
  const dest = { reporter: 'destination' as const, source: peer(), destination: REVIEWS };
  s.finish(requestRecord({ ...dest, connectionSecurityPolicy: 'mutual_tls' }));
  s.finish(requestRecord({ ...dest, connectionSecurityPolicy: 'none' }));
  for (let i = 0; i < MAX_ERRORS + 2; i++) s.finish(requestRecord({ ...dest, connectionSecurityPolicy: 'none', responseCode: 500, path: `/fail/${i}` }));
  const rows = s.take()!.stats;
  assert.equal(rows.length, 2);
  const mtls = rows.find((r) => r.mtls > 0)!;
  const plain = rows.find((r) => r.mtls === 0)!;
  assert.deepEqual([mtls.requests, mtls.mtls, mtls.errors.length], [1, 1, 0]);
  assert.equal(plain.requests, MAX_ERRORS + 3);
  assert.equal(plain.failures, MAX_ERRORS + 2);
  assert.deepEqual(plain.errors.map((e) => e.path), Array.from({ length: MAX_ERRORS }, (_, i) => `/fail/${i + 2}`));
});

test('edges sum a window per reporter and pair, newest errors first', () => {
  let now = 1_000_000;
  const store = new TrafficStatsStore(() => now);
  const base = { reporter: 'source', sourceWorkload: 'shop/web', destinationWorkload: '', destinationService: 'orders.shop', requests: 10, failures: 1, latencyBuckets: new Array<number>(20).fill(0), tcpConnections: 2, tcpSentBytes: 10, tcpReceivedBytes: 5, mtls: 0, errors: [] };
  const err = (path: string) => ({ startMs: now, responseCode: 503, grpcStatus: -1, responseFlags: 'UF', errorCode: '', method: 'GET', path, upstreamHost: '' });
  store.add([{ ...base, errors: [err('/old')] }]);
  now += 30_000;
  store.add([{ ...base, errors: [err('/new')] }, { ...base, reporter: 'destination', sourceWorkload: '', destinationWorkload: 'shop/orders-1' }]);
  const edges = store.edges(60_000);
  assert.equal(edges.length, 2);
  const src = edges.find((e) => e.reporter === 'source')!;
  assert.deepEqual([src.requests, src.failures, src.tcpConnections, src.tcpBytes, src.errors.map((e) => e.path)], [20, 2, 4, 30, ['/new', '/old']]);
  now += 45_000;
  assert.deepEqual(store.edges(60_000).map((e) => [e.reporter, e.requests]), [['source', 10], ['destination', 10]]);
});
