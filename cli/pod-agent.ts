// `kedge agent --pod`: the injected sidecar. Its config is not a file but
// the pod itself: names and the pod IP from downward-API environment
// variables, labels and annotations (kedge.io/services, kedge.io/capture)
// from the downward-API volume, the federation's addresses and the pinned
// root fingerprint from the environment kube-inject set. The root is
// fetched from the federation's HTTPS port and kept only if it hashes to
// the pin, as `kedge join` does.
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { KedgeError } from '../proto/model/errors';
import { rootFingerprint } from '../proto/model/join';
import { isLabelKey, isLabelValue } from '../proto/model/service';
import { ANNOTATIONS, POD_PATHS } from '../federation/inject/pod';
import { fetchRoot, SERVE_SPEC, servicesFromSpecs } from './join';

const REQUIRED = ['KEDGE_POD_NAME', 'KEDGE_POD_NAMESPACE', 'KEDGE_SERVICE_ACCOUNT', 'KEDGE_POD_IP', 'KEDGE_FEDERATION', 'KEDGE_CLUSTER'] as const;

/**
 * Parses a downward-API labels or annotations file: one `key="value"` per
 * line, the value quoted as Go's strconv.Quote does (JSON-compatible for
 * what Kubernetes allows in labels and annotations).
 */
export function parseDownwardFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const raw = line.slice(eq + 1);
    try {
      const v: unknown = JSON.parse(raw);
      if (typeof v === 'string') out[line.slice(0, eq)] = v;
    } catch {
      // A value JSON cannot read (a Go escape JSON lacks) is skipped, not guessed at.
    }
  }
  return out;
}

/** The agent config of a pod, from its environment and downward-API files. */
export function podAgentConfig(env: NodeJS.ProcessEnv, podinfo: { labels: string; annotations: string }, paths: { rootCert: string; tokenFile: string; dataDir: string }): Record<string, unknown> {
  const missing = REQUIRED.filter((k) => !env[k]);
  if (missing.length) throw new KedgeError('KEDGE_BAD_CONFIG', `${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not set: kedge agent --pod runs as the sidecar that kedge kube-inject (or the federation's webhook) adds, which sets them from the downward API`);
  const labels = Object.fromEntries(Object.entries(parseDownwardFile(podinfo.labels)).filter(([k, v]) => isLabelKey(k) && isLabelValue(v)));
  const annotations = parseDownwardFile(podinfo.annotations);
  const serve = (annotations[ANNOTATIONS.services] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of serve) {
    if (!SERVE_SPEC.test(s)) throw new KedgeError('KEDGE_BAD_CONFIG', `the pod's annotation ${ANNOTATIONS.services} "${annotations[ANNOTATIONS.services]}": write NAME:PORT[:TARGET[:PROTO]], comma-separated (e.g. reviews:9080:9080:http)`);
  }
  const uid = Number(env.KEDGE_PROXY_UID ?? '1337');
  const config: Record<string, unknown> = {
    federation: { address: env.KEDGE_FEDERATION!.split(',').map((a) => a.trim()), rootCert: paths.rootCert, kubernetesTokenFile: paths.tokenFile, cluster: env.KEDGE_CLUSTER },
    workload: { name: env.KEDGE_POD_NAME, namespace: env.KEDGE_POD_NAMESPACE, serviceAccount: env.KEDGE_SERVICE_ACCOUNT, address: env.KEDGE_POD_IP, labels },
    services: servicesFromSpecs(serve),
    proxy: { inboundListen: '0.0.0.0:15006' },
    admin: { listen: '127.0.0.1:15000', metricsListen: '0.0.0.0:15020' },
    dataDir: paths.dataDir,
  };
  if (annotations[ANNOTATIONS.capture] !== 'false') config.capture = { proxyUser: uid, proxyGroup: uid, inboundPorts: '*' };
  return config;
}

/** Builds the pod's config (fetching and pinning the root) and returns the path of the file written. */
export async function writePodAgentConfig(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const read = (f: string) => {
    try {
      return fs.readFileSync(path.join(POD_PATHS.podinfoDir, f), 'utf8');
    } catch {
      return '';
    }
  };
  const dataDir = POD_PATHS.dataDir;
  const rootCert = path.join(dataDir, 'root-cert.pem');
  const config = podAgentConfig(env, { labels: read('labels'), annotations: read('annotations') }, { rootCert, tokenFile: POD_PATHS.tokenFile, dataDir });
  const pin = env.KEDGE_ROOT_SHA256 ?? '';
  if (!/^[0-9a-f]{64}$/.test(pin)) throw new KedgeError('KEDGE_BAD_CONFIG', 'KEDGE_ROOT_SHA256 is not 64 hex digits: inject the pod again with --root-sha256 (sha256sum root-cert.pem on the federation)');
  const http = env.KEDGE_FEDERATION_HTTP ?? '';
  if (!http) throw new KedgeError('KEDGE_BAD_CONFIG', "KEDGE_FEDERATION_HTTP is not set: it names the federation's HTTPS port, where the pod fetches the root it pins");
  const pem = await fetchRoot(http);
  const got = rootFingerprint(pem);
  if (got !== pin) throw new KedgeError('KEDGE_ROOT_MISMATCH', `the federation at ${http} is not the one this pod was injected for: its root's SHA-256 is ${got}, the pod pins ${pin}; nothing was sent. After a CA rotation, inject again with the new fingerprint.`);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(rootCert, pem);
  const file = path.join(dataDir, 'agent.yaml');
  fs.writeFileSync(file, `# Written by kedge agent --pod from the pod's downward API.\n${YAML.stringify(config)}`);
  return file;
}
