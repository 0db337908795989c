// A grpc-js CertificateProvider fed from memory, so the federation's serving
// certificate can be rotated without restarting the gRPC server.
import type { experimental } from '@grpc/grpc-js';

type CaListener = experimental.CaCertificateUpdateListener;
type IdListener = experimental.IdentityCertificateUpdateListener;

/** Holds the current CA bundle and serving identity for grpc-js. */
export class MemoryCertificateProvider implements experimental.CertificateProvider {
  private ca: experimental.CaCertificateUpdate | null = null;
  private identity: experimental.IdentityCertificateUpdate | null = null;
  private readonly caListeners = new Set<CaListener>();
  private readonly idListeners = new Set<IdListener>();

  update(caPem: string, certChainPem: string, keyPem: string): void {
    this.ca = { caCertificate: Buffer.from(caPem) };
    this.identity = { certificate: Buffer.from(certChainPem), privateKey: Buffer.from(keyPem) };
    for (const l of this.caListeners) l(this.ca);
    for (const l of this.idListeners) l(this.identity);
  }

  /** Replaces only the trusted CAs (the roots changed; the serving identity follows when it can be issued). */
  updateCa(caPem: string): void {
    this.ca = { caCertificate: Buffer.from(caPem) };
    for (const l of this.caListeners) l(this.ca);
  }

  addCaCertificateListener(l: CaListener): void {
    this.caListeners.add(l);
    // Asynchronously: grpc-js registers its own watcher only after adding
    // the listeners, so a synchronous first update would be lost.
    setImmediate(() => this.caListeners.has(l) && this.ca && l(this.ca));
  }
  removeCaCertificateListener(l: CaListener): void {
    this.caListeners.delete(l);
  }
  addIdentityCertificateListener(l: IdListener): void {
    this.idListeners.add(l);
    setImmediate(() => this.idListeners.has(l) && this.identity && l(this.identity));
  }
  removeIdentityCertificateListener(l: IdListener): void {
    this.idListeners.delete(l);
  }
}
