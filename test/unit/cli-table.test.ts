// CLI tables are generated text: golden-tested.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TABLES } from '../../cli/get';
import { statusTable } from '../../cli/status';

const GOLDEN = path.resolve(__dirname, '..', '..', '..', 'test', 'golden', 'cli');

function golden(name: string, actual: string) {
  const file = path.join(GOLDEN, `${name}.golden`);
  if (process.env.KEDGE_UPDATE_GOLDEN) {
    fs.mkdirSync(GOLDEN, { recursive: true });
    fs.writeFileSync(file, actual);
  }
  assert.equal(actual, fs.readFileSync(file, 'utf8'));
}

describe('kedge get tables', () => {
  it('services', () => golden('services', TABLES.services([
    { key: 'reviews.default', hostname: 'reviews.default.svc.cluster.local', vip: '', ports: [{ name: 'http', port: 9080, protocol: 'http' }], endpoints: 3, healthy: 2, warnings: [] },
    { key: 'db.shop', hostname: 'db.shop.svc.cluster.local', vip: '', ports: [{ name: 'pg', port: 5432, protocol: 'tcp' }, { name: 'm', port: 9187, protocol: 'http' }], endpoints: 1, healthy: 1, warnings: ['w'] },
  ])));
  it('endpoints', () => golden('endpoints', TABLES.endpoints([
    { service: 'reviews.default', address: '127.0.0.2', mtlsPort: 15006, ports: [], workload: 'default/reviews-v1', identity: 'spiffe://cluster.local/ns/default/sa/reviews', health: 'HEALTHY', locality: 'us-east1/us-east1-b', cluster: 'vms', network: 'net-a' },
    { service: 'reviews.default', address: '127.0.0.3', mtlsPort: 15006, ports: [], workload: 'default/reviews-v2', identity: 'spiffe://cluster.local/ns/default/sa/reviews', health: 'UNHEALTHY', locality: '', cluster: 'vms', network: '' },
    // Plaintext (auto mTLS): the ports agents dial, and no identity to check.
    { service: 'billing-db.shop', address: '10.1.2.3', mtlsPort: 0, ports: [{ name: 'pg', port: 5432 }, { name: 'metrics', port: 9187 }], workload: 'static/shop/billing-db/10.1.2.3', identity: '', health: 'HEALTHY', locality: '', cluster: 'static', network: '', meshed: false },
  ])));
  it('workloads', () => golden('workloads', TABLES.workloads([
    { name: 'vm-1', namespace: 'shop', identity: 'spiffe://cluster.local/ns/shop/sa/payments', address: '127.0.0.2', locality: 'r/z', network: 'net-a', services: ['payments'], replica: 'host:15012', connectedAt: '' },
  ])));
  it('clusters', () => golden('clusters', TABLES.clusters([
    { name: 'east', kind: 'kubernetes', connected: true, stale: false, lastSync: '2026-11-24T07:00:00.000Z', error: undefined, services: 12, endpoints: 40 },
    { name: 'dc1', kind: 'consul', connected: false, stale: true, lastSync: '2026-11-24T06:59:00.000Z', error: 'connect ECONNREFUSED 127.0.0.1:8500', services: 3, endpoints: 5 },
  ])));
  it('status', () => golden('status', statusTable([
    { agent: 'shop/vm-1', replica: 'fed-a:15012', ackedVersion: '7', lastContact: '2026-11-24T06:59:55.000Z', certNotAfter: '2026-11-25T06:00:00.000Z', subscriptions: ['reviews.default'] },
    { agent: 'shop/vm-2', replica: 'fed-b:15012', ackedVersion: '', lastContact: '2026-11-24T06:30:00.000Z', certNotAfter: undefined, subscriptions: [] },
  ], Date.parse('2026-11-24T07:00:00.000Z'))));
  it('routes', () => golden('routes', TABLES.routes([
    { kind: 'FaultInjection', namespace: 'default', name: 'flaky', source: 'kedge apply', parents: [], backends: [], rules: 0, createdAt: '', warnings: [] },
    { kind: 'HTTPRoute', namespace: 'default', name: 'reviews-split', source: 'kedge apply', parents: ['reviews.default:9080'], backends: ['reviews-v1.default:9080=90', 'reviews-v2.default:9080=10'], rules: 1, createdAt: '', warnings: ['also defined by cluster east; the copy from kedge apply is used'] },
    { kind: 'GRPCRoute', namespace: 'shop', name: 'cart', source: 'cluster east', parents: ['cart.shop:grpc'], backends: [], rules: 0, createdAt: '', warnings: [], error: 'GRPCRoute shop/cart: spec.hostnames: has no meaning on a mesh route' },
  ])));
  it('an empty list still prints the header', () => golden('empty', TABLES.services([])));
});
