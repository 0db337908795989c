// Bindings: what a token (or a pod's TokenReview) granted, tied to the
// certificates it yields. One binding per identity issuance: a join token
// redeemed, or a pod admitted. Renewals add certificates to the same binding,
// so the grant survives renewal; only the binding's newest certificate (or
// the one before it, the overlap for a renewal whose answer was lost) may
// renew or open a Connect stream, so a superseded or stolen older key is
// worth nothing. A binding is also the owner of one workload name: the name
// index makes "no other certificate may use it" one guarded write.
//
// Store layout (all durable):
//   /kedge/bindings/<id>                 BindingRecord
//   /kedge/cert-bindings/<serial>        { binding, notAfter }
//   /kedge/workload-names/<ns>/<name>    { binding }
//   /kedge/revoked/<serial>              { binding, notAfter, at, reason }
import { randomBytes } from 'node:crypto';
import { KedgeError, hasCode } from '../../proto/model/errors';
import type { KeyValue, Store } from '../store/types';
import type { Grant } from './grant';

export const BINDINGS_PREFIX = '/kedge/bindings/';
export const CERT_BINDINGS_PREFIX = '/kedge/cert-bindings/';
export const WORKLOAD_NAMES_PREFIX = '/kedge/workload-names/';
export const REVOKED_PREFIX = '/kedge/revoked/';

/** One certificate of a binding. */
export interface BoundCert { serial: string; notAfter: number }

/** What was granted to one issuance, and the certificates it has yielded (newest first). */
export interface BindingRecord {
  id: string;
  /** The SPIFFE ID every certificate of the binding carries. */
  identity: string;
  namespace: string;
  serviceAccount: string;
  /** The token's grant; absent for a pod, whose grant comes from its cluster (the services selecting it). */
  grant?: Grant;
  /** Pods: the cluster whose TokenReview admitted it, and the pod's name when the token said. */
  cluster?: string;
  podName?: string;
  /** How it was issued: `token <id>` or `kubernetes <cluster>`. */
  via: string;
  /** Without a --workload pattern: the workload name it registered first, the only one it may use. */
  name?: string;
  /** Written by earlier versions: the names it owned. The names index (/kedge/workload-names/) is what says so now. */
  names?: string[];
  /** Unexpired certificates, newest first. */
  certs: BoundCert[];
  revoked?: { at: string; reason: string };
  createdAt: string;
}

/** A certificate the federation revoked. */
export interface Revocation { serial: string; binding: string; notAfter: number; at: string; reason: string }

/** Why a certificate may not be used to renew or connect, or undefined when it may. */
export function certRefusal(b: BindingRecord, serial: string): string | undefined {
  if (b.revoked) return `its workload was revoked at ${b.revoked.at} (${b.revoked.reason}); join again with a new token`;
  const i = b.certs.findIndex((c) => c.serial === serial);
  if (i < 0 || i > 1) return 'a newer certificate of this workload has been issued since; only the newest may renew or connect (restore the agent\'s current identity, or join again with a new token)';
  return undefined;
}

function parse<T>(kv: KeyValue): T {
  try {
    return JSON.parse(kv.value) as T;
  } catch (err) {
    throw new KedgeError('KEDGE_STORE_CORRUPT', `store record ${kv.key} is not valid JSON`, { cause: err });
  }
}

/** Reads and writes bindings in the store; every change is a guarded write, so replicas never lose each other's. */
export class Bindings {
  constructor(private readonly store: Store, private readonly clock: () => number = Date.now) {}

  /** Creates a binding before its first certificate is signed. */
  async create(b: Omit<BindingRecord, 'id' | 'certs' | 'createdAt'>): Promise<BindingRecord> {
    const rec: BindingRecord = { ...b, id: randomBytes(12).toString('base64url'), certs: [], createdAt: new Date(this.clock()).toISOString() };
    await this.store.put(BINDINGS_PREFIX + rec.id, JSON.stringify(rec), { expectRevision: 0 });
    return rec;
  }

  async get(id: string): Promise<BindingRecord | undefined> {
    const kv = await this.store.get(BINDINGS_PREFIX + id);
    return kv ? parse<BindingRecord>(kv) : undefined;
  }

  /** The binding a certificate serial belongs to, or undefined for a certificate issued before bindings. */
  async ofSerial(serial: string): Promise<BindingRecord | undefined> {
    const kv = await this.store.get(CERT_BINDINGS_PREFIX + serial.toUpperCase());
    if (!kv) return undefined;
    return this.get(parse<{ binding: string }>(kv).binding);
  }

  /**
   * Records a newly signed certificate: it becomes the newest, `renewedFrom`
   * (the certificate that asked for it, if any) the one before it, and every
   * other certificate is superseded. Expired certificates are dropped.
   */
  async addCert(id: string, cert: BoundCert, renewedFrom?: string): Promise<void> {
    await this.store.put(CERT_BINDINGS_PREFIX + cert.serial.toUpperCase(), JSON.stringify({ binding: id, notAfter: cert.notAfter }));
    await this.update(id, (b) => {
      const now = this.clock();
      const prev = renewedFrom ? b.certs.find((c) => c.serial === renewedFrom) : undefined;
      const rest = b.certs.filter((c) => c !== prev && c.notAfter > now);
      return { ...b, certs: [cert, ...(prev ? [prev] : []), ...rest] };
    });
  }

  /** Applies `change` to a binding with a revision guard, retrying on conflict. */
  async update(id: string, change: (b: BindingRecord) => BindingRecord | undefined): Promise<BindingRecord> {
    for (;;) {
      const kv = await this.store.get(BINDINGS_PREFIX + id);
      if (!kv) throw new KedgeError('KEDGE_NOT_FOUND', `binding ${id} is not in the store`);
      const cur = parse<BindingRecord>(kv);
      const next = change(cur);
      if (!next) return cur;
      try {
        await this.store.put(kv.key, JSON.stringify(next), { expectRevision: kv.modRevision });
        return next;
      } catch (err) {
        if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
      }
    }
  }

  /**
   * Makes `binding` the owner of workload `ns/name`. Refused when another
   * binding owns it and still has a live, unrevoked certificate; an owner
   * that is revoked or whose certificates have all expired is replaced (a VM
   * re-joining after a long time off).
   */
  async claimName(ns: string, name: string, binding: BindingRecord): Promise<void> {
    const key = `${WORKLOAD_NAMES_PREFIX}${ns}/${name}`;
    for (;;) {
      const kv = await this.store.get(key);
      if (kv) {
        const owner = parse<{ binding: string }>(kv).binding;
        if (owner === binding.id) break;
        const other = await this.get(owner);
        const live = other && !other.revoked && other.certs.some((c) => c.notAfter > this.clock());
        if (live) {
          throw new KedgeError(
            'KEDGE_PERMISSION_DENIED',
            `workload ${ns}/${name} belongs to another certificate (${other.identity}, joined ${other.createdAt} via ${other.via}); pick another workload name, or remove the other one first with kedge delete workload ${ns}/${name}`,
          );
        }
      }
      try {
        await this.store.put(key, JSON.stringify({ binding: binding.id }), { expectRevision: kv?.modRevision ?? 0 });
        break;
      } catch (err) {
        if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
      }
    }
    // Without a --workload pattern the first name is the only one the
    // certificate may ever use, and the binding records it. With a pattern
    // the names index alone says which names the binding owns: a binding of
    // a fleet (one certificate for many names) is not rewritten, and its
    // record does not grow, with every name it claims.
    if (binding.grant?.workload) return;
    await this.update(binding.id, (b) => (b.name === name ? undefined : { ...b, name }));
  }

  /** The binding owning a workload name, if any. */
  async ownerOf(ns: string, name: string): Promise<BindingRecord | undefined> {
    const kv = await this.store.get(`${WORKLOAD_NAMES_PREFIX}${ns}/${name}`);
    return kv ? this.get(parse<{ binding: string }>(kv).binding) : undefined;
  }

  /**
   * Revokes a binding: it can no longer renew or connect, and every one of
   * its unexpired certificates is listed under /kedge/revoked/ (which every
   * replica watches and pushes to every agent). Releases its workload name.
   */
  async revoke(id: string, reason: string): Promise<Revocation[]> {
    const at = new Date(this.clock()).toISOString();
    const b = await this.update(id, (cur) => (cur.revoked ? undefined : { ...cur, revoked: { at, reason } }));
    const now = this.clock();
    const out: Revocation[] = [];
    for (const c of b.certs) {
      if (c.notAfter <= now) continue;
      const r: Revocation = { serial: c.serial, binding: id, notAfter: c.notAfter, at: b.revoked?.at ?? at, reason };
      await this.store.put(REVOKED_PREFIX + c.serial, JSON.stringify(r));
      out.push(r);
    }
    const owned = (await this.store.list(`${WORKLOAD_NAMES_PREFIX}${b.namespace}/`)).kvs.filter((kv) => parse<{ binding: string }>(kv).binding === id);
    for (const kv of owned) await this.store.delete(kv.key, { expectRevision: kv.modRevision }).catch(() => undefined);
    return out;
  }

  /** Deletes revocations and certificate indexes of certificates that have expired; returns how many. */
  async sweep(): Promise<number> {
    const now = this.clock();
    let n = 0;
    for (const prefix of [REVOKED_PREFIX, CERT_BINDINGS_PREFIX]) {
      const { kvs } = await this.store.list(prefix);
      for (const kv of kvs) {
        let notAfter: number;
        try {
          notAfter = (JSON.parse(kv.value) as { notAfter: number }).notAfter;
        } catch {
          continue;
        }
        if (notAfter > now) continue;
        await this.store.delete(kv.key, { expectRevision: kv.modRevision }).catch(() => undefined);
        n += 1;
      }
    }
    return n;
  }
}
