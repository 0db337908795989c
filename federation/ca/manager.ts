// The CA at run time on one replica: loads the built-in root from the store
// (creating it on first start) or the plug-in CA from its files, unwraps
// keys with the operator's key-encryption key, follows the store so every
// replica signs with the same root and trusts the same bundle, and runs the
// steps of a rotation (state.ts) with revision-guarded writes.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { KedgeError, errorMessage, hasCode } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { readTextFile, writeFileAtomic } from '../../proto/model/files';
import type { Store } from '../store/types';
import { CertificateAuthority, type IssuedKeyPair } from './authority';
import { createRootCaAsync, loadPluggedCa, type CaMaterial } from './material';
import { describeKekSource, obtainKek, type KekSource } from './kek';
import { unwrapKey, wrapKey } from './key-wrap';
import {
  advanceRotation, finishRotation, fingerprintOf, initialState, parseCaState, requestReissue, rotationBlockers, rotationInProgress, servingRoot, startRotation, trustedRoots,
  type AgentCaView, type CaState, type RotationBlocker, type StoredRoot,
} from './state';

/** Store key of the built-in CA (roots, keys, rotation). */
export const ROOT_CA_KEY = '/kedge/ca/root';
/** How long to wait before asking a failed --ca-key-command again. */
export const KEK_RETRY_MS = 30_000;

/** Options for the CA manager. */
export interface CaManagerOptions {
  store: Store;
  trustDomain: string;
  workloadTtlMs: number;
  logger: Logger;
  /** The replica's data dir: the last serving certificate is kept in DATA/serving/. */
  dataDir: string;
  plugged?: { certFile: string; keyFile: string } | undefined;
  kek?: KekSource | undefined;
  clock?: () => number;
}

/** What every other part reads: one immutable value, replaced on each change. */
export interface CaView {
  /** Roots the mesh trusts, PEM. */
  roots: string[];
  /** Increases whenever `roots` changes. */
  sequence: number;
  /** Certificates a workload certificate must be issued by (the roots, or the plug-in intermediate). */
  issuers: X509Certificate[];
  /** Signs workload certificates; undefined when the key cannot be used (see `unavailable`). */
  authority: CertificateAuthority | undefined;
  /** Issues the federation's own serving certificate. */
  servingAuthority: CertificateAuthority | undefined;
  /** Why this replica cannot sign, when it cannot. */
  unavailable: string | undefined;
  /** The stored state (built-in CA only). */
  state: CaState | undefined;
}

/** What `kedge ca rotate` asked for. */
export interface RotateRequest {
  reissue?: boolean;
  finish?: boolean;
}

/** The answer to a rotate request. */
export interface RotateResult {
  action: 'started' | 'reissue-requested' | 'finished';
  message: string;
}

/** The built-in or plug-in CA of this replica. */
export class CaManager extends EventEmitter {
  private view!: CaView;
  private revision = 0;
  private kek: Buffer | undefined;
  private kekProblem: string | undefined;
  private kekTimer: NodeJS.Timeout | undefined;
  private readonly unwrapped = new Map<string, string>();
  private watch: { close(): void } | undefined;
  private closed = false;
  private readonly clock: () => number;

  private constructor(private readonly opts: CaManagerOptions) {
    super();
    this.clock = opts.clock ?? Date.now;
  }

  /** Loads (or creates) the CA; rejects on a wrong key-encryption key or a damaged record. */
  static async open(opts: CaManagerOptions): Promise<CaManager> {
    const m = new CaManager(opts);
    await m.load();
    return m;
  }

  current(): CaView {
    return this.view;
  }

  /** The signing CA; KEDGE_CA_KEY_UNAVAILABLE (saying why) when this replica cannot sign. */
  authority(): CertificateAuthority {
    const a = this.view.authority;
    if (!a) throw new KedgeError('KEDGE_CA_KEY_UNAVAILABLE', `this federation cannot sign certificates now: ${this.view.unavailable ?? 'no CA key'}`);
    return a;
  }

  isPlugged(): boolean {
    return this.opts.plugged !== undefined;
  }

  /**
   * Fingerprint of the trusted root a leaf (PEM) chains to, when one of the
   * issuers issued it (and, given `spiffeId`, it certifies exactly that ID).
   */
  rootOf(leafPem: string, spiffeId?: string): string | undefined {
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(leafPem);
    } catch {
      return undefined;
    }
    if (spiffeId !== undefined && leaf.subjectAltName !== `URI:${spiffeId}`) return undefined;
    const issuer = this.view.issuers.find((i) => leaf.checkIssued(i) && leaf.verify(i.publicKey));
    if (!issuer) return undefined;
    // Built-in roots sign directly; a plug-in intermediate hangs under the one plug-in root.
    return this.view.state ? issuer.fingerprint256 : fingerprintOf(this.view.roots[0]!);
  }

  /**
   * The federation's serving certificate: a fresh one when this replica can
   * issue it (saved to DATA/serving/ for a later start without the key), else
   * the saved one while it is valid and chains to a trusted root.
   */
  async servingIdentity(spiffeId: string, ttlMs: number): Promise<IssuedKeyPair | undefined> {
    const dir = path.join(this.opts.dataDir, 'serving');
    const a = this.view.servingAuthority;
    if (a) {
      const issued = await a.issueServingAsync(spiffeId, { ttlMs });
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileAtomic(path.join(dir, 'key.pem'), issued.keyPem, 0o600);
      writeFileAtomic(path.join(dir, 'cert-chain.pem'), issued.chainPem.join(''), 0o644);
      return issued;
    }
    try {
      const chainPem = fs.readFileSync(path.join(dir, 'cert-chain.pem'), 'utf8');
      const keyPem = fs.readFileSync(path.join(dir, 'key.pem'), 'utf8');
      const leaf = new X509Certificate(chainPem);
      const notAfter = new Date(leaf.validTo);
      if (notAfter.getTime() <= this.clock() || this.rootOf(chainPem) === undefined) return undefined;
      return { keyPem, chainPem: chainPem.split(/(?<=-----END CERTIFICATE-----\n?)/).filter((s) => s.includes('BEGIN')), notAfter };
    } catch {
      return undefined;
    }
  }

  /** The agents that hold the rotation in progress back. */
  blockers(agents: readonly AgentCaView[]): RotationBlocker[] {
    return this.view.state ? rotationBlockers(this.view.state, agents) : [];
  }

  /** Starts a rotation, asks for re-issue on one in progress, or finishes it. */
  async rotate(req: RotateRequest): Promise<RotateResult> {
    if (this.opts.plugged) {
      throw new KedgeError(
        'KEDGE_CA_PLUGGED',
        `this federation signs with a plug-in CA (--ca-cert ${this.opts.plugged.certFile}); "kedge ca rotate" rotates only the built-in root. ` +
          'To replace the plug-in intermediate under the same root, restart each replica with the new --ca-cert/--ca-key files (agents keep working: the bundle is unchanged)',
      );
    }
    if (!req.finish && !this.view.authority) {
      throw new KedgeError('KEDGE_CA_KEY_UNAVAILABLE', `cannot rotate the CA on a replica that cannot sign: ${this.view.unavailable ?? 'no CA key'}`);
    }
    let made: StoredRoot | undefined;
    for (;;) {
      const kv = await this.opts.store.get(ROOT_CA_KEY);
      if (!kv) throw new KedgeError('KEDGE_CA_INVALID', `the CA record ${ROOT_CA_KEY} is missing from the store`);
      const state = parseCaState(kv.value);
      let next: CaState;
      let result: RotateResult;
      if (req.finish) {
        next = finishRotation(state);
        result = { action: 'finished', message: 'the old root is retired: only the new root is trusted and signs' };
      } else if (state.rotation) {
        if (!req.reissue) throw rotationInProgress(state.rotation);
        next = requestReissue(state);
        result = { action: 'reissue-requested', message: `a CA rotation is already in progress (phase ${state.rotation.phase}); agents are told to renew under the new root as soon as it signs` };
      } else {
        made ??= await this.makeRoot(state.generation + 1);
        next = startRotation(state, made, { now: new Date(this.clock()), reissue: req.reissue ?? false });
        result = { action: 'started', message: `rotation started: the new root is added to the trust bundle (sequence ${next.sequence}); it signs once every agent has that bundle` };
      }
      try {
        const put = await this.opts.store.put(ROOT_CA_KEY, JSON.stringify(next), { expectRevision: kv.modRevision });
        this.opts.logger.info({ action: result.action, sequence: next.sequence, rotation: next.rotation && { phase: next.rotation.phase, from: next.rotation.from, to: next.rotation.to } }, `CA rotation: ${result.action}`);
        this.apply(next, put.revision);
        return result;
      } catch (err) {
        if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
      }
    }
  }

  /** Takes the next rotation step when nothing blocks it; true when this replica wrote it. */
  async advance(agents: readonly AgentCaView[]): Promise<boolean> {
    const state = this.view.state;
    if (!state?.rotation) return false;
    const next = advanceRotation(state, agents, new Date(this.clock()));
    if (!next) return false;
    try {
      const put = await this.opts.store.put(ROOT_CA_KEY, JSON.stringify(next), { expectRevision: this.revision });
      this.opts.logger.info({ sequence: next.sequence, signing: next.signing }, next.rotation ? 'CA rotation: every agent has the new bundle; the new root signs now' : 'CA rotation finished: every agent holds a certificate from the new root; the old root is retired');
      this.apply(next, put.revision);
      return true;
    } catch (err) {
      // Another replica took the step first; its write arrives by the watch.
      if (hasCode(err, 'KEDGE_STORE_CONFLICT')) return false;
      throw err;
    }
  }

  close(): void {
    this.closed = true;
    this.watch?.close();
    if (this.kekTimer) clearTimeout(this.kekTimer);
  }

  private async load(): Promise<void> {
    const { opts } = this;
    if (opts.plugged) {
      const read = (f: string, what: string) => readTextFile(f, 'KEDGE_CA_INVALID', what);
      const material = loadPluggedCa(read(opts.plugged.certFile, '--ca-cert'), read(opts.plugged.keyFile, '--ca-key'));
      opts.logger.info({ caCert: opts.plugged.certFile }, 'using plug-in CA');
      const authority = new CertificateAuthority(material, { workloadTtlMs: opts.workloadTtlMs });
      // The plug-in root changes only with the files; its notBefore (seconds)
      // increases when the operator plugs in a newer root.
      const sequence = Math.floor(Date.parse(new X509Certificate(material.rootsPem[0]!).validFrom) / 1000);
      this.view = { roots: [...material.rootsPem], sequence, issuers: [new X509Certificate(material.certPem)], authority, servingAuthority: authority, unavailable: undefined, state: undefined };
      return;
    }
    await this.refreshKek();
    let kv = await opts.store.get(ROOT_CA_KEY);
    while (!kv) {
      const root = await this.makeRoot(1);
      try {
        // Create-only: when replicas race on first start, one root wins and all use it.
        await opts.store.put(ROOT_CA_KEY, JSON.stringify(initialState(root)), { expectRevision: 0 });
        opts.logger.info({ trustDomain: opts.trustDomain, keyEncrypted: 'wrapped' in root.key }, 'created a new self-signed root CA');
      } catch (err) {
        if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
      }
      kv = await opts.store.get(ROOT_CA_KEY);
    }
    let state = parseCaState(kv.value);
    // Checked here, at start: a wrong key fails the start instead of a replica that quietly cannot sign.
    for (const r of state.roots) this.unwrap(r);
    if (this.kek && state.roots.some((r) => 'pem' in r.key)) ({ state } = await this.encryptStored());
    if (!opts.kek && state.roots.some((r) => 'pem' in r.key)) {
      opts.logger.warn(`THE CA PRIVATE KEY IS STORED UNENCRYPTED in ${opts.store.kind === 'etcd' ? 'etcd' : 'the embedded store'} (${ROOT_CA_KEY}): anyone who reads the store can issue mesh identities. Give a key-encryption key (--ca-key-encryption-key-file FILE, the environment variable KEDGE_CA_KEY_ENCRYPTION_KEY or --ca-key-command CMD) and it is encrypted at the next start`);
    }
    await this.follow();
  }

  /**
   * Reads the record with the store's revision and watches from there; when
   * the watch fails (etcd lost, history compacted) it reads and watches again.
   */
  private async follow(): Promise<void> {
    const { kvs, revision } = await this.opts.store.list(ROOT_CA_KEY);
    const kv = kvs.find((x) => x.key === ROOT_CA_KEY);
    if (!kv) throw new KedgeError('KEDGE_CA_INVALID', `the CA record ${ROOT_CA_KEY} is missing from the store`);
    if (!this.view || kv.modRevision > this.revision) this.apply(parseCaState(kv.value), kv.modRevision);
    this.watch?.close();
    this.watch = this.opts.store.watch(ROOT_CA_KEY, { fromRevision: revision }, (events) => {
      for (const ev of events) {
        if (ev.type !== 'put' || ev.kv.key !== ROOT_CA_KEY || ev.kv.modRevision <= this.revision) continue;
        try {
          this.apply(parseCaState(ev.kv.value), ev.kv.modRevision);
        } catch (err) {
          this.opts.logger.error({ err: errorMessage(err) }, 'cannot use the CA record written to the store; keeping the current CA');
        }
      }
    }, (err) => {
      if (this.closed) return;
      this.opts.logger.warn({ err: errorMessage(err) }, 'lost the watch on the CA record; reading it again');
      const retry = () => {
        if (this.closed) return;
        this.follow().catch((e) => {
          this.opts.logger.warn({ err: errorMessage(e) }, 'cannot read the CA record; retrying');
          setTimeout(retry, 1_000).unref();
        });
      };
      setTimeout(retry, 500).unref();
    });
  }

  /** Wraps every plaintext key under the KEK (the migration of an existing store), with a revision guard. */
  private async encryptStored(): Promise<{ state: CaState }> {
    for (;;) {
      const kv = await this.opts.store.get(ROOT_CA_KEY);
      if (!kv) throw new KedgeError('KEDGE_CA_INVALID', `the CA record ${ROOT_CA_KEY} vanished from the store`);
      const state = parseCaState(kv.value);
      if (state.roots.every((r) => 'wrapped' in r.key)) return { state };
      const next: CaState = { ...state, roots: state.roots.map((r) => ('pem' in r.key ? { certPem: r.certPem, key: { wrapped: wrapKey(r.key.pem, this.kek!, fingerprintOf(r.certPem)) } } : r)) };
      try {
        const put = await this.opts.store.put(ROOT_CA_KEY, JSON.stringify(next), { expectRevision: kv.modRevision });
        this.opts.logger.warn({ kek: describeKekSource(this.opts.kek!) }, 'encrypted the CA private key in the store with the key-encryption key (it was stored unencrypted); every replica now needs that key to sign');
        // The unencrypted value must not linger in the store's history.
        if (this.opts.store.discardHistory) await this.opts.store.discardHistory();
        else {
          this.opts.logger.warn({ revision: put.revision }, `the unencrypted CA key is still in etcd's history: compact and defragment etcd now (etcdctl compact ${put.revision} && etcdctl defrag --cluster)`);
        }
        return { state: next };
      } catch (err) {
        if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
      }
    }
  }

  private async makeRoot(generation: number): Promise<StoredRoot> {
    if (this.opts.kek && !this.kek) {
      throw new KedgeError('KEDGE_CA_KEY_UNAVAILABLE', `cannot create a root CA: the key-encryption key is unavailable (${this.kekProblem}); a new key is never stored unencrypted when one is configured`);
    }
    const m: CaMaterial = await createRootCaAsync({ trustDomain: this.opts.trustDomain, generation });
    return { certPem: m.certPem, key: this.kek ? { wrapped: wrapKey(m.keyPem, this.kek, fingerprintOf(m.certPem)) } : { pem: m.keyPem } };
  }

  /** Obtains the KEK; a failing command is retried later (the replica serves meanwhile), a bad file is fatal. */
  private async refreshKek(): Promise<void> {
    const src = this.opts.kek;
    if (!src || this.kek) return;
    try {
      this.kek = await obtainKek(src);
      this.kekProblem = undefined;
    } catch (err) {
      if (!hasCode(err, 'KEDGE_CA_KEK_UNAVAILABLE')) throw err;
      this.kekProblem = errorMessage(err);
      this.opts.logger.error({ err: this.kekProblem, retryInMs: KEK_RETRY_MS }, 'cannot obtain the CA key-encryption key; this replica serves but cannot sign until it can');
      this.kekTimer = setTimeout(() => {
        void this.refreshKek().then(() => {
          if (this.kek && this.view?.state && !this.closed) this.apply(this.view.state, this.revision);
        }, (e) => this.opts.logger.error({ err: errorMessage(e) }, 'cannot use the CA key-encryption key'));
      }, KEK_RETRY_MS);
      this.kekTimer.unref();
    }
  }

  /** A root's private key PEM, or why it cannot be had. Throws KEDGE_CA_KEY_WRONG. */
  private unwrap(root: StoredRoot): { pem: string } | { problem: string } {
    if ('pem' in root.key) return { pem: root.key.pem };
    const fp = fingerprintOf(root.certPem);
    const cached = this.unwrapped.get(fp);
    if (cached) return { pem: cached };
    if (!this.opts.kek) {
      return { problem: 'the CA private key in the store is encrypted and no key-encryption key is configured; give it with --ca-key-encryption-key-file FILE, the environment variable KEDGE_CA_KEY_ENCRYPTION_KEY or --ca-key-command CMD' };
    }
    if (!this.kek) return { problem: `the CA key-encryption key is unavailable: ${this.kekProblem ?? 'not obtained yet'}` };
    const pem = unwrapKey(root.key.wrapped, this.kek, fp, describeKekSource(this.opts.kek));
    this.unwrapped.set(fp, pem);
    return { pem };
  }

  private authorityFor(state: CaState, fp: string): { authority: CertificateAuthority } | { problem: string } {
    const root = state.roots.find((r) => fingerprintOf(r.certPem) === fp)!;
    let key: { pem: string } | { problem: string };
    try {
      key = this.unwrap(root);
    } catch (err) {
      return { problem: errorMessage(err) };
    }
    if ('problem' in key) return key;
    return { authority: new CertificateAuthority({ certPem: root.certPem, keyPem: key.pem, chainPem: [], rootsPem: trustedRoots(state) }, { workloadTtlMs: this.opts.workloadTtlMs, clock: this.clock }) };
  }

  private apply(state: CaState, revision: number): void {
    const prev = this.view;
    this.revision = revision;
    const signing = this.authorityFor(state, state.signing);
    const serving = servingRoot(state) === state.signing ? signing : this.authorityFor(state, servingRoot(state));
    const unavailable = 'problem' in signing ? signing.problem : undefined;
    this.view = {
      roots: trustedRoots(state),
      sequence: state.sequence,
      issuers: state.roots.map((r) => new X509Certificate(r.certPem)),
      authority: 'authority' in signing ? signing.authority : undefined,
      servingAuthority: 'authority' in serving ? serving.authority : undefined,
      unavailable,
      state,
    };
    for (const fp of this.unwrapped.keys()) if (!state.roots.some((r) => fingerprintOf(r.certPem) === fp)) this.unwrapped.delete(fp);
    if (unavailable && prev?.unavailable !== unavailable) this.opts.logger.error({ reason: unavailable }, 'this federation cannot sign certificates: agents keep connecting and receiving updates, but joins and renewals are refused until the CA key is available');
    if (prev) this.emit('change', this.view, prev);
  }
}
