// The agent's mesh identity: loaded from the data dir, or obtained once with
// the join token; renewed at 50–70% of its lifetime over mTLS with the
// current certificate; rotated into the proxy without dropping connections.
import * as fs from 'node:fs';
import { EventEmitter } from 'node:events';
import { X509Certificate } from 'node:crypto';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import type { TlsIdentity } from '../proxy/types';
import { FederationTarget, JoinCredential, callAnyFederation, isTransient, signOnce } from '../registration/client';
import { generateKeyAndCsr, parseCertChain } from './csr';
import { expiryWarning, renewalDelayMs, retryDelayMs } from './refresh';
import { loadIdentity, saveIdentity, toTlsIdentity } from './store';

/** Options for the identity manager; clock and random are injectable for tests. */
export interface IdentityManagerOptions {
  dataDir: string;
  tokenFile: string | undefined;
  /** A pod joins with its service-account token instead of a join token. */
  kubernetes?: { tokenFile: string; cluster: string } | undefined;
  federation: FederationTarget;
  logger: Logger;
  clock?: () => number;
  random?: () => number;
}

/** Owns the workload certificate; emits 'rotated' with the new TlsIdentity. */
export class IdentityManager extends EventEmitter {
  private identity: TlsIdentity | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  // When each certificate was requested, on this host's clock (unknown for one loaded from disk).
  private readonly receivedAt = new WeakMap<TlsIdentity, Date>();
  /** TrustBundle.sequence last installed; 0 until the federation pushes one. */
  private bundleSequence = 0;
  private readonly clock: () => number;
  private readonly random: () => number;

  constructor(private readonly opts: IdentityManagerOptions) {
    super();
    this.clock = opts.clock ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  current(): TlsIdentity {
    if (!this.identity) throw new KedgeError('KEDGE_NO_IDENTITY', 'the agent has no certificate yet');
    return this.identity;
  }

  /**
   * Returns a usable identity: the saved one when still valid, otherwise a new
   * one from the join token. Waits (with backoff, logging) while the
   * federation is unreachable; throws on a refused token, which is fatal.
   */
  async ensure(): Promise<TlsIdentity> {
    const saved = loadIdentity(this.opts.dataDir);
    if (saved && saved.notAfter.getTime() > this.clock()) {
      this.identity = saved;
      this.opts.logger.info({ spiffeId: saved.spiffeId, serial: saved.serial, notAfter: saved.notAfter.toISOString() }, 'loaded saved identity');
      return saved;
    }
    if (saved) this.opts.logger.warn({ notAfter: saved.notAfter.toISOString() }, 'saved certificate has expired; joining again with the token');
    let attempt = 0;
    for (;;) {
      try {
        // Re-read each attempt: a projected token is rotated by the kubelet.
        const id = await this.requestIdentity(this.joinCredential(), undefined);
        this.identity = id;
        this.opts.logger.info({ spiffeId: id.spiffeId, serial: id.serial, notAfter: id.notAfter.toISOString() }, 'joined the mesh');
        return id;
      } catch (err) {
        if (!isTransient(err) || this.stopped) throw err;
        const delay = Math.min(30_000, 500 * 2 ** Math.min(attempt++, 6)) * (0.5 + this.random());
        this.opts.logger.warn({ err: errorMessage(err), code: (err as KedgeError).code, retryInMs: Math.round(delay) }, joinRetryMessage(err as KedgeError));
        await sleep(delay);
      }
    }
  }

  /** Starts the renewal loop. */
  startRenewal(): void {
    this.schedule(this.renewalDelay(this.current()), 0);
  }

  /** Renews now (also used by tests); resolves with the new identity. */
  async renew(): Promise<TlsIdentity> {
    const id = await this.requestIdentity(undefined, this.current());
    if (id.spiffeId !== this.current().spiffeId) {
      throw new KedgeError('KEDGE_IDENTITY_CHANGED', `renewal returned ${id.spiffeId}, not ${this.current().spiffeId}`);
    }
    this.identity = id;
    this.opts.logger.info({ spiffeId: id.spiffeId, serial: id.serial, notAfter: id.notAfter.toISOString() }, 'certificate renewed');
    this.emit('rotated', id);
    return id;
  }

  /**
   * Installs the trust bundle the federation pushed (a CA rotation adds a
   * root, then retires one): saved with the identity and emitted as
   * 'rotated', so the proxy swaps its TLS contexts without a restart. A push
   * older than the one installed is ignored. Throws KEDGE_BAD_BUNDLE for a
   * bundle without usable CA certificates, which is never installed.
   */
  setTrustBundle(rootsPem: readonly string[], sequence: number): boolean {
    const current = this.current();
    if (sequence < this.bundleSequence) return false;
    const bundle = rootsPem.join('');
    if (bundle === current.trustBundlePem) {
      this.bundleSequence = sequence;
      return false;
    }
    const roots = parseBundle(rootsPem);
    const next: TlsIdentity = { ...current, trustBundlePem: bundle };
    saveIdentity(this.opts.dataDir, next);
    const received = this.receivedAt.get(current);
    if (received) this.receivedAt.set(next, received);
    this.identity = next;
    this.bundleSequence = sequence;
    this.opts.logger.info({ sequence, roots: roots.map((r) => r.fingerprint256) }, 'trust bundle updated');
    const leaf = new X509Certificate(current.certChainPem);
    if (!roots.some((r) => leaf.checkIssued(r) && leaf.verify(r.publicKey)) && !this.chainsThroughIntermediate(leaf, roots)) {
      this.opts.logger.error({ serial: current.serial }, "the new trust bundle does not hold the root of this agent's certificate (its CA was rotated); renewing now");
      this.renewSoon(0);
    }
    this.emit('rotated', next);
    return true;
  }

  /** Renews at a random point within `withinMs` (the federation asked: CA rotation with --reissue). */
  renewSoon(withinMs: number): void {
    const delay = Math.floor(this.random() * Math.max(0, withinMs));
    this.opts.logger.info({ inMs: delay }, 'renewing the certificate now, as the federation asked');
    this.schedule(delay, 0);
  }

  /** What the agent tells the federation in an IdentityReport. */
  identityReport(): { leafCertPem: string; bundleSequence: number } {
    const leaf = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/.exec(this.current().certChainPem);
    return { leafCertPem: leaf?.[0] ?? '', bundleSequence: this.bundleSequence };
  }

  // A plug-in CA: the leaf is issued by an intermediate sent in the chain.
  private chainsThroughIntermediate(leaf: X509Certificate, roots: X509Certificate[]): boolean {
    const blocks = this.current().certChainPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    let child = leaf;
    for (const pem of blocks.slice(1)) {
      const parent = new X509Certificate(pem);
      if (!child.checkIssued(parent)) return false;
      child = parent;
    }
    return blocks.length > 1 && roots.some((r) => child.checkIssued(r) && child.verify(r.publicKey));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(delayMs: number, attempt: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.renew()
        .then((id) => this.schedule(this.renewalDelay(id), 0))
        .catch((err) => {
          const notAfter = this.current().notAfter;
          const state = expiryWarning({ notBefore: this.notBefore(), notAfter, now: new Date(this.clock()) });
          const retry = retryDelayMs(attempt, { notAfter, now: new Date(this.clock()), random: this.random() });
          const fields = { err: errorMessage(err), notAfter: notAfter.toISOString(), retryInMs: retry };
          // Keep serving with the old certificate; grow louder as expiry nears.
          if (state === 'ok') this.opts.logger.warn(fields, 'certificate renewal failed; keeping the current one');
          else this.opts.logger.error(fields, state === 'expired' ? 'certificate has EXPIRED and renewal keeps failing' : 'certificate expires soon and renewal keeps failing');
          this.schedule(retry, attempt + 1);
        });
    }, delayMs);
    this.timer.unref();
  }

  private renewalDelay(id: TlsIdentity): number {
    const received = this.receivedAt.get(id);
    return renewalDelayMs({ notBefore: parseCertChain(id.certChainPem).notBefore, notAfter: id.notAfter, now: new Date(this.clock()), random: this.random(), ...(received ? { receivedAt: received } : {}) });
  }

  private notBefore(): Date {
    return parseCertChain(this.current().certChainPem).notBefore;
  }

  private joinCredential(): JoinCredential {
    const k = this.opts.kubernetes;
    if (k) return { kubernetesToken: this.readTokenFile(k.tokenFile, 'service-account token'), cluster: k.cluster };
    const file = this.opts.tokenFile;
    if (!file) {
      throw new KedgeError('KEDGE_NO_TOKEN', `no saved identity in ${this.opts.dataDir} and no federation.tokenFile in the config: create a token with "kedge token create" and set federation.tokenFile`);
    }
    return { joinToken: this.readTokenFile(file, 'join token') };
  }

  private readTokenFile(file: string, what: string): string {
    let token: string;
    try {
      token = fs.readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new KedgeError('KEDGE_NO_TOKEN', `cannot read the ${what} file ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`, { cause: err });
    }
    if (!token) throw new KedgeError('KEDGE_NO_TOKEN', `the ${what} file ${file} is empty`);
    return token;
  }

  private async requestIdentity(credential: JoinCredential, current: TlsIdentity | undefined): Promise<TlsIdentity> {
    const { keyPem, csrPem } = await generateKeyAndCsr();
    // Issuance happens after this moment: timing renewal from it is never late.
    const sentAt = new Date(this.clock());
    const res = await callAnyFederation(this.opts.federation, current, (client) => signOnce(client, csrPem, credential));
    const id = toTlsIdentity(keyPem, res.certChainPem.join(''), res.trustBundlePem.join(''));
    if (id.spiffeId !== res.spiffeId) throw new KedgeError('KEDGE_BAD_CERT', `federation said ${res.spiffeId} but the certificate names ${id.spiffeId}`);
    saveIdentity(this.opts.dataDir, id);
    this.receivedAt.set(id, sentAt);
    if (credential && 'joinToken' in credential && this.opts.tokenFile) this.removeUsedToken(this.opts.tokenFile);
    return id;
  }

  // A join token is single-use by default and worthless once the identity
  // is saved: it goes, so it cannot leak from the host later. A token file
  // the agent may not delete (a read-only /etc) stays, with a warning.
  private removeUsedToken(file: string): void {
    try {
      fs.rmSync(file);
      this.opts.logger.info({ tokenFile: file }, 'identity issued; join token removed');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.opts.logger.warn({ tokenFile: file, err: errorMessage(err) }, 'identity issued, but the join token file cannot be removed; delete it by hand');
      }
    }
  }
}

/** The CA certificates of a pushed bundle; KEDGE_BAD_BUNDLE when it is empty or holds anything else. */
function parseBundle(rootsPem: readonly string[]): X509Certificate[] {
  if (rootsPem.length === 0) throw new KedgeError('KEDGE_BAD_BUNDLE', 'the federation sent an empty trust bundle');
  return rootsPem.map((pem, i) => {
    let c: X509Certificate;
    try {
      c = new X509Certificate(pem);
    } catch (err) {
      throw new KedgeError('KEDGE_BAD_BUNDLE', `root #${i + 1} of the trust bundle cannot be parsed`, { cause: err });
    }
    if (!c.ca) throw new KedgeError('KEDGE_BAD_BUNDLE', `root #${i + 1} of the trust bundle (${c.subject}) is not a CA certificate`);
    return c;
  });
}

function sleep(ms: number): Promise<void> {
  // Not unref'd: while joining, this timer is what keeps the agent alive.
  return new Promise((r) => setTimeout(r, ms));
}

/** What a retried join says: unreachable, or reached but unable to sign now. */
function joinRetryMessage(err: KedgeError): string {
  return err.code === 'KEDGE_FEDERATION_UNREACHABLE' ? 'federation unreachable; will retry' : 'the federation could not sign now; will retry';
}
