// Consul catalog -> source services, response checks, error phrasing,
// backoff and cluster config: pure, table-tested.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  backoffDelay, describeConsulError, markStale, parseConsulAddress, parseConsulCluster, readCatalogServices, readHealthEntries, servicesFromCatalog,
  type ConsulHealthEntry,
} from '../../federation/sources/consul';
import { KedgeError, hasCode } from '../../proto/model/errors';
import { Doc } from '../../proto/model/validate';

const OPTS = { datacenter: 'dc1', network: 'net-dc1', namespace: 'default' };

/** A health entry shaped like Consul's, with defaults; override what a case needs. */
function entry(o: {
  service?: string; id?: string; node?: string; nodeAddress?: string; address?: string; port?: number; tags?: string[] | null;
  meta?: Record<string, string> | null; nodeMeta?: Record<string, string> | null; checks?: string[]; kind?: string; weights?: { Passing: number; Warning: number } | null;
} = {}): ConsulHealthEntry {
  const service = o.service ?? 'reviews';
  const nodeAddress = o.nodeAddress ?? '10.0.0.1';
  const node = o.node ?? `node-${nodeAddress}`;
  return {
    Node: { Node: node, Address: nodeAddress, Datacenter: 'dc1', Meta: o.nodeMeta === undefined ? { 'consul-network-segment': '' } : o.nodeMeta },
    Service: {
      ID: o.id ?? `${service}-${nodeAddress}`, Service: service, Kind: o.kind ?? '', Tags: o.tags === undefined ? [] : o.tags,
      Address: o.address ?? nodeAddress, Port: o.port ?? 9080, Meta: o.meta === undefined ? null : o.meta, Weights: o.weights === undefined ? { Passing: 1, Warning: 1 } : o.weights,
    },
    Checks: (o.checks ?? ['passing', 'passing']).map((Status, i) => ({ CheckID: i === 0 ? 'serfHealth' : 'service:x', Status })),
  };
}

function map(entries: Record<string, ConsulHealthEntry[]>) {
  return servicesFromCatalog(new Map(Object.entries(entries)), OPTS);
}

describe('servicesFromCatalog', () => {
  it('maps a passing instance: datacenter as cluster, one port named after the protocol, unmeshed, HEALTHY', () => {
    const { services, problems } = map({ reviews: [entry()] });
    assert.deepEqual(problems, []);
    assert.deepEqual(services, [{
      name: 'reviews', namespace: 'default',
      ports: [{ name: 'tcp', port: 9080, targetPort: 9080, protocol: 'tcp' }],
      endpoints: [{
        address: '10.0.0.1', ports: [{ name: 'tcp', port: 9080 }], mtlsPort: 0, locality: { region: '', zone: '', subzone: '' },
        cluster: 'dc1', network: 'net-dc1', health: 'HEALTHY', weight: 1, labels: {}, identity: '', meshed: false, workload: 'node-10.0.0.1/reviews-10.0.0.1',
      }],
    }]);
  });

  const cases: { name: string; entries: Record<string, ConsulHealthEntry[]>; check(r: ReturnType<typeof map>): void }[] = [
    {
      name: 'tags become tag/<t> labels and meta keys stay as they are',
      entries: { reviews: [entry({ tags: ['v1', 'canary'], meta: { version: 'v1', team: 'books' } })] },
      check: ({ services }) => assert.deepEqual(services[0]!.endpoints[0]!.labels, { version: 'v1', team: 'books', 'tag/v1': 'true', 'tag/canary': 'true' }),
    },
    {
      name: 'null Tags and Meta (as Consul sends them) are empty',
      entries: { reviews: [entry({ tags: null, meta: null, nodeMeta: null, weights: null })] },
      check: ({ services, problems }) => {
        assert.deepEqual(problems, []);
        assert.deepEqual(services[0]!.endpoints[0]!.labels, {});
        assert.equal(services[0]!.endpoints[0]!.weight, 1);
      },
    },
    {
      name: 'an empty service address falls back to the node address',
      entries: { reviews: [entry({ nodeAddress: '10.0.0.7', address: '' })] },
      check: ({ services }) => assert.equal(services[0]!.endpoints[0]!.address, '10.0.0.7'),
    },
    {
      name: 'meta protocol names the port; port-name overrides the name',
      entries: { reviews: [entry({ meta: { protocol: 'HTTP' } })], ratings: [entry({ service: 'ratings', meta: { protocol: 'grpc', 'port-name': 'grpc-api' } })] },
      check: ({ services }) => {
        assert.deepEqual(services.map((s) => [s.name, s.ports]), [
          ['ratings', [{ name: 'grpc-api', port: 9080, targetPort: 9080, protocol: 'grpc' }]],
          ['reviews', [{ name: 'http', port: 9080, targetPort: 9080, protocol: 'http' }]],
        ]);
        assert.deepEqual(services[0]!.endpoints[0]!.ports, [{ name: 'grpc-api', port: 9080 }]);
      },
    },
    {
      name: 'an unknown protocol falls back to tcp with a problem',
      entries: { reviews: [entry({ meta: { protocol: 'mongo' } })] },
      check: ({ services, problems }) => {
        assert.equal(services[0]!.ports[0]!.protocol, 'tcp');
        assert.match(problems[0]!, /unknown protocol "mongo"/);
      },
    },
    {
      name: 'k8s-namespace (then external-k8s-ns) meta picks the namespace; one Consul service may span several',
      entries: { reviews: [
        entry({ nodeAddress: '10.0.0.1', meta: { 'k8s-namespace': 'shop' } }),
        entry({ nodeAddress: '10.0.0.2', meta: { 'external-k8s-ns': 'books' } }),
        entry({ nodeAddress: '10.0.0.3' }),
      ] },
      check: ({ services }) => assert.deepEqual(services.map((s) => `${s.name}.${s.namespace}:${s.endpoints.map((e) => e.address)}`), [
        'reviews.books:10.0.0.2', 'reviews.default:10.0.0.3', 'reviews.shop:10.0.0.1',
      ]),
    },
    {
      name: 'locality: service meta wins over node meta, key by key',
      entries: { reviews: [entry({ meta: { zone: 'us-east1-c' }, nodeMeta: { region: 'us-east1', zone: 'us-east1-b' } })] },
      check: ({ services }) => assert.deepEqual(services[0]!.endpoints[0]!.locality, { region: 'us-east1', zone: 'us-east1-c', subzone: '' }),
    },
    {
      name: 'a locality value with a slash is ignored with a problem',
      entries: { reviews: [entry({ nodeMeta: { region: 'us/east' } })] },
      check: ({ services, problems }) => {
        assert.equal(services[0]!.endpoints[0]!.locality!.region, '');
        assert.match(problems[0]!, /region "us\/east" ignored/);
      },
    },
    {
      name: 'Weights.Passing is the weight',
      entries: { reviews: [entry({ weights: { Passing: 10, Warning: 1 } })] },
      check: ({ services }) => assert.equal(services[0]!.endpoints[0]!.weight, 10),
    },
    {
      name: 'instances with a warning or critical check are left out (defence in depth behind ?passing)',
      entries: { reviews: [entry({ nodeAddress: '10.0.0.1' }), entry({ nodeAddress: '10.0.0.2', checks: ['passing', 'warning'] }), entry({ nodeAddress: '10.0.0.3', checks: ['critical', 'passing'] })] },
      check: ({ services }) => assert.deepEqual(services[0]!.endpoints.map((e) => e.address), ['10.0.0.1']),
    },
    {
      name: 'the service-level port is the most common instance port; each endpoint keeps its own',
      entries: { reviews: [entry({ nodeAddress: '10.0.0.1', port: 9090 }), entry({ nodeAddress: '10.0.0.2', port: 9080 }), entry({ nodeAddress: '10.0.0.3', port: 9090 })] },
      check: ({ services }) => {
        assert.deepEqual(services[0]!.ports, [{ name: 'tcp', port: 9090, targetPort: 9090, protocol: 'tcp' }]);
        assert.deepEqual(services[0]!.endpoints.map((e) => e.ports[0]!.port), [9090, 9080, 9090]);
      },
    },
    {
      name: 'skips the consul service, proxies and gateways silently',
      entries: { consul: [entry({ service: 'consul', port: 8300 })], 'reviews-sidecar-proxy': [entry({ service: 'reviews-sidecar-proxy', kind: 'connect-proxy' })], 'mesh-gateway': [entry({ service: 'mesh-gateway', kind: 'mesh-gateway' })] },
      check: ({ services, problems }) => {
        assert.deepEqual(services, []);
        assert.deepEqual(problems, []);
      },
    },
    {
      name: 'skips a service whose name is not a DNS label, with a problem',
      entries: { Web_Frontend: [entry({ service: 'Web_Frontend' })] },
      check: ({ services, problems }) => {
        assert.deepEqual(services, []);
        assert.match(problems[0]!, /"Web_Frontend" skipped: not a DNS label/);
      },
    },
    {
      name: 'skips an instance with a hostname address or no port, keeping the others',
      entries: { reviews: [entry({ nodeAddress: '10.0.0.1', address: 'db.example.com' }), entry({ nodeAddress: '10.0.0.2', port: 0 }), entry({ nodeAddress: '10.0.0.3' })] },
      check: ({ services, problems }) => {
        assert.deepEqual(services[0]!.endpoints.map((e) => e.address), ['10.0.0.3']);
        assert.equal(problems.length, 2);
        assert.match(problems[0]!, /address "db.example.com" is not an IP address/);
        assert.match(problems[1]!, /port 0 is not between 1 and 65535/);
      },
    },
    {
      name: 'an invalid namespace in meta skips the instance',
      entries: { reviews: [entry({ meta: { 'k8s-namespace': 'Shop!' } })] },
      check: ({ services, problems }) => {
        assert.deepEqual(services, []);
        assert.match(problems[0]!, /namespace "Shop!"/);
      },
    },
    {
      name: 'a service with no passing instances maps to nothing',
      entries: { reviews: [] },
      check: ({ services }) => assert.deepEqual(services, []),
    },
    {
      name: 'is deterministic: services by namespace then name, endpoints by address',
      entries: { ratings: [entry({ service: 'ratings', nodeAddress: '10.0.0.9' }), entry({ service: 'ratings', nodeAddress: '10.0.0.10' })], details: [entry({ service: 'details' })] },
      check: ({ services }) => assert.deepEqual(services.map((s) => [s.name, s.endpoints.map((e) => e.address)]), [['details', ['10.0.0.1']], ['ratings', ['10.0.0.10', '10.0.0.9']]]),
    },
  ];
  for (const c of cases) it(c.name, () => c.check(map(c.entries)));

  it('markStale marks every endpoint STALE without touching the input', () => {
    const { services } = map({ reviews: [entry()] });
    const stale = markStale(services);
    assert.equal(stale[0]!.endpoints[0]!.health, 'STALE');
    assert.equal(services[0]!.endpoints[0]!.health, 'HEALTHY');
  });
});

describe('Consul response checks', () => {
  it('reads catalog service names, sorted', () => {
    assert.deepEqual(readCatalogServices({ web: [], consul: [], api: ['v1'] }), ['api', 'consul', 'web']);
  });
  for (const [what, body] of [['a string', 'Consul Agent'], ['an array', []], ['html text', '<html>'], ['a buffer', Buffer.from('x')], ['nothing', undefined]] as const) {
    it(`rejects ${what} as a catalog answer`, () => {
      assert.throws(() => readCatalogServices(body), (err: unknown) => hasCode(err, 'KEDGE_CONSUL_BAD_RESPONSE') && /check that the address points at a Consul HTTP API/.test((err as Error).message));
    });
  }
  it('rejects a health answer that is not a list', () => {
    assert.throws(() => readHealthEntries('reviews', { Nodes: [] }), (err: unknown) => hasCode(err, 'KEDGE_CONSUL_BAD_RESPONSE'));
  });
  it('drops only the malformed health entries', () => {
    const good = entry();
    const { entries, problems } = readHealthEntries('reviews', [good, { Node: 'x' }, { ...good, Service: { ...good.Service, Port: '80' } }, 7]);
    assert.deepEqual(entries, [good]);
    assert.deepEqual(problems.map((p) => p.replace(/^consul service "reviews": /, '')), [
      'entry 1 ignored: Node.Node and Node.Address must be strings',
      'entry 2 ignored: Service.Port must be a number',
      'entry 3 ignored: not an object',
    ]);
  });
});

describe('describeConsulError', () => {
  const ctx = { address: 'http://127.0.0.1:8500', datacenter: 'dc1', what: 'catalog services', tokenFile: '/etc/kedge/consul.token' };
  const response = (statusCode: number, body: string) => Object.assign(new Error(`consul: catalog.service.list: ${body}`), { isResponse: true, statusCode, response: { body } });
  const cases: [string, unknown, string, RegExp][] = [
    ['403 ACL not found', response(403, 'ACL not found'), 'KEDGE_CONSUL_ACL', /refused the token in \/etc\/kedge\/consul.token for catalog services \(403 ACL not found\): check the token exists/],
    ['403 Permission denied', response(403, 'Permission denied'), 'KEDGE_CONSUL_ACL', /\(403 Permission denied\)/],
    ['unknown datacenter', response(500, 'No path to datacenter'), 'KEDGE_CONSUL_DATACENTER', /cannot reach datacenter "dc1"/],
    ['no leader', response(500, 'No cluster leader'), 'KEDGE_CONSUL_NO_LEADER', /has no cluster leader/],
    ['other status', response(502, 'bad gateway'), 'KEDGE_CONSUL_ERROR', /answered 502 to catalog services: bad gateway/],
    ['refused', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8500'), { code: 'ECONNREFUSED' }), 'KEDGE_CONSUL_UNREACHABLE', /cannot reach Consul dc1 at http:\/\/127.0.0.1:8500 \(ECONNREFUSED\)/],
    ['timeout', Object.assign(new Error('request timed out (1000ms)'), { isTimeout: true }), 'KEDGE_CONSUL_TIMEOUT', /did not answer catalog services in time/],
    ['codec', Object.assign(new Error('consul: decode (application/json) failed: Unexpected end of JSON input'), { isCodec: true }), 'KEDGE_CONSUL_BAD_RESPONSE', /unreadable answer/],
    ['kedge error', new KedgeError('KEDGE_CONSUL_TOKEN', 'cannot read the token file'), 'KEDGE_CONSUL_TOKEN', /^Consul dc1 at http:\/\/127.0.0.1:8500: catalog services: cannot read the token file$/],
  ];
  for (const [name, err, code, msg] of cases) {
    it(name, () => {
      const e = describeConsulError(err, ctx);
      assert.equal(e.code, code);
      assert.match(e.message, msg);
      assert.equal(e.cause, err);
    });
  }
});

describe('backoffDelay', () => {
  const o = { initialMs: 100, maxMs: 1000 };
  it('doubles per attempt with equal jitter and clamps at maxMs', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 50].map((a) => backoffDelay(a, o, () => 0)), [50, 100, 200, 400, 500, 500]);
    assert.deepEqual([1, 2, 3, 4, 5, 50].map((a) => backoffDelay(a, o, () => 1)), [100, 200, 400, 800, 1000, 1000]);
  });
});

describe('consul cluster config', () => {
  const parse = (v: unknown) => parseConsulCluster(new Doc('federation.yaml', { clusters: [v] }).at('clusters').at(0), '/etc/kedge');
  it('applies defaults and resolves the token file against the config folder', () => {
    assert.deepEqual(parse({ name: 'dc1', kind: 'consul', tokenFile: 'consul.token', network: 'net-dc1' }), {
      name: 'dc1', address: 'http://127.0.0.1:8500', datacenter: 'dc1', tokenFile: '/etc/kedge/consul.token', network: 'net-dc1', namespace: 'default', staleAfterMs: 30_000,
    });
  });
  const bad: [unknown, RegExp][] = [
    [{ name: 'dc1', kind: 'consul', address: 'consul:8500' }, /federation.yaml: clusters\[0\].address: invalid Consul address/],
    [{ name: 'dc1', kind: 'consul', address: 'http://c:8500/v1' }, /clusters\[0\].address: .*no path/],
    [{ name: 'dc1', kind: 'consul', namespace: 'My_NS' }, /clusters\[0\].namespace: invalid namespace/],
    [{ name: 'dc1', kind: 'consul', staleAfter: 'soon' }, /clusters\[0\].staleAfter: invalid staleAfter/],
    [{ name: 'dc1', kind: 'consul', kubeconfig: 'x' }, /clusters\[0\]: unknown field "kubeconfig"/],
  ];
  for (const [v, msg] of bad) it(`rejects ${JSON.stringify(v)}`, () => assert.throws(() => parse(v), msg));
  it('parses addresses', () => {
    assert.deepEqual(parseConsulAddress('http://127.0.0.1:8500'), { host: '127.0.0.1', port: 8500, secure: false });
    assert.deepEqual(parseConsulAddress('https://consul.internal'), { host: 'consul.internal', port: 443, secure: true });
    assert.deepEqual(parseConsulAddress('http://[::1]:8500'), { host: '[::1]', port: 8500, secure: false });
  });
});
