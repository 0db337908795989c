// Checks a pod's service-account token with its cluster's TokenReview API
// (the federation's Sign uses it for sidecars joining with their projected
// token). The identity comes from what the API server says the token is,
// never from anything the caller claims.
import * as k8s from '@kubernetes/client-node';
import { KedgeError } from '../../../proto/model/errors';
import { loadKubeconfig, serverOf, withSignal } from './client';
import { describeApiError, K8S_ERRORS } from './errors';

/** Who a reviewed token belongs to. */
export interface ServiceAccountTokenReview {
  namespace: string;
  serviceAccount: string;
  /** Set for pod-bound (projected) tokens. */
  podName?: string;
  podUid?: string;
  /** `system:serviceaccount:<namespace>:<name>` */
  username: string;
  /** Audiences the API server found the token valid for (among those requested). */
  audiences: string[];
}

/** Options of a review. */
export interface TokenReviewOptions {
  /** Audiences the token must be valid for; empty means the API server's own audience. */
  audiences?: readonly string[];
  /** Bound on the request (default 10 s). */
  timeoutMs?: number;
  /** Cluster name, for messages. */
  cluster?: string;
  /** Kubeconfig path, for messages, when a KubeConfig is passed. */
  kubeconfigPath?: string;
}

const POD_NAME = 'authentication.kubernetes.io/pod-name';
const POD_UID = 'authentication.kubernetes.io/pod-uid';
const SA_USERNAME = /^system:serviceaccount:([^:]+):([^:]+)$/;

/**
 * Asks the cluster behind `kubeconfig` (a path or a loaded KubeConfig) who
 * `token` belongs to. Resolves with the service account, or rejects with a
 * KedgeError: KEDGE_K8S_TOKEN_REJECTED (invalid or expired token),
 * KEDGE_K8S_TOKEN_AUDIENCE, KEDGE_K8S_TOKEN_NOT_SERVICE_ACCOUNT, or an API
 * failure (KEDGE_K8S_UNAUTHORIZED / FORBIDDEN / TIMEOUT / UNREACHABLE / TLS /
 * BAD_RESPONSE / KUBECONFIG) which says nothing about the token itself.
 */
export async function reviewServiceAccountToken(kubeconfig: string | k8s.KubeConfig, token: string, opts: TokenReviewOptions = {}): Promise<ServiceAccountTokenReview> {
  const kc = typeof kubeconfig === 'string' ? loadKubeconfig(kubeconfig) : kubeconfig;
  const kubeconfigName = typeof kubeconfig === 'string' ? kubeconfig : (opts.kubeconfigPath ?? 'the kubeconfig');
  const server = serverOf(kc);
  const where = opts.cluster ? `cluster ${opts.cluster} (${server})` : server;
  if (token.trim() === '') throw new KedgeError(K8S_ERRORS.TOKEN_REJECTED, `no service-account token presented: mount a projected token into the pod and point the agent at it`);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const audiences = [...(opts.audiences ?? [])];
  const api = kc.makeApiClient(k8s.AuthenticationV1Api);
  let review: k8s.V1TokenReview;
  try {
    review = await api.createTokenReview(
      { body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, ...(audiences.length ? { audiences } : {}) } } },
      withSignal(AbortSignal.timeout(timeoutMs)),
    );
  } catch (err) {
    throw describeApiError(err, { server, kubeconfig: kubeconfigName, what: 'create tokenreviews', timeoutMs });
  }
  const status = review?.status;
  if (!status || typeof status !== 'object') {
    throw new KedgeError(K8S_ERRORS.BAD_RESPONSE, `${where} answered the TokenReview without a status: is it a Kubernetes API server?`);
  }
  if (status.authenticated !== true) {
    const why = status.error ? `: ${status.error}` : '';
    const aud = /audience/i.test(status.error ?? '');
    throw new KedgeError(
      aud ? K8S_ERRORS.TOKEN_AUDIENCE : K8S_ERRORS.TOKEN_REJECTED,
      aud
        ? `${where} rejected the service-account token for audience ${JSON.stringify(audiences)}${why}: project the token with that audience in the pod spec`
        : `${where} rejected the service-account token${why}: the token is invalid, expired, or from another cluster`,
    );
  }
  // An audience-aware server echoes the audiences it validated; an empty echo must not pass for a match.
  const valid = status.audiences ?? [];
  if (audiences.length > 0 && !valid.some((a) => audiences.includes(a))) {
    throw new KedgeError(K8S_ERRORS.TOKEN_AUDIENCE, `${where} did not confirm the token is meant for audience ${JSON.stringify(audiences)}: project the token with that audience`);
  }
  const username = status.user?.username ?? '';
  const m = SA_USERNAME.exec(username);
  if (!m) {
    throw new KedgeError(K8S_ERRORS.TOKEN_NOT_SERVICE_ACCOUNT, `${where} says the token belongs to "${username}", not a service account: pods join with their service-account token`);
  }
  const extra = status.user?.extra ?? {};
  const podName = extra[POD_NAME]?.[0];
  const podUid = extra[POD_UID]?.[0];
  return {
    namespace: m[1]!,
    serviceAccount: m[2]!,
    ...(podName ? { podName } : {}),
    ...(podUid ? { podUid } : {}),
    username,
    audiences: valid,
  };
}
