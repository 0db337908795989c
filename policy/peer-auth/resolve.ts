// Which PeerAuthentication decides a workload's mTLS mode, as Istio composes
// them (pilot's ComposePeerAuthentication): a mesh-wide policy (root
// namespace, no selector), then the namespace's (no selector), then the one
// selecting the workload, each overriding the last unless its mode is UNSET;
// with no mode set anywhere, PERMISSIVE. Of several policies at one level the
// oldest wins (creation time, then name). portLevelMtls comes from the
// workload-level policy only, a port's UNSET taking the workload's mode.
// Pure; the federation (pushes, kedge get) and the agent both call it.
import { DEFAULT_ROOT_NAMESPACE, type AuthzWorkload } from '../authz/model';
import type { EffectiveMode, PeerAuthObject, PeerAuthResolution } from './model';

function hasSelector(p: PeerAuthObject): boolean {
  return p.selector !== undefined && Object.keys(p.selector).length > 0;
}

/** The level a policy takes for a workload, or undefined when it does not apply to it. */
export function peerAuthLevel(p: PeerAuthObject, w: AuthzWorkload, rootNamespace = DEFAULT_ROOT_NAMESPACE): 'mesh' | 'namespace' | 'workload' | undefined {
  if (!hasSelector(p)) {
    if (p.namespace === rootNamespace) return 'mesh';
    return p.namespace === w.namespace ? 'namespace' : undefined;
  }
  // A selector in the root namespace selects only workloads of that namespace (Istio ignores it elsewhere).
  if (p.namespace !== w.namespace) return undefined;
  for (const [k, v] of Object.entries(p.selector!)) if (w.labels[k] !== v) return undefined;
  return 'workload';
}

/** Oldest first: creation time ('' sorts last: unknown is taken for newest), then name. */
function older(a: PeerAuthObject, b: PeerAuthObject): number {
  if (a.createdAt !== b.createdAt) {
    if (a.createdAt === '') return 1;
    if (b.createdAt === '') return -1;
    return a.createdAt < b.createdAt ? -1 : 1;
  }
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** The policy of each level that applies to `w` (the oldest where several do). */
export function peerAuthFor(policies: readonly PeerAuthObject[], w: AuthzWorkload, rootNamespace = DEFAULT_ROOT_NAMESPACE): { mesh?: PeerAuthObject; namespace?: PeerAuthObject; workload?: PeerAuthObject } {
  const out: { mesh?: PeerAuthObject; namespace?: PeerAuthObject; workload?: PeerAuthObject } = {};
  for (const p of policies) {
    const level = peerAuthLevel(p, w, rootNamespace);
    if (level === undefined) continue;
    const cur = out[level];
    if (cur === undefined || older(p, cur) < 0) out[level] = p;
  }
  return out;
}

/**
 * The mode per port for `w`; `fallback` is the mode when no policy sets one
 * (PERMISSIVE in Istio; an agent's configured inboundMode on the agent).
 */
export function resolvePeerAuth(policies: readonly PeerAuthObject[], w: AuthzWorkload, opts: { rootNamespace?: string; fallback?: EffectiveMode } = {}): PeerAuthResolution {
  const levels = peerAuthFor(policies, w, opts.rootNamespace);
  let mode: EffectiveMode = opts.fallback ?? 'PERMISSIVE';
  const from: string[] = [];
  for (const p of [levels.mesh, levels.namespace, levels.workload]) {
    if (p === undefined) continue;
    if (p.mode !== 'UNSET') mode = p.mode;
    from.push(`${p.namespace}/${p.name}`);
  }
  const ports = new Map<number, EffectiveMode>();
  for (const [k, m] of Object.entries(levels.workload?.ports ?? {})) {
    const eff = m === 'UNSET' ? mode : m;
    if (eff !== mode) ports.set(Number(k), eff);
  }
  return { mode, ports, from };
}

/** The mode in force on one port of a resolution. */
export function modeOnPort(r: PeerAuthResolution, port: number | undefined): EffectiveMode {
  return (port === undefined ? undefined : r.ports.get(port)) ?? r.mode;
}
