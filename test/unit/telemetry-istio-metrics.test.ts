import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IstioMetrics, ENVOY_DEFAULT_BUCKETS } from '../../agent/telemetry/istio-metrics';
import { REQUEST_LABELS, TCP_LABELS, principalNamespace, requestLabelValues, tcpLabelValues } from '../../agent/telemetry/istio-labels';
import { escapeLabelValue } from '../../agent/telemetry/exposition';
import { workloadMetadata } from '../../agent/telemetry/workload';
import { PRODUCTPAGE, REVIEWS, connectionRecord, peer, requestRecord } from '../support/records';
import { parseExposition, select, total } from '../support/prom-text';

const LOCAL_PP = PRODUCTPAGE;
const LOCAL_REVIEWS = REVIEWS;

function labelsOf(names: readonly string[], values: string[]): Record<string, string> {
  return Object.fromEntries(names.map((n, i) => [n, values[i]!]));
}

test('client reporter: own side from the local workload, the other from the peer, security policy unknown', () => {
  const l = labelsOf(REQUEST_LABELS, requestLabelValues(requestRecord(), LOCAL_PP));
  assert.deepEqual(l, {
    reporter: 'source',
    source_workload: 'productpage-v1', source_canonical_service: 'productpage', source_canonical_revision: 'v1',
    source_workload_namespace: 'default', source_principal: 'spiffe://cluster.local/ns/default/sa/productpage',
    source_app: 'productpage', source_version: 'v1', source_cluster: 'vms',
    destination_workload: 'reviews-v2', destination_workload_namespace: 'default', destination_principal: 'spiffe://cluster.local/ns/default/sa/reviews',
    destination_app: 'reviews', destination_version: 'v2', destination_service: 'reviews.default.svc.cluster.local',
    destination_canonical_service: 'reviews', destination_canonical_revision: 'v2', destination_service_name: 'reviews',
    destination_service_namespace: 'default', destination_cluster: 'east',
    request_protocol: 'http', response_code: '200', grpc_response_status: '', response_flags: '-', connection_security_policy: 'unknown',
  });
});

test('server reporter: peer from the record, own side local, mutual_tls only when the hop was mTLS', () => {
  const r = requestRecord({ reporter: 'destination', connectionSecurityPolicy: 'mutual_tls', destination: peer() });
  const l = labelsOf(REQUEST_LABELS, requestLabelValues(r, LOCAL_REVIEWS));
  assert.equal(l.reporter, 'destination');
  assert.equal(l.source_workload, 'productpage-v1');
  assert.equal(l.destination_workload, 'reviews-v2');
  // The engine left the local principal empty; mTLS means it is ours.
  assert.equal(l.destination_principal, 'spiffe://cluster.local/ns/default/sa/reviews');
  assert.equal(l.destination_cluster, 'east');
  assert.equal(l.connection_security_policy, 'mutual_tls');
  const plain = labelsOf(REQUEST_LABELS, requestLabelValues({ ...r, connectionSecurityPolicy: 'none', source: peer(), destination: peer() }, LOCAL_REVIEWS));
  assert.equal(plain.connection_security_policy, 'none');
  assert.equal(plain.source_workload, 'unknown');
  assert.equal(plain.source_principal, 'unknown');
  assert.equal(plain.source_canonical_revision, 'latest', 'a peer with no revision is latest, as Istio writes it');
  assert.equal(plain.destination_principal, 'unknown', 'plaintext: no local identity');
});

test('missing values are unknown; the peer namespace comes from its SPIFFE ID first', () => {
  const r = requestRecord({ destination: peer({ principal: 'spiffe://td/ns/shop/sa/cart' }), service: { hostname: '', name: '', namespace: '', port: 0 } });
  const l = labelsOf(REQUEST_LABELS, requestLabelValues(r, LOCAL_PP));
  assert.equal(l.destination_workload, 'unknown');
  assert.equal(l.destination_workload_namespace, 'shop');
  assert.equal(l.destination_service, 'unknown');
  assert.equal(l.destination_service_name, 'PassthroughCluster');
  assert.equal(l.destination_canonical_revision, 'latest');
  const refused = labelsOf(REQUEST_LABELS, requestLabelValues({ ...r, responseFlags: 'NR' }, LOCAL_PP));
  assert.equal(refused.destination_service_name, 'BlackHoleCluster');
  assert.equal(principalNamespace('spiffe://td/ns/a/sa/b'), 'a');
  assert.equal(principalNamespace(''), '');
});

test('gRPC: protocol grpc and the status; TCP labels have no response code', () => {
  const l = labelsOf(REQUEST_LABELS, requestLabelValues(requestRecord({ protocol: 'grpc', grpcStatus: 14, responseCode: 200 }), LOCAL_PP));
  assert.equal(l.request_protocol, 'grpc');
  assert.equal(l.grpc_response_status, '14');
  const t = labelsOf(TCP_LABELS, tcpLabelValues(connectionRecord({ responseFlags: 'UF' }), LOCAL_PP));
  assert.equal(t.request_protocol, 'tcp');
  assert.equal(t.response_flags, 'UF');
  assert.equal('response_code' in t, false);
});

test('workload metadata follows Istio label conventions', () => {
  assert.deepEqual(workloadMetadata({ name: 'reviews-v2', namespace: 'default', labels: { app: 'reviews', version: 'v2' }, cluster: '' }), {
    principal: '', workload: 'reviews-v2', namespace: 'default', app: 'reviews', version: 'v2', canonicalService: 'reviews', canonicalRevision: 'v2', cluster: 'vms',
  });
  const bare = workloadMetadata({ name: 'db', namespace: 'data', labels: {}, cluster: 'east' });
  assert.equal(bare.canonicalService, 'db');
  assert.equal(bare.canonicalRevision, 'latest');
  assert.equal(bare.cluster, 'east');
  const explicit = workloadMetadata({ name: 'x', namespace: 'n', labels: { app: 'a', 'service.istio.io/canonical-name': 'svc', 'service.istio.io/canonical-revision': 'r9' } });
  assert.equal(explicit.canonicalService, 'svc');
  assert.equal(explicit.canonicalRevision, 'r9');
});

test('requests: one series per label set, Envoy default buckets, cumulative counts, sum and count', () => {
  const m = new IstioMetrics({ local: LOCAL_PP, version: '0.1.0' });
  for (const ms of [0.3, 3, 3, 70, 20000]) m.finish(requestRecord({ durationMs: ms, requestBytes: 10, responseBytes: 2000 }));
  m.finish(requestRecord({ responseCode: 503, responseFlags: 'UF' }));
  const samples = parseExposition(m.render());
  assert.equal(total(samples, 'istio_requests_total'), 6);
  assert.equal(total(samples, 'istio_requests_total', { response_code: '200' }), 5);
  assert.equal(total(samples, 'istio_requests_total', { response_code: '503', response_flags: 'UF' }), 1);
  const buckets = select(samples, 'istio_request_duration_milliseconds_bucket', { response_code: '200' });
  assert.deepEqual(buckets.map((b) => b.labels.le), [...ENVOY_DEFAULT_BUCKETS.map(String), '+Inf']);
  const at = (le: string) => buckets.find((b) => b.labels.le === le)!.value;
  assert.equal(at('0.5'), 1);
  assert.equal(at('5'), 3);
  assert.equal(at('100'), 4);
  assert.equal(at('10000'), 4);
  assert.equal(at('30000'), 5);
  assert.equal(at('+Inf'), 5);
  assert.equal(total(samples, 'istio_request_duration_milliseconds_sum', { response_code: '200' }), 0.3 + 3 + 3 + 70 + 20000);
  assert.equal(total(samples, 'istio_request_duration_milliseconds_count', { response_code: '200' }), 5);
  assert.equal(total(samples, 'istio_response_bytes_sum', { response_code: '200' }), 10000);
  assert.equal(total(samples, 'istio_request_bytes_count'), 6);
  // Messages are counted for gRPC only, as Istio does.
  assert.equal(select(samples, 'istio_request_messages_total').length, 0);
  assert.deepEqual(select(samples, 'istio_build').map((s) => s.labels), [{ component: 'proxy', tag: '0.1.0' }]);
});

test('gRPC messages are counted per stream', () => {
  const m = new IstioMetrics({ local: LOCAL_PP, version: 'v' });
  m.finish(requestRecord({ protocol: 'grpc', grpcStatus: 0, requestMessages: 10000, responseMessages: 9999 }));
  m.finish(requestRecord({ protocol: 'grpc', grpcStatus: 0, requestMessages: 1, responseMessages: 1 }));
  const s = parseExposition(m.render());
  assert.equal(total(s, 'istio_request_messages_total', { grpc_response_status: '0' }), 10001);
  assert.equal(total(s, 'istio_response_messages_total'), 10000);
});

test('tcp: opened at open, closed and bytes at finish', () => {
  const m = new IstioMetrics({ local: LOCAL_PP, version: 'v' });
  const rec = connectionRecord({ sentBytes: 500, receivedBytes: 70 });
  m.open(rec);
  m.open(rec);
  let s = parseExposition(m.render());
  assert.equal(total(s, 'istio_tcp_connections_opened_total'), 2);
  assert.equal(total(s, 'istio_tcp_connections_closed_total'), 0);
  m.finish(rec);
  s = parseExposition(m.render());
  assert.equal(total(s, 'istio_tcp_connections_closed_total'), 1);
  assert.equal(total(s, 'istio_tcp_sent_bytes_total'), 500);
  assert.equal(total(s, 'istio_tcp_received_bytes_total'), 70);
});

test('idle series expire after idleMs; a TCP series with an open connection stays', () => {
  let now = 0;
  const m = new IstioMetrics({ local: LOCAL_PP, version: 'v', now: () => now, idleMs: 600_000 });
  m.finish(requestRecord());
  const longLived = connectionRecord({ destination: peer({ workload: 'db' }) });
  m.open(longLived);
  m.finish(connectionRecord());
  now = 300_000;
  m.finish(requestRecord({ responseCode: 404 }));
  now = 700_000;
  m.sweep();
  const s = parseExposition(m.render());
  assert.deepEqual(select(s, 'istio_requests_total').map((x) => x.labels.response_code), ['404']);
  assert.deepEqual(select(s, 'istio_tcp_connections_opened_total').map((x) => x.labels.destination_workload), ['db']);
  assert.equal(m.stats().expired, 2);
  m.finish(longLived);
  now = 1_400_000;
  m.sweep();
  assert.equal(m.stats().tcpSeries, 0);
  assert.equal(m.stats().requestSeries, 0);
});

test('the series cap refuses new label sets and counts what it refused', () => {
  const m = new IstioMetrics({ local: LOCAL_PP, version: 'v', maxSeries: 3 });
  for (let i = 0; i < 10; i++) m.finish(requestRecord({ responseCode: 200 + i }));
  m.finish(requestRecord({ responseCode: 200 }));
  assert.equal(m.stats().requestSeries, 3);
  assert.equal(m.stats().overflow, 7);
  assert.equal(total(parseExposition(m.render()), 'istio_requests_total'), 4);
});

test('label values with quotes, backslashes, newlines and bad UTF-16 are escaped; promtool accepts the page', () => {
  assert.equal(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  assert.equal(escapeLabelValue('x\uD800y'), 'x\uFFFDy');
  assert.equal(escapeLabelValue('ok \uD83D\uDE00'), 'ok \uD83D\uDE00');
  const m = new IstioMetrics({ local: LOCAL_PP, version: 'v' });
  const nasty = 'we"ird\\\nname\uDC00' + Buffer.from([0xff, 0xfe, 0x41]).toString('latin1');
  m.finish(requestRecord({ destination: peer({ workload: nasty, app: '"' }) }));
  const text = m.render();
  assert.ok(Buffer.from(text, 'utf8').toString('utf8') === text.replace(/[\uD800-\uDFFF]/g, '\uFFFD'));
  const s = parseExposition(text);
  assert.equal(select(s, 'istio_requests_total')[0]!.labels.destination_workload, 'we"ird\\\nname\uFFFD\u00ff\u00feA');
  assert.equal(spawnSync('promtool', ['--version']).error, undefined, 'promtool is missing: apt-get install -y prometheus');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-expo-'));
  const file = path.join(dir, 'metrics.txt');
  fs.writeFileSync(file, text);
  const r = spawnSync('promtool', ['check', 'metrics'], { input: fs.readFileSync(file) });
  // promtool exits 1 for lint findings (naming advice) too; a parse error says "error while linting" or similar.
  assert.doesNotMatch(String(r.stderr) + String(r.stdout), /parse|unexpected|invalid/i, String(r.stderr));
});

test('a record with an error code and no flags gets the flag Envoy writes for that failure', () => {
  const t = labelsOf(TCP_LABELS, tcpLabelValues(connectionRecord({ errorCode: 'KEDGE_TARGET_CONNECT_FAILED' }), LOCAL_PP));
  assert.equal(t.response_flags, 'UF');
  const kept = labelsOf(REQUEST_LABELS, requestLabelValues(requestRecord({ errorCode: 'KEDGE_UPSTREAM_UNAVAILABLE', responseFlags: 'URX' }), LOCAL_PP));
  assert.equal(kept.response_flags, 'URX', 'flags the engine set win');
  assert.equal(labelsOf(TCP_LABELS, tcpLabelValues(connectionRecord({ errorCode: 'KEDGE_SOMETHING_NEW' }), LOCAL_PP)).response_flags, '-');
});
