// The mesh certificate authority. Error codes callers branch on:
//   KEDGE_BAD_CSR                  the CSR is garbage, forged, oversized or has a weak key
//   KEDGE_CSR_IDENTITY_MISMATCH    the CSR requests an identity the caller is not authorized for
//   KEDGE_CA_INVALID               the CA certificate/key/chain/store record cannot be used (names what is wrong)
//   KEDGE_CA_EXPIRED               the signing CA certificate has expired
//   KEDGE_CA_BAD_TTL               a requested certificate lifetime is not positive
//   KEDGE_BAD_IDENTITY             the identity to sign is not a Kedge SPIFFE ID
//   KEDGE_CA_KEY_UNAVAILABLE       this replica cannot sign: the CA key is encrypted and the key-encryption key is missing or unavailable
//   KEDGE_CA_KEY_WRONG             the key-encryption key does not decrypt the stored CA key
//   KEDGE_CA_KEK_INVALID           the key-encryption key cannot be read or is too short
//   KEDGE_CA_KEK_UNAVAILABLE       --ca-key-command failed
//   KEDGE_CA_ROTATION_IN_PROGRESS  a rotation was started while one runs
//   KEDGE_CA_NO_ROTATION           --finish or --reissue without a rotation in progress
//   KEDGE_CA_PLUGGED               rotation asked of a plug-in CA
export { CertificateAuthority, type CertificateAuthorityOptions, type IssuedKeyPair, type SignedCertificate } from './authority';
export { inspectCsr, MAX_CSR_PEM_BYTES } from './csr';
export { createRootCa, loadPluggedCa, type CaMaterial } from './material';
export { CaManager, ROOT_CA_KEY, type CaView, type RotateRequest, type RotateResult } from './manager';
export { type AgentCaView, type RotationBlocker } from './state';
export { spiffeBundle, type SpiffeBundle } from './spiffe-bundle';
export { KEK_ENV, type KekSource } from './kek';
