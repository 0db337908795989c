// What an agent must be sent: the pure diff between the mesh view and what
// was already sent on this stream, restricted to the agent's subscriptions.
import type { MeshService, MeshView } from '../mesh/types';

/** A per-service delta for one agent. */
export interface Delta {
  services: MeshService[];
  removed: string[];
}

/**
 * Services whose version differs from the one last sent, and keys that were
 * sent before but are gone (or unsubscribed-and-resubscribed keys that do not
 * exist, so the agent learns the answer is "none").
 */
export function computeDelta(view: MeshView, subscriptions: ReadonlySet<string>, sent: ReadonlyMap<string, string>): Delta {
  return deltaOfSorted(view, [...subscriptions].sort(), sent) ?? { services: [], removed: [] };
}

/**
 * computeDelta over keys already sorted, or undefined when nothing changed.
 * Every push visits every session and most have nothing to send, so that
 * case allocates nothing (see PushSession.push).
 */
export function deltaOfSorted(view: MeshView, sortedKeys: readonly string[], sent: ReadonlyMap<string, string>): Delta | undefined {
  let delta: Delta | undefined;
  for (const key of sortedKeys) {
    const svc = view.services.get(key);
    const last = sent.get(key);
    if (svc) {
      if (last !== svc.version) (delta ??= { services: [], removed: [] }).services.push(svc);
    } else if (last !== '') {
      // '' marks "told it is absent"; undefined means never answered.
      (delta ??= { services: [], removed: [] }).removed.push(key);
    }
  }
  return delta;
}

/** Records a delta as sent: versions for services, '' for absent keys. */
export function applySent(sent: Map<string, string>, delta: Delta): void {
  for (const s of delta.services) sent.set(s.key, s.version);
  for (const k of delta.removed) sent.set(k, '');
}
