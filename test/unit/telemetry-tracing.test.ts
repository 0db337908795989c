import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import { hopContext, incomingTrace, outgoingTraceHeaders, parseTraceparent } from '../../agent/telemetry/trace-context';
import { SpanSink } from '../../agent/telemetry/tracing';
import { PRODUCTPAGE, requestRecord } from '../support/records';
import { eventually } from '../support/procs';

const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

/** A counter-based random source: deterministic ids. */
function seq(): () => number {
  let i = 0;
  return () => ((i++ * 37) % 256) / 256;
}

test('traceparent: valid values parse, invalid ones are ignored', () => {
  assert.deepEqual(parseTraceparent(TP), { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', sampled: true });
  assert.equal(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00')?.sampled, false);
  for (const bad of ['', '00-0000000000000000000000000000000-00f067aa0ba902b7-01', '00-00000000000000000000000000000000-00f067aa0ba902b7-01', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra', 'zz']) {
    assert.equal(parseTraceparent(bad), undefined, bad);
  }
});

test('a hop joins the caller trace with a new span whose parent is the caller; W3C headers go on', () => {
  const inc = incomingTrace({ traceparent: TP, tracestate: 'vendor=x' })!;
  const hop = hopContext(inc, 0, seq());
  assert.equal(hop.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.equal(hop.parentSpanId, '00f067aa0ba902b7');
  assert.match(hop.spanId, /^[0-9a-f]{16}$/);
  assert.notEqual(hop.spanId, hop.parentSpanId);
  assert.equal(hop.sampled, true, "the caller's decision is kept even with sampling at 0");
  assert.deepEqual(outgoingTraceHeaders(hop), { traceparent: `00-${hop.traceId}-${hop.spanId}-01`, tracestate: 'vendor=x' });
});

test('B3 single and multi are read (64-bit ids padded) and written back in the same form', () => {
  const single = incomingTrace({ b3: '80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90' })!;
  assert.deepEqual(single, { traceId: '000000000000000080f198ee56343ba8', spanId: 'e457b5a2e4d86bd1', sampled: true, tracestate: '', b3: 'single' });
  const hop = hopContext(single, 0, seq());
  assert.equal(outgoingTraceHeaders(hop).b3, `${hop.traceId}-${hop.spanId}-1-e457b5a2e4d86bd1`);
  const multi = incomingTrace({ 'x-b3-traceid': '463ac35c9f6413ad48485a3953bb6124', 'x-b3-spanid': 'a2fb4a1d1a96d312', 'x-b3-sampled': '0' })!;
  assert.equal(multi.sampled, false);
  const h = outgoingTraceHeaders(hopContext(multi, 1, seq()));
  assert.equal(h['x-b3-traceid'], '463ac35c9f6413ad48485a3953bb6124');
  assert.equal(h['x-b3-parentspanid'], 'a2fb4a1d1a96d312');
  assert.equal(h['x-b3-sampled'], '0');
  assert.match(h.traceparent!, /^00-463ac35c9f6413ad48485a3953bb6124-[0-9a-f]{16}-00$/);
  // B3 that leaves sampling open: ours to decide.
  assert.equal(incomingTrace({ 'x-b3-traceid': '463ac35c9f6413ad48485a3953bb6124', 'x-b3-spanid': 'a2fb4a1d1a96d312' })!.sampled, undefined);
  assert.equal(incomingTrace({ b3: 'nonsense' }), undefined);
});

test('a new trace is sampled at the configured rate', () => {
  assert.equal(hopContext(undefined, 1).sampled, true);
  assert.equal(hopContext(undefined, 0).sampled, false);
  const t = hopContext(undefined, 1);
  assert.match(t.traceId, /^[0-9a-f]{32}$/);
  assert.equal(t.parentSpanId, '');
});

interface OtlpSpan { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number }

test('sampled request records become OTLP spans with the propagated ids', async () => {
  const received: OtlpSpan[] = [];
  const collector = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
      const doc = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
      for (const rs of doc.resourceSpans) for (const ss of rs.scopeSpans) received.push(...ss.spans);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(collector.address() as net.AddressInfo).port}/v1/traces`;
  const sink = new SpanSink(PRODUCTPAGE, { endpoint, scheduledDelayMillis: 50 });
  try {
    sink.finish(requestRecord({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '1111111111111111', parentSpanId: '00f067aa0ba902b7', traceSampled: true }));
    sink.finish(requestRecord({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '2222222222222222', parentSpanId: '', traceSampled: true, reporter: 'destination' }));
    sink.finish(requestRecord({ traceId: '5bf92f3577b34da6a3ce929d0e0e4736', spanId: '3333333333333333', traceSampled: false }));
    await sink.flush();
    await eventually(() => received.length >= 2, 10_000, 'two spans at the collector');
    const byId = new Map(received.map((s) => [s.spanId, s]));
    assert.equal(received.length, 2, 'the unsampled record made no span');
    assert.equal(byId.get('1111111111111111')?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.equal(byId.get('1111111111111111')?.parentSpanId, '00f067aa0ba902b7');
    assert.equal(byId.get('1111111111111111')?.name, 'reviews.default.svc.cluster.local:9080/*');
    assert.equal(byId.get('1111111111111111')?.kind, 3, 'client');
    assert.equal(byId.get('2222222222222222')?.kind, 2, 'server');
    assert.deepEqual(sink.stats(), { exported: 2, dropped: 0 });
  } finally {
    await sink.close();
    await new Promise<void>((resolve) => collector.close(() => resolve()));
  }
});

test('an unreachable OTLP endpoint drops and counts spans; recording never throws or waits', async () => {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  const sink = new SpanSink(PRODUCTPAGE, { endpoint: `http://127.0.0.1:${port}/v1/traces`, scheduledDelayMillis: 50, exportTimeoutMillis: 2_000 });
  try {
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) sink.finish(requestRecord({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: (i + 1).toString(16).padStart(16, '0'), traceSampled: true }));
    const recordMs = performance.now() - t0;
    await sink.flush().catch(() => undefined);
    await eventually(() => sink.stats().dropped === 20, 15_000, 'twenty dropped spans');
    assert.equal(sink.stats().exported, 0);
    console.log(`# 20 spans recorded in ${recordMs.toFixed(1)} ms with the collector down`);
  } finally {
    await sink.close();
  }
});
