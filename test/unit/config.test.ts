// Agent and federation configuration: defaults, and errors that name the file and field.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseAgentConfig } from '../../agent/config';
import { resolveFederationConfig } from '../../federation/config';
import { KedgeError } from '../../proto/model/errors';

const GOOD = `
federation: { address: 127.0.0.1:15012, rootCert: ./root-cert.pem, tokenFile: ./token }
workload:
  name: vm-1
  namespace: shop
  serviceAccount: payments
  address: 127.0.0.2
  locality: us-east1/us-east1-b
  network: net-a
  labels: { app: payments, version: v1 }
services:
  - name: payments
    ports: [ { name: http, port: 9080, targetPort: 18080, protocol: http } ]
upstreams:
  - { service: reviews.default, port: 9080, listen: 127.0.0.1:19080 }
proxy: { inboundListen: 127.0.0.2:15006 }
admin: { listen: 127.0.0.1:15000 }
dataDir: ./data/vm-1
`;

function badConfig(text: string, pattern: RegExp) {
  assert.throws(() => parseAgentConfig(text, '/etc/kedge/agent.yaml'), (err: unknown) => {
    assert.ok(err instanceof KedgeError);
    assert.equal(err.code, 'KEDGE_BAD_CONFIG');
    assert.match(err.message, /^\/etc\/kedge\/agent\.yaml: /);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('agent config', () => {
  it('reads the documented example, resolving paths against the file', () => {
    const c = parseAgentConfig(GOOD, '/etc/kedge/agent.yaml');
    assert.deepEqual(c.federation.addresses, [{ host: '127.0.0.1', port: 15012 }]);
    assert.equal(c.federation.rootCertFile, '/etc/kedge/root-cert.pem');
    assert.equal(c.dataDir, '/etc/kedge/data/vm-1');
    assert.deepEqual(c.workload.locality, { region: 'us-east1', zone: 'us-east1-b', subzone: '' });
    assert.deepEqual(c.services[0]!.ports[0], { name: 'http', port: 9080, targetPort: 18080, protocol: 'http' });
    assert.deepEqual(c.upstreams[0], { service: 'reviews.default', port: 9080, listen: { host: '127.0.0.1', port: 19080 } });
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.services[0]!.ports));
  });
  it('fills defaults: targetPort = port, protocol tcp, admin and inbound addresses', () => {
    const c = parseAgentConfig(
      'federation: { address: [ "10.0.0.1:15012", "10.0.0.2:15012" ], rootCert: r.pem }\nworkload: { name: a, namespace: b, serviceAccount: c }\nservices: [ { name: s, ports: [ { port: 80 } ] } ]\n',
      '/x/a.yaml',
    );
    assert.equal(c.federation.addresses.length, 2);
    assert.deepEqual(c.services[0]!.ports[0], { name: 'port-80', port: 80, targetPort: 80, protocol: 'tcp' });
    assert.deepEqual(c.proxy.inboundListen, { host: '0.0.0.0', port: 15006 });
    assert.deepEqual(c.admin.listen, { host: '127.0.0.1', port: 15000 });
    assert.equal(c.workload.address, undefined);
  });
  const cases: [string, string, RegExp][] = [
    ['missing namespace', GOOD.replace('  namespace: shop\n', ''), /workload\.namespace: is required/],
    ['port out of range', GOOD.replace('port: 9080, targetPort', 'port: 99999, targetPort'), /services\[0\]\.ports\[0\]\.port: must be between 1 and 65535/],
    ['unknown field', GOOD.replace('dataDir:', 'dataDirr:'), /unknown field "dataDirr"/],
    ['bad upstream service', GOOD.replace('service: reviews.default', 'service: reviews'), /upstreams\[0\]\.service: invalid service "reviews"/],
    ['bad address', GOOD.replace('address: 127.0.0.1:15012', 'address: nowhere'), /federation\.address: .*HOST:PORT/],
    ['bad protocol', GOOD.replace('protocol: http', 'protocol: smtp'), /protocol: must be one of/],
    ['bad locality', GOOD.replace('us-east1/us-east1-b', 'a//b'), /workload\.locality: invalid locality/],
    ['not YAML', 'federation: [', /not valid YAML/],
    ['not a mapping', '- a\n- b\n', /must be a mapping/],
    ['bad name', GOOD.replace('name: vm-1', 'name: VM_1'), /workload\.name: "VM_1" is not a valid name/],
    // It once meant milliseconds.
    ['a duration without a unit', GOOD.replace('proxy: { inboundListen: 127.0.0.2:15006 }', 'proxy: { inboundListen: 127.0.0.2:15006, connectTimeout: 1 }'), /proxy\.connectTimeout: must be a string, not the bare number 1; a duration needs its unit, such as 1s or 1ms/],
    ['an unknown forwarding core', GOOD.replace('proxy: { inboundListen: 127.0.0.2:15006 }', 'proxy: { inboundListen: 127.0.0.2:15006, core: turbo }'), /proxy\.core: must be typescript, native or auto/],
  ];
  for (const [name, text, pattern] of cases) it(`rejects: ${name}`, () => badConfig(text, pattern));
  it('takes the forwarding core, and leaves it to $KEDGE_PROXY_CORE when absent', () => {
    assert.equal(parseAgentConfig(GOOD.replace('proxy: { inboundListen: 127.0.0.2:15006 }', 'proxy: { inboundListen: 127.0.0.2:15006, core: native }'), '/x/a.yaml').proxy.core, 'native');
    assert.equal(parseAgentConfig(GOOD, '/x/a.yaml').proxy.core, undefined);
  });
});

describe('federation config', () => {
  it('uses the documented defaults', () => {
    const c = resolveFederationConfig({}, 'host1');
    assert.deepEqual(c.listenGrpc, { host: '0.0.0.0', port: 15012 });
    assert.deepEqual(c.listenHttp, { host: '0.0.0.0', port: 15014 });
    assert.equal(c.trustDomain, 'cluster.local');
    assert.equal(c.workloadCertTtlMs, 24 * 3600_000);
    assert.equal(c.gracePeriodMs, 10_000);
    assert.equal(c.replica, 'host1:15012');
  });
  it('reads a YAML file and lets flags win', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-fedcfg-'));
    const file = path.join(dir, 'federation.yaml');
    fs.writeFileSync(file, 'trustDomain: example.org\nworkloadCertTtl: 1h\ndataDir: ./data\n');
    const c = resolveFederationConfig({ config: file, 'workload-cert-ttl': '2h' }, 'h');
    assert.equal(c.trustDomain, 'example.org');
    assert.equal(c.workloadCertTtlMs, 2 * 3600_000);
    assert.equal(c.dataDir, path.join(dir, 'data'));
  });
  it('names the flag or the file field in errors', () => {
    assert.throws(() => resolveFederationConfig({ 'workload-cert-ttl': 'soon' }, 'h'), /command line: --workload-cert-ttl: invalid workload certificate TTL/);
    assert.throws(() => resolveFederationConfig({ 'ca-cert': '/x.pem' }, 'h'), /--ca-cert and --ca-key go together/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-fedcfg-'));
    const file = path.join(dir, 'f.yaml');
    fs.writeFileSync(file, 'listenGrpc: everywhere\n');
    assert.throws(() => resolveFederationConfig({ config: file }, 'h'), new RegExp(`${file}: listenGrpc: .*HOST:PORT`));
    fs.writeFileSync(file, 'trustdomain: x\n');
    assert.throws(() => resolveFederationConfig({ config: file }, 'h'), /unknown field "trustdomain"/);
    assert.throws(() => resolveFederationConfig({ config: path.join(dir, 'missing.yaml') }, 'h'), /cannot read federation config/);
  });
  it('takes etcd TLS and user settings with an etcd store, paths relative to the file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-fedcfg-'));
    const file = path.join(dir, 'federation.yaml');
    fs.writeFileSync(file, 'store: etcd://10.0.0.1:2379,10.0.0.2:2379\netcdCa: etcd/ca.pem\netcdCert: etcd/client.pem\netcdKey: etcd/client-key.pem\netcdUser: kedge\netcdPasswordFile: etcd/password\n');
    const c = resolveFederationConfig({ config: file }, 'h');
    assert.deepEqual(c.store, {
      kind: 'etcd',
      endpoints: ['10.0.0.1:2379', '10.0.0.2:2379'],
      access: { caFile: path.join(dir, 'etcd/ca.pem'), certFile: path.join(dir, 'etcd/client.pem'), keyFile: path.join(dir, 'etcd/client-key.pem'), username: 'kedge', passwordFile: path.join(dir, 'etcd/password') },
    });
    assert.deepEqual(resolveFederationConfig({ store: 'etcd://127.0.0.1:2379' }, 'h').store, { kind: 'etcd', endpoints: ['127.0.0.1:2379'], access: {} });
    // Flags resolve against the working directory.
    const flagged = resolveFederationConfig({ store: 'etcd://127.0.0.1:2379', 'etcd-ca': 'ca.pem' }, 'h').store;
    assert.equal(flagged.kind === 'etcd' && flagged.access.caFile, path.resolve('ca.pem'));
  });
  it('refuses etcd settings that cannot work, naming them', () => {
    const etcd = { store: 'etcd://127.0.0.1:2379' };
    assert.throws(() => resolveFederationConfig({ 'etcd-ca': '/ca.pem' }, 'h'), /--etcd-ca: applies to an etcd store only/);
    assert.throws(() => resolveFederationConfig({ ...etcd, 'etcd-ca': '/ca.pem', 'etcd-cert': '/c.pem' }, 'h'), /--etcd-cert: --etcd-cert and --etcd-key go together/);
    assert.throws(() => resolveFederationConfig({ ...etcd, 'etcd-cert': '/c.pem', 'etcd-key': '/k.pem' }, 'h'), /--etcd-cert: a client certificate needs TLS: also give --etcd-ca/);
    assert.throws(() => resolveFederationConfig({ ...etcd, 'etcd-user': 'kedge' }, 'h'), /--etcd-user: --etcd-user and --etcd-password-file go together/);
    assert.throws(() => resolveFederationConfig({ ...etcd, 'etcd-password-file': '/p' }, 'h'), /--etcd-password-file: --etcd-user and --etcd-password-file go together/);
    assert.throws(() => resolveFederationConfig({ ...etcd, 'etcd-user': 'a b', 'etcd-password-file': '/p' }, 'h'), /invalid etcd user "a b"/);
  });
});
