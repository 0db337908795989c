// `kedge stat` end to end: agents report traffic summaries on their Connect
// streams and the CLI reads success rate, rps, latency and TCP connections
// per service and workload from the federation, with no Prometheus.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import type * as net from 'node:net';
import { eventually, runKedge } from '../support/procs';
import { type AgentHandle, type FederationHandle, agentSeesEndpoints, httpGet, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';
import type { StatRow } from '../../federation/stats';

const DELAY_MS = 30;

describe('kedge stat', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed?.proc.stop('SIGKILL');
    for (const c of closers) await c();
  });

  const stat = async (...args: string[]) => {
    const r = await runKedge(['stat', ...args, '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };

  it('shows success rate, rps, latency and TCP connections per service, workload and client', async () => {
    fed = await startFederationProc();
    let n = 0;
    const reviews = http.createServer((req, res) => {
      req.resume();
      const status = ++n % 4 === 0 ? 500 : 200;
      setTimeout(() => res.writeHead(status).end('reviews'), DELAY_MS);
    });
    await new Promise<void>((resolve) => reviews.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => reviews.close(() => resolve())));
    const db = await startHttpApp('db');
    closers.push(() => db.close());
    const telemetry = { statsInterval: '1s' };
    agents.push(await startAgentProc(fed, {
      name: 'reviews-v1', namespace: 'default', serviceAccount: 'reviews', address: '127.0.17.1',
      services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: (reviews.address() as net.AddressInfo).port, protocol: 'http' }] }, { name: 'db', ports: [{ name: 'tcp', port: 5432, targetPort: db.port }] }],
      extra: { telemetry },
    }));
    const client = await startAgentProc(fed, {
      name: 'productpage-v1', namespace: 'default', serviceAccount: 'productpage', address: '127.0.17.2',
      upstreams: [{ service: 'reviews.default', port: 9080, listen: '127.0.17.2:0' }, { service: 'db.default', port: 5432, listen: '127.0.17.3:0' }],
      extra: { telemetry },
    });
    agents.push(client);
    await agentSeesEndpoints(client, 'reviews.default', 1);
    await agentSeesEndpoints(client, 'db.default', 1);
    for (let i = 0; i < 40; i++) await httpGet(client.upstreams[0]!);
    for (let i = 0; i < 5; i++) await httpGet(client.upstreams[1]!);

    const rows = await eventually(async () => {
      const r = JSON.parse(await stat('services', '-o', 'json')) as StatRow[];
      const rv = r.find((x) => x.name === 'reviews.default');
      const d = r.find((x) => x.name === 'db.default');
      return rv?.requests === 40 && d?.tcpConnections === 5 ? r : undefined;
    }, 20_000, 'the reports of 40 requests and 5 connections');
    const rv = rows.find((x) => x.name === 'reviews.default')!;
    assert.equal(rv.success, 0.75);
    assert.ok(Math.abs(rv.rps - 40 / 60) < 1e-9, String(rv.rps));
    // Every request waited DELAY_MS at the app; the quantiles interpolate in Envoy's buckets (25-50 ms holds them).
    assert.ok(rv.p50Ms! >= 25 && rv.p99Ms! >= rv.p50Ms!, JSON.stringify(rv));
    const db_ = rows.find((x) => x.name === 'db.default')!;
    assert.equal(db_.requests, 0);
    assert.equal(db_.success, null);

    // From the client proxy's side, and per workload.
    const from = JSON.parse(await stat('services', 'reviews.default', '--from', 'default/productpage-v1', '-o', 'json')) as StatRow[];
    assert.deepEqual(from.map((r) => [r.name, r.requests, r.success]), [['reviews.default', 40, 0.75]]);
    const none = JSON.parse(await stat('services', '--from', 'default/someone-else', '-o', 'json')) as StatRow[];
    assert.deepEqual(none, []);
    const workloads = JSON.parse(await stat('workloads', '-o', 'json')) as StatRow[];
    assert.deepEqual(workloads.map((w) => [w.name, w.requests, w.tcpConnections]), [['default/reviews-v1', 40, 5]]);

    const table = await stat('services', 'reviews.default', '--window', '30s');
    const [header, line] = table.trimEnd().split('\n');
    assert.match(header!, /^SERVICE\s+SUCCESS\s+RPS\s+LATENCY_P50\s+LATENCY_P95\s+LATENCY_P99\s+TCP_CONN$/);
    assert.match(line!, /^reviews\.default\s+75\.00%\s+1\.3rps\s+\d+ms\s+\d+ms\s+\d+ms\s+0$/);
  });

  it('bad input is named with what to write', async () => {
    for (const [args, re] of [
      [['stat', 'pods'], /usage: kedge stat services\|workloads/],
      [['stat', 'services', '--window', '5'], /--window/],
      [['stat', 'services', '--from', 'productpage'], /--from productpage: name the client workload as NAMESPACE\/NAME/],
      [['stat', 'workloads', 'reviews-v1'], /workload reviews-v1: write NAMESPACE\/NAME/],
      [['stat', 'services', '--window', '2h'], /window .*choose from 1s to 1h/],
    ] as const) {
      const r = await runKedge([...args, '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, re, args.join(' '));
    }
  });
});
