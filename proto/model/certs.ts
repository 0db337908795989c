// Conventions of the certificates the federation's CA issues that agents
// rely on when they time renewals.

/**
 * How far every certificate's notBefore is set back from the moment it was
 * issued, so that hosts whose clocks run slightly behind already accept it.
 * The lifetime a certificate was granted is therefore notAfter - notBefore
 * minus this.
 */
export const CERT_BACKDATE_MS = 60_000;
