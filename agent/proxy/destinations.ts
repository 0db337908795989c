// Where a captured outbound connection goes: its original destination looked
// up as a service VIP:port or an endpoint address:port, and what the outbound
// policy says about destinations outside the mesh. Pure; the index is built
// once per snapshot so a connection costs one map get.
import { isIP } from 'node:net';
import { formatHostPort } from '../../proto/model/address';
import type { EndpointView, ProxySnapshot, ServiceView } from './types';

/** What to do with destinations outside the mesh: pass them through (default) or refuse them. */
export type OutboundPolicy = 'allow-any' | 'registry-only';

/** A mesh destination: a service port, and the endpoint the client addressed directly (if it did). */
export interface MeshDestination {
  service: ServiceView;
  /** The service port (what the SNI names), not the app's target port. */
  port: number;
  /** Set when the original destination was this endpoint's own address and target port. */
  endpoint?: EndpointView;
}

/** Mesh destinations by "ip:port" (formatHostPort of the canonical address). */
export type DestinationIndex = ReadonlyMap<string, MeshDestination>;

/** An address and port, as SO_ORIGINAL_DST or a socket reports them. */
export interface AddressPort {
  address: string;
  port: number;
}

/** The decision for one captured outbound connection. */
export type OutboundDecision =
  | { action: 'mesh'; via: 'vip' | 'endpoint'; destination: MeshDestination }
  | { action: 'passthrough' }
  | { action: 'refuse'; code: string; reason: string };

/**
 * The canonical text of an IP address, so lookups match whatever spelling
 * the federation or the kernel used: IPv4-mapped IPv6 becomes IPv4, IPv6 is
 * compressed and lower-cased (RFC 5952). Non-IPs come back unchanged.
 */
export function canonicalIp(address: string): string {
  const family = isIP(address);
  if (family !== 6) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  // URL's IPv6 serialiser is RFC 5952 (as the kernel's inet_ntop), but
  // prints a mapped address in hex; that case is handled above.
  let host: string;
  try {
    host = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return address.toLowerCase(); // a zone index (fe80::1%eth0) is not valid in a URL
  }
  const hexMapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (hexMapped) {
    const hi = parseInt(hexMapped[1]!, 16);
    const lo = parseInt(hexMapped[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return host;
}

/** The index key of an address and port. */
export function destinationKey(address: string, port: number): string {
  return formatHostPort({ host: canonicalIp(address), port });
}

/**
 * Indexes every service VIP:port and every endpoint address:targetPort of
 * `snapshot`, meshed or plaintext (a plaintext endpoint's port is the one
 * the proxy dials). An endpoint's target port maps back to the service port
 * of the same name. When two entries claim one key, VIPs win over endpoints and
 * otherwise the first service (in snapshot order) wins: the endpoint is the
 * same machine either way, only the SNI's service differs.
 */
export function buildDestinationIndex(snapshot: ProxySnapshot): DestinationIndex {
  const index = new Map<string, MeshDestination>();
  for (const service of snapshot.services.values()) {
    if (isIP(service.vip) === 0) continue; // no VIP allocated (yet)
    for (const p of service.ports) {
      const key = destinationKey(service.vip, p.port);
      if (!index.has(key)) index.set(key, { service, port: p.port });
    }
  }
  for (const service of snapshot.services.values()) {
    const byName = new Map(service.ports.map((p) => [p.name, p.port]));
    for (const endpoint of service.endpoints) {
      for (const ep of endpoint.ports) {
        const port = byName.get(ep.name);
        if (port === undefined) continue;
        const key = destinationKey(endpoint.address, ep.port);
        if (!index.has(key)) index.set(key, { service, port, endpoint });
      }
    }
  }
  return index;
}

/**
 * Decides one captured outbound connection: refuse a destination that is
 * the listener itself (a client dialling 15001 directly would loop), route
 * mesh destinations, and apply `policy` to the rest.
 */
export function decideOutbound(dst: AddressPort, self: AddressPort, index: DestinationIndex, policy: OutboundPolicy): OutboundDecision {
  if (isSelf(dst, self)) {
    return { action: 'refuse', code: 'KEDGE_ORIGINAL_DST_LOOP', reason: `the original destination ${formatHostPort({ host: dst.address, port: dst.port })} is the outbound listener itself; was it dialled directly instead of being redirected?` };
  }
  const found = index.get(destinationKey(dst.address, dst.port));
  if (found !== undefined) return { action: 'mesh', via: found.endpoint ? 'endpoint' : 'vip', destination: found };
  if (policy === 'allow-any') return { action: 'passthrough' };
  return {
    action: 'refuse',
    code: 'KEDGE_OUTBOUND_NOT_IN_REGISTRY',
    reason: `${formatHostPort({ host: dst.address, port: dst.port })} is neither a service VIP:port nor an endpoint address:port of the mesh, and outboundPolicy is registry-only`,
  };
}

/** True when `dst` is the listening socket `self` (same port, same or a loopback/unspecified address). */
export function isSelf(dst: AddressPort, self: AddressPort): boolean {
  if (dst.port !== self.port) return false;
  const a = canonicalIp(dst.address);
  return a === canonicalIp(self.address) || isLoopbackOrAny(a);
}

function isLoopbackOrAny(a: string): boolean {
  return a.startsWith('127.') || a === '::1' || a === '0.0.0.0' || a === '::';
}
