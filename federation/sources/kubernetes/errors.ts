// Kubernetes API failures as KedgeErrors with stable codes and messages that
// say what to check. Pure: classifies what @kubernetes/client-node (and the
// node-fetch underneath it) throws; callers branch on `code`.
import { KedgeError, errorMessage } from '../../../proto/model/errors';

/** Error codes of the kubernetes source and TokenReview. */
export const K8S_ERRORS = {
  KUBECONFIG: 'KEDGE_K8S_KUBECONFIG',
  UNAUTHORIZED: 'KEDGE_K8S_UNAUTHORIZED',
  FORBIDDEN: 'KEDGE_K8S_FORBIDDEN',
  TIMEOUT: 'KEDGE_K8S_TIMEOUT',
  UNREACHABLE: 'KEDGE_K8S_UNREACHABLE',
  TLS: 'KEDGE_K8S_TLS',
  BAD_RESPONSE: 'KEDGE_K8S_BAD_RESPONSE',
  SERVER_ERROR: 'KEDGE_K8S_SERVER_ERROR',
  OTHER: 'KEDGE_K8S_ERROR',
  TOKEN_REJECTED: 'KEDGE_K8S_TOKEN_REJECTED',
  TOKEN_NOT_SERVICE_ACCOUNT: 'KEDGE_K8S_TOKEN_NOT_SERVICE_ACCOUNT',
  TOKEN_AUDIENCE: 'KEDGE_K8S_TOKEN_AUDIENCE',
} as const;

/** Where a request went, for messages. */
export interface ApiErrorContext {
  /** API server URL. */
  server: string;
  /** Kubeconfig path, or a description when the config was passed in memory. */
  kubeconfig: string;
  /** What was attempted, e.g. "list services" or "watch endpointslices". */
  what: string;
  /** The request timeout, when one applied. */
  timeoutMs?: number;
}

const TLS_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'EPROTO',
]);

const NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ETIMEDOUT']);

/** The HTTP status of an API error, when it has one. */
export function httpStatusOf(err: unknown): number | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const e = err as { code?: unknown; statusCode?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  // ApiException carries the HTTP status as a numeric `code`.
  if (typeof e.code === 'number') return e.code;
  return undefined;
}

/** Turns anything the client threw into an operator-facing KedgeError. */
export function describeApiError(err: unknown, ctx: ApiErrorContext): KedgeError {
  if (err instanceof KedgeError) return err;
  const { server, kubeconfig, what } = ctx;
  const status = httpStatusOf(err);
  const e = (err && typeof err === 'object' ? err : {}) as { name?: string; code?: unknown; type?: string; errno?: unknown };
  const sysCode = typeof e.code === 'string' ? e.code : typeof e.errno === 'string' ? e.errno : undefined;
  const opts = { cause: err };
  if (status === 401) return new KedgeError(K8S_ERRORS.UNAUTHORIZED, `credentials rejected by ${server}: check the token in ${kubeconfig}`, opts);
  if (status === 403) {
    return new KedgeError(K8S_ERRORS.FORBIDDEN, `${server} forbids the kubeconfig's user to ${what}: grant it (list and watch services, endpointslices.discovery.k8s.io and nodes; create tokenreviews via system:auth-delegator) or use another user in ${kubeconfig}`, opts);
  }
  if (status !== undefined && status >= 500) return new KedgeError(K8S_ERRORS.SERVER_ERROR, `${server} failed to ${what} (HTTP ${status}): check the API server's health`, opts);
  if (status !== undefined && status !== 200) return new KedgeError(K8S_ERRORS.BAD_RESPONSE, `${server} answered HTTP ${status} to ${what}: is ${server} a Kubernetes API server? (${kubeconfig})`, opts);
  if (e.name === 'AbortError' || e.type === 'request-timeout' || e.type === 'body-timeout') {
    const within = ctx.timeoutMs ? ` within ${ctx.timeoutMs} ms` : '';
    return new KedgeError(K8S_ERRORS.TIMEOUT, `${server} did not answer ${what}${within}: check that the API server is up and not overloaded`, opts);
  }
  if (sysCode && TLS_CODES.has(sysCode)) {
    return new KedgeError(K8S_ERRORS.TLS, `TLS verification of ${server} failed (${sysCode}): check certificate-authority-data and the server address in ${kubeconfig}`, opts);
  }
  if (sysCode === 'ERR_STREAM_PREMATURE_CLOSE') {
    return new KedgeError(K8S_ERRORS.UNREACHABLE, `lost the connection to ${server} during ${what}: check that the API server (or a load balancer in front of it) is up`, opts);
  }
  if (sysCode && NET_CODES.has(sysCode)) {
    return new KedgeError(K8S_ERRORS.UNREACHABLE, `cannot reach ${server} (${sysCode}): check the server address in ${kubeconfig} and that the API server is up`, opts);
  }
  if (e.name === 'SyntaxError' || e.type === 'invalid-json' || (sysCode !== undefined && sysCode.startsWith('HPE_'))) {
    return new KedgeError(K8S_ERRORS.BAD_RESPONSE, `${server} sent an invalid answer to ${what} (${errorMessage(err)}): is ${server} a Kubernetes API server? (${kubeconfig})`, opts);
  }
  return new KedgeError(K8S_ERRORS.OTHER, `${what} at ${server} failed: ${errorMessage(err)} (${kubeconfig})`, opts);
}
