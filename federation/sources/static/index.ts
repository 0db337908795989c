// The static source: service entries from the federation config.
export { parseServiceEntries, ENTRY_PROTOCOLS, STATIC_CLUSTER, type ServiceEntry, type ServiceEntryEndpoint } from './entries';
export { StaticSource, servicesFromEntries, STATIC_SOURCE_NAME } from './source';
