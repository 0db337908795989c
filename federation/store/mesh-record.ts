// What every replica on one store must agree on, checked before a replica
// does anything with the store: the trust domain, where the CA comes from
// (the built-in root in the store, or a plug-in intermediate under one
// root), and the newest Kedge that used the store. The first replica writes
// `/kedge/mesh/identity` (create-only); every later one compares and
// refuses to start on a difference, naming both sides and what to change.
// A replica with another trust domain would issue identities no other
// replica's agents accept; one with another CA would split the mesh in two.
//
// The data dir carries the Kedge version that last ran on it too
// (DATA_DIR/kedge-version): a data dir from a newer Kedge is refused with
// the version named, before its files are read.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { KedgeError, hasCode } from '../../proto/model/errors';
import { writeFileAtomic } from '../../proto/model/files';
import type { Store } from './types';

/** Where the mesh record lives. */
export const MESH_RECORD_KEY = '/kedge/mesh/identity';
/** The CA record of the built-in CA (federation/ca/manager.ts ROOT_CA_KEY; repeated so the store layer needs no CA import). */
const CA_RECORD_KEY = '/kedge/ca/root';
/** The data dir's version marker. */
export const VERSION_FILE = 'kedge-version';

/** Where this replica's CA comes from. */
export type CaSource = { kind: 'built-in' } | { kind: 'plug-in'; rootFingerprint: string; certFile: string };

/** The stored record. */
export interface MeshRecord {
  trustDomain: string;
  ca: 'built-in' | 'plug-in';
  /** SHA-256 fingerprint of the plug-in root. */
  pluginRoot?: string;
  /** The newest Kedge version that started on this store. */
  kedge: string;
  /** The replica that wrote the record first. */
  createdBy: string;
}

/** Major and minor of a version: patch releases read each other's data; a newer minor may not be read by an older one. */
export function compareVersions(a: string, b: string): number {
  const p = (v: string) => (/^(\d+)\.(\d+)/.exec(v) ?? [, '0', '0']).slice(1, 3).map(Number) as [number, number];
  const [x, y] = [p(a), p(b)];
  return x[0] !== y[0] ? x[0] - y[0] : x[1] - y[1];
}

/** Refuses a data dir last used by a newer Kedge (major.minor); records this version otherwise. */
export function checkDataDirVersion(dataDir: string, version: string): void {
  const file = path.join(dataDir, VERSION_FILE);
  let recorded: string | undefined;
  try {
    recorded = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new KedgeError('KEDGE_DATA_DIR', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (recorded !== undefined && !/^\d+\.\d+/.test(recorded)) {
    throw new KedgeError('KEDGE_DATA_DIR', `${file} holds "${recorded.slice(0, 40)}", not a Kedge version; write the version of the Kedge that last ran on this data dir into it (or delete it if that is this one, ${version})`);
  }
  if (recorded !== undefined && compareVersions(recorded, version) > 0) {
    throw new KedgeError(
      'KEDGE_DATA_DIR_NEWER',
      `data dir ${dataDir} was last used by Kedge ${recorded}, newer than this Kedge ${version}: its data may hold what this version cannot read. Run Kedge ${recorded} or newer, or restore a backup taken with this version. Nothing was changed.`,
    );
  }
  if (recorded !== version && (recorded === undefined || compareVersions(recorded, version) <= 0)) writeFileAtomic(file, `${version}\n`, 0o644);
}

/** The trust domain a built-in root names in its URI SAN (spiffe://<domain>). */
function rootTrustDomain(certPem: string): string | undefined {
  try {
    const m = /URI:spiffe:\/\/([^/,\s]+)/.exec(new X509Certificate(certPem).subjectAltName ?? '');
    return m?.[1];
  } catch {
    return undefined;
  }
}

/** Reads the plug-in root (the last certificate of the --ca-cert chain) fingerprint. */
export function pluginRootFingerprint(chainPem: string, file = '--ca-cert'): string {
  const certs = chainPem.split(/(?<=-----END CERTIFICATE-----)/).filter((s) => s.includes('BEGIN CERTIFICATE'));
  try {
    return new X509Certificate(certs[certs.length - 1]!.slice(certs[certs.length - 1]!.indexOf('-----BEGIN'))).fingerprint256;
  } catch (err) {
    throw new KedgeError('KEDGE_CA_INVALID', `${file} holds no readable PEM certificate chain (intermediate first, root last): ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Checks this replica against the store's mesh record, writing the record
 * when the store has none (create-only, so racing first replicas agree).
 * Throws KEDGE_REPLICA_MISMATCH naming what differs, or KEDGE_DATA_DIR_NEWER
 * for a store a newer Kedge used.
 */
export async function checkMeshRecord(store: Store, me: { trustDomain: string; ca: CaSource; replica: string; version: string; where: string }): Promise<MeshRecord> {
  const want: MeshRecord = { trustDomain: me.trustDomain, ca: me.ca.kind, ...(me.ca.kind === 'plug-in' ? { pluginRoot: me.ca.rootFingerprint } : {}), kedge: me.version, createdBy: me.replica };
  for (;;) {
    const kv = await store.get(MESH_RECORD_KEY);
    if (!kv) {
      // A store from before this record: the built-in root names the trust domain it was made for.
      const ca = await store.get(CA_RECORD_KEY);
      if (ca) {
        const certPem = (JSON.parse(ca.value) as { roots?: { certPem: string }[]; certPem?: string }).roots?.[0]?.certPem ?? (JSON.parse(ca.value) as { certPem?: string }).certPem;
        const td = certPem ? rootTrustDomain(certPem) : undefined;
        if (td !== undefined && td !== me.trustDomain) throw mismatch(me, `its built-in root CA in the store is for trust domain "${td}"`, `start it with --trust-domain ${td}`);
      }
      try {
        await store.put(MESH_RECORD_KEY, JSON.stringify(want), { expectRevision: 0 });
        return want;
      } catch (err) {
        if (hasCode(err, 'KEDGE_STORE_CONFLICT')) continue;
        throw err;
      }
    }
    const rec = JSON.parse(kv.value) as MeshRecord;
    if (rec.trustDomain !== me.trustDomain) {
      throw mismatch(me, `the mesh in this store (set up by replica ${rec.createdBy}) uses trust domain "${rec.trustDomain}"`, `start it with --trust-domain ${rec.trustDomain}, or give it a store of its own`);
    }
    if (rec.ca !== me.ca.kind) {
      throw mismatch(
        me,
        rec.ca === 'plug-in' ? `the mesh in this store signs with a plug-in CA (set up by replica ${rec.createdBy}) and this replica has none` : `the mesh in this store signs with its built-in root CA (set up by replica ${rec.createdBy}) and this replica was given a plug-in CA (--ca-cert ${me.ca.kind === 'plug-in' ? me.ca.certFile : ''})`,
        rec.ca === 'plug-in' ? 'start it with the same --ca-cert and --ca-key as the other replicas' : 'start it without --ca-cert/--ca-key, as the other replicas',
      );
    }
    if (me.ca.kind === 'plug-in' && rec.pluginRoot !== me.ca.rootFingerprint) {
      throw mismatch(me, `its plug-in CA (--ca-cert ${me.ca.certFile}) chains to root ${me.ca.rootFingerprint}, the other replicas' to root ${rec.pluginRoot}`, 'give it the intermediate the other replicas use, or one under the same root');
    }
    if (compareVersions(rec.kedge, me.version) > 0) {
      throw new KedgeError('KEDGE_DATA_DIR_NEWER', `the store ${me.where} was last used by Kedge ${rec.kedge}, newer than this replica's Kedge ${me.version}; run Kedge ${rec.kedge} or newer on this replica. Nothing was changed.`);
    }
    if (compareVersions(me.version, rec.kedge) > 0) {
      try {
        await store.put(MESH_RECORD_KEY, JSON.stringify({ ...rec, kedge: me.version }), { expectRevision: kv.modRevision });
      } catch (err) {
        if (hasCode(err, 'KEDGE_STORE_CONFLICT')) continue;
        throw err;
      }
    }
    return rec;
  }
}

function mismatch(me: { replica: string; trustDomain: string; where: string }, what: string, fix: string): KedgeError {
  return new KedgeError('KEDGE_REPLICA_MISMATCH', `replica ${me.replica} (trust domain "${me.trustDomain}") does not match the mesh in ${me.where}: ${what}. ${fix}. Nothing was changed.`);
}
