// Issue 4 acceptance: one mesh from two Kubernetes clusters (API doubles
// driven through the real client library), a Consul catalog (HTTP API
// double), static service entries, VM agents, and pod agents that joined
// with their service-account token.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { KubeApiDouble, writeKubeconfig } from '../support/kube-double';
import { endpointSlice, node, service } from '../support/fixtures/kube';
import { ConsulDouble } from '../support/consul-double';
import { eventually, runKedge, startKedge, tempDir, KedgeProcess } from '../support/procs';
import { federationHandle, AgentHandle, FederationHandle, agentSeesEndpoints, getJson, httpGet, startAgentProc, startHttpApp, writeAgentConfig } from '../support/mesh';

interface EndpointRow { service: string; address: string; cluster: string; network: string; locality: string; health: string; meshed: boolean; identity: string }

describe('federation across Kubernetes, Consul, static entries and VMs', () => {
  let east: KubeApiDouble;
  let west: KubeApiDouble;
  let consul: ConsulDouble;
  let fed: FederationHandle;
  let fedProc: KedgeProcess;
  const agents: AgentHandle[] = [];
  const apps: { close(): Promise<void> }[] = [];
  const admin = () => ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];
  const endpoints = async (svc: string) => JSON.parse((await runKedge(['get', 'endpoints', svc, '-o', 'json', ...admin()])).stdout) as EndpointRow[];

  before(async () => {
    east = await KubeApiDouble.start({ name: 'east' });
    west = await KubeApiDouble.start({ name: 'west' });
    consul = await ConsulDouble.start({ datacenter: 'dc1' });
    const port = [{ name: 'http', port: 9080, appProtocol: 'http' }];
    east.apply(
      node('east-a', { region: 'us-east1', zone: 'us-east1-b' }),
      service('reviews', 'default', [{ name: 'http', port: 9080, targetPort: 9080 }]),
      endpointSlice('reviews', 'default', port, [{ ip: '127.0.61.1', pod: 'reviews-1', nodeName: 'east-a', zone: 'us-east1-b' }, { ip: '127.0.61.2', pod: 'reviews-2', nodeName: 'east-a', zone: 'us-east1-b' }], { name: 'reviews-east' }),
    );
    west.apply(
      node('west-a', { region: 'us-west1', zone: 'us-west1-a' }),
      service('reviews', 'default', [{ name: 'http', port: 9080, targetPort: 9080 }]),
      endpointSlice('reviews', 'default', port, [{ ip: '127.0.62.1', pod: 'reviews-w1', nodeName: 'west-a', zone: 'us-west1-a' }], { name: 'reviews-west' }),
    );
    consul.catalog.registerInstance({ service: 'reviews', address: '127.0.63.1', port: 9080, meta: { protocol: 'http', 'port-name': 'http', region: 'eu-west1' }, checks: 'passing' });

    const dir = tempDir('fed-sources');
    const config = {
      dataDir: path.join(dir, 'data'),
      listenGrpc: '127.0.0.1:0',
      listenHttp: '127.0.0.1:0',
      gracePeriod: '3s',
      clusters: [
        { name: 'east', kind: 'kubernetes', kubeconfig: writeKubeconfig(east, path.join(dir, 'east.kubeconfig')), network: 'net-east', staleAfter: '1s' },
        { name: 'west', kind: 'kubernetes', kubeconfig: writeKubeconfig(west, path.join(dir, 'west.kubeconfig')), network: 'net-west' },
        { name: 'dc1', kind: 'consul', address: consul.address, datacenter: 'dc1', network: 'net-dc1' },
      ],
      serviceEntries: [{ name: 'billing-db', namespace: 'shop', ports: [{ name: 'pg', port: 5432, protocol: 'tcp' }], endpoints: [{ address: '10.1.2.3' }] }],
    };
    fs.writeFileSync(path.join(dir, 'federation.yaml'), YAML.stringify(config));
    fedProc = startKedge('federation', ['federation', '--config', path.join(dir, 'federation.yaml')]);
    const ready = await fedProc.waitForMsg('federation ready', 20_000);
    fed = federationHandle(fedProc, config.dataDir, ready);
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fedProc?.stop('SIGKILL');
    await Promise.all(apps.map((a) => a.close()));
    await Promise.all([east?.close(), west?.close(), consul?.close()]);
  });

  it('merges reviews.default from both clusters, Consul and a VM into one service', async () => {
    const vmApp = await startHttpApp('vm');
    apps.push(vmApp);
    agents.push(await startAgentProc(fed, { name: 'reviews-vm', namespace: 'default', serviceAccount: 'reviews', address: '127.0.60.1', locality: 'us-east1/us-east1-c', network: 'net-vm', services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: vmApp.port, protocol: 'http' }] }] }));
    const rows = await eventually(async () => {
      const r = await endpoints('reviews.default');
      if (process.env.KEDGE_TEST_VERBOSE) console.log('# rows', JSON.stringify(r.map((e) => [e.cluster, e.address])));
      return r.length === 5 ? r : undefined;
    }, 15_000, 'five endpoints of reviews.default');
    const by = (addr: string) => rows.find((r) => r.address === addr)!;
    assert.deepEqual([by('127.0.61.2').cluster, by('127.0.61.2').network, by('127.0.61.2').locality, by('127.0.61.2').health], ['east', 'net-east', 'us-east1/us-east1-b', 'HEALTHY']);
    assert.deepEqual([by('127.0.62.1').cluster, by('127.0.62.1').locality], ['west', 'us-west1/us-west1-a']);
    assert.deepEqual([by('127.0.63.1').cluster, by('127.0.63.1').network, by('127.0.63.1').locality], ['dc1', 'net-dc1', 'eu-west1']);
    assert.deepEqual([by('127.0.60.1').cluster, by('127.0.60.1').meshed], ['vms', true]);
    assert.equal(by('127.0.61.1').meshed, false, 'not meshed until its sidecar joins');
    const db = await endpoints('billing-db.shop');
    assert.deepEqual(db.map((e) => [e.address, e.cluster]), [['10.1.2.3', 'static']]);
    const clusters = JSON.parse((await runKedge(['get', 'clusters', '-o', 'json', ...admin()])).stdout) as { name: string; connected: boolean }[];
    assert.deepEqual(clusters.map((c) => [c.name, c.connected]), [['vms', true], ['east', true], ['west', true], ['dc1', true], ['static', true]]);
  });

  it('pods join with their service-account token and become meshed endpoints; a VM sends traffic to every endpoint (mTLS to meshed ones, plain TCP to the others)', async () => {
    for (const [double, cluster, ip] of [[east, 'east', '127.0.61.1'], [west, 'west', '127.0.62.1']] as const) {
      const app = await startHttpApp(`pod-${cluster}`);
      apps.push(app);
      const dir = tempDir(`pod-${cluster}`);
      const tokenFile = path.join(dir, 'sa-token');
      const token = `projected-${cluster}-${Date.now()}`;
      double.registerServiceAccountToken(token, { namespace: 'default', serviceAccount: 'reviews', podName: `reviews-${cluster}`, audiences: ['kedge'] });
      fs.writeFileSync(tokenFile, token);
      agents.push(await startAgentProc(fed, {
        name: `reviews-${cluster}`, namespace: 'default', serviceAccount: 'reviews', address: ip, token: 'unused',
        services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] }],
        extra: { federation: { address: fed.grpc, rootCert: fed.rootCertFile, kubernetesTokenFile: tokenFile, cluster } },
      }));
    }
    const rows = await eventually(async () => {
      const r = await endpoints('reviews.default');
      return r.filter((e) => e.meshed).length === 3 && r.length === 5 ? r : undefined;
    }, 15_000, 'three meshed endpoints');
    assert.deepEqual(rows.filter((e) => e.meshed).map((e) => `${e.cluster}/${e.address}`).sort(), ['east/127.0.61.1', 'vms/127.0.60.1', 'west/127.0.62.1']);
    assert.equal(rows.find((e) => e.address === '127.0.61.1')!.identity, 'spiffe://cluster.local/ns/default/sa/reviews');

    // Auto mTLS: the unmeshed pod and the Consul instance have no Kedge
    // proxy and are dialled in plain TCP on their own port.
    for (const [name, ip] of [['pod-east-unmeshed', '127.0.61.2'], ['consul-dc1', '127.0.63.1']] as const) apps.push(await startHttpApp(name, ip, 9080));
    const client = await startAgentProc(fed, { name: 'web', namespace: 'shop', serviceAccount: 'web', address: '127.0.60.9', upstreams: [{ service: 'reviews.default', port: 9080 }] });
    agents.push(client);
    await agentSeesEndpoints(client, 'reviews.default', 5);
    const every = ['consul-dc1', 'pod-east', 'pod-east-unmeshed', 'pod-west', 'vm'];
    const seen = new Set<string>();
    for (let i = 0; i < 60 && seen.size < every.length; i++) seen.add(await httpGet(client.upstreams[0]!));
    assert.deepEqual([...seen].sort(), every);
  });

  it('a pod token that the cluster rejects gets a clear error', async () => {
    const dir = tempDir('pod-bad');
    fs.writeFileSync(path.join(dir, 'sa-token'), 'not-a-real-token');
    const a = startKedge('pod-bad', ['agent', '--config', writeAgentConfig(fed, {
      name: 'bad', namespace: 'default', serviceAccount: 'reviews', address: '127.0.61.9',
      extra: { federation: { address: fed.grpc, rootCert: fed.rootCertFile, kubernetesTokenFile: path.join(dir, 'sa-token'), cluster: 'east' } },
    }, path.join(dir, 'data'), path.join(dir, 'sa-token'))]);
    const { code } = await a.exited;
    assert.equal(code, 1);
    assert.match(a.raw.join('\n'), /\[KEDGE_K8S_TOKEN_REJECTED\]/);
  });

  it('scaling a deployment reaches subscribed agents promptly', async () => {
    const client = agents[agents.length - 1]!;
    const t0 = Date.now();
    east.setEndpoints('default', 'reviews-east', [{ ip: '127.0.61.1', pod: 'reviews-1', nodeName: 'east-a', zone: 'us-east1-b' }, { ip: '127.0.61.2', pod: 'reviews-2', nodeName: 'east-a' }, { ip: '127.0.61.3', pod: 'reviews-3', nodeName: 'east-a' }]);
    await eventually(async () => {
      const cfg = await getJson<{ services: { key: string; endpoints: unknown[] }[] }>(`${client.adminUrl}/config`);
      return cfg.services.find((s) => s.key === 'reviews.default')?.endpoints.length === 6;
    }, 10_000, 'the new endpoint at the agent', 10);
    console.log(`# EndpointSlice change -> subscribed agent's /config: ${Date.now() - t0} ms`);
  });

  it('an unreachable cluster keeps its endpoints, marked stale, and other sources are unaffected', async () => {
    await east.down();
    const rows = await eventually(async () => {
      const r = await endpoints('reviews.default');
      return r.filter((e) => e.cluster === 'east').every((e) => e.health === 'STALE') ? r : undefined;
    }, 15_000, 'east endpoints marked STALE');
    assert.equal(rows.filter((e) => e.cluster === 'east').length, 3);
    assert.equal(rows.find((e) => e.cluster === 'west')!.health, 'HEALTHY');
    const east1 = (JSON.parse((await runKedge(['get', 'clusters', '-o', 'json', ...admin()])).stdout) as { name: string; connected: boolean; stale: boolean; lastSync: string }[]).find((c) => c.name === 'east')!;
    assert.deepEqual([east1.connected, east1.stale], [false, true]);
    assert.ok(east1.lastSync);
    await east.up();
    await eventually(async () => (await endpoints('reviews.default')).filter((e) => e.cluster === 'east').every((e) => e.health !== 'STALE'), 20_000, 'east fresh again');
  });
});

describe('federation source configuration errors', () => {
  it('an unreadable kubeconfig or an invalid service entry stops the federation with the field named', async () => {
    const dir = tempDir('fed-bad-sources');
    const base = { dataDir: path.join(dir, 'data'), listenGrpc: '127.0.0.1:0', listenHttp: '127.0.0.1:0' };
    const file = path.join(dir, 'federation.yaml');
    fs.writeFileSync(file, YAML.stringify({ ...base, clusters: [{ name: 'east', kind: 'kubernetes', kubeconfig: './missing.kubeconfig', network: 'n' }] }));
    const k = await runKedge(['federation', '--config', file]);
    assert.equal(k.code, 1);
    assert.match(k.stderr, /missing\.kubeconfig/);
    fs.writeFileSync(file, YAML.stringify({ ...base, serviceEntries: [{ name: 'db', namespace: 'shop', ports: [{ name: 'pg', port: 5432 }], endpoints: [{ address: 'db.example.com' }] }] }));
    const e = await runKedge(['federation', '--config', file]);
    assert.equal(e.code, 1);
    assert.match(e.stderr, /serviceEntries\[0\]\.endpoints\[0\]\.address/);
    fs.writeFileSync(file, YAML.stringify({ ...base, clusters: [{ name: 'x', kind: 'nomad' }] }));
    const n = await runKedge(['federation', '--config', file]);
    assert.match(n.stderr, /clusters\[0\]\.kind: unknown cluster kind "nomad"/);
    fs.writeFileSync(file, YAML.stringify({ ...base, store: 'zookeeper://x' }));
    const s = await runKedge(['federation', '--config', file]);
    assert.match(s.stderr, /store: invalid store "zookeeper:\/\/x"/);
  });
});
