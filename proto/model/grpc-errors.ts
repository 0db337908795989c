// Maps Kedge errors to gRPC statuses and back. The stable Kedge code travels
// in the `kedge-error-code` metadata so agents branch on codes, never text.
import * as grpc from '@grpc/grpc-js';
import { KedgeError, errorMessage } from './errors';

const STATUS_BY_CODE: Record<string, grpc.status> = {
  KEDGE_TOKEN_MALFORMED: grpc.status.UNAUTHENTICATED,
  KEDGE_TOKEN_UNKNOWN: grpc.status.UNAUTHENTICATED,
  KEDGE_TOKEN_EXPIRED: grpc.status.UNAUTHENTICATED,
  KEDGE_TOKEN_USED: grpc.status.UNAUTHENTICATED,
  KEDGE_UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  KEDGE_BAD_CSR: grpc.status.INVALID_ARGUMENT,
  KEDGE_BAD_REQUEST: grpc.status.INVALID_ARGUMENT,
  KEDGE_BAD_IDENTITY: grpc.status.INVALID_ARGUMENT,
  KEDGE_CSR_IDENTITY_MISMATCH: grpc.status.PERMISSION_DENIED,
  KEDGE_PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  KEDGE_K8S_TOKEN_REJECTED: grpc.status.UNAUTHENTICATED,
  KEDGE_K8S_TOKEN_AUDIENCE: grpc.status.UNAUTHENTICATED,
  KEDGE_K8S_TOKEN_NOT_SERVICE_ACCOUNT: grpc.status.UNAUTHENTICATED,
  KEDGE_CA_KEY_UNAVAILABLE: grpc.status.UNAVAILABLE,
  KEDGE_SIGN_THROTTLED: grpc.status.RESOURCE_EXHAUSTED,
};

/** The standard gRPC retry pushback trailer: milliseconds the client should wait before retrying. */
export const RETRY_PUSHBACK_KEY = 'grpc-retry-pushback-ms';

/** A gRPC error object carrying a Kedge error's code and message. */
export function toGrpcError(err: unknown): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  if (err instanceof KedgeError) {
    metadata.set('kedge-error-code', err.code);
    const retryAfterMs = (err as KedgeError & { retryAfterMs?: number }).retryAfterMs;
    if (typeof retryAfterMs === 'number') metadata.set(RETRY_PUSHBACK_KEY, String(retryAfterMs));
    return { code: STATUS_BY_CODE[err.code] ?? grpc.status.INTERNAL, details: err.message, metadata };
  }
  metadata.set('kedge-error-code', 'KEDGE_INTERNAL');
  return { code: grpc.status.INTERNAL, details: `internal error: ${errorMessage(err)}`, metadata };
}

/** Rebuilds a KedgeError from a gRPC error received by a client. */
export function fromGrpcError(err: unknown): KedgeError {
  const e = err as Partial<grpc.ServiceError>;
  const code = e.metadata?.get('kedge-error-code')[0];
  if (typeof code === 'string') return new KedgeError(code, e.details ?? errorMessage(err), { cause: err });
  const unreachable = e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.DEADLINE_EXCEEDED;
  return new KedgeError(unreachable ? 'KEDGE_FEDERATION_UNREACHABLE' : 'KEDGE_FEDERATION_ERROR', e.details ?? errorMessage(err), { cause: err });
}
