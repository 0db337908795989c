// The Kubernetes API double: see server.ts.
export { KubeApiDouble, API_AUDIENCE, type KubeApiDoubleOptions, type KubeFault, type ReviewableToken } from './server';
export { KubeObjectStore, RESOURCES, type KubeObject, type Resource } from './objects';
export { writeKubeconfig, type KubeconfigTarget } from './kubeconfig';
export { apiServerTls } from './tls';
