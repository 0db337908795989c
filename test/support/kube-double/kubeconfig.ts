// Writes a real kubeconfig for a Kubernetes API double: one cluster (server
// URL + certificate-authority-data), one token user, one current context,
// exactly what `kubectl config view --raw --minify` shows for a cluster.
import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';

/** What a kubeconfig needs to know about a double. */
export interface KubeconfigTarget {
  name: string;
  url: string;
  caPem: string;
  token: string;
}

/** Writes `file` (mode 0600) and returns its path. `token`/`caPem` override the double's, e.g. to test rejection. */
export function writeKubeconfig(double: KubeconfigTarget, file: string, opts: { token?: string; caPem?: string; server?: string } = {}): string {
  const name = double.name;
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    preferences: {},
    clusters: [{ name, cluster: { server: opts.server ?? double.url, 'certificate-authority-data': Buffer.from(opts.caPem ?? double.caPem).toString('base64') } }],
    users: [{ name: `kedge-${name}`, user: { token: opts.token ?? double.token } }],
    contexts: [{ name, context: { cluster: name, user: `kedge-${name}` } }],
    'current-context': name,
  };
  writeFileSync(file, stringify(config), { mode: 0o600 });
  return file;
}
