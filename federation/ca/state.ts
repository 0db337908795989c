// The built-in CA's state as kept in the store (/kedge/ca/root), and the
// steps of a root rotation, as pure functions over plain data. Every step is
// written with a revision guard, so replicas racing on one step agree, and a
// federation killed between two steps resumes from the last one written.
//
// A rotation from root A to root B:
//   start         roots [A, B], A signs          (sequence + 1: bundle changed)
//   distributing  until every agent reports that bundle
//   reissuing     roots [A, B], B signs; agents renew under B as they renew,
//                 or at once with --reissue
//   done          roots [B], B signs             (sequence + 1), when every
//                 agent's certificate chains to B, or at --finish
// The trusted roots are never empty and always include the signing root, so
// there is no step at which the mesh has two unrelated roots and no bundle
// that carries both.
import { X509Certificate } from 'node:crypto';
import { KedgeError } from '../../proto/model/errors';
import { isWrappedKey, type WrappedKey } from './key-wrap';

/** A root's private key: PEM (no KEK configured) or wrapped under the KEK. */
export type StoredKey = { pem: string } | { wrapped: WrappedKey };

/** One trusted root with its key. */
export interface StoredRoot {
  certPem: string;
  key: StoredKey;
}

/** A rotation in progress. */
export interface Rotation {
  phase: 'distributing' | 'reissuing';
  /** SHA-256 fingerprints (X509Certificate.fingerprint256) of the old and new roots. */
  from: string;
  to: string;
  startedAt: string;
  phaseSince: string;
  /** Agents are told to renew at once when the new root starts signing. */
  reissue: boolean;
}

/** The CA document. */
export interface CaState {
  version: 2;
  /** Increases whenever the set of trusted roots changes (spiffe_sequence). */
  sequence: number;
  /** Roots made so far, counting the first; names the next root (G2, G3, ...). */
  generation: number;
  roots: StoredRoot[];
  /** Fingerprint of the root that signs workload certificates. */
  signing: string;
  rotation?: Rotation;
}

/** What the rotation logic needs to know about one agent. */
export interface AgentCaView {
  id: string;
  /** The bundle sequence the agent reported installing; undefined before its first report. */
  bundleSequence: number | undefined;
  /** Fingerprint of the trusted root its leaf chains to; undefined when unknown or none. */
  certRoot: string | undefined;
}

/** One agent that holds a rotation back, and why. */
export interface RotationBlocker {
  agent: string;
  reason: string;
}

/** SHA-256 fingerprint of a PEM certificate, as X509Certificate.fingerprint256 prints it. */
export function fingerprintOf(certPem: string): string {
  return new X509Certificate(certPem).fingerprint256;
}

function invalid(message: string): KedgeError {
  return new KedgeError('KEDGE_CA_INVALID', `the CA record in the store (/kedge/ca/root) ${message}`);
}

/**
 * Reads the stored CA document. The format before rotation existed
 * ({certPem, keyPem, chainPem, rootsPem}) reads as a state with one root and
 * sequence 1; it is rewritten in the new format at the first change.
 */
export function parseCaState(text: string): CaState {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw invalid('is not JSON');
  }
  if (v === null || typeof v !== 'object') throw invalid('is not an object');
  if (v.version === undefined && typeof v.certPem === 'string' && typeof v.keyPem === 'string') {
    const certPem = v.certPem;
    return { version: 2, sequence: 1, generation: 1, roots: [{ certPem, key: { pem: v.keyPem } }], signing: fingerprintOf(certPem) };
  }
  if (v.version !== 2) throw invalid(`has unknown version ${JSON.stringify(v.version)}; is a newer Kedge writing to this store?`);
  const s = v as unknown as CaState;
  if (!Array.isArray(s.roots) || s.roots.length === 0) throw invalid('lists no roots');
  for (const r of s.roots) {
    const key = r?.key as Partial<{ pem: unknown; wrapped: unknown }> | undefined;
    if (typeof r?.certPem !== 'string' || !key || !(typeof key.pem === 'string' || isWrappedKey(key.wrapped))) throw invalid('has a root without certificate or key');
  }
  if (!Number.isInteger(s.sequence) || s.sequence < 1 || !Number.isInteger(s.generation) || s.generation < 1) throw invalid('has no valid sequence or generation');
  const fps = s.roots.map((r) => fingerprintOf(r.certPem));
  if (!fps.includes(s.signing)) throw invalid('names a signing root it does not hold');
  if (s.rotation && (!fps.includes(s.rotation.from) || !fps.includes(s.rotation.to) || !['distributing', 'reissuing'].includes(s.rotation.phase))) {
    throw invalid('has a rotation that names roots it does not hold');
  }
  return s;
}

/** A state with a single new root. */
export function initialState(root: StoredRoot): CaState {
  return { version: 2, sequence: 1, generation: 1, roots: [root], signing: fingerprintOf(root.certPem) };
}

/** The trusted roots (PEM), in the order stored. */
export function trustedRoots(state: CaState): string[] {
  return state.roots.map((r) => r.certPem);
}

/** The root the federation's own serving certificate comes from: the old one until the rotation ends, which every agent trusts. */
export function servingRoot(state: CaState): string {
  return state.rotation ? state.rotation.from : state.signing;
}

/** KEDGE_CA_ROTATION_IN_PROGRESS for the rotation `r`, saying what the operator can do. */
export function rotationInProgress(r: Rotation): KedgeError {
  return new KedgeError(
    'KEDGE_CA_ROTATION_IN_PROGRESS',
    `a CA rotation is already in progress (phase ${r.phase} since ${r.phaseSince}, started ${r.startedAt}); see "kedge ca status", tell agents to renew now with "kedge ca rotate --reissue", or retire the old root now with "kedge ca rotate --finish"`,
  );
}

/** Step "start": adds `next` as a trusted root; the current root keeps signing. KEDGE_CA_ROTATION_IN_PROGRESS when one runs. */
export function startRotation(state: CaState, next: StoredRoot, opts: { now: Date; reissue: boolean }): CaState {
  if (state.rotation) throw rotationInProgress(state.rotation);
  const to = fingerprintOf(next.certPem);
  const at = opts.now.toISOString();
  return {
    ...state,
    sequence: state.sequence + 1,
    generation: state.generation + 1,
    roots: [...state.roots.filter((r) => fingerprintOf(r.certPem) === state.signing), next],
    rotation: { phase: 'distributing', from: state.signing, to, startedAt: at, phaseSince: at, reissue: opts.reissue },
  };
}

/** Asks for agents to be re-issued at once on a rotation in progress. */
export function requestReissue(state: CaState): CaState {
  if (!state.rotation) throw new KedgeError('KEDGE_CA_NO_ROTATION', 'no CA rotation is in progress; start one with "kedge ca rotate"');
  return { ...state, rotation: { ...state.rotation, reissue: true } };
}

/** Ends the rotation: only the new root remains, and signs. */
export function finishRotation(state: CaState): CaState {
  const r = state.rotation;
  if (!r) throw new KedgeError('KEDGE_CA_NO_ROTATION', 'no CA rotation is in progress; start one with "kedge ca rotate"');
  const { rotation: _, ...rest } = state;
  return { ...rest, sequence: state.sequence + 1, roots: state.roots.filter((x) => fingerprintOf(x.certPem) === r.to), signing: r.to };
}

/** The agents that keep the rotation in its current phase; [] when it may advance. */
export function rotationBlockers(state: CaState, agents: readonly AgentCaView[]): RotationBlocker[] {
  const r = state.rotation;
  if (!r) return [];
  const out: RotationBlocker[] = [];
  for (const a of agents) {
    if (r.phase === 'distributing') {
      if (a.bundleSequence === undefined) out.push({ agent: a.id, reason: 'has not reported its trust bundle yet' });
      else if (a.bundleSequence < state.sequence) out.push({ agent: a.id, reason: `has trust bundle ${a.bundleSequence}, not ${state.sequence}` });
    } else if (a.certRoot !== r.to) {
      out.push({ agent: a.id, reason: a.certRoot === r.from ? 'holds a certificate from the old root' : 'has not reported a certificate from the new root yet' });
    }
  }
  return out;
}

/**
 * The next step when nothing blocks: distributing -> reissuing (the new root
 * signs), reissuing -> done. Undefined when there is no rotation or agents
 * still block it.
 */
export function advanceRotation(state: CaState, agents: readonly AgentCaView[], now: Date): CaState | undefined {
  const r = state.rotation;
  if (!r || rotationBlockers(state, agents).length > 0) return undefined;
  if (r.phase === 'distributing') return { ...state, signing: r.to, rotation: { ...r, phase: 'reissuing', phaseSince: now.toISOString() } };
  return finishRotation(state);
}
