// One certificate for every simulated agent (support/sim-agents.ts): a join
// token granted every name and service of the layout (names are still owned
// one by one), used once for one Sign. Shared by the federation-push
// benchmark and the dashboard's scale test.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { federationClient, signOnce } from '../../../agent/registration/client';
import { generateKeyAndCsr } from '../../../agent/identity/csr';
import { parseHostPort } from '../../../proto/model/address';
import { formatSpiffeId } from '../../../proto/model/spiffe';
import { fedFetch } from '../../support/fed-fetch';
import { BENCH_NAMESPACE, BENCH_SERVICE_ACCOUNT, BENCH_TRUST_DOMAIN } from './layout';
import type { AgentCredentials } from './protocol';

/** Signs the shared certificate with the federation whose data dir, HTTPS base URL and gRPC address are given. */
export async function signSharedCertificate(fed: { dataDir: string; httpsUrl: string; grpc: string }): Promise<AgentCredentials> {
  const res = await fedFetch({ httpsUrl: fed.httpsUrl, rootCertFile: path.join(fed.dataDir, 'root-cert.pem'), adminTokenFile: path.join(fed.dataDir, 'admin-token') }, '/api/v1/tokens', {
    method: 'POST',
    admin: true,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ namespace: BENCH_NAMESPACE, serviceAccount: BENCH_SERVICE_ACCOUNT, ttl: '10m', uses: 1, workload: '*', services: ['*'], labels: { app: '*' } }),
    signal: AbortSignal.timeout(10_000),
  });
  if (!res.ok) throw new Error(`token create: HTTP ${res.status} ${await res.text()}`);
  const { token } = (await res.json()) as { token: string };
  const spiffeId = formatSpiffeId({ trustDomain: BENCH_TRUST_DOMAIN, namespace: BENCH_NAMESPACE, serviceAccount: BENCH_SERVICE_ACCOUNT });
  const { keyPem, csrPem } = await generateKeyAndCsr({ spiffeId });
  const rootCertPem = readFileSync(path.join(fed.dataDir, 'root-cert.pem'), 'utf8');
  const client = federationClient(parseHostPort(fed.grpc, 'federation'), rootCertPem, undefined, BENCH_TRUST_DOMAIN);
  try {
    const signed = await signOnce(client, csrPem, token);
    return { rootCertPem, certChainPem: signed.certChainPem.join(''), keyPem, trustDomain: BENCH_TRUST_DOMAIN };
  } finally {
    client.close();
  }
}
