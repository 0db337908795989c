// The Consul HTTP API double: real wire protocol, fixture builders, faults.
export { ConsulDouble, type ConsulDoubleOptions, type DoubleAclToken, type GarbageMode } from './server';
export { ConsulCatalog, type CheckStatus, type InstanceFixture } from './catalog';
