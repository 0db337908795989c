// How near an endpoint is to the client. Two schemes, both yielding a
// priority where 0 is best: the default locality match (subzone, zone,
// region, anything else) and an explicit ordered key list, which follows
// Istio's `failoverPriority` exactly.
import type { Locality, Topology } from './types';

/** A priority from the default locality match: 0 same subzone, 1 same zone, 2 same region, 3 anything else. */
export type LocalityPriority = 0 | 1 | 2 | 3;

/**
 * Priority of an endpoint relative to the client by locality alone. Fields
 * compare as strings, so two empty subzones match: a client that knows only
 * its zone treats every endpoint in that zone as its own.
 */
export function localityPriority(client: Locality, ep: Locality): LocalityPriority {
  if (client.region !== ep.region) return 3;
  if (client.zone !== ep.zone) return 2;
  if (client.subzone !== ep.subzone) return 1;
  return 0;
}

/** True when the client's locality is entirely unknown, so locality cannot rank endpoints. */
export function isUnknownLocality(l: Locality): boolean {
  return l.region === '' && l.zone === '' && l.subzone === '';
}

// The short names Kedge accepts, and the topology label names Istio uses for
// the same fields, so a failoverPriority copied from a DestinationRule works.
const TOPOLOGY_KEYS: Readonly<Record<string, (t: Topology) => string>> = {
  network: (t) => t.network,
  region: (t) => t.locality.region,
  zone: (t) => t.locality.zone,
  subzone: (t) => t.locality.subzone,
  'topology.istio.io/network': (t) => t.network,
  'topology.kubernetes.io/region': (t) => t.locality.region,
  'topology.kubernetes.io/zone': (t) => t.locality.zone,
  'topology.istio.io/subzone': (t) => t.locality.subzone,
};

/** One entry of a failover order: a key, and the value endpoints must have when the entry was written `key=value`. */
export interface FailoverKey {
  key: string;
  /** When set, endpoints are compared with this value instead of the client's. */
  value?: string;
}

/** Splits `key` or `key=value` entries, as Istio does for failoverPriority. */
export function parseFailoverOrder(order: readonly string[]): FailoverKey[] {
  return order.map((entry) => {
    const eq = entry.indexOf('=');
    return eq < 0 ? { key: entry } : { key: entry.slice(0, eq), value: entry.slice(eq + 1) };
  });
}

/** The value of a failover key for a client or endpoint: a topology field, else a label ('' when absent). */
export function topologyValue(t: Topology, key: string): string {
  const field = TOPOLOGY_KEYS[key];
  return field ? field(t) : (t.labels[key] ?? '');
}

/**
 * Priority of an endpoint under an explicit failover order of N keys, as
 * Istio's failoverPriority: an endpoint matching the client on all N keys is
 * priority 0, on the first N-1 only priority 1, ..., on none priority N. A key
 * counts only when every key before it matched. Values compare as strings and
 * an absent label is '', so a label that neither side has matches (Istio
 * does the same). A `key=value` entry compares the endpoint with `value`
 * instead of the client.
 */
export function failoverPriority(client: Topology, ep: Topology, order: readonly string[] | readonly FailoverKey[]): number {
  const keys = order.length > 0 && typeof order[0] === 'string' ? parseFailoverOrder(order as readonly string[]) : (order as readonly FailoverKey[]);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    const want = k.value ?? topologyValue(client, k.key);
    if (topologyValue(ep, k.key) !== want) return keys.length - i;
  }
  return 0;
}

/**
 * Whether a locality matches a pattern `region[/zone[/subzone]]` where any
 * part may be `*`, and missing parts match anything, as Istio's
 * `distribute` from/to fields: `us-east/*` and `us-east` both match every
 * zone of us-east, `*` matches everything.
 */
export function localityMatches(pattern: string, l: Locality): boolean {
  const [region = '', zone = '', subzone = ''] = pattern.split('/');
  const part = (p: string, v: string): boolean => p === '*' || p === '' || p === v;
  // The region part is never optional: an empty pattern matches nothing.
  return (region === '*' || region === l.region) && region !== '' && part(zone, l.zone) && part(subzone, l.subzone);
}

/** `region/zone/subzone` with empty parts kept, a map key for one locality. */
export function localityKey(l: Locality): string {
  return `${l.region}/${l.zone}/${l.subzone}`;
}
