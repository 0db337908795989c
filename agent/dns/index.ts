// The agent's DNS proxy: mesh names answered with VIPs, everything else
// forwarded to the host's resolvers. See docs/dns.md.
export { DEFAULT_DNS_PORT, DNS_DEFAULTS, DnsServer, DnsServerOptions, startDnsServer } from './server';
export { DnsStats, QueryHandler, QueryHandlerOptions, createQueryHandler } from './handler';
export { LocalDecision, MeshLookup, NameClass, classifyName, decideLocal, normalizeName } from './names';
export { ResolvConf, parseResolvConf, readResolvConf, upstreamsWithoutSelf } from './resolvconf';
export {
  DnsQuestion,
  EDNS_UDP_SIZE,
  LocalResponse,
  MAX_QUERY_BYTES,
  PLAIN_UDP_MAX,
  ParsedQuery,
  QueryInspection,
  RCODE,
  addressBytes,
  buildResponse,
  headerOnlyResponse,
  inspectQuery,
  udpResponseLimit,
} from './message';
export { ForwardResult, exchangeTcp, exchangeUdp, forwardQuery } from './upstream';
