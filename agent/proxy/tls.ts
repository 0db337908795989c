// TLS material for mesh mTLS: secure contexts built once per certificate
// rotation (never per connection), SPIFFE verification of a peer
// certificate, and the client's session cache for resumption.
import * as tls from 'node:tls';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import { parseSpiffeId, uriSans } from '../../proto/model/spiffe';
import type { TlsIdentity } from './types';

/** The contexts one identity needs: options for the inbound server's `setSecureContext`, and a built client context. */
export interface IdentityContexts {
  spiffeId: string;
  serial: string;
  /** For `tls.Server#setSecureContext`, which builds the server context itself (once per call). */
  serverOptions: tls.SecureContextOptions;
  client: tls.SecureContext;
}

/**
 * Builds the contexts for an identity. Both sides present the same chain and
 * trust only the mesh trust bundle (`ca` replaces Node's public roots, so a
 * certificate from any other CA fails verification). Throws
 * KEDGE_TLS_IDENTITY_INVALID when the PEMs do not load or do not match.
 */
export function buildIdentityContexts(id: TlsIdentity): IdentityContexts {
  const serverOptions: tls.SecureContextOptions = { cert: id.certChainPem, key: id.keyPem, ca: id.trustBundlePem };
  let client: tls.SecureContext;
  try {
    // Building the client context also validates the key/cert pair, so a bad
    // identity is rejected before the server context is swapped.
    client = tls.createSecureContext(serverOptions);
  } catch (err) {
    throw new KedgeError(
      'KEDGE_TLS_IDENTITY_INVALID',
      `cannot load the TLS identity ${id.spiffeId} (serial ${id.serial}): ${errorMessage(err)}; check that the key matches the leaf certificate and the PEMs are complete`,
      { cause: err },
    );
  }
  return { spiffeId: id.spiffeId, serial: id.serial, serverOptions, client };
}

/** The SPIFFE ID of a peer certificate: its single URI SAN, or undefined when it has none or several. */
export function peerSpiffeId(cert: tls.PeerCertificate | undefined): string | undefined {
  const uris = uriSans(cert?.subjectaltname);
  return uris.length === 1 ? uris[0] : undefined;
}

/**
 * The SPIFFE ID an inbound peer is accepted as: its certificate must carry
 * exactly one URI SAN, a Kedge workload SPIFFE ID in one of `trustDomains`
 * (the mesh's own, and any federated in configuration). A chain that
 * merely verifies against the bundle is not enough: returns a
 * KEDGE_PEER_IDENTITY_REFUSED error naming what is wrong otherwise.
 */
export function acceptPeerIdentity(cert: tls.PeerCertificate | undefined, trustDomains: ReadonlySet<string>): { spiffeId: string } | KedgeError {
  const san = cert?.subjectaltname ?? '';
  // Counted from the raw string as well: uriSans skips entries Node had to
  // quote, which must still count as URI SANs here.
  const raw = (san.match(/(?:^|, )"?URI:/g) ?? []).length;
  return acceptPeerUris(cert?.serialNumber ?? '?', raw, uriSans(san), trustDomains);
}

/**
 * acceptPeerIdentity from what a handshake outside Node read (the native
 * core): `rawCount` URI SANs were present, `uris` are the readable ones.
 */
export function acceptPeerUris(serial: string, rawCount: number, uris: readonly string[], trustDomains: ReadonlySet<string>): { spiffeId: string } | KedgeError {
  const refuse = (why: string): KedgeError => new KedgeError('KEDGE_PEER_IDENTITY_REFUSED', `client certificate (serial ${serial}) refused: ${why}; mesh workloads carry exactly one URI SAN spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`);
  if (rawCount === 0) return refuse('it has no URI SAN (no SPIFFE ID)');
  if (rawCount > 1 || uris.length !== 1) return refuse(`it has ${rawCount} URI SANs (${uris.join(', ') || 'unreadable'})`);
  const id = parseSpiffeId(uris[0]!);
  if (id === undefined) return refuse(`its URI SAN ${uris[0]} is not a workload SPIFFE ID`);
  if (!trustDomains.has(id.trustDomain)) return refuse(`its trust domain ${id.trustDomain} is not the mesh's (${[...trustDomains].join(', ')})`);
  return { spiffeId: uris[0]! };
}

/** The trust domain of a SPIFFE ID (`spiffe://<td>/...`), '' when it is not one. */
export function trustDomainOf(spiffeId: string): string {
  return /^spiffe:\/\/([^/]+)/.exec(spiffeId)?.[1] ?? '';
}

/**
 * Checks that the presented URI SANs are exactly `expected`; returns a
 * KEDGE_PEER_IDENTITY_MISMATCH error naming both identities otherwise
 * (returned, not thrown: the caller destroys a socket with it).
 */
export function checkPeerIdentity(presentedUris: readonly string[], expected: string): KedgeError | undefined {
  if (presentedUris.length === 1 && presentedUris[0] === expected) return undefined;
  const presented = presentedUris.length === 0 ? 'no URI SAN' : presentedUris.join(', ');
  return new KedgeError(
    'KEDGE_PEER_IDENTITY_MISMATCH',
    `peer presented ${presented} but the endpoint is registered as ${expected}; the endpoint's certificate or its registration is stale or wrong`,
  );
}

/** checkPeerIdentity for a peer certificate: exactly one URI SAN, equal to `expected`. */
export function verifyPeerIdentity(cert: tls.PeerCertificate | undefined, expected: string): KedgeError | undefined {
  return checkPeerIdentity(uriSans(cert?.subjectaltname), expected);
}

/** A client TLS session and the SPIFFE ID verified on the handshake that made it. */
export interface CachedSession {
  session: Buffer;
  /**
   * On a resumed handshake the server sends no certificate and Node's client
   * reports none (getPeerCertificate() is empty), so the identity checked on
   * the full handshake is kept here and checked again on resumption.
   */
  peer: string;
}

/**
 * Client TLS sessions by endpoint address:port and SNI, bounded, oldest
 * evicted first. The SNI is part of the key because the server routes on it
 * and a resumed session must not carry another service's name.
 */
export class SessionCache {
  private readonly sessions = new Map<string, CachedSession>();

  constructor(private readonly max = 1024) {}

  get(key: string): CachedSession | undefined {
    return this.sessions.get(key);
  }

  set(key: string, session: CachedSession): void {
    this.sessions.delete(key);
    this.sessions.set(key, session);
    if (this.sessions.size > this.max) {
      const oldest = this.sessions.keys().next();
      if (!oldest.done) this.sessions.delete(oldest.value);
    }
  }

  delete(key: string): void {
    this.sessions.delete(key);
  }

  /** Drops every session; called on rotation so no session outlives the certificate or trust bundle it was made with. */
  clear(): void {
    this.sessions.clear();
  }

  get size(): number {
    return this.sessions.size;
  }
}
