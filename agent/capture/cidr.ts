// CIDR parsing for capture options. Blocks are normalised (host bits cleared,
// IPv6 compressed) to the exact text iptables-save prints, so the rules we
// build, the rules we read back and the golden files compare byte for byte.
import { isIP } from 'node:net';

/** An address block in the form iptables-save prints it ("10.0.0.0/8", "2001:db8::/32"). */
export interface Cidr {
  family: 4 | 6;
  text: string;
}

/** Parses "ADDR/LEN" or a bare address (a single host); undefined when invalid. */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const lenText = slash < 0 ? undefined : s.slice(slash + 1);
  const family = isIP(addr);
  if (family !== 4 && family !== 6) return undefined;
  const bits = family === 4 ? 32 : 128;
  if (lenText !== undefined && !/^\d{1,3}$/.test(lenText)) return undefined;
  const len = lenText === undefined ? bits : Number(lenText);
  if (len > bits) return undefined;
  const value = family === 4 ? v4ToBig(addr) : v6ToBig(addr);
  const mask = len === 0 ? 0n : ((1n << BigInt(len)) - 1n) << BigInt(bits - len);
  const net = value & mask;
  return { family, text: `${family === 4 ? bigToV4(net) : bigToV6(net)}/${len}` };
}

function v4ToBig(a: string): bigint {
  return a.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function bigToV4(n: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');
}

function v6ToBig(a: string): bigint {
  // An embedded dotted quad ("::ffff:1.2.3.4") stands for the last two groups.
  const m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (m) {
    const v4 = v4ToBig(m[2] as string);
    a = `${m[1]}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, tail] = a.includes('::') ? (a.split('::') as [string, string]) : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail === undefined ? [] : tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function bigToV6(n: bigint): string {
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((n >> BigInt(i * 16)) & 0xffffn).toString(16));
  // inet_ntop writes IPv4-mapped and IPv4-compatible addresses with a dotted quad.
  const top = n >> 32n;
  if ((top === 0xffffn || (top === 0n && n > 0xffffn)) && n >> 48n === 0n) {
    return `::${top === 0n ? '' : 'ffff:'}${bigToV4(n & 0xffffffffn)}`;
  }
  // The WHATWG URL serialiser compresses the longest zero run the way
  // inet_ntop (and so iptables-save) does.
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}
