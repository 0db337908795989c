// The cost of recording a request in Istio's metrics, per record, for the
// lean sink (agent/telemetry/istio-metrics.ts) against prom-client with
// cached label children (the fastest way to use prom-client for these
// metrics), and the cost of one scrape. Run: npm run bench -- telemetry-sink
import * as client from 'prom-client';
import { IstioMetrics } from '../../agent/telemetry/istio-metrics';
import { REQUEST_LABELS, requestLabelValues } from '../../agent/telemetry/istio-labels';
import { ENVOY_DEFAULT_BUCKETS } from '../../agent/telemetry/istio-metrics';
import { PRODUCTPAGE, peer, requestRecord } from '../support/records';

const N = 1_000_000;
// 40 label sets: 10 peers x 4 response codes, as a busy client sees.
const records = Array.from({ length: 40 }, (_, i) => requestRecord({ destination: peer({ workload: `reviews-${i % 10}`, app: 'reviews', namespace: 'default' }), responseCode: [200, 201, 404, 503][i >> 3 & 3]!, durationMs: i * 3.7, responseBytes: 1024 }));

function lean(): { nsPerRecord: number; scrapeMs: number } {
  const m = new IstioMetrics({ local: PRODUCTPAGE, version: 'bench' });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) m.finish(records[i % records.length]!);
  const t1 = process.hrtime.bigint();
  const s0 = performance.now();
  const text = m.render();
  const scrapeMs = performance.now() - s0;
  if (text.length === 0) throw new Error('empty render');
  return { nsPerRecord: Number(t1 - t0) / N, scrapeMs };
}

async function promClient(): Promise<{ nsPerRecord: number; scrapeMs: number }> {
  const registry = new client.Registry();
  const labelNames = [...REQUEST_LABELS];
  const requests = new client.Counter({ name: 'istio_requests_total', help: 'h', labelNames, registers: [registry] });
  const hist = (name: string) => new client.Histogram({ name, help: 'h', labelNames, buckets: [...ENVOY_DEFAULT_BUCKETS], registers: [registry] });
  const duration = hist('istio_request_duration_milliseconds');
  const reqBytes = hist('istio_request_bytes');
  const respBytes = hist('istio_response_bytes');
  type Children = { r: ReturnType<typeof requests.labels>; d: ReturnType<typeof duration.labels>; q: ReturnType<typeof duration.labels>; p: ReturnType<typeof duration.labels> };
  const cache = new Map<string, Children>();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const rec = records[i % records.length]!;
    const values = requestLabelValues(rec, PRODUCTPAGE);
    const key = values.join('\u0000');
    let c = cache.get(key);
    if (c === undefined) {
      const labels = Object.fromEntries(labelNames.map((n, j) => [n, values[j]!]));
      c = { r: requests.labels(labels), d: duration.labels(labels), q: reqBytes.labels(labels), p: respBytes.labels(labels) };
      cache.set(key, c);
    }
    c.r.inc();
    c.d.observe(rec.durationMs);
    c.q.observe(rec.requestBytes);
    c.p.observe(rec.responseBytes);
  }
  const t1 = process.hrtime.bigint();
  const s0 = performance.now();
  const text = await registry.metrics();
  const scrapeMs = performance.now() - s0;
  if (text.length === 0) throw new Error('empty render');
  return { nsPerRecord: Number(t1 - t0) / N, scrapeMs };
}

async function main(): Promise<void> {
  // Interleaved rounds so JIT warm-up and machine noise hit both alike.
  const rows: string[] = [];
  for (let round = 0; round < 3; round++) {
    const a = lean();
    const b = await promClient();
    rows.push(`round ${round}: lean ${a.nsPerRecord.toFixed(0)} ns/record, scrape ${a.scrapeMs.toFixed(1)} ms | prom-client ${b.nsPerRecord.toFixed(0)} ns/record, scrape ${b.scrapeMs.toFixed(1)} ms`);
  }
  console.log(`${N} request records over ${records.length} label sets`);
  for (const r of rows) console.log(r);
}

void main();
