// kube-inject golden tests on real manifests (test/golden/kube-inject/, see
// its README for where each came from), idempotence, and bad input.
// KEDGE_UPDATE_GOLDEN=1 rewrites the golden files; review the diff.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { injectManifest, POD_TEMPLATE_PATHS } from '../../federation/inject/manifest';
import { ANNOTATIONS, INJECTED, injectPodTemplate, type InjectOptions } from '../../federation/inject/pod';
import { loadAgentConfig } from '../../agent/config';
import { runKubeInject } from '../../cli/kube-inject';
import { podAgentConfig } from '../../cli/pod-agent';

const DIR = path.resolve(__dirname, '..', '..', '..', 'test', 'golden', 'kube-inject');
const UPDATE = process.env.KEDGE_UPDATE_GOLDEN === '1';
export const GOLDEN_OPTIONS: InjectOptions = {
  image: 'registry.example/kedge:0.1.0',
  federationGrpc: 'kedge-federation.kedge-system.svc:15012',
  federationHttp: 'kedge-federation.kedge-system.svc:15014',
  rootSha256: 'ab'.repeat(32),
  cluster: 'east',
};
const INPUTS = fs.readdirSync(DIR).filter((f) => f.endsWith('.yaml') && !f.endsWith('.golden.yaml')).sort();

type Obj = Record<string, any>;
function podTemplates(text: string): { kind: string; template: Obj }[] {
  return YAML.parseAllDocuments(text).map((d) => d.toJS() as Obj).filter((v) => v && POD_TEMPLATE_PATHS[v.kind]).map((v) => ({
    kind: v.kind,
    template: POD_TEMPLATE_PATHS[v.kind]!.reduce((o: Obj, k) => o[k], v),
  }));
}

describe('kube-inject golden files', () => {
  it('covers every kind with a pod template', () => {
    const kinds = new Set(INPUTS.flatMap((f) => podTemplates(fs.readFileSync(path.join(DIR, f), 'utf8')).map((p) => p.kind)));
    for (const k of ['Deployment', 'StatefulSet', 'DaemonSet', 'Job', 'CronJob', 'ReplicaSet', 'Pod']) assert.ok(kinds.has(k), `a fixture with a ${k}`);
  });

  for (const file of INPUTS) {
    it(`${file}`, () => {
      const input = fs.readFileSync(path.join(DIR, file), 'utf8');
      const { text, reports } = injectManifest(input, GOLDEN_OPTIONS, file);
      const golden = path.join(DIR, file.replace(/\.yaml$/, '.golden.yaml'));
      if (UPDATE) fs.writeFileSync(golden, text);
      assert.equal(text, fs.readFileSync(golden, 'utf8'), `${file}: output differs from ${path.basename(golden)} (KEDGE_UPDATE_GOLDEN=1 rewrites it)`);

      // Every document survives; non-workloads byte for byte as parsed.
      const inDocs = YAML.parseAllDocuments(input).map((d) => d.toJS()).filter((v) => v != null);
      const outDocs = YAML.parseAllDocuments(text).map((d) => d.toJS()).filter((v) => v != null);
      assert.equal(outDocs.length, inDocs.length);
      inDocs.forEach((d: Obj, i) => {
        if (!POD_TEMPLATE_PATHS[d.kind]) assert.deepEqual(outDocs[i], d);
      });
      // Every workload got exactly one sidecar, the init container, the projected token and the status annotation.
      for (const { template } of podTemplates(text)) {
        const native = ['Never', 'OnFailure'].includes(template.spec.restartPolicy);
        const all = [...template.spec.containers, ...template.spec.initContainers];
        assert.equal(all.filter((c: Obj) => c.name === INJECTED.sidecar).length, 1);
        // Pods that run to completion get the agent as a native sidecar, after the capture step.
        assert.deepEqual(template.spec.initContainers.map((c: Obj) => c.name).filter((n: string) => n.startsWith('kedge-')), native ? [INJECTED.init, INJECTED.sidecar] : [INJECTED.init]);
        if (native) assert.equal(template.spec.initContainers.at(-1).restartPolicy, 'Always');
        const token = template.spec.volumes.find((v: Obj) => v.name === 'kedge-token');
        assert.deepEqual(token.projected.sources[0].serviceAccountToken.audience, 'kedge');
        assert.ok(template.metadata.annotations[ANNOTATIONS.status]);
        const sidecar = all.find((c: Obj) => c.name === INJECTED.sidecar);
        assert.deepEqual(sidecar.securityContext.capabilities, { drop: ['ALL'] });
        assert.equal(sidecar.image, GOLDEN_OPTIONS.image);
      }
      assert.ok(reports.some((r) => r.outcome === 'injected'));

      // Idempotent: injecting the output again changes nothing, and says so.
      const again = injectManifest(text, GOLDEN_OPTIONS, file);
      assert.equal(again.text, text);
      assert.ok(again.reports.filter((r) => r.outcome !== 'passed').every((r) => r.outcome === 'unchanged'));
    });
  }

  it("keeps an app's own scrape annotations and derives the services from the app label and ports", () => {
    const out = fs.readFileSync(path.join(DIR, 'bookinfo.golden.yaml'), 'utf8');
    const pages = podTemplates(out).map((p) => p.template.metadata);
    const product = pages.find((m) => m.labels.app === 'productpage')!;
    assert.equal(product.annotations['prometheus.io/port'], '9080');
    assert.equal(product.annotations[ANNOTATIONS.services], 'productpage:9080');
    const reviews = pages.find((m) => m.labels.app === 'reviews')!;
    assert.equal(reviews.annotations['prometheus.io/port'], '15020');
  });

  it('injected again with other options, replaces its own containers and nothing else', () => {
    const input = fs.readFileSync(path.join(DIR, 'statefulset-web.yaml'), 'utf8');
    const once = injectManifest(input, GOLDEN_OPTIONS).text;
    const other = injectManifest(once, { ...GOLDEN_OPTIONS, image: 'registry.example/kedge:0.2.0' });
    assert.deepEqual(other.reports.filter((r) => r.outcome !== 'passed').map((r) => r.outcome), ['reinjected']);
    assert.equal(other.text, injectManifest(input, { ...GOLDEN_OPTIONS, image: 'registry.example/kedge:0.2.0' }).text);
  });

  it('leaves pods that opt out, or that use the host network, as they were', () => {
    const optOut = injectPodTemplate({ metadata: { annotations: { [ANNOTATIONS.inject]: 'false' } }, spec: { containers: [{ name: 'a', image: 'a' }] } }, GOLDEN_OPTIONS);
    assert.deepEqual(optOut, { injected: false, reason: 'kedge.io/inject is "false"' });
    const host = injectPodTemplate({ spec: { hostNetwork: true, containers: [{ name: 'a', image: 'a' }] } }, GOLDEN_OPTIONS);
    assert.equal(host.injected, false);
    const noCapture = injectPodTemplate({ metadata: { annotations: { [ANNOTATIONS.capture]: 'false' } }, spec: { containers: [{ name: 'a', image: 'a' }] } }, GOLDEN_OPTIONS);
    assert.ok(noCapture.injected && noCapture.template.spec.initContainers === undefined);
  });
});

describe('kube-inject bad input', () => {
  const opts = GOLDEN_OPTIONS;
  it('refuses a file that is not YAML, naming the document and line', () => {
    assert.throws(() => injectManifest('apiVersion: v1\nkind: Pod\nmetadata: {name: x\n', opts, 'broken.yaml'), /broken\.yaml, document 1 \(line \d+, column \d+\), is not valid YAML: .*nothing was written/);
    assert.throws(() => injectManifest('\u0000\u0001binary', opts, 'x.bin'), /x\.bin is not YAML \(it holds NUL bytes\)/);
    assert.throws(() => injectManifest('just a string\n', opts, 'words.txt'), /words\.txt, document 1, is not a Kubernetes object \(no kind\)/);
  });

  it('refuses a workload without a pod template, naming it', () => {
    const doc = 'apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: empty\nspec:\n  replicas: 1\n';
    assert.throws(() => injectManifest(doc, opts, 'app.yaml'), /app\.yaml, document 2 \(Deployment empty\), has no pod template at spec\.template\.spec: a Deployment needs one to be injected; fix the manifest; nothing was written/);
    assert.throws(() => injectManifest('apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {schedule: "* * * * *"}\n', opts, 'c.yaml'), /has no pod template at spec\.jobTemplate\.spec\.template\.spec/);
  });

  it('through the CLI: notes on stderr, nothing written to -o on a bad file, options checked', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-inject-'));
    const out = path.join(dir, 'out.yaml');
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'kind: Deployment\nmetadata: {name: x}\n');
    await assert.rejects(runKubeInject(['-f', bad, '-o', out, '--root-sha256', opts.rootSha256], '0.1.0', { write: () => true }), /has no pod template/);
    assert.equal(fs.existsSync(out), false);
    await assert.rejects(runKubeInject(['-f', bad, '--root-sha256', 'nope'], '0.1.0'), /is not 64 hex digits/);
    await assert.rejects(runKubeInject(['--root-sha256', opts.rootSha256], '0.1.0'), /give the manifest with -f FILE/);
    await assert.rejects(runKubeInject(['-f', path.join(dir, 'missing.yaml'), '--root-sha256', opts.rootSha256], '0.1.0'), /cannot read .*missing\.yaml: ENOENT/);
    const notes: string[] = [];
    const first = await runKubeInject(['-f', path.join(DIR, 'job-pi.yaml'), '--root-sha256', opts.rootSha256], '0.1.0', { write: (s: string) => notes.push(s) });
    fs.writeFileSync(path.join(dir, 'once.yaml'), first);
    const second = await runKubeInject(['-f', path.join(dir, 'once.yaml'), '--root-sha256', opts.rootSha256], '0.1.0', { write: (s: string) => notes.push(s) });
    assert.equal(second, first);
    assert.deepEqual(notes, ['kedge kube-inject: job/pi is already injected with these options: unchanged\n']);
    assert.match(first, /image: kedge:0\.1\.0/);
  });
});

describe('the injected sidecar', () => {
  it("`kedge agent --pod` turns the pod's downward API into a valid agent config", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pod-agent-'));
    const config = podAgentConfig({
      KEDGE_POD_NAME: 'reviews-v1-7d4b9c-x2k4p', KEDGE_POD_NAMESPACE: 'default', KEDGE_SERVICE_ACCOUNT: 'bookinfo-reviews', KEDGE_POD_IP: '10.1.2.3',
      KEDGE_FEDERATION: 'kedge-federation.kedge-system.svc:15012', KEDGE_CLUSTER: 'east', KEDGE_PROXY_UID: '1337',
    }, {
      labels: 'app="reviews"\npod-template-hash="7d4b9c"\nversion="v1"\n',
      annotations: `kedge.io/services="reviews:9080"\nkedge.io/status="{\\"containers\\":[\\"kedge-agent\\"]}"\nkubernetes.io/config.seen="2026-12-08T02:00:00Z"\n`,
    }, { rootCert: path.join(dir, 'root-cert.pem'), tokenFile: '/var/run/secrets/kedge/token', dataDir: path.join(dir, 'data') });
    assert.deepEqual(config.workload, { name: 'reviews-v1-7d4b9c-x2k4p', namespace: 'default', serviceAccount: 'bookinfo-reviews', address: '10.1.2.3', labels: { app: 'reviews', 'pod-template-hash': '7d4b9c', version: 'v1' } });
    assert.deepEqual(config.services, [{ name: 'reviews', ports: [{ name: 'tcp', port: 9080, targetPort: 9080, protocol: 'tcp' }] }]);
    assert.deepEqual(config.capture, { proxyUser: 1337, proxyGroup: 1337, inboundPorts: '*' });
    const file = path.join(dir, 'agent.yaml');
    fs.writeFileSync(file, YAML.stringify(config));
    const loaded = loadAgentConfig(file);
    assert.equal(loaded.federation.cluster, 'east');
    assert.equal(loaded.federation.kubernetesTokenFile, '/var/run/secrets/kedge/token');
  });

  it('names what is missing when the downward API is not there', () => {
    assert.throws(() => podAgentConfig({ KEDGE_POD_NAME: 'p' }, { labels: '', annotations: '' }, { rootCert: '/x', tokenFile: '/t', dataDir: '/d' }), /KEDGE_POD_NAMESPACE, KEDGE_SERVICE_ACCOUNT, KEDGE_POD_IP, KEDGE_FEDERATION, KEDGE_CLUSTER are not set: .*kedge kube-inject/);
    assert.throws(() => podAgentConfig({ KEDGE_POD_NAME: 'p', KEDGE_POD_NAMESPACE: 'd', KEDGE_SERVICE_ACCOUNT: 's', KEDGE_POD_IP: '10.0.0.1', KEDGE_FEDERATION: 'f:1', KEDGE_CLUSTER: 'c' }, { labels: '', annotations: 'kedge.io/services="reviews"\n' }, { rootCert: '/x', tokenFile: '/t', dataDir: '/d' }), /kedge\.io\/services "reviews": write NAME:PORT\[:TARGET\[:PROTO\]\]/);
  });
});
