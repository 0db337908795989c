// The Consul source: catalog and health of one datacenter through blocking queries.
export { ConsulSource, CONSUL_SOURCE_DEFAULTS, type ConsulSourceOptions } from './source';
export { parseConsulCluster, CONSUL_CLUSTER_FIELDS, type ConsulClusterConfig } from './config';
export { servicesFromCatalog, servicesFromHealth, markStale, CONSUL_META, CONSUL_PROTOCOLS, CONSUL_TAG_LABEL_PREFIX, type ConsulMapping, type ConsulMappingOptions } from './mapping';
export { readCatalogServices, readHealthEntries, type ConsulHealthEntry } from './wire';
export { describeConsulError } from './errors';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff';
export { parseConsulAddress } from './client';
