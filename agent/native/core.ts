// The native forwarding core's addon (src/core.c) as a typed object: its own
// I/O thread (epoll, OpenSSL) accepts, does mTLS and splices opaque bytes;
// every decision comes from TypeScript (datapath.ts). Events arrive in
// batches, one call per turn of the I/O thread; commands are queued.
// Optional: without a compiler the addon is not built and the TypeScript
// data path serves everything (nativeCoreAvailable() says which).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { KedgeError } from '../../proto/model/errors';

type Handle = object;
interface CoreAddon {
  create(onEvents: (events: RawEvent[]) => void): Handle;
  command(core: Handle, type: number, id: number, a?: number, b?: number, c?: number, host?: string, sni?: string): void;
  listen(core: Handle, host: string, port: number, mtls: number): [number, number];
  setTls(core: Handle, cert: string, key: string, ca: string, ciphers: string, suites: string): void;
  destroy(core: Handle): void;
  openCount(core: Handle): number;
}

/** [type, id, i1, i2, i3, i4, d1, d2, d3, d4, s1, s2, s3, s4, uris] as src/core.c writes it. */
type RawEvent = [number, number, number, number, number, number, number, number, number, number, string, string, string, string, string[]];

const EV = { ACCEPT: 1, HANDOFF: 2, SECURED: 3, HANDSHAKE_FAILED: 4, DIALED: 5, OPENED: 6, CLOSED: 7, RELEASED: 8 } as const;
const CMD = { DIAL: 1, SPLICE: 2, DROP_UP: 3, CLOSE: 4, RELEASE: 5, UNLISTEN: 6 } as const;

/** How the upstream side of a spliced connection ended (for outlier detection). */
export type UpstreamEnd = 'none' | 'error' | 'end' | 'close';
const UP_END: readonly UpstreamEnd[] = ['none', 'error', 'end', 'close'];

/** One event of the core, decoded. */
export type CoreEvent =
  | { type: 'accept'; id: number; listener: number; remoteAddress: string; remotePort: number }
  | { type: 'handoff'; id: number; listener: number; fd: number }
  | { type: 'secured'; id: number; listener: number; sni: string; serial: string; uris: string[]; tooManyUris: boolean; resumed: boolean; remoteAddress: string; remotePort: number; localAddress: string }
  | { type: 'handshake-failed'; id: number; listener: number; reason: string; message: string; remoteAddress: string; remotePort: number }
  | { type: 'dialed'; id: number; ok: boolean; uris: string[]; resumed: boolean; code: string; message: string }
  | { type: 'opened'; id: number }
  | { type: 'closed'; id: number; code: string; message: string; sentDown: number; receivedDown: number; receivedUp: number; sentUp: number; upstreamEnd: UpstreamEnd; downstreamEndedFirst: boolean }
  | { type: 'released'; id: number; fd: number };

function decode(e: RawEvent): CoreEvent | undefined {
  const [type, id, i1, i2, i3, i4, d1, d2, d3, d4, s1, s2, s3, s4, uris] = e;
  switch (type) {
    case EV.ACCEPT:
      return { type: 'accept', id, listener: i1, remoteAddress: s1, remotePort: i2 };
    case EV.HANDOFF:
      return { type: 'handoff', id, listener: i1, fd: i2 };
    case EV.SECURED:
      return { type: 'secured', id, listener: i1, sni: s1, serial: s2.toUpperCase(), uris, tooManyUris: i4 !== 0, resumed: i2 !== 0, remoteAddress: s3, remotePort: i3, localAddress: s4 };
    case EV.HANDSHAKE_FAILED:
      return { type: 'handshake-failed', id, listener: i1, reason: nodeReason(i4, s2, s1), message: s1, remoteAddress: s3, remotePort: i3 };
    case EV.DIALED:
      return { type: 'dialed', id, ok: i1 !== 0, uris, resumed: i2 !== 0, code: s1, message: s2 };
    case EV.OPENED:
      return { type: 'opened', id };
    case EV.CLOSED:
      return { type: 'closed', id, code: s1, message: s2, sentDown: d1, receivedDown: d2, receivedUp: d3, sentUp: d4, upstreamEnd: UP_END[i1] ?? 'none', downstreamEndedFirst: i2 !== 0 };
    case EV.RELEASED:
      return { type: 'released', id, fd: i2 };
    default:
      return undefined;
  }
}

// X509_V_ERR_* names as Node reports them in authorizationError.
const VERIFY_ERRORS: Readonly<Record<number, string>> = {
  2: 'UNABLE_TO_GET_ISSUER_CERT',
  7: 'CERT_SIGNATURE_FAILURE',
  9: 'CERT_NOT_YET_VALID',
  10: 'CERT_HAS_EXPIRED',
  18: 'DEPTH_ZERO_SELF_SIGNED_CERT',
  19: 'SELF_SIGNED_CERT_IN_CHAIN',
  20: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  21: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  24: 'INVALID_CA',
  25: 'PATH_LENGTH_EXCEEDED',
  26: 'INVALID_PURPOSE',
  27: 'CERT_UNTRUSTED',
  28: 'CERT_REJECTED',
};

/** A refused handshake's reason in Node's words: the chain's verify error, else ERR_SSL_<OpenSSL reason>. */
function nodeReason(verify: number, sslReason: string, message: string): string {
  if (verify !== 0) return VERIFY_ERRORS[verify] ?? `X509_V_ERR_${verify}`;
  if (sslReason !== '') return `ERR_SSL_${sslReason.toUpperCase().replace(/\s+/g, '_')}`;
  return message;
}

const ADDON_FILE = path.join('build', 'Release', 'kedge_core.node');

/** Where the core addon is looked for: only $KEDGE_NATIVE_CORE_ADDON when set, else next to this file, then the source tree. */
export function coreAddonCandidates(): string[] {
  const fromEnv = process.env.KEDGE_NATIVE_CORE_ADDON;
  if (fromEnv) return [fromEnv];
  return [path.join(__dirname, ADDON_FILE), path.resolve(__dirname, '..', '..', '..', 'agent', 'native', ADDON_FILE)];
}

let addon: CoreAddon | undefined;

function load(): CoreAddon {
  if (addon) return addon;
  const tried = coreAddonCandidates();
  const found = tried.find((p) => fs.existsSync(p));
  if (!found) {
    throw new KedgeError('KEDGE_NATIVE_CORE_MISSING', `the native forwarding core is not built (needs python3, make and a C compiler: npm run build:native); looked in ${tried.join(', ')}`);
  }
  try {
    addon = require(found) as CoreAddon;
  } catch (err) {
    throw new KedgeError('KEDGE_NATIVE_CORE_MISSING', `the native forwarding core at ${found} does not load (${(err as Error).message}); rebuild it with npm run build:native`, { cause: err });
  }
  return addon;
}

/** True when the core addon loads. */
export function nativeCoreAvailable(): boolean {
  return nativeCoreMissing() === undefined;
}

/** Why the core addon does not load (KEDGE_NATIVE_CORE_MISSING), or undefined when it does. */
export function nativeCoreMissing(): KedgeError | undefined {
  try {
    load();
    return undefined;
  } catch (err) {
    return err as KedgeError;
  }
}

/** Node's default cipher list, split as OpenSSL takes it: TLS 1.2 ciphers, TLS 1.3 suites. */
function nodeCiphers(): [string, string] {
  const all = tls.DEFAULT_CIPHERS.split(':');
  return [all.filter((c) => !c.startsWith('TLS_')).join(':'), all.filter((c) => c.startsWith('TLS_')).join(':')];
}

/** The running core: one I/O thread. */
export class NativeCore {
  private readonly a: CoreAddon;
  private readonly handle: Handle;
  private destroyed = false;

  /** Starts the I/O thread; `onEvent` sees every event, in order, on the JS thread. */
  constructor(onEvent: (e: CoreEvent) => void) {
    this.a = load();
    this.handle = this.a.create((events) => {
      for (const raw of events) {
        const e = decode(raw);
        if (e !== undefined) onEvent(e);
      }
    });
  }

  /** Loads an identity and trust bundle for connections made from now on; throws KEDGE_TLS_IDENTITY_INVALID. */
  setTls(certChainPem: string, keyPem: string, trustBundlePem: string): void {
    const [ciphers, suites] = nodeCiphers();
    try {
      this.a.setTls(this.handle, certChainPem, keyPem, trustBundlePem, ciphers, suites);
    } catch (err) {
      throw new KedgeError('KEDGE_TLS_IDENTITY_INVALID', `the native core cannot load the TLS identity: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Binds a listener (numeric host); `mtls` peeks each ClientHello and terminates mesh mTLS. Throws an Error whose code is the errno name. */
  listen(host: string, port: number, mtls: boolean): { id: number; port: number } {
    const [id, bound] = this.a.listen(this.handle, host, port, mtls ? 1 : 0);
    return { id, port: bound };
  }

  unlisten(listener: number): void {
    this.cmd(CMD.UNLISTEN, 0, listener);
  }

  /** Connects `id`'s upstream: mTLS with `sni` (no ALPN), or plain TCP; `autoSplice` starts the splice on connect (no 'dialed', 'opened' instead). */
  dial(id: number, host: string, port: number, o: { tls: boolean; sni?: string; timeoutMs: number; autoSplice?: boolean }): void {
    this.cmd(CMD.DIAL, id, port, (o.tls ? 1 : 0) | (o.autoSplice ? 2 : 0), Math.max(1, Math.round(o.timeoutMs)), host, o.sni ?? '');
  }

  splice(id: number): void {
    this.cmd(CMD.SPLICE, id);
  }

  /** Closes the upstream just dialed (an identity mismatch), keeping the client for another attempt. */
  dropUpstream(id: number): void {
    this.cmd(CMD.DROP_UP, id);
  }

  /** Closes both sides (`reset`: the client gets a TCP RST); a 'closed' event follows. */
  close(id: number, reset = false): void {
    this.cmd(CMD.CLOSE, id, reset ? 1 : 0);
  }

  /** Gives the client socket of a waiting connection back to Node ('released' carries the fd). */
  release(id: number): void {
    this.cmd(CMD.RELEASE, id);
  }

  /** Connections the core holds now. */
  openCount(): number {
    return this.destroyed ? 0 : this.a.openCount(this.handle);
  }

  /** Closes every connection (each gets its 'closed' event) and stops the thread. Idempotent. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.a.destroy(this.handle);
  }

  private cmd(type: number, id: number, a = 0, b = 0, c = 0, host = '', sni = ''): void {
    if (!this.destroyed) this.a.command(this.handle, type, id, a, b, c, host, sni);
  }
}
