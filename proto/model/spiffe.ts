import { KedgeError } from './errors';

/** A parsed workload identity: spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>. */
export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

// DNS-label-like names: what Kubernetes allows for namespaces and service
// accounts, which is also safe inside a URI path segment.
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const TRUST_DOMAIN = /^[a-z0-9]([-a-z0-9._]{0,253}[a-z0-9])?$/;

/** The namespace and service account the federation itself runs as. */
export const FEDERATION_NAMESPACE = 'kedge-system';
export const FEDERATION_SERVICE_ACCOUNT = 'kedge-federation';

export function isValidName(s: string): boolean {
  return NAME.test(s);
}

export function isValidTrustDomain(s: string): boolean {
  return TRUST_DOMAIN.test(s);
}

/** Formats an identity; throws KEDGE_BAD_IDENTITY on names that cannot appear in one. */
export function formatSpiffeId(id: SpiffeId): string {
  if (!isValidTrustDomain(id.trustDomain)) {
    throw new KedgeError('KEDGE_BAD_IDENTITY', `invalid trust domain "${id.trustDomain}": use lowercase letters, digits, '-', '.' and '_'`);
  }
  for (const [what, v] of [['namespace', id.namespace], ['service account', id.serviceAccount]] as const) {
    if (!isValidName(v)) {
      throw new KedgeError('KEDGE_BAD_IDENTITY', `invalid ${what} "${v}": use lowercase letters, digits, '-' and '.' (at most 253 characters)`);
    }
  }
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** Parses a Kedge workload SPIFFE ID, or returns undefined when `uri` is not one. */
export function parseSpiffeId(uri: string): SpiffeId | undefined {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(uri);
  if (!m) return undefined;
  const [, trustDomain, namespace, serviceAccount] = m as unknown as [string, string, string, string];
  if (!isValidTrustDomain(trustDomain) || !isValidName(namespace) || !isValidName(serviceAccount)) return undefined;
  return { trustDomain, namespace, serviceAccount };
}

/** The federation's own identity in a trust domain. */
export function federationSpiffeId(trustDomain: string): string {
  return formatSpiffeId({ trustDomain, namespace: FEDERATION_NAMESPACE, serviceAccount: FEDERATION_SERVICE_ACCOUNT });
}

/**
 * The URI SANs of a certificate as Node reports them in
 * `PeerCertificate.subjectaltname` / `X509Certificate.subjectAltName`
 * ("URI:spiffe://..., DNS:x"). Node quotes entries containing a comma or
 * quote as JSON strings; those are never valid SPIFFE IDs and are skipped.
 */
export function uriSans(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName
    .split(', ')
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}
