// A replica that has just started knows less than the mesh does: sources
// have not resynced (a Kubernetes informer still listing, agents still
// reconnecting), so a service missing from its first views may only be
// missing from it. Until the sources have had the chance to resync, it
// pushes no removal to anyone; services that did appear are pushed as
// usual. Pure: time and source state are passed in.

/** What decides whether removals are still held. */
export interface StartupHoldInput {
  now: number;
  startedAt: number;
  /** Agents reconnect and re-register within this (the registrations recovered from the store last as long). */
  gracePeriodMs: number;
  /** Every configured source has synced at least once. */
  sourcesSynced: boolean;
  /** The hold never lasts longer than this, so a source that never syncs cannot pin stale services forever. */
  maxMs: number;
}

/** Longest a startup hold lasts (when a source never syncs). */
export const STARTUP_HOLD_MAX_MS = 60_000;

/** True while removals must not be pushed: within the grace period, or until every source synced, at most `maxMs`. */
export function holdingRemovals(i: StartupHoldInput): boolean {
  const up = i.now - i.startedAt;
  if (up >= i.maxMs) return false;
  return up < i.gracePeriodMs || !i.sourcesSynced;
}
