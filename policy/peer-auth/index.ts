// Peer authentication: Istio's PeerAuthentication (security.istio.io/v1),
// validated (validate.ts) and resolved per workload and port (resolve.ts) by
// the federation and the agent alike.
export * from './model';
export { validatePeerAuthentication, parsePeerAuthentication, isPeerAuthDocument, type PeerAuthValidation } from './validate';
export { resolvePeerAuth, peerAuthFor, peerAuthLevel, modeOnPort } from './resolve';
