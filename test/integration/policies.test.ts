// Traffic policies end to end: kedge apply -f validates (errors name the
// document path), the federation keeps them and pushes them with the
// service, and kedge get endpoints --from shows priorities and shares.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runKedge, tempDir, eventually } from '../support/procs';
import { AgentHandle, FederationHandle, getJson, startAgentProc, startFederationProc, startHttpApp } from '../support/mesh';

describe('traffic policies', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  const apps: { close(): Promise<void> }[] = [];
  const admin = () => ['--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile];
  before(async () => {
    fed = await startFederationProc();
    for (const [name, addr, locality] of [['r-a', '127.0.70.1', 'us-east/zone-a'], ['r-b', '127.0.70.2', 'us-east/zone-b'], ['r-w', '127.0.70.3', 'us-west/zone-c']] as const) {
      const app = await startHttpApp(name);
      apps.push(app);
      agents.push(await startAgentProc(fed, { name, namespace: 'default', serviceAccount: 'reviews', address: addr, locality, network: 'net-a', services: [{ name: 'reviews', ports: [{ name: 'http', port: 9080, targetPort: app.port }] }] }));
    }
    agents.push(await startAgentProc(fed, { name: 'client', namespace: 'default', serviceAccount: 'client', address: '127.0.70.9', locality: 'us-east/zone-a', network: 'net-a', upstreams: [{ service: 'reviews.default', port: 9080 }] }));
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.proc.stop('SIGKILL')));
    await fed.proc.stop('SIGKILL');
    await Promise.all(apps.map((a) => a.close()));
  });

  it('kedge get endpoints --from shows locality priorities and the share each endpoint gets', async () => {
    const r = await runKedge(['get', 'endpoints', 'reviews.default', '--from', 'default/client', '-o', 'json', ...admin()]);
    assert.equal(r.code, 0, r.stderr);
    const view = JSON.parse(r.stdout) as { endpoints: { workload: string; priority: number; share: number }[] };
    const by = Object.fromEntries(view.endpoints.map((e) => [e.workload, e]));
    assert.deepEqual([by['default/r-a']!.priority, by['default/r-b']!.priority, by['default/r-w']!.priority], [0, 2, 3]);
    assert.deepEqual([by['default/r-a']!.share, by['default/r-b']!.share, by['default/r-w']!.share], [100, 0, 0]);
    const table = await runKedge(['get', 'endpoints', 'reviews.default', '--from', 'default/client', ...admin()]);
    assert.match(table.stdout, /reviews\.default as seen from default\/client/);
  });

  it('kedge apply -f stores a policy that changes the order as written and reaches the agents', async () => {
    const dir = tempDir('policy');
    const file = path.join(dir, 'policy.yaml');
    fs.writeFileSync(file, `kind: TrafficPolicy
metadata: { name: reviews-west-first }
spec:
  service: reviews.default
  locality: { failoverPriority: [ "topology.istio.io/none" ] }
`);
    // A label order nobody matches puts every endpoint in one priority.
    const applied = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /trafficpolicy\/reviews-west-first \(reviews\.default\) applied/);
    const view = JSON.parse((await runKedge(['get', 'endpoints', 'reviews.default', '--from', 'default/client', '-o', 'json', ...admin()])).stdout) as { endpoints: { share: number }[] };
    assert.deepEqual(view.endpoints.map((e) => Math.round(e.share)), [33, 33, 33]);
    const policies = JSON.parse((await runKedge(['get', 'policies', '-o', 'json', ...admin()])).stdout) as { name: string; service: string }[];
    assert.deepEqual(policies.map((p) => [p.name, p.service]), [['reviews-west-first', 'reviews.default']]);
    const client = agents[3]!;
    await eventually(async () => {
      const cfg = await getJson<{ services: { key: string; trafficPolicy?: { metadata: { name: string } } }[] }>(`${client.adminUrl}/config`);
      return cfg.services.find((s) => s.key === 'reviews.default')?.trafficPolicy?.metadata.name === 'reviews-west-first';
    }, 5_000, 'the policy at the agent');
  });

  it('refuses a policy for an unknown service or with an impossible ejection share, naming the path', async () => {
    const dir = tempDir('policy-bad');
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(file, `kind: TrafficPolicy
spec:
  service: nosuch.default
---
kind: TrafficPolicy
spec:
  service: reviews.default
  outlierDetection: { maxEjectionPercent: 150 }
`);
    const r = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /document 2\).*spec\.outlierDetection\.maxEjectionPercent/);
    fs.writeFileSync(file, 'kind: TrafficPolicy\nspec:\n  service: nosuch.default\n');
    const unknown = await runKedge(['apply', '-f', file, ...admin()]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /spec\.service: no service nosuch\.default is known/);
  });
});
