// Authorization: Istio's AuthorizationPolicy (security.istio.io/v1),
// validated (validate.ts) and compiled per workload into a pure matcher
// (compile.ts) that the server proxy and `kedge authz check` both call.
export * from './model';
export { validateAuthorizationPolicy, parseAuthorizationPolicy, isAuthzDocument, type AuthzValidation } from './validate';
export { compileAuthorization, policySelects, authzPath, strMatch, type AuthzRequest, type AuthzDecision, type AuthzMatch, type AuthzMatcher } from './compile';
