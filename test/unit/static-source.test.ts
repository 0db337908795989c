// Service entries from the federation config: validation with field paths,
// mapping to source services, and the always-connected StaticSource.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import YAML from 'yaml';
import { parseServiceEntries, servicesFromEntries, StaticSource } from '../../federation/sources/static';
import { hasCode } from '../../proto/model/errors';
import { Doc } from '../../proto/model/validate';

function parse(yaml: string) {
  return parseServiceEntries(new Doc('federation.yaml', YAML.parse(yaml)).at('serviceEntries'));
}

describe('parseServiceEntries', () => {
  it('parses the issue example with every default', () => {
    const entries = parse(`
serviceEntries:
  - { name: billing-db, namespace: shop, ports: [ { name: pg, port: 5432, protocol: tcp } ], endpoints: [ { address: 10.1.2.3 } ] }
`);
    assert.deepEqual(entries, [{
      name: 'billing-db', namespace: 'shop', cluster: 'static',
      ports: [{ name: 'pg', port: 5432, targetPort: 5432, protocol: 'tcp' }],
      endpoints: [{ address: '10.1.2.3', ports: { pg: 5432 }, locality: { region: '', zone: '', subzone: '' }, labels: {}, network: '', weight: 1 }],
    }]);
    assert.ok(Object.isFrozen(entries[0]!.endpoints[0]!.ports));
  });

  it('parses every optional field', () => {
    const [e] = parse(`
serviceEntries:
  - name: billing-db
    cluster: onprem
    network: net-a
    ports:
      - { name: pg, port: 5432, targetPort: 6432 }
      - { name: metrics, port: 9187, protocol: http }
    endpoints:
      - { address: 10.1.2.3, ports: { pg: 15432 }, locality: us-east1/us-east1-b, labels: { role: primary, shard: 1 }, weight: 3 }
      - { address: "fd00::5", network: net-b }
`);
    assert.equal(e!.namespace, 'default');
    assert.equal(e!.cluster, 'onprem');
    assert.deepEqual(e!.ports.map((p) => [p.name, p.port, p.targetPort, p.protocol]), [['pg', 5432, 6432, 'tcp'], ['metrics', 9187, 9187, 'http']]);
    assert.deepEqual(e!.endpoints[0], {
      address: '10.1.2.3', ports: { pg: 15432, metrics: 9187 }, locality: { region: 'us-east1', zone: 'us-east1-b', subzone: '' },
      labels: { role: 'primary', shard: '1' }, network: 'net-a', weight: 3,
    });
    assert.equal(e!.endpoints[1]!.network, 'net-b');
  });

  it('treats a missing serviceEntries as none', () => {
    assert.deepEqual(parseServiceEntries(new Doc('federation.yaml', {}).at('serviceEntries')), []);
  });

  const ok = `{ name: db, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3 } ] }`;
  const bad: [string, string, RegExp][] = [
    ['a name that is not a DNS label', `[ { name: Billing_DB, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3 } ] } ]`, /^federation.yaml: serviceEntries\[0\].name: invalid service name "Billing_DB"/],
    ['a missing name', `[ { ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3 } ] } ]`, /serviceEntries\[0\].name: is required/],
    ['a namespace with a dot', `[ { name: db, namespace: a.b, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3 } ] } ]`, /serviceEntries\[0\].namespace: invalid namespace "a.b"/],
    ['an unknown field', `[ { name: db, hosts: [x], ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3 } ] } ]`, /serviceEntries\[0\]: unknown field "hosts"/],
    ['no ports', `[ { name: db, endpoints: [ { address: 10.1.2.3 } ] } ]`, /serviceEntries\[0\].ports: needs at least one port/],
    ['port 0', `[ { name: db, ports: [ { name: pg, port: 0 } ], endpoints: [ { address: 10.1.2.3 } ] } ]`, /serviceEntries\[0\].ports\[0\].port: must be between 1 and 65535/],
    ['port 70000', `[ { name: db, ports: [ { name: pg, port: 70000 } ], endpoints: [ { address: 10.1.2.3 } ] } ]`, /ports\[0\].port: must be between 1 and 65535/],
    ['an unknown protocol', `[ { name: db, ports: [ { name: pg, port: 5432, protocol: udp } ], endpoints: [ { address: 10.1.2.3 } ] } ]`, /ports\[0\].protocol: unknown protocol "udp": use one of tcp, http, http2, grpc, tls/],
    ['a duplicate port name', `[ { name: db, ports: [ { name: pg, port: 5432 }, { name: pg, port: 5433 } ], endpoints: [ { address: 10.1.2.3 } ] } ]`, /ports\[1\].name: port name "pg" is used twice/],
    ['no endpoints', `[ { name: db, ports: [ { name: pg, port: 5432 } ] } ]`, /serviceEntries\[0\].endpoints: needs at least one endpoint/],
    ['a hostname address', `[ ${ok}, { name: db2, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.4 }, { address: db.example.com } ] } ]`, /^federation.yaml: serviceEntries\[1\].endpoints\[1\].address: "db.example.com" is not an IP address: service entry endpoints need IP addresses/],
    ['the unspecified address', `[ { name: db, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 0.0.0.0 } ] } ]`, /endpoints\[0\].address: 0.0.0.0 is the unspecified address/],
    ['a duplicate endpoint', `[ { name: db, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3 }, { address: 10.1.2.3 } ] } ]`, /endpoints\[1\].address: 10.1.2.3 is listed twice/],
    ['an endpoint port for an undeclared name', `[ { name: db, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3, ports: { http: 80 } } ] } ]`, /endpoints\[0\].ports.http: no port named "http" in this entry \(ports: pg\)/],
    ['an endpoint port out of range', `[ { name: db, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3, ports: { pg: -1 } } ] } ]`, /endpoints\[0\].ports.pg: must be between 1 and 65535/],
    ['a bad locality', `[ { name: db, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3, locality: "a//b" } ] } ]`, /endpoints\[0\].locality: invalid locality "a\/\/b"/],
    ['a zero weight', `[ { name: db, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3, weight: 0 } ] } ]`, /endpoints\[0\].weight: must be between 1 and 1000000/],
    ['labels that are not a mapping', `[ { name: db, ports: [ { name: pg, port: 5432 } ], endpoints: [ { address: 10.1.2.3, labels: [a] } ] } ]`, /endpoints\[0\].labels: must be a mapping/],
    ['the same service twice', `[ ${ok}, ${ok} ]`, /serviceEntries\[1\]: service db.default is already defined at serviceEntries\[0\]: list all its endpoints in one entry/],
    ['a list that is not a list', `{ name: db }`, /serviceEntries: must be a list/],
  ];
  for (const [what, yaml, msg] of bad) {
    it(`rejects ${what}, naming the field`, () => {
      assert.throws(() => parse(`serviceEntries: ${yaml}`), (err: unknown) => hasCode(err, 'KEDGE_BAD_CONFIG') && msg.test((err as Error).message));
    });
  }
});

describe('servicesFromEntries and StaticSource', () => {
  const entries = parse(`
serviceEntries:
  - name: billing-db
    namespace: shop
    ports: [ { name: pg, port: 5432, targetPort: 6432 } ]
    endpoints:
      - { address: 10.1.2.4, ports: { pg: 15432 }, weight: 2 }
      - { address: 10.1.2.3, locality: eu-west1/eu-west1-a, labels: { role: primary } }
  - { name: audit, namespace: shop, cluster: onprem, network: net-a, ports: [ { name: http, port: 80, protocol: http } ], endpoints: [ { address: 10.9.0.1 } ] }
`);

  it('maps entries to unmeshed HEALTHY endpoints, sorted', () => {
    const services = servicesFromEntries(entries);
    assert.deepEqual(services.map((s) => `${s.name}.${s.namespace}`), ['audit.shop', 'billing-db.shop']);
    const db = services[1]!;
    assert.deepEqual(db.ports, [{ name: 'pg', port: 5432, targetPort: 6432, protocol: 'tcp' }]);
    assert.deepEqual(db.endpoints, [
      {
        address: '10.1.2.3', ports: [{ name: 'pg', port: 6432 }], mtlsPort: 0, locality: { region: 'eu-west1', zone: 'eu-west1-a', subzone: '' }, cluster: 'static',
        network: '', health: 'HEALTHY', weight: 1, labels: { role: 'primary' }, identity: '', meshed: false, workload: 'static/shop/billing-db/10.1.2.3',
      },
      {
        address: '10.1.2.4', ports: [{ name: 'pg', port: 15432 }], mtlsPort: 0, locality: { region: '', zone: '', subzone: '' }, cluster: 'static',
        network: '', health: 'HEALTHY', weight: 2, labels: {}, identity: '', meshed: false, workload: 'static/shop/billing-db/10.1.2.4',
      },
    ]);
    assert.deepEqual([services[0]!.endpoints[0]!.cluster, services[0]!.endpoints[0]!.network], ['onprem', 'net-a']);
  });

  it('is always connected, never stale, and announces its services on start', async () => {
    const src = new StaticSource({ entries });
    let changes = 0;
    await src.start(() => changes++);
    assert.equal(changes, 1);
    assert.equal(src.kind, 'static');
    assert.equal(src.services().length, 2);
    const st = src.status();
    assert.deepEqual({ ...st, lastSync: typeof st.lastSync }, { name: 'static', kind: 'static', connected: true, lastSync: 'string', stale: false, error: undefined, services: 2, endpoints: 3 });
    await src.close();
  });
});
