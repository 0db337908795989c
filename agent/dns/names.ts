// Which query names the mesh answers, and how. Pure: the server asks the
// agent's view of pushed services (`MeshLookup`) and then calls
// `decideLocal` to pick the answer.
import { isDnsLabel } from '../../proto/model/service';

/**
 * What the agent knows about a service key: its VIPs, `undefined` when the
 * federation said there is no such service, or 'unknown-yet' while the
 * subscription a lookup started has not been answered.
 */
export type MeshLookup = { vip4?: string; vip6?: string } | undefined | 'unknown-yet';

/**
 * A query name's shape. `mesh`: `name.namespace.svc.<domain>`, answered by
 * the mesh or NXDOMAIN. `maybe-mesh`: `name.namespace` or a bare `name` (in
 * the workload's own namespace), answered only when the mesh knows the
 * service, because `example.com` has the same shape. `other`: forwarded.
 */
export type NameClass = { kind: 'mesh'; key: string } | { kind: 'maybe-mesh'; key: string } | { kind: 'other' };

/** What to do with one question once the mesh has been asked. */
export type LocalDecision =
  | { kind: 'answer'; a: string[]; aaaa: string[] }
  | { kind: 'nodata' }
  | { kind: 'nxdomain' }
  | { kind: 'forward' };

/** Lowercase, without one trailing dot; '' for the root. */
export function normalizeName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

/**
 * Classifies a query name, case-insensitively, with or without a trailing
 * dot. Only the three forms in the mesh's naming are recognised; anything
 * longer under `.svc.<domain>` (headless pod names, for one) is `other`.
 */
export function classifyName(qname: string, domain: string, ownNamespace: string): NameClass {
  const n = normalizeName(qname);
  if (n === '') return { kind: 'other' };
  const suffix = `.svc.${normalizeName(domain).replace(/^\./, '')}`;
  if (n.endsWith(suffix)) {
    const labels = n.slice(0, -suffix.length).split('.');
    return labels.length === 2 && labels.every(isDnsLabel) ? { kind: 'mesh', key: labels.join('.') } : { kind: 'other' };
  }
  const labels = n.split('.');
  if (labels.length === 2 && labels.every(isDnsLabel)) return { kind: 'maybe-mesh', key: n };
  const ns = ownNamespace.toLowerCase();
  if (labels.length === 1 && isDnsLabel(n) && isDnsLabel(ns)) return { kind: 'maybe-mesh', key: `${n}.${ns}` };
  return { kind: 'other' };
}

/**
 * The answer for one question about a mesh-shaped name, given what the mesh
 * knows after any wait. A known service answers A/AAAA (both for ANY) with
 * its VIPs and any other type with NODATA, since the name exists. An unknown
 * `svc` name is NXDOMAIN; an unknown short name is forwarded.
 */
export function decideLocal(name: NameClass, qtype: string, found: MeshLookup): LocalDecision {
  if (name.kind === 'other') return { kind: 'forward' };
  if (found === undefined || found === 'unknown-yet') return name.kind === 'mesh' ? { kind: 'nxdomain' } : { kind: 'forward' };
  const a = (qtype === 'A' || qtype === 'ANY') && found.vip4 ? [found.vip4] : [];
  const aaaa = (qtype === 'AAAA' || qtype === 'ANY') && found.vip6 ? [found.vip6] : [];
  return a.length + aaaa.length > 0 ? { kind: 'answer', a, aaaa } : { kind: 'nodata' };
}
