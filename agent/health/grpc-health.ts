// The standard gRPC health protocol (grpc/grpc-proto grpc/health/v1/health.proto),
// defined inline so nothing has to find a .proto file next to the compiled
// JavaScript. Field numbers and names are the wire contract; do not change them.
// The probe uses the message codecs; servers (and tests) use the service definition.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** grpc.health.v1.HealthCheckResponse.ServingStatus, as the loader gives it (enums as strings). */
export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

/** grpc.health.v1.HealthCheckRequest. */
export interface HealthCheckRequest {
  service: string;
}

/** grpc.health.v1.HealthCheckResponse. */
export interface HealthCheckResponse {
  status: ServingStatus;
}

const HEALTH_PROTO: Parameters<typeof protoLoader.fromJSON>[0] = {
  nested: {
    grpc: {
      nested: {
        health: {
          nested: {
            v1: {
              nested: {
                HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
                HealthCheckResponse: {
                  fields: { status: { type: 'ServingStatus', id: 1 } },
                  nested: { ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } } },
                },
                Health: {
                  methods: {
                    Check: { requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse', comment: '' },
                    Watch: { requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse', responseStream: true, comment: '' },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

let cached: grpc.ServiceClientConstructor | undefined;

/**
 * The grpc.health.v1.Health client constructor; its `.service` is the
 * service definition a server (or a test's server) adds handlers for.
 */
export function healthClientConstructor(): grpc.ServiceClientConstructor {
  if (!cached) {
    const def = protoLoader.fromJSON(HEALTH_PROTO, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } };
    cached = pkg.grpc.health.v1.Health;
  }
  return cached;
}

/** The HTTP/2 path of Health/Check. */
export const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';

/** The protobuf encoding of a HealthCheckRequest (without gRPC framing). */
export function encodeHealthCheckRequest(req: HealthCheckRequest): Buffer {
  return (healthClientConstructor().service['Check'] as grpc.MethodDefinition<HealthCheckRequest, HealthCheckResponse>).requestSerialize(req);
}

/** Decodes a HealthCheckResponse (without gRPC framing); throws on bad protobuf. */
export function decodeHealthCheckResponse(b: Buffer): HealthCheckResponse {
  return (healthClientConstructor().service['Check'] as grpc.MethodDefinition<HealthCheckRequest, HealthCheckResponse>).responseDeserialize(b);
}
