// The original destination of a captured connection: where the client sent
// it before iptables REDIRECT rewrote it to the proxy's port. Node cannot
// read SO_ORIGINAL_DST itself, so a small Node-API addon (src/original_dst.c,
// built by `npm ci`) does; this wrapper finds it and names its failures.
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { constants } from 'node:os';
import * as path from 'node:path';
import { KedgeError } from '../../proto/model/errors';

/** An original destination as the kernel's conntrack entry recorded it. */
export interface OriginalDst {
  address: string;
  port: number;
  family: 4 | 6;
}

interface Addon {
  getOriginalDst(fd: number): OriginalDst;
}

const ADDON_FILE = path.join('build', 'Release', 'kedge_native.node');

/** Where the addon is looked for: only $KEDGE_NATIVE_ADDON when set, else next to this file, then the source tree (this file runs from dist/agent/native). */
export function addonCandidates(): string[] {
  const fromEnv = process.env.KEDGE_NATIVE_ADDON;
  if (fromEnv) return [fromEnv];
  return [
    path.join(__dirname, ADDON_FILE),
    path.resolve(__dirname, '..', '..', '..', 'agent', 'native', ADDON_FILE),
  ];
}

let addon: Addon | undefined;

function load(): Addon {
  if (addon) return addon;
  const tried = addonCandidates();
  const found = tried.find((p) => fs.existsSync(p));
  if (!found) {
    throw new KedgeError(
      'KEDGE_NATIVE_MISSING',
      `the SO_ORIGINAL_DST addon is not built; run npm ci / npm run build:native (needs python3, make and a C compiler); looked in ${tried.join(', ')}`,
    );
  }
  try {
    addon = require(found) as Addon;
  } catch (err) {
    throw new KedgeError('KEDGE_NATIVE_MISSING', `the SO_ORIGINAL_DST addon at ${found} does not load (${(err as Error).message}); rebuild it with npm run build:native`, { cause: err });
  }
  return addon;
}

/** True when the addon can be loaded, for health reports. */
export function originalDstAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

/** Reads the original destination of an accepted socket; KEDGE_ORIGINAL_DST_UNAVAILABLE when the kernel has none. */
export function originalDst(socket: net.Socket): OriginalDst {
  // libuv's handle holds the file descriptor; Node has no public API for it.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new KedgeError('KEDGE_ORIGINAL_DST_UNAVAILABLE', 'cannot read the original destination: the socket has no file descriptor (closed, or not a TCP socket)');
  }
  return originalDstOfFd(fd);
}

/** Reads the original destination of a socket by file descriptor. */
export function originalDstOfFd(fd: number): OriginalDst {
  const a = load();
  try {
    return a.getOriginalDst(fd);
  } catch (err) {
    const errno = (err as { errno?: unknown }).errno;
    const name = typeof errno === 'number' ? errnoName(errno) : 'unknown error';
    const hint =
      name === 'ENOENT'
        ? ': the connection was not redirected by iptables (no NAT entry in conntrack); is capture installed ("kedge capture show")?'
        : name === 'ENOPROTOOPT'
          ? ': the kernel lacks conntrack support for this family (load nf_conntrack, and nf_conntrack for IPv6)'
          : '';
    throw new KedgeError('KEDGE_ORIGINAL_DST_UNAVAILABLE', `cannot read the original destination (${name}): ${(err as Error).message}${hint}`, { cause: err });
  }
}

function errnoName(n: number): string {
  const entry = Object.entries(constants.errno).find(([, v]) => v === n);
  return entry ? entry[0] : `errno ${n}`;
}
