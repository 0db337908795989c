// Capture options: the `capture:` block of agent.yaml (or the same keys built
// from command-line flags), validated once into a frozen object. Every
// problem is a KEDGE_CAPTURE_BAD_OPTIONS error naming the file and field.
import { KedgeError } from '../../proto/model/errors';
import { Doc, deepFreeze } from '../../proto/model/validate';
import { parseCidr } from './cidr';
import { UserDb, systemUserDb } from './users';

/** Kedge's own listening ports; the reason each default exclusion exists. */
export const KEDGE_PORTS = Object.freeze({
  admin: 15000,
  outbound: 15001,
  inbound: 15006,
  federationGrpc: 15012,
  federationHttp: 15014,
  metrics: 15020,
  health: 15021,
  dns: 15053,
  gateway: 15443,
});

/** Defaults for every capture option, in one table. */
export const CAPTURE_DEFAULTS = Object.freeze({
  proxyUser: 'kedge',
  outboundPort: KEDGE_PORTS.outbound,
  inboundPort: KEDGE_PORTS.inbound,
  dnsPort: KEDGE_PORTS.dns,
  // No inbound capture unless asked: services reach the inbound listener
  // directly over mTLS, and capturing a VM's every port is a deliberate choice.
  inboundPorts: Object.freeze([]) as readonly number[],
  // SSH stays reachable when the proxy is down; Kedge's own listeners are never redirected into each other.
  excludeInboundPorts: Object.freeze([22, ...Object.values(KEDGE_PORTS)]) as readonly number[],
  // SSH out, and the CLI's calls to a federation, bypass the proxy.
  excludeOutboundPorts: Object.freeze([22, KEDGE_PORTS.federationGrpc, KEDGE_PORTS.federationHttp]) as readonly number[],
  includeOutboundCidrs: '*' as const,
  excludeOutboundCidrs: Object.freeze([]) as readonly string[],
  dns: true,
  ipv6: 'auto' as const,
});

/** Validated, frozen capture options; `buildCaptureRules` turns them into iptables rules. */
export interface CaptureOptions {
  /** The proxy user as configured (name or uid), for messages. */
  proxyUser: string;
  /** Traffic from this uid is never captured: it is the proxy's own. */
  proxyUid: number;
  proxyGroup?: string;
  /** When set, traffic from this gid is not captured either. */
  proxyGid?: number;
  outboundPort: number;
  inboundPort: number;
  dnsPort: number;
  /** Inbound TCP ports redirected to the inbound listener; '*' means all but the excluded ones. */
  inboundPorts: '*' | readonly number[];
  excludeInboundPorts: readonly number[];
  excludeOutboundPorts: readonly number[];
  /** Outbound destinations captured; '*' means all. Normalised CIDR text. */
  includeOutboundCidrs: '*' | readonly string[];
  excludeOutboundCidrs: readonly string[];
  /** Redirect DNS (UDP and TCP port 53) from every user but the proxy's to dnsPort. */
  dns: boolean;
  /** Mirror the rules into ip6tables; 'auto' decides at install time from /proc/net/if_inet6. */
  ipv6: boolean | 'auto';
}

/** The keys a `capture:` block may hold. */
export const CAPTURE_KEYS = [
  'proxyUser',
  'proxyGroup',
  'outboundPort',
  'inboundPort',
  'dnsPort',
  'inboundPorts',
  'excludeInboundPorts',
  'excludeOutboundPorts',
  'includeOutboundCidrs',
  'excludeOutboundCidrs',
  'dns',
  'ipv6',
] as const;

/** Validates a `capture:` block (missing means all defaults); `users` resolves the proxy user and group. */
export function captureOptionsFromDoc(doc: Doc, users: UserDb = systemUserDb()): CaptureOptions {
  try {
    return deepFreeze(parse(doc, users));
  } catch (err) {
    // Shape errors come from Doc as KEDGE_BAD_CONFIG; one code for the whole block lets callers branch once.
    if (err instanceof KedgeError && err.code === 'KEDGE_BAD_CONFIG') throw new KedgeError('KEDGE_CAPTURE_BAD_OPTIONS', err.message, { cause: err });
    throw err;
  }
}

/** Validates plain option values (as in YAML); `label` names their source in errors. */
export function captureOptions(value: Record<string, unknown>, users: UserDb = systemUserDb(), label = 'capture options'): CaptureOptions {
  return captureOptionsFromDoc(new Doc(label, value), users);
}

function bad(doc: Doc, msg: string): never {
  throw new KedgeError('KEDGE_CAPTURE_BAD_OPTIONS', `${doc.file}: ${doc.path || '(top level)'}: ${msg}`);
}

function parse(doc: Doc, users: UserDb): CaptureOptions {
  if (!doc.isMissing()) doc.object([...CAPTURE_KEYS]);
  const proxyUser = idText(doc.at('proxyUser')) ?? CAPTURE_DEFAULTS.proxyUser;
  const proxyUid = resolveId(doc.at('proxyUser'), proxyUser, users.uid, 'user', 'useradd --system');
  const proxyGroup = idText(doc.at('proxyGroup'));
  const proxyGid = proxyGroup === undefined ? undefined : resolveId(doc.at('proxyGroup'), proxyGroup, users.gid, 'group', 'groupadd --system');

  const outboundPort = port(doc.at('outboundPort'), CAPTURE_DEFAULTS.outboundPort);
  const inboundPort = port(doc.at('inboundPort'), CAPTURE_DEFAULTS.inboundPort);
  const dnsPort = port(doc.at('dnsPort'), CAPTURE_DEFAULTS.dnsPort);
  const listeners: Array<[string, number]> = [['outboundPort', outboundPort], ['inboundPort', inboundPort], ['dnsPort', dnsPort]];
  for (const [i, [name, p]] of listeners.entries()) {
    const clash = listeners.slice(0, i).find(([, q]) => q === p);
    if (clash) bad(doc.at(name), `${p} is also ${clash[0]}; the outbound, inbound and DNS listeners need three different ports`);
  }

  const inboundDoc = doc.at('inboundPorts');
  const inboundPorts = inboundDoc.value === '*' ? '*' : portList(inboundDoc, CAPTURE_DEFAULTS.inboundPorts);
  const excludeInboundPorts = portList(doc.at('excludeInboundPorts'), CAPTURE_DEFAULTS.excludeInboundPorts);
  const excludeOutboundPorts = portList(doc.at('excludeOutboundPorts'), CAPTURE_DEFAULTS.excludeOutboundPorts);
  if (inboundPorts !== '*') {
    for (const p of inboundPorts) {
      if (excludeInboundPorts.includes(p)) {
        const dflt = doc.at('excludeInboundPorts').isMissing() ? ` (by default: ${CAPTURE_DEFAULTS.excludeInboundPorts.join(',')}; set excludeInboundPorts to change it)` : '';
        bad(inboundDoc, `port ${p} is also in excludeInboundPorts${dflt}; a port is either captured or excluded`);
      }
      const own = listeners.find(([, q]) => q === p);
      if (own) bad(inboundDoc, `port ${p} is Kedge's ${own[0]}; capturing it would redirect the proxy into itself`);
    }
  }

  const dns = doc.at('dns').bool(CAPTURE_DEFAULTS.dns);
  if (dns && excludeOutboundPorts.includes(53)) {
    bad(doc.at('excludeOutboundPorts'), 'port 53 is excluded but dns capture is on; set dns: false (--no-dns) or drop 53 from the list');
  }

  const ipv6Doc = doc.at('ipv6');
  const ipv6 = ipv6Doc.value === 'auto' || ipv6Doc.isMissing() ? CAPTURE_DEFAULTS.ipv6 : typeof ipv6Doc.value === 'boolean' ? ipv6Doc.value : bad(ipv6Doc, 'must be true, false or auto');

  const includeDoc = doc.at('includeOutboundCidrs');
  const includeOutboundCidrs = includeDoc.value === '*' || includeDoc.isMissing() ? '*' : cidrList(includeDoc, ipv6);
  const excludeDoc = doc.at('excludeOutboundCidrs');
  const excludeOutboundCidrs = cidrList(excludeDoc, ipv6);
  if (includeOutboundCidrs !== '*') {
    for (const c of includeOutboundCidrs) {
      if (excludeOutboundCidrs.includes(c)) bad(includeDoc, `${c} is also in excludeOutboundCidrs; a block is either captured or excluded`);
    }
  }

  const out: CaptureOptions = {
    proxyUser,
    proxyUid,
    outboundPort,
    inboundPort,
    dnsPort,
    inboundPorts,
    excludeInboundPorts,
    excludeOutboundPorts,
    includeOutboundCidrs,
    excludeOutboundCidrs,
    dns,
    ipv6,
  };
  if (proxyGroup !== undefined) Object.assign(out, { proxyGroup, proxyGid });
  return out;
}

function idText(d: Doc): string | undefined {
  if (d.isMissing()) return undefined;
  if (typeof d.value === 'number' && Number.isInteger(d.value)) return String(d.value);
  if (typeof d.value === 'string' && d.value !== '') return d.value;
  return bad(d, 'must be a name or a numeric id');
}

function resolveId(d: Doc, text: string, lookup: (name: string) => number | undefined, kind: string, create: string): number {
  // A number is taken as is: containers often run a uid with no passwd entry.
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (n > 4294967294) bad(d, `${text} is not a valid ${kind} id`);
    return n;
  }
  const id = lookup(text);
  if (id === undefined) bad(d, `no ${kind} "${text}" on this host (checked /etc/${kind === 'user' ? 'passwd' : 'group'} and NSS); create it (${create} ${text}) or give a numeric id`);
  return id;
}

function port(d: Doc, def: number): number {
  if (d.isMissing()) return def;
  if (typeof d.value !== 'number' || !Number.isInteger(d.value) || d.value < 1 || d.value > 65535) {
    bad(d, `${JSON.stringify(d.value)} is not a port; use a whole number from 1 to 65535`);
  }
  return d.value;
}

function portList(d: Doc, def: readonly number[]): readonly number[] {
  if (d.isMissing()) return def;
  if (!Array.isArray(d.value)) bad(d, `must be a list of ports${d.path.endsWith('inboundPorts') && !d.path.includes('exclude') ? " or '*'" : ''}`);
  const out: number[] = [];
  for (const item of d.list()) {
    const p = port(item, 0);
    if (!out.includes(p)) out.push(p);
  }
  return out;
}

function cidrList(d: Doc, ipv6: boolean | 'auto'): readonly string[] {
  if (d.isMissing()) return [];
  if (!Array.isArray(d.value)) bad(d, d.path.endsWith('includeOutboundCidrs') ? "must be '*' or a list of CIDRs" : 'must be a list of CIDRs');
  const out: string[] = [];
  for (const item of d.list()) {
    const c = typeof item.value === 'string' ? parseCidr(item.value) : undefined;
    if (!c) bad(item, `${JSON.stringify(item.value)} is not a CIDR; write it like 10.0.0.0/8 or 2001:db8::/32`);
    if (c.family === 6 && ipv6 === false) bad(item, `${c.text} is IPv6 but ipv6 is false`);
    if (!out.includes(c.text)) out.push(c.text);
  }
  return out;
}
