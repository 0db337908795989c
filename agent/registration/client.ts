// gRPC clients for the federation. The federation is verified against the
// pinned root and by its SPIFFE ID (…/ns/kedge-system/sa/kedge-federation),
// never by hostname, so any address of any replica works.
import * as grpc from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import { kedgeProto, FederationClient, SignResponse__Output } from '../../proto/loader';
import { KedgeError } from '../../proto/model/errors';
import { HostPort, formatHostPort } from '../../proto/model/address';
import { FEDERATION_NAMESPACE, FEDERATION_SERVICE_ACCOUNT, parseSpiffeId, uriSans } from '../../proto/model/spiffe';
import { fromGrpcError } from '../../proto/model/grpc-errors';

/** TLS material to present to the federation (absent before the first certificate). */
export interface ClientIdentity {
  certChainPem: string;
  keyPem: string;
  /** The mesh trust bundle the agent holds: trusted for the federation besides the pinned root, so a CA rotation needs no new pinned file. */
  trustBundlePem?: string;
}

/** Channel options shared by every federation client. */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // The name sent as SNI and passed to checkServerIdentity; the real check is the SPIFFE ID.
  'grpc.ssl_target_name_override': 'kedge-federation',
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.initial_reconnect_backoff_ms': 500,
  'grpc.max_reconnect_backoff_ms': 5_000,
  // Each client gets its own connection: a shared subchannel left in backoff
  // by an earlier failed attempt would hold the next attempt's calls until
  // their deadline instead of failing fast.
  'grpc.use_local_subchannel_pool': 1,
};

/** Checks a federation certificate's SPIFFE ID; `trustDomain` '' accepts any the pinned root vouches for. */
export function checkFederationIdentity(cert: PeerCertificate, trustDomain: string): Error | undefined {
  const uris = uriSans(cert.subjectaltname);
  const id = uris.length === 1 ? parseSpiffeId(uris[0] as string) : undefined;
  if (id && id.namespace === FEDERATION_NAMESPACE && id.serviceAccount === FEDERATION_SERVICE_ACCOUNT && (!trustDomain || id.trustDomain === trustDomain)) {
    return undefined;
  }
  const want = `spiffe://${trustDomain || '<trust-domain>'}/ns/${FEDERATION_NAMESPACE}/sa/${FEDERATION_SERVICE_ACCOUNT}`;
  return new KedgeError('KEDGE_FEDERATION_IDENTITY', `the server is not a Kedge federation: its certificate names ${uris.join(', ') || 'no SPIFFE ID'}, expected ${want}`);
}

/** Makes a client for one federation address. */
export function federationClient(address: HostPort, rootCertPem: string, identity: ClientIdentity | undefined, trustDomain: string): FederationClient {
  const creds = grpc.credentials.createSsl(
    Buffer.from(rootCertPem + (identity?.trustBundlePem ?? '')),
    identity ? Buffer.from(identity.keyPem) : null,
    identity ? Buffer.from(identity.certChainPem) : null,
    { checkServerIdentity: (_host, cert) => checkFederationIdentity(cert, trustDomain) },
  );
  const Ctor = kedgeProto().kedge.v1.Federation;
  return new Ctor(formatHostPort(address), creds, CHANNEL_OPTIONS);
}

/** How the caller proves who it is when it has no certificate yet. */
export type JoinCredential = { joinToken: string } | { kubernetesToken: string; cluster: string } | undefined;

/** Calls Sign on one address; errors come back as KedgeErrors with the federation's code. */
export function signOnce(client: FederationClient, csrPem: string, credential: JoinCredential | string, timeoutMs = 15_000): Promise<SignResponse__Output> {
  const cred = typeof credential === 'string' ? (credential ? { joinToken: credential } : undefined) : credential;
  return new Promise((resolve, reject) => {
    client.Sign({ csrPem, ...cred }, { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) reject(fromGrpcError(err));
      else if (!res) reject(new KedgeError('KEDGE_FEDERATION_ERROR', 'empty Sign response'));
      else resolve(res);
    });
  });
}

/** True for errors worth retrying on another address or later (the federation is away). */
export function isTransient(err: unknown): boolean {
  return err instanceof KedgeError && (TRANSIENT.has(err.code) || /^KEDGE_K8S_(UNREACHABLE|TIMEOUT|SERVER_ERROR)$/.test(err.code));
}

// KEDGE_CA_KEY_UNAVAILABLE: the federation serves but cannot sign until its operator supplies the CA key.
const TRANSIENT = new Set(['KEDGE_FEDERATION_UNREACHABLE', 'KEDGE_INTERNAL', 'KEDGE_FEDERATION_ERROR', 'KEDGE_STORE_UNAVAILABLE', 'KEDGE_STORE_AUTH', 'KEDGE_CA_KEY_UNAVAILABLE', 'KEDGE_SIGN_THROTTLED']);

/** The federation as the agent sees it: addresses tried in order, one pinned root. */
export interface FederationTarget {
  addresses: readonly HostPort[];
  rootCertPem: string;
  trustDomain: string;
}

/**
 * Runs `fn` against each federation address in order until one answers;
 * transient failures move on to the next address, anything else (a refused
 * token, a bad CSR) is final. Rejects with the last transient error when no
 * address answered.
 */
export async function callAnyFederation<T>(target: FederationTarget, identity: ClientIdentity | undefined, fn: (client: FederationClient) => Promise<T>): Promise<T> {
  let last: unknown;
  for (const address of target.addresses) {
    const client = federationClient(address, target.rootCertPem, identity, target.trustDomain);
    try {
      return await fn(client);
    } catch (err) {
      if (!isTransient(err)) throw err;
      last = err;
    } finally {
      client.close();
    }
  }
  throw last ?? new KedgeError('KEDGE_FEDERATION_UNREACHABLE', 'no federation address configured');
}
