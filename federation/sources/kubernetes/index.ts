// The kubernetes source: endpoints of one cluster (source.ts), the pure
// object mapping (mapping.ts) and TokenReview for pods joining the mesh.
export { KubernetesSource, KUBERNETES_SOURCE_DEFAULTS, type KubernetesSourceConfig } from './source';
export { servicesFromObjects, serviceFromObjects, nodeTopologies, endpointHealth, meshProtocol, meshPortName, DEFAULT_EXCLUDED_NAMESPACES, type KubeMappingOptions, type MappingContext } from './mapping';
export { reviewServiceAccountToken, type ServiceAccountTokenReview, type TokenReviewOptions } from './token-review';
export { loadKubeconfig } from './client';
export { describeApiError, K8S_ERRORS } from './errors';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffPolicy } from './backoff';
