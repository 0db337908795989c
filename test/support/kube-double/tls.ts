// Serving certificate of a Kubernetes API double: a leaf for 127.0.0.1 and
// localhost signed by a per-cluster test CA (the client verifies both, as
// it would for a real API server named by IP in its kubeconfig).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCa, type TestCa } from '../pki';

/** CA and serving key pair of one API double. */
export interface ApiServerTls {
  ca: TestCa;
  certPem: string;
  keyPem: string;
}

const cache = new Map<string, ApiServerTls>();

/** The serving identity for the double of cluster `name` (cached per process). */
export function apiServerTls(name: string): ApiServerTls {
  let tls = cache.get(name);
  if (tls) return tls;
  const ca = makeCa(`kube-apiserver-${name}`);
  const dir = mkdtempSync(join(tmpdir(), 'kedge-kube-tls-'));
  try {
    writeFileSync(join(dir, 'ca.crt'), ca.certPem);
    writeFileSync(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
    writeFileSync(
      join(dir, 'leaf.ext'),
      'basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n',
    );
    const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    run(['req', '-new', '-config', '/dev/null', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=kube-apiserver']);
    run(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', 'leaf.ext', '-out', 'leaf.crt']);
    tls = { ca, certPem: readFileSync(join(dir, 'leaf.crt'), 'utf8'), keyPem: readFileSync(join(dir, 'leaf.key'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  cache.set(name, tls);
  return tls;
}
