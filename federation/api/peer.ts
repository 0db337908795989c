// Authenticates a gRPC caller by the mesh certificate it presented. The
// server requests a client certificate without requiring one (a first Sign
// comes with a join token instead), so verification happens here.
import { X509Certificate } from 'node:crypto';
import type { AuthContext } from '@grpc/grpc-js/build/src/auth-context';
import { KedgeError } from '../../proto/model/errors';
import { parseSpiffeId, uriSans } from '../../proto/model/spiffe';

/** Something with gRPC's auth context (unary or streaming server call). */
export interface HasAuthContext {
  getAuthContext(): AuthContext;
}

/** Who a verified caller is. */
export interface Peer {
  spiffeId: string;
  certNotAfter: Date;
  /** Uppercase hex, as X509Certificate reports it. */
  serial: string;
}

/**
 * Verifies the caller's certificate was issued by `issuers` (the certificates
 * that sign workload certs), is within its validity, and carries exactly one
 * workload SPIFFE ID in `trustDomain`; returns that ID.
 */
export function authenticatePeer(call: HasAuthContext, issuers: readonly X509Certificate[], trustDomain: string, now = Date.now()): Peer {
  const peer = call.getAuthContext().sslPeerCertificate;
  if (!peer || !peer.raw || peer.raw.length === 0) {
    throw new KedgeError('KEDGE_UNAUTHENTICATED', 'no valid client certificate: connect with a mesh certificate issued by this federation, or send a join token to Sign');
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(peer.raw);
  } catch (err) {
    throw new KedgeError('KEDGE_UNAUTHENTICATED', 'client certificate cannot be parsed', { cause: err });
  }
  const issuer = issuers.find((i) => cert.checkIssued(i) && cert.verify(i.publicKey));
  if (!issuer) {
    throw new KedgeError('KEDGE_UNAUTHENTICATED', `client certificate (issuer "${cert.issuer.replace(/\n/g, ', ')}") was not issued by this mesh's CA; join with a token from this federation`);
  }
  if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) {
    throw new KedgeError('KEDGE_UNAUTHENTICATED', `client certificate is not valid now (valid ${cert.validFrom} to ${cert.validTo}); rejoin with a new token`);
  }
  const uris = uriSans(cert.subjectAltName);
  const id = uris.length === 1 ? parseSpiffeId(uris[0] as string) : undefined;
  if (!id || id.trustDomain !== trustDomain) {
    throw new KedgeError('KEDGE_UNAUTHENTICATED', `client certificate does not carry one workload SPIFFE ID in trust domain ${trustDomain} (found: ${uris.join(', ') || 'none'})`);
  }
  return { spiffeId: uris[0] as string, certNotAfter: new Date(cert.validTo), serial: cert.serialNumber.toUpperCase() };
}
