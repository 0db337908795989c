// The mesh certificate authority. Error codes callers branch on:
//   KEDGE_BAD_CSR                 the CSR is garbage, forged, oversized or has a weak key
//   KEDGE_CSR_IDENTITY_MISMATCH   the CSR requests an identity the caller is not authorized for
//   KEDGE_CA_INVALID              the CA certificate/key/chain cannot be used (names what is wrong)
//   KEDGE_CA_EXPIRED              the signing CA certificate has expired
//   KEDGE_CA_BAD_TTL              a requested certificate lifetime is not positive
//   KEDGE_BAD_IDENTITY            the identity to sign is not a Kedge SPIFFE ID
export { CertificateAuthority, type CertificateAuthorityOptions, type IssuedKeyPair, type SignedCertificate } from './authority';
export { inspectCsr, MAX_CSR_PEM_BYTES } from './csr';
export { createRootCa, loadPluggedCa, type CaMaterial } from './material';
