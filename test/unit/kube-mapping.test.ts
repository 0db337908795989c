// Pure tables for the kubernetes source: object mapping, health, protocols,
// backoff and error classification. No sockets, no client library loaded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { endpointHealth, meshPortName, meshProtocol, servicesFromObjects } from '../../federation/sources/kubernetes/mapping';
import { backoffDelay } from '../../federation/sources/kubernetes/backoff';
import { describeApiError, K8S_ERRORS } from '../../federation/sources/kubernetes/errors';
import { endpointSlice, node, service, sliceEndpoint } from '../support/fixtures/kube';

const NODES = [node('n1', { region: 'us-east1', zone: 'us-east1-b' }), node('n2', { region: 'us-east1', zone: 'us-east1-c' })];
const map = (svcs: V1Service[], slices: V1EndpointSlice[], nodes = NODES, opts = {}) => servicesFromObjects(svcs, slices, nodes, 'east', 'net-east', opts);

test('a ready endpoint carries cluster, network, locality, ports, labels and no mesh identity', () => {
  const [svc] = map(
    [service('reviews', 'default', [{ name: 'http', port: 9080, targetPort: 'http-web' }])],
    [endpointSlice('reviews', 'default', [{ name: 'http', port: 8080 }], [{ ip: '10.0.0.1', pod: 'reviews-1', nodeName: 'n1', zone: 'us-east1-b' }])],
  );
  assert.deepEqual(svc, {
    name: 'reviews',
    namespace: 'default',
    ports: [{ name: 'http', port: 9080, targetPort: 8080, protocol: 'http' }],
    endpoints: [
      {
        address: '10.0.0.1',
        ports: [{ name: 'http', port: 8080 }],
        mtlsPort: 0,
        locality: { region: 'us-east1', zone: 'us-east1-b', subzone: '' },
        cluster: 'east',
        network: 'net-east',
        health: 'HEALTHY',
        weight: 1,
        labels: { app: 'reviews' },
        identity: '',
        meshed: false,
        workload: 'default/reviews-1',
      },
    ],
  });
});

test('slice conditions map to health; terminating endpoints that no longer serve are dropped', () => {
  const [svc] = map(
    [service('web', 'shop', [{ name: 'http', port: 80 }])],
    [
      endpointSlice('web', 'shop', [{ name: 'http', port: 80 }], [
        { ip: '10.0.0.1', ready: true },
        { ip: '10.0.0.2', ready: false },
        { ip: '10.0.0.3', ready: false, serving: true, terminating: true },
        { ip: '10.0.0.4', ready: false, serving: false, terminating: true },
      ]),
    ],
  );
  assert.deepEqual(
    svc!.endpoints.map((e) => [e.address, e.health]),
    [
      ['10.0.0.1', 'HEALTHY'],
      ['10.0.0.2', 'UNHEALTHY'],
      ['10.0.0.3', 'UNHEALTHY'],
    ],
  );
});

test('endpointHealth follows the API defaults for nil conditions', () => {
  const cases: [NonNullable<V1EndpointSlice['endpoints']>[number]['conditions'], string | undefined][] = [
    [undefined, 'HEALTHY'],
    [{}, 'HEALTHY'],
    [{ ready: true }, 'HEALTHY'],
    [{ ready: false }, 'UNHEALTHY'],
    [{ ready: false, serving: true, terminating: true }, 'UNHEALTHY'],
    [{ ready: false, serving: false, terminating: true }, undefined],
    [{ ready: false, terminating: true }, undefined],
    [{ ready: true, terminating: true }, 'UNHEALTHY'],
  ];
  for (const [conditions, want] of cases) {
    assert.equal(endpointHealth({ addresses: ['10.0.0.1'], ...(conditions ? { conditions } : {}) }), want, JSON.stringify(conditions));
  }
});

test('zone comes from the slice, region from the node; both fall back sensibly', () => {
  const legacy = node('old', {});
  legacy.metadata!.labels!['failure-domain.beta.kubernetes.io/region'] = 'eu-west1';
  legacy.metadata!.labels!['failure-domain.beta.kubernetes.io/zone'] = 'eu-west1-a';
  const [svc] = map(
    [service('web', 'shop', [{ name: 'http', port: 80 }])],
    [
      endpointSlice('web', 'shop', [{ name: 'http', port: 80 }], [
        { ip: '10.0.0.1', nodeName: 'n1', zone: 'slice-zone' },
        { ip: '10.0.0.2', nodeName: 'n2' },
        { ip: '10.0.0.3', nodeName: 'old' },
        { ip: '10.0.0.4', nodeName: 'unknown-node', zone: 'z' },
        { ip: '10.0.0.5' },
      ]),
    ],
    [...NODES, legacy],
  );
  assert.deepEqual(
    svc!.endpoints.map((e) => [e.address, e.locality]),
    [
      ['10.0.0.1', { region: 'us-east1', zone: 'slice-zone', subzone: '' }],
      ['10.0.0.2', { region: 'us-east1', zone: 'us-east1-c', subzone: '' }],
      ['10.0.0.3', { region: 'eu-west1', zone: 'eu-west1-a', subzone: '' }],
      ['10.0.0.4', { region: '', zone: 'z', subzone: '' }],
      ['10.0.0.5', { region: '', zone: '', subzone: '' }],
    ],
  );
});

test('ports: matched by name, TCP only, unnamed port named port-<n>, endpoints without a matching port skipped', () => {
  const svcs = [
    service('multi', 'default', [
      { name: 'http', port: 80, targetPort: 8080 },
      { name: 'grpc-api', port: 9090, targetPort: 'grpc' },
      { name: 'dns', port: 53, protocol: 'UDP' },
    ]),
    service('single', 'default', [{ port: 6379 }]),
    service('udp-only', 'default', [{ name: 'dns', port: 53, protocol: 'UDP' }]),
    service('mismatch', 'default', [{ name: 'http', port: 80 }]),
  ];
  const slices = [
    endpointSlice('multi', 'default', [{ name: 'http', port: 8080 }, { name: 'grpc-api', port: 19090 }, { name: 'dns', port: 53, protocol: 'UDP' }], [{ ip: '10.0.0.1' }]),
    endpointSlice('single', 'default', [{ port: 6379 }], [{ ip: '10.0.1.1' }]),
    endpointSlice('udp-only', 'default', [{ name: 'dns', port: 53, protocol: 'UDP' }], [{ ip: '10.0.2.1' }]),
    endpointSlice('mismatch', 'default', [{ name: 'web', port: 80 }], [{ ip: '10.0.3.1' }]),
  ];
  const out = map(svcs, slices);
  assert.deepEqual(
    out.map((s) => s.name),
    ['mismatch', 'multi', 'single'],
  );
  const multi = out.find((s) => s.name === 'multi')!;
  assert.deepEqual(multi.ports, [
    { name: 'http', port: 80, targetPort: 8080, protocol: 'http' },
    { name: 'grpc-api', port: 9090, targetPort: 19090, protocol: 'grpc' },
  ]);
  assert.deepEqual(multi.endpoints[0]!.ports, [
    { name: 'http', port: 8080 },
    { name: 'grpc-api', port: 19090 },
  ]);
  const single = out.find((s) => s.name === 'single')!;
  assert.deepEqual(single.ports, [{ name: 'port-6379', port: 6379, targetPort: 6379, protocol: 'tcp' }]);
  assert.deepEqual(single.endpoints[0]!.ports, [{ name: 'port-6379', port: 6379 }]);
  assert.deepEqual(out.find((s) => s.name === 'mismatch')!.endpoints, []);
});

test('service kinds: headless and selector-less kept, ExternalName and control-plane namespaces skipped', () => {
  const svcs = [
    service('headless', 'db', [{ name: 'pg', port: 5432 }], { clusterIP: 'None' }),
    service('manual', 'db', [{ name: 'pg', port: 5432 }], { selector: null }),
    service('alias', 'db', [{ name: 'http', port: 80 }], { type: 'ExternalName' }),
    service('kubernetes', 'default', [{ name: 'https', port: 443, targetPort: 6443 }], { selector: null }),
    service('kube-dns', 'kube-system', [{ name: 'dns-tcp', port: 53 }]),
    service('empty', 'db', [{ name: 'pg', port: 5432 }]),
  ];
  const slices = [
    endpointSlice('headless', 'db', [{ name: 'pg', port: 5432 }], [{ ip: '10.1.0.1', hostname: 'headless-0' }]),
    endpointSlice('manual', 'db', [{ name: 'pg', port: 5432 }], [{ ip: '192.168.7.7' }], { managedBy: 'staff', name: 'manual-1' }),
    endpointSlice('kubernetes', 'default', [{ name: 'https', port: 6443 }], [{ ip: '172.18.0.2' }], { name: 'kubernetes' }),
    endpointSlice('kube-dns', 'kube-system', [{ name: 'dns-tcp', port: 53 }], [{ ip: '10.2.0.1' }]),
    endpointSlice('orphan', 'db', [{ name: 'pg', port: 5432 }], [{ ip: '10.9.9.9' }]),
  ];
  const out = map(svcs, slices);
  assert.deepEqual(
    out.map((s) => `${s.name}.${s.namespace}:${s.endpoints.map((e) => e.address).join(',')}`),
    ['empty.db:', 'headless.db:10.1.0.1', 'manual.db:192.168.7.7'],
  );
  assert.deepEqual(out.find((s) => s.name === 'manual')!.endpoints[0]!.labels, {});
  assert.equal(out.find((s) => s.name === 'headless')!.endpoints[0]!.workload, 'db/headless-0');
  // The exclusion list is configurable.
  const all = map(svcs, slices, NODES, { excludeNamespaces: [] });
  assert.ok(all.some((s) => s.name === 'kube-dns'));
  assert.ok(!all.some((s) => s.name === 'kubernetes'), 'default/kubernetes never merges across clusters');
});

test('an address in two slices is one endpoint: the healthier entry wins, ports are united', () => {
  const [svc] = map(
    [service('web', 'shop', [{ name: 'http', port: 80 }, { name: 'admin', port: 81 }])],
    [
      endpointSlice('web', 'shop', [{ name: 'http', port: 80 }], [{ ip: '10.0.0.1', ready: false }, { ip: '10.0.0.2' }], { suffix: 'aaaaa' }),
      endpointSlice('web', 'shop', [{ name: 'http', port: 80 }, { name: 'admin', port: 81 }], [{ ip: '10.0.0.1', ready: true }], { suffix: 'bbbbb' }),
    ],
  );
  assert.equal(svc!.endpoints.length, 2);
  const ep = svc!.endpoints[0]!;
  assert.equal(ep.address, '10.0.0.1');
  assert.equal(ep.health, 'HEALTHY');
  assert.deepEqual(ep.ports.map((p) => p.name).sort(), ['admin', 'http']);
});

test('dual stack prefers the IPv4 slices; IPv6-only services use IPv6; FQDN slices are ignored', () => {
  const out = map(
    [service('dual', 'default', [{ name: 'http', port: 80 }]), service('v6', 'default', [{ name: 'http', port: 80 }]), service('fqdn', 'default', [{ name: 'http', port: 80 }])],
    [
      endpointSlice('dual', 'default', [{ name: 'http', port: 80 }], [{ ip: '10.0.0.1' }], { suffix: 'v4' }),
      endpointSlice('dual', 'default', [{ name: 'http', port: 80 }], [{ ip: 'fd00::1' }], { suffix: 'v6', addressType: 'IPv6' }),
      endpointSlice('v6', 'default', [{ name: 'http', port: 80 }], [{ ip: 'fd00::2' }], { addressType: 'IPv6' }),
      endpointSlice('fqdn', 'default', [{ name: 'http', port: 80 }], [{ ip: 'db.example.com' }], { addressType: 'FQDN' }),
    ],
  );
  assert.deepEqual(
    out.map((s) => [s.name, s.endpoints.map((e) => e.address)]),
    [
      ['dual', ['10.0.0.1']],
      ['fqdn', []],
      ['v6', ['fd00::2']],
    ],
  );
});

test('the result does not depend on input order (every replica computes the same view)', () => {
  const svcs = [service('b', 'x', [{ name: 'http', port: 80 }]), service('a', 'x', [{ name: 'http', port: 80 }]), service('a', 'w', [{ name: 'http', port: 80 }])];
  const slices = [
    endpointSlice('b', 'x', [{ name: 'http', port: 80 }], [{ ip: '10.0.0.9' }, { ip: '10.0.0.3' }]),
    endpointSlice('a', 'x', [{ name: 'http', port: 80 }], [{ ip: '10.0.1.2' }], { suffix: '1' }),
    endpointSlice('a', 'x', [{ name: 'http', port: 80 }], [{ ip: '10.0.1.1' }], { suffix: '2' }),
  ];
  const strip = (s: ReturnType<typeof map>) => JSON.stringify(s);
  assert.equal(strip(map(svcs, slices)), strip(map([...svcs].reverse(), [...slices].reverse(), [...NODES].reverse())));
  assert.deepEqual(
    map(svcs, slices).map((s) => `${s.namespace}/${s.name}`),
    ['w/a', 'x/a', 'x/b'],
  );
});

test('objects missing fields are skipped, not fatal', () => {
  const broken = [{ metadata: {} }, { metadata: { name: 'nospec', namespace: 'default' } }, service('ok', 'default', [{ name: 'http', port: 80 }])] as V1Service[];
  const badSlices = [
    { metadata: { name: 's', namespace: 'default', labels: { 'kubernetes.io/service-name': 'ok' } }, addressType: 'IPv4', endpoints: [{ addresses: [] }, { conditions: {} } as never], ports: [{ name: 'http', port: 0 }] },
    endpointSlice('ok', 'default', [{ name: 'http', port: 80 }], [{ ip: '10.0.0.1' }], { suffix: 'good' }),
  ] as V1EndpointSlice[];
  const out = map(broken, badSlices, [{ metadata: {} }] as never);
  assert.deepEqual(
    out.map((s) => [s.name, s.endpoints.map((e) => e.address)]),
    [['ok', ['10.0.0.1']]],
  );
});

test('meshProtocol: appProtocol first, then the port-name prefix, else tcp', () => {
  const cases: [string, string | undefined, string][] = [
    ['web', 'http', 'http'],
    ['web', 'HTTP', 'http'],
    ['web', 'kubernetes.io/h2c', 'http2'],
    ['web', 'kubernetes.io/ws', 'http'],
    ['web', 'kubernetes.io/wss', 'tls'],
    ['web', 'https', 'tls'],
    ['web', 'grpc', 'grpc'],
    ['http', undefined, 'http'],
    ['http-api', undefined, 'http'],
    ['http2-x', undefined, 'http2'],
    ['grpc', undefined, 'grpc'],
    ['https-admin', undefined, 'tls'],
    ['tls', undefined, 'tls'],
    ['tcp-db', undefined, 'tcp'],
    ['', undefined, 'tcp'],
    ['httpish', undefined, 'tcp'],
    ['http', 'tcp', 'tcp'],
    ['redis', 'example.com/custom', 'tcp'],
  ];
  for (const [name, ap, want] of cases) assert.equal(meshProtocol(name, ap), want, `${name} ${ap}`);
  assert.equal(meshPortName('', 80), 'port-80');
  assert.equal(meshPortName(undefined, 80), 'port-80');
  assert.equal(meshPortName('http', 80), 'http');
});

test('slice endpoint fixtures are shaped like the controller writes them', () => {
  const ep = sliceEndpoint({ ip: '10.0.0.1', pod: 'p', nodeName: 'n1', zone: 'z' }, 'ns');
  assert.deepEqual(Object.keys(ep).sort(), ['addresses', 'conditions', 'nodeName', 'targetRef', 'zone']);
  assert.deepEqual(ep.conditions, { ready: true, serving: true, terminating: false });
  assert.equal(ep.targetRef?.kind, 'Pod');
});

test('backoffDelay grows exponentially to the cap with jitter in [0.5, 1)', () => {
  const policy = { initialMs: 100, maxMs: 1000 };
  const cases: [number, number, number][] = [
    [0, 0, 50],
    [0, 0.999999, 100],
    [1, 0, 100],
    [2, 0.5, 300],
    [3, 0, 400],
    [4, 0, 500],
    [10, 0.999999, 1000],
    [1000, 0, 500],
  ];
  for (const [attempt, r, want] of cases) assert.equal(backoffDelay(attempt, policy, () => r), want, `attempt ${attempt} r ${r}`);
});

test('describeApiError: stable codes and messages that say what to check', () => {
  const ctx = { server: 'https://10.0.0.1:6443', kubeconfig: '/etc/kedge/east.kubeconfig', what: 'list services', timeoutMs: 5000 };
  const cases: [unknown, string, RegExp][] = [
    [Object.assign(new Error('HTTP-Code: 401'), { code: 401 }), K8S_ERRORS.UNAUTHORIZED, /^credentials rejected by https:\/\/10\.0\.0\.1:6443: check the token in \/etc\/kedge\/east\.kubeconfig$/],
    [Object.assign(new Error('Unauthorized'), { statusCode: 401 }), K8S_ERRORS.UNAUTHORIZED, /credentials rejected/],
    [Object.assign(new Error('Forbidden'), { statusCode: 403 }), K8S_ERRORS.FORBIDDEN, /forbids .* to list services/],
    [Object.assign(new Error('x'), { code: 503 }), K8S_ERRORS.SERVER_ERROR, /HTTP 503/],
    [Object.assign(new Error('x'), { code: 404 }), K8S_ERRORS.BAD_RESPONSE, /HTTP 404/],
    [Object.assign(new Error('aborted'), { name: 'AbortError' }), K8S_ERRORS.TIMEOUT, /did not answer list services within 5000 ms/],
    [Object.assign(new Error('network timeout'), { name: 'FetchError', type: 'request-timeout' }), K8S_ERRORS.TIMEOUT, /did not answer/],
    [Object.assign(new Error('connect ECONNREFUSED'), { name: 'FetchError', type: 'system', code: 'ECONNREFUSED' }), K8S_ERRORS.UNREACHABLE, /cannot reach .*ECONNREFUSED.*server address/],
    [Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }), K8S_ERRORS.UNREACHABLE, /lost the connection to https:\/\/10\.0\.0\.1:6443 during list services/],
    [Object.assign(new Error('self-signed'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }), K8S_ERRORS.TLS, /certificate-authority-data/],
    [new SyntaxError('Unexpected token <'), K8S_ERRORS.BAD_RESPONSE, /invalid answer/],
    [Object.assign(new Error('Parse Error'), { code: 'HPE_INVALID_CONSTANT' }), K8S_ERRORS.BAD_RESPONSE, /invalid answer/],
    ['weird', K8S_ERRORS.OTHER, /failed: weird/],
  ];
  for (const [err, code, msg] of cases) {
    const e = describeApiError(err, ctx);
    assert.equal(e.code, code, String((err as Error).message ?? err));
    assert.match(e.message, msg);
  }
});
