// The host's resolvers, read from /etc/resolv.conf, and the rule that keeps
// the proxy from forwarding to itself.
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import type { HostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';

/** The parts of resolv.conf the DNS proxy uses, with what it skipped and why. */
export interface ResolvConf {
  /** In file order, port 53 (resolv.conf has no port syntax). */
  nameservers: HostPort[];
  /** The last `search` or `domain` line wins, as in glibc. */
  search: string[];
  /** `options` words: `ndots:5` → { ndots: '5' }, `rotate` → { rotate: true }. */
  options: Record<string, string | true>;
  /** Lines that were not understood, for a warning. */
  warnings: string[];
}

const DNS_PORT = 53;

/** Parses resolv.conf text. Never throws: what it cannot use ends up in `warnings`. */
export function parseResolvConf(text: string): ResolvConf {
  const conf: ResolvConf = { nameservers: [], search: [], options: {}, warnings: [] };
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    // glibc treats '#' and ';' as comments; neither can appear in a value.
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [keyword, ...args] = line.split(/\s+/);
    switch (keyword) {
      case 'nameserver': {
        const addr = args[0] ?? '';
        // A link-local IPv6 server carries its zone: fe80::1%eth0.
        if (args.length === 1 && isIP(addr.replace(/%[^%]+$/, '')) !== 0) conf.nameservers.push({ host: addr, port: DNS_PORT });
        else conf.warnings.push(`line ${i + 1}: nameserver "${args.join(' ')}" is not an IP address; skipped`);
        break;
      }
      case 'search':
        conf.search = args.map((d) => d.replace(/\.$/, '')).filter((d) => d !== '');
        break;
      case 'domain':
        conf.search = args[0] ? [args[0].replace(/\.$/, '')] : [];
        break;
      case 'options':
        for (const word of args) {
          const colon = word.indexOf(':');
          if (colon < 0) conf.options[word] = true;
          else conf.options[word.slice(0, colon)] = word.slice(colon + 1);
        }
        break;
      default:
        // sortlist, lookup (BSD) and the like do not concern a forwarder.
        break;
    }
  }
  return conf;
}

/** Reads and parses a resolv.conf; KEDGE_DNS_RESOLV_CONF when it cannot be read. */
export async function readResolvConf(path = '/etc/resolv.conf'): Promise<ResolvConf> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new KedgeError(
      'KEDGE_DNS_RESOLV_CONF',
      `cannot read ${path} (${errorMessage(err)}): the DNS proxy forwards names outside the mesh to the nameservers listed there; check the file exists and is readable by the agent's user`,
      { cause: err },
    );
  }
  return parseResolvConf(text);
}

const LOOPBACK4 = /^127\./;

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '';
}

function isLoopback(host: string): boolean {
  return LOOPBACK4.test(host) || host === '::1' || host === 'localhost';
}

/**
 * Upstreams minus any that point at the proxy itself (`listening`: the bound
 * UDP and TCP addresses). A wildcard listener is reached through loopback and
 * every address in `localAddresses`. Forwarding to ourselves would loop each
 * query until it timed out.
 */
export function upstreamsWithoutSelf(upstreams: readonly HostPort[], listening: readonly HostPort[], localAddresses: ReadonlySet<string> = new Set()): HostPort[] {
  const pointsAtSelf = (u: HostPort): boolean =>
    listening.some((l) => l.port === u.port && (l.host === u.host || (isWildcard(l.host) && (isLoopback(u.host) || localAddresses.has(u.host)))));
  return upstreams.filter((u) => !pointsAtSelf(u));
}
