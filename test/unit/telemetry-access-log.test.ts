import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { accessLogSink, isErrorRecord } from '../../agent/telemetry/access-log';
import { parseAgentConfig } from '../../agent/config';
import { KedgeError } from '../../proto/model/errors';
import { logCapture } from '../support/logs';
import { connectionRecord, requestRecord } from '../support/records';

test('a request line carries Envoy access log fields under their names', () => {
  const { logger, lines } = logCapture();
  const sink = accessLogSink(logger, { level: 'info', filter: 'all', sample: 1 });
  sink.finish(requestRecord({ requestId: 'abc', traceId: '4bf92f3577b34da6a3ce929d0e0e4736', route: 'default/reviews', responseBytes: 1024, requestBytes: 5 }));
  const l = lines[0]!;
  assert.equal(l.msg, 'request');
  assert.equal(l.component, 'access');
  assert.deepEqual(
    { ...l, time: undefined, pid: undefined, hostname: undefined, level: undefined },
    {
      ...l, time: undefined, pid: undefined, hostname: undefined, level: undefined,
      start_time: '2023-11-14T22:13:20.000Z', reporter: 'source', method: 'GET', path: '/reviews/1', protocol: 'HTTP/1.1', response_code: 200, grpc_status: null,
      response_flags: '-', bytes_received: 5, bytes_sent: 1024, duration: 12, upstream_host: '10.0.0.7:15006',
      upstream_cluster: 'outbound|9080||reviews.default.svc.cluster.local', authority: 'reviews:9080', route_name: 'default/reviews',
      x_request_id: 'abc', trace_id: '4bf92f3577b34da6a3ce929d0e0e4736', attempts: 1,
      downstream_peer_uri_san: 'spiffe://cluster.local/ns/default/sa/productpage', upstream_peer_uri_san: 'spiffe://cluster.local/ns/default/sa/reviews', kedge_error: null,
    },
  );
});

test('a TCP line; HTTP connections are left to their requests', () => {
  const { logger, lines } = logCapture();
  const sink = accessLogSink(logger, { level: 'info', filter: 'all', sample: 1 });
  sink.finish(connectionRecord({ reporter: 'destination', errorCode: 'KEDGE_TARGET_CONNECT_FAILED' }));
  sink.finish(connectionRecord({ stack: 'http1' }));
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.msg, 'connection');
  assert.equal(lines[0]!.response_flags, 'UF');
  assert.equal(lines[0]!.upstream_cluster, 'inbound|9080||');
  assert.equal(lines[0]!.kedge_error, 'KEDGE_TARGET_CONNECT_FAILED');
});

test('errors only, sampling, levels and off', () => {
  const ok = requestRecord();
  const bad = requestRecord({ responseCode: 503 });
  assert.equal(isErrorRecord(ok), false);
  assert.equal(isErrorRecord(bad), true);
  assert.equal(isErrorRecord(requestRecord({ protocol: 'grpc', grpcStatus: 14 })), true);
  assert.equal(isErrorRecord(requestRecord({ responseCode: 0 })), true);
  const errorsOnly = logCapture();
  const s1 = accessLogSink(errorsOnly.logger, { level: 'info', filter: 'errors', sample: 1 });
  for (const r of [ok, bad, ok]) s1.finish(r);
  assert.deepEqual(errorsOnly.lines.map((l) => l.response_code), [503]);
  assert.deepEqual(s1.stats(), { written: 1, filtered: 2 });
  const sampled = logCapture();
  const draws = [0.05, 0.5, 0.09, 0.95];
  const s2 = accessLogSink(sampled.logger, { level: 'info', filter: 'all', sample: 0.1 }, () => draws.shift() ?? 0.99);
  for (const r of [ok, ok, ok, ok, bad]) s2.finish(r);
  assert.equal(sampled.lines.length, 3, 'two successes drew below 0.1; the error is always written');
  const quiet = logCapture();
  accessLogSink(quiet.logger, { level: 'debug', filter: 'all', sample: 1 }).finish(bad);
  accessLogSink(quiet.logger, { level: 'off', filter: 'all', sample: 1 }).finish(bad);
  assert.equal(quiet.lines.length, 0, 'debug lines under an info logger, and off, write nothing');
});

const BASE = `
federation: { address: 127.0.0.1:15012, rootCert: ./root-cert.pem }
workload: { name: vm-1, namespace: shop, serviceAccount: payments }
`;

test('telemetry config: defaults, and bad values named with what to write', () => {
  const c = parseAgentConfig(BASE, '/etc/kedge/agent.yaml');
  assert.deepEqual(c.telemetry, { metrics: true, accessLog: { level: 'info', filter: 'all', sample: 1 }, tracing: { otlpEndpoint: '', sample: 0.01 }, statsIntervalMs: 10_000 });
  assert.deepEqual(c.admin.metricsListen, { host: '0.0.0.0', port: 15020 });
  const t = parseAgentConfig(`${BASE}telemetry: { metrics: false, accessLog: { level: warn, filter: errors, sample: 0.25 }, tracing: { otlpEndpoint: 'http://otel:4318/v1/traces', sample: 1 } }\nadmin: { metricsListen: 127.0.0.1:0 }\n`, '/a.yaml');
  assert.deepEqual(t.telemetry, { metrics: false, accessLog: { level: 'warn', filter: 'errors', sample: 0.25 }, tracing: { otlpEndpoint: 'http://otel:4318/v1/traces', sample: 1 }, statsIntervalMs: 10_000 });
  for (const [bad, re] of [
    ['telemetry: { accessLog: { sample: 2 } }', /telemetry\.accessLog\.sample.*0 to 1/],
    ['telemetry: { accessLog: { filter: some } }', /telemetry\.accessLog\.filter.*all or errors/],
    ['telemetry: { accessLog: { level: loud } }', /telemetry\.accessLog\.level.*off, trace/],
    ['telemetry: { traces: true }', /telemetry/],
    ['telemetry: { tracing: { otlpEndpoint: otel:4318 } }', /telemetry\.tracing\.otlpEndpoint.*http:\/\/otel-collector:4318\/v1\/traces/],
    ['telemetry: { tracing: { sample: -1 } }', /telemetry\.tracing\.sample/],
  ] as const) {
    assert.throws(() => parseAgentConfig(`${BASE}${bad}\n`, '/a.yaml'), (err: unknown) => err instanceof KedgeError && re.test(err.message), bad);
  }
});
