// The dashboard's view models as tables: from the federation's state (as the
// feed sends it) to what each view shows, with no browser.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { emptyState, applySections, sortRows, KEYED_SECTIONS, type DashboardState, type EndpointRow, type WorkloadRow } from '../../federation/ui/model/state';
import { meshElements, meshMap } from '../../federation/ui/model/mesh-map';
import { failoverOrder, serviceDetail, serviceList } from '../../federation/ui/model/services';
import { certBadge, configBadge, contactBadge, workloadList, CERT_WARN_MS, formatBytes } from '../../federation/ui/model/workloads';
import { policyView } from '../../federation/ui/model/policies';
import { matchesQuery, paginate } from '../../federation/ui/model/lists';
import { countBadge, formatDuration } from '../../federation/ui/model/health';
import { edgeDetail, graphElements, graphView } from '../../federation/ui/model/graph';
import { trafficEdges, type GraphWorkload } from '../../federation/mesh/traffic-graph';
import type { EdgeAggregate } from '../../federation/stats';

const NOW = Date.parse('2030-01-01T12:00:00.000Z');

const ep = (over: Partial<EndpointRow>): EndpointRow => ({
  service: 'orders.shop', address: '10.0.0.1', workload: 'shop/orders-1', identity: 'spiffe://cluster.local/ns/shop/sa/orders', health: 'HEALTHY',
  locality: 'eu/eu-1', cluster: 'vms', network: 'west', meshed: true, ...over,
});

const wl = (over: Partial<WorkloadRow>): WorkloadRow => ({
  id: 'shop/orders-1', name: 'orders-1', namespace: 'shop', identity: 'spiffe://cluster.local/ns/shop/sa/orders', address: '10.0.0.1', locality: 'eu/eu-1',
  network: 'west', cluster: '', services: ['orders'], replica: 'r1', agentVersion: '0.1.0', gateway: '', connected: true,
  connectedAt: '2030-01-01T11:00:00.000Z', lastContact: '2030-01-01T11:59:55.000Z', certNotAfter: '2030-01-02T11:00:00.000Z',
  ackedVersion: '3', latestVersion: '3', lastNack: '', host: null, ...over,
});

const state = (over: Partial<DashboardState>): DashboardState => applySections(emptyState(), over);

describe('dashboard mesh map', () => {
  const st = state({
    endpoints: [
      ep({}),
      ep({ address: '10.0.0.2', workload: 'shop/orders-2', health: 'UNHEALTHY' }),
      ep({ address: '10.1.0.1', network: 'east', locality: 'us/us-1', cluster: 'kube-east' }),
      ep({ service: 'web.front', address: '10.1.0.2', network: 'east', locality: 'us/us-1', cluster: 'dc1' }),
    ],
    workloads: [
      wl({}),
      wl({ id: 'shop/orders-2', name: 'orders-2', address: '10.0.0.2', connected: false }),
      wl({ id: 'kedge/gw-east', name: 'gw-east', namespace: 'kedge', network: 'east', gateway: '127.0.0.9:15443', services: [] }),
    ],
    sources: [
      { name: 'kube-east', kind: 'kubernetes', connected: true, stale: false, lastSync: undefined, error: undefined, services: 1, endpoints: 1 },
      { name: 'dc1', kind: 'consul', connected: true, stale: false, lastSync: undefined, error: undefined, services: 1, endpoints: 1 },
    ],
  });

  it('groups endpoints and workloads by network, locality and cluster, with kinds from the sources', () => {
    const map = meshMap(st);
    assert.deepEqual(map.networks.map((n) => n.name), ['east', 'west']);
    const east = map.networks[0]!;
    assert.deepEqual(east.localities.map((l) => [l.name, l.groups.map((g) => `${g.kind} ${g.name} ${g.endpoints}/${g.healthy}`)]), [['us/us-1', ['consul dc1 1/1', 'kubernetes kube-east 1/1']]]);
    const west = map.networks[1]!;
    const vms = west.localities[0]!.groups[0]!;
    assert.equal(vms.kind, 'vm group');
    assert.deepEqual([vms.endpoints, vms.healthy, vms.workloads, vms.connected], [2, 1, 2, 1]);
    assert.deepEqual(vms.badge, { level: 'bad', text: '1 of 2 workloads disconnected' });
    assert.deepEqual(west.badge, { level: 'warn', text: '1/2 healthy' });
  });

  it('puts gateways on their network and links every other network to them', () => {
    const map = meshMap(st);
    assert.deepEqual(map.networks[0]!.gateways.map((g) => [g.workload, g.address, g.badge.text]), [['kedge/gw-east', '127.0.0.9:15443', 'gateway connected']]);
    assert.deepEqual(map.links, [{ id: 'network:west->gateway:kedge/gw-east', from: 'network:west', to: 'network:east', gateway: 'gateway:kedge/gw-east' }]);
    assert.equal(map.networks[1]!.gateways.length, 0);
  });

  it('counts only one namespace when asked, and lists the namespaces', () => {
    const map = meshMap(st, 'front');
    assert.deepEqual(map.namespaces, ['front', 'kedge', 'shop']);
    assert.deepEqual(map.networks.map((n) => [n.name, n.endpoints]), [['east', 1]]);
  });

  it('makes Cytoscape elements whose parents exist and whose labels carry the health in words', () => {
    const els = meshElements(meshMap(st));
    const ids = new Set(els.filter((e) => e.group === 'nodes').map((e) => e.data.id));
    for (const e of els) {
      if (e.data.parent) assert.ok(ids.has(e.data.parent), `parent ${e.data.parent} of ${e.data.id}`);
      if (e.group === 'edges') assert.ok(ids.has(e.data.source!) && ids.has(e.data.target!), e.data.id);
    }
    const group = els.find((e) => e.data.id === 'network:west|eu/eu-1|vms')!;
    assert.equal(group.data.label, 'vm group vms\n2 endpoints, 2 workloads\n1 of 2 workloads disconnected');
    assert.equal(group.data.level, 'bad');
    assert.equal(els.filter((e) => e.group === 'edges').length, 1);
  });

  it('shows an empty mesh as no networks', () => {
    assert.deepEqual(meshMap(emptyState()), { networks: [], links: [], namespaces: [] });
  });
});

describe('dashboard services', () => {
  const services = Array.from({ length: 1000 }, (_, i) => ({
    key: `svc-${String(i).padStart(4, '0')}.ns${i % 3}`, name: `svc-${String(i).padStart(4, '0')}`, namespace: `ns${i % 3}`, hostname: '', vip: `240.240.${i >> 8}.${i & 255}`,
    ports: [{ name: 'http', port: 8080, protocol: 'http' }], endpoints: i % 7 === 0 ? 0 : 2, healthy: i % 5 === 0 ? 1 : 2, warnings: [],
  }));

  it('pages a thousand services and filters by every word', () => {
    const p = serviceList({ services }, '', 3);
    assert.equal(p.items.length, 50);
    assert.equal(p.pages, 20);
    assert.equal(p.label, '151–200 of 1000');
    assert.equal(p.items[0]!.key, 'svc-0150.ns0');
    const f = serviceList({ services }, 'svc-00 ns1', 0);
    assert.deepEqual(f.items.map((s) => s.key).slice(0, 3), ['svc-0001.ns1', 'svc-0004.ns1', 'svc-0007.ns1']);
    assert.equal(f.total, 33);
  });

  it('says in words how healthy a service is', () => {
    assert.deepEqual(serviceList({ services }, 'svc-0000.', 0).items[0]!.badge, { level: 'bad', text: 'no endpoints' });
    assert.deepEqual(serviceList({ services }, 'svc-0005.', 0).items[0]!.badge, { level: 'warn', text: '1/2 healthy' });
    assert.deepEqual(serviceList({ services }, 'svc-0001.', 0).items[0]!.badge, { level: 'ok', text: '2/2 healthy' });
    assert.equal(serviceList({ services }, 'svc-0000 svc-0001', 0).total, 0);
  });

  it('groups a service\'s endpoints by locality, unhealthy first', () => {
    const st = state({
      services: [{ key: 'orders.shop', name: 'orders', namespace: 'shop', hostname: 'orders.shop.svc.cluster.local', vip: '240.240.0.1', ports: [], endpoints: 3, healthy: 2, warnings: [] }],
      endpoints: [ep({ address: '10.0.0.9' }), ep({ address: '10.0.0.3', health: 'UNHEALTHY' }), ep({ address: '10.2.0.1', locality: '' }), ep({ service: 'other.shop' })],
      workloads: [wl({ id: 'shop/b' }), wl({ id: 'shop/a' })],
    });
    const d = serviceDetail(st, 'orders.shop')!;
    assert.deepEqual(d.localities.map((l) => [l.locality, l.badge.text, l.endpoints.map((e) => `${e.address} ${e.healthText}`)]), [
      ['(no locality)', '1/1 healthy', ['10.2.0.1 healthy']],
      ['eu/eu-1', '1/2 healthy', ['10.0.0.3 unhealthy', '10.0.0.9 healthy']],
    ]);
    assert.deepEqual(d.clients, ['shop/a', 'shop/b']);
    assert.equal(serviceDetail(st, 'missing.shop'), undefined);
  });

  it('orders failover by priority, excluded endpoints last', () => {
    const steps = failoverOrder({
      service: 'orders.shop', from: 'shop/a', panic: false,
      endpoints: [
        { address: '10.0.0.2', workload: 'shop/o2', cluster: 'vms', network: 'west', locality: 'eu/eu-2', health: 'HEALTHY', priority: 1, share: 0 },
        { address: '10.9.0.1', workload: 'shop/o9', cluster: 'kube', network: 'east', locality: 'us/us-1', health: 'HEALTHY', priority: null, share: 0 },
        { address: '10.0.0.1', workload: 'shop/o1', cluster: 'vms', network: 'west', locality: 'eu/eu-1', health: 'HEALTHY', priority: 0, share: 100 },
      ],
    });
    assert.deepEqual(steps.map((s) => [s.label, s.endpoints.map((e) => `${e.address} ${e.share}`)]), [
      ['priority 0 (first choice)', ['10.0.0.1 100.0%']],
      ['priority 1 (when the ones above fail)', ['10.0.0.2 0.0%']],
      ['not used by this client', ['10.9.0.1 0.0%']],
    ]);
    assert.equal(steps[0]!.endpoints[0]!.where, 'west · vms · eu/eu-1');
  });
});

describe('dashboard workloads', () => {
  it('colours certificates by time left and says so', () => {
    const cases: [string, string, string][] = [
      [new Date(NOW + 20 * 3600_000).toISOString(), 'ok', 'expires in 20h'],
      [new Date(NOW + CERT_WARN_MS - 60_000).toISOString(), 'warn', 'expires in 5h 59m (soon)'],
      [new Date(NOW - 90_000).toISOString(), 'bad', 'expired 1m 30s ago'],
      ['', 'warn', 'expiry unknown'],
      ['not a date', 'warn', 'expiry unknown'],
    ];
    for (const [notAfter, level, text] of cases) assert.deepEqual(certBadge(notAfter, NOW), { level, text }, notAfter);
  });

  it('compares the acked config version with the latest', () => {
    assert.deepEqual(configBadge({ ackedVersion: '3', latestVersion: '3', lastNack: '' }), { level: 'ok', text: 'in sync (3)' });
    assert.deepEqual(configBadge({ ackedVersion: '2', latestVersion: '4', lastNack: '' }), { level: 'warn', text: 'behind: acked 2, latest 4' });
    assert.deepEqual(configBadge({ ackedVersion: '', latestVersion: '1', lastNack: '' }), { level: 'warn', text: 'behind: acked none, latest 1' });
    assert.deepEqual(configBadge({ ackedVersion: '2', latestVersion: '3', lastNack: '3: bad route' }), { level: 'bad', text: 'rejected: 3: bad route' });
    assert.deepEqual(configBadge({ ackedVersion: '7', latestVersion: '', lastNack: '' }), { level: 'ok', text: 'acked 7' });
  });

  it('says connected or disconnected with the last contact', () => {
    assert.deepEqual(contactBadge(wl({}), NOW), { level: 'ok', text: 'connected, last contact 5s ago' });
    assert.deepEqual(contactBadge(wl({ connected: false }), NOW), { level: 'bad', text: 'disconnected, last contact 5s ago' });
  });

  it('lists problems first and filters to those needing attention, over 5,000 workloads', () => {
    const workloads = Array.from({ length: 5000 }, (_, i) => wl({ id: `ns/w${String(i).padStart(4, '0')}`, connected: i !== 4321, certNotAfter: i === 17 ? new Date(NOW + 3600_000).toISOString() : wl({}).certNotAfter }));
    const all = workloadList({ workloads }, NOW, '', 'all', 0);
    assert.equal(all.total, 5000);
    assert.deepEqual(all.items.slice(0, 3).map((l) => l.id), ['ns/w4321', 'ns/w0017', 'ns/w0000']);
    const attention = workloadList({ workloads }, NOW, '', 'attention', 0);
    assert.deepEqual(attention.items.map((l) => `${l.id} ${l.contact.level} ${l.cert.level}`), ['ns/w4321 bad ok', 'ns/w0017 ok warn']);
    assert.equal(workloadList({ workloads }, NOW, 'w0042', 'all', 0).items.length, 1);
  });

  it('summarises host facts', () => {
    const l = workloadList({ workloads: [wl({ host: { hostname: 'vm-1', os: 'Debian', osRelease: '12', kernel: '6.1', arch: 'x64', cpus: 4, memoryBytes: '8589934592', addresses: ['10.0.0.1'] } })] }, NOW, 'vm-1', 'all', 0).items[0]!;
    assert.equal(l.host, 'vm-1 · Debian 12 · x64 · 4 CPUs');
    assert.equal(l.memory, '8.0 GiB');
    assert.equal(l.mode, 'sidecar');
    assert.equal(workloadList({ workloads: [wl({ gateway: '1.2.3.4:15443' })] }, NOW, '', 'all', 0).items[0]!.mode, 'gateway (1.2.3.4:15443)');
    assert.equal(formatBytes('0'), '');
  });
});

describe('dashboard policies and lists', () => {
  it('marks invalid and warned routes and policies for unknown services', () => {
    const v = policyView(state({
      routes: [
        { kind: 'HTTPRoute', namespace: 'shop', name: 'b', source: 'kedge apply', parents: ['orders.shop'], backends: ['orders.shop'], rules: 1, warnings: [] },
        { kind: 'HTTPRoute', namespace: 'shop', name: 'a', source: 'cluster east', parents: ['x.shop'], backends: [], rules: 1, warnings: ['no service x.shop'], error: 'bad match' },
      ],
      policies: [{ name: 'orders', service: 'orders.shop', warnings: [], document: {} }],
    }), '');
    assert.deepEqual(v.routes.map((r) => [r.id, r.badge.text, r.notes]), [
      ['HTTPRoute/shop/a', 'invalid, not pushed', ['bad match', 'no service x.shop']],
      ['HTTPRoute/shop/b', 'applied', []],
    ]);
    assert.deepEqual(v.policies.map((p) => p.badge), [{ level: 'ok', text: 'applied' }]);
    assert.equal(policyView(state({ routes: v.routes.map((r) => r.row) }), 'east').routes.length, 1);
  });

  it('pages and matches', () => {
    assert.deepEqual(paginate([1, 2, 3], 9, 2), { items: [3], page: 1, pages: 2, total: 3, label: '3–3 of 3' });
    assert.deepEqual(paginate([], 0), { items: [], page: 0, pages: 1, total: 0, label: 'none' });
    assert.ok(matchesQuery('ORD eu', ['orders.shop', 'eu/1']));
    assert.ok(!matchesQuery('orders us', ['orders.shop', 'eu/1']));
    assert.deepEqual(countBadge(0, 3), { level: 'bad', text: '0/3 healthy' });
    assert.equal(formatDuration(2 * 86_400_000 + 3 * 3_600_000 + 5_000), '2d 3h');
    assert.equal(formatDuration(0), '0s');
  });
});

describe('dashboard service graph', () => {
  const buckets = (i: number, n: number) => Object.assign(new Array<number>(20).fill(0), { [i]: n });
  const agg = (over: Partial<EdgeAggregate>): EdgeAggregate => ({
    reporter: 'source', sourceWorkload: 'front/web-1', destinationWorkload: '', destinationService: 'orders.shop', requests: 0, failures: 0,
    latencyBuckets: buckets(0, 0), tcpConnections: 0, tcpBytes: 0, mtls: 0, errors: [], ...over,
  });
  const workloads: GraphWorkload[] = [
    { id: 'front/web-1', namespace: 'front', services: ['web'] },
    { id: 'batch/cron-1', namespace: 'batch', services: [] },
    { id: 'shop/orders-1', namespace: 'shop', services: ['orders'] },
  ];
  const fail = { startMs: NOW, responseCode: 503, grpcStatus: -1, responseFlags: 'UF', errorCode: 'KEDGE_CONNECT_FAILED', method: 'GET', path: '/x', upstreamHost: '10.0.0.1:15006' };
  const edges = trafficEdges([
    agg({ requests: 600, failures: 6, latencyBuckets: buckets(7, 600), errors: [fail] }),
    agg({ sourceWorkload: 'batch/cron-1', destinationService: 'orders.shop', tcpConnections: 3, tcpBytes: 4096 }),
    // Server-side reports: mTLS ones are the clients' own (left out); plaintext ones come from outside the mesh.
    agg({ reporter: 'destination', sourceWorkload: '', destinationWorkload: 'shop/orders-1', requests: 600, mtls: 600 }),
    agg({ reporter: 'destination', sourceWorkload: '', destinationWorkload: 'shop/orders-1', requests: 60, failures: 30 }),
    // Passthrough to an unknown address has no node.
    agg({ destinationService: '', destinationWorkload: '', tcpConnections: 1 }),
  ], workloads, [ep({}), ep({ address: '10.0.0.2', meshed: false })], 60_000);

  it('makes nodes of services, workloads serving none and outside traffic, with rates, success, p99 and mTLS', () => {
    assert.deepEqual(edges.map((e) => [e.id, e.reporter, e.requests, e.rps, e.success, e.tcpConnections, e.mtls]), [
      ['svc:web.front->svc:orders.shop', 'source', 600, 10, 0.99, 0, 'partial'],
      ['unknown->svc:orders.shop', 'destination', 60, 1, 0.5, 0, 'none'],
      ['wl:batch/cron-1->svc:orders.shop', 'source', 0, 0, null, 3, 'partial'],
    ]);
    assert.equal(edges[0]!.p99Ms, 100 + 150 * 0.99);
    assert.match(edges[0]!.mtlsNote, /1 of 2 endpoints are not meshed/);
    assert.deepEqual(edges[0]!.errors, [{ at: new Date(NOW).toISOString(), outcome: '503 UF', request: 'GET /x', upstream: '10.0.0.1:15006', errorCode: 'KEDGE_CONNECT_FAILED' }]);
  });

  it('labels, filters by namespace and details an edge with its routes, policies and errors', () => {
    const st = state({
      traffic: { windowSeconds: 60, reportingAgents: 2, edges },
      endpoints: [ep({})],
      routes: [
        { kind: 'HTTPRoute', namespace: 'shop', name: 'split', source: 'kedge apply', parents: ['orders.shop:9080'], backends: ['orders.shop'], rules: 1, warnings: [] },
        { kind: 'HTTPRoute', namespace: 'shop', name: 'other', source: 'kedge apply', parents: ['ordersx.shop'], backends: [], rules: 1, warnings: [] },
      ],
      policies: [{ name: 'orders', service: 'orders.shop', warnings: [], document: {} }],
      authorization: [
        { namespace: 'shop', name: 'deny-batch', action: 'DENY', selector: '(namespace)', rules: 1, workloads: ['shop/orders-1'], source: 'kedge apply', warnings: [] },
        { namespace: 'shop', name: 'nothing', action: 'ALLOW', selector: 'app=none', rules: 1, workloads: [], source: 'kedge apply', warnings: [] },
      ],
      peerAuthentication: [
        { namespace: 'shop', name: 'strict', selector: '(namespace)', mode: 'STRICT', ports: ['8080=PERMISSIVE'], workloads: ['shop/orders-1'], source: 'kedge apply', warnings: [] },
        { namespace: 'front', name: 'other', selector: '(namespace)', mode: 'DISABLE', ports: [], workloads: ['front/web-1'], source: 'kedge apply', warnings: [] },
      ],
      rateLimits: [
        { kind: 'HTTPLocalRateLimitPolicy', namespace: 'shop', name: 'orders-rl', service: 'orders.shop', limit: '10/s per identity', workloads: ['shop/orders-1'] },
        { kind: 'MeshQuota', namespace: 'shop', name: 'web-q', service: 'web.front', limit: '100 per 1m per principal', workloads: [] },
      ],
    });
    const g = graphView(st, '');
    assert.deepEqual(g.namespaces, ['batch', 'front', 'shop']);
    assert.deepEqual(g.nodes.map((n) => [n.id, n.kind, n.label]), [
      ['svc:orders.shop', 'service', 'orders.shop'],
      ['svc:web.front', 'service', 'web.front'],
      ['unknown', 'unknown', 'outside the mesh'],
      ['wl:batch/cron-1', 'workload', 'workload batch/cron-1'],
    ]);
    assert.equal(g.edges[0]!.label, '10 rps · 99.0% ok · p99 249 ms');
    assert.deepEqual(g.edges[0]!.badge, { level: 'ok', text: '99.0% success' });
    assert.deepEqual(g.edges[1]!.badge, { level: 'bad', text: '50.0% success' });
    assert.equal(g.edges[2]!.label, '3 TCP conns · 4.0 KiB');
    assert.deepEqual(graphView(st, 'batch').edges.map((e) => e.row.id), ['wl:batch/cron-1->svc:orders.shop']);
    assert.equal(graphElements(graphView(st, 'batch')).length, 3);
    const d = edgeDetail(st, 'svc:web.front->svc:orders.shop')!;
    assert.deepEqual(d.routes.map((r) => r.name), ['split']);
    assert.equal(d.trafficPolicy?.name, 'orders');
    assert.deepEqual(d.authorization.map((a) => a.name), ['deny-batch']);
    assert.deepEqual(d.peerAuthentication.map((p) => p.name), ['strict']);
    assert.deepEqual(d.rateLimits.map((r) => r.name), ['orders-rl']);
    assert.equal(d.errors.length, 1);
    assert.equal(edgeDetail(st, 'gone->svc:x'), undefined);
  });

  it('lists authorization, peer authentication and rate-limit policies: in force, selecting nothing, invalid, warned', () => {
    const v = policyView(state({
      authorization: [
        { namespace: 'shop', name: 'b', action: 'ALLOW', selector: 'app=orders', rules: 2, workloads: ['shop/orders-1', 'shop/orders-2'], source: 'kedge apply', warnings: [] },
        { namespace: 'shop', name: 'a', action: 'DENY', selector: 'app=none', rules: 1, workloads: [], source: 'kedge apply', warnings: [] },
        { namespace: 'kedge-system', name: 'c', action: 'AUDIT', selector: '(mesh)', rules: 1, workloads: [], source: 'kubernetes/east', warnings: [], error: 'unknown field spec.foo' },
        { namespace: 'shop', name: 'd', action: 'ALLOW', selector: '(namespace)', rules: 1, workloads: ['shop/orders-1'], source: 'kubernetes/east', warnings: ['shadowed by the applied copy'] },
      ],
      peerAuthentication: [{ namespace: 'kedge-system', name: 'mesh', selector: '(mesh)', mode: 'STRICT', ports: [], workloads: ['shop/orders-1'], source: 'kedge apply', warnings: [] }],
      rateLimits: [{ kind: 'MeshQuota', namespace: 'shop', name: 'q', service: 'gone.shop', limit: '100 per 1m per principal', workloads: [] }],
    }), '');
    assert.deepEqual(v.authorization.map((a) => [a.id, a.badge.level, a.badge.text]), [
      ['kedge-system/c', 'bad', 'invalid, not pushed: unknown field spec.foo'],
      ['shop/a', 'warn', 'selects no registered workload'],
      ['shop/b', 'ok', 'in force on 2 workloads'],
      ['shop/d', 'warn', 'in force on 1 workload; shadowed by the applied copy'],
    ]);
    assert.deepEqual(v.peerAuthentication.map((p) => [p.id, p.badge.text]), [['kedge-system/mesh', 'in force on 1 workload']]);
    assert.deepEqual(v.rateLimits.map((r) => [r.id, r.badge.level, r.badge.text]), [['MeshQuota/shop/q', 'warn', 'no registered workload serves the service']]);
    assert.equal(policyView(state({ authorization: v.authorization.map((a) => a.row) }), 'deny').authorization.length, 1);
  });
});

describe('dashboard feed rows', () => {
  it('applies row changes by key and keeps key order', () => {
    const st = state({ workloads: [wl({ id: 'a/1' }), wl({ id: 'a/3' })], services: [] });
    const next = applySections(st, { meta: st.meta }, { workloads: { upsert: [wl({ id: 'a/2' }), wl({ id: 'a/3', connected: false })], remove: ['a/1'] } });
    assert.deepEqual(next.workloads.map((w) => [w.id, w.connected]), [['a/2', true], ['a/3', false]]);
    assert.equal(st.workloads.length, 2, 'the old state is untouched');
    const eps = applySections(state({ endpoints: [ep({})] }), {}, { endpoints: { upsert: [ep({ health: 'UNHEALTHY' })], remove: [] } });
    assert.deepEqual(eps.endpoints.map((e) => e.health), ['UNHEALTHY'], 'the same service, address and workload is the same row');
    assert.deepEqual(sortRows([wl({ id: 'b' }), wl({ id: 'B' }), wl({ id: 'a' })], KEYED_SECTIONS.workloads).map((w) => w.id), ['B', 'a', 'b']);
  });
});
