// Loads the agent–federation contract for @grpc/grpc-js. The options must
// match scripts/gen-proto-types.mjs so the generated types describe exactly
// what the loader produces.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from './generated/federation';
import { cachingUpdateSerializer, type FederationMessageSerializer } from './update-encoding';

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

// dist/proto/loader.js and proto/loader.ts both resolve the .proto sources in
// the repository's proto/ folder.
function protoRoot(): string {
  const here = __dirname;
  return here.includes(`${path.sep}dist${path.sep}`) || here.endsWith(`${path.sep}dist`)
    ? path.resolve(here, '..', '..', 'proto')
    : here;
}

let cached: ProtoGrpcType | undefined;

/** The loaded kedge.v1 package, typed by the generated definitions. */
export function kedgeProto(): ProtoGrpcType {
  if (!cached) {
    const root = protoRoot();
    const def = protoLoader.loadSync(path.join(root, 'kedge', 'v1', 'federation.proto'), {
      ...LOADER_OPTIONS,
      includeDirs: [root],
    });
    // Connect's responses are written through a serializer that encodes each
    // Service once, not once per subscriber (see update-encoding.ts).
    const federation = def['kedge.v1.Federation'] as protoLoader.ServiceDefinition;
    const connect = federation.Connect!;
    def['kedge.v1.Federation'] = { ...federation, Connect: { ...connect, responseSerialize: cachingUpdateSerializer(connect.responseSerialize as FederationMessageSerializer) } };
    cached = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  }
  return cached;
}

export type { AgentMessage__Output, AgentMessage } from './generated/kedge/v1/AgentMessage';
export type { FederationMessage, FederationMessage__Output } from './generated/kedge/v1/FederationMessage';
export type { Service, Service__Output } from './generated/kedge/v1/Service';
export type { Endpoint, Endpoint__Output } from './generated/kedge/v1/Endpoint';
export type { Register, Register__Output } from './generated/kedge/v1/Register';
export type { Workload, Workload__Output } from './generated/kedge/v1/Workload';
export type { ServicePort, ServicePort__Output } from './generated/kedge/v1/ServicePort';
export type { ServiceUpdate, ServiceUpdate__Output } from './generated/kedge/v1/ServiceUpdate';
export type { SignRequest, SignRequest__Output } from './generated/kedge/v1/SignRequest';
export type { SignResponse, SignResponse__Output } from './generated/kedge/v1/SignResponse';
export type { QuotaLeases, QuotaLeases__Output } from './generated/kedge/v1/QuotaLeases';
export type { IdentityReport, IdentityReport__Output } from './generated/kedge/v1/IdentityReport';
export type { TrustBundle, TrustBundle__Output } from './generated/kedge/v1/TrustBundle';
export type { HostFacts, HostFacts__Output } from './generated/kedge/v1/HostFacts';
export type { Locality, Locality__Output } from './generated/kedge/v1/Locality';
export type { FederationClient, FederationHandlers } from './generated/kedge/v1/Federation';
export type { TrafficStats, TrafficStats__Output } from './generated/kedge/v1/TrafficStats';
export type { TrafficStat__Output } from './generated/kedge/v1/TrafficStat';
export type { TrafficError__Output } from './generated/kedge/v1/TrafficError';
