// Conventions of the certificates the federation's CA issues that agents
// rely on when they time renewals.

/**
 * How far every certificate's notBefore is set back from the moment it was
 * issued, so that hosts whose clocks run behind the federation's already
 * accept it. The lifetime a certificate was granted is therefore notAfter -
 * notBefore minus this. Ten minutes: a federation whose clock ran 5 minutes
 * ahead issued certificates (its own serving certificate included) that
 * every correct host refused as not yet valid with the earlier 60 s
 * (test/root/faults-federation.test.ts); the Kubernetes CSR signer backdates
 * 5 minutes for the same reason. notAfter is not moved, so this grants no
 * extra lifetime.
 */
export const CERT_BACKDATE_MS = 10 * 60_000;
