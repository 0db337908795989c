// Removals from a federation replica that has just started are held down:
// its view may lack a service only because that service's agents have not
// re-registered with it yet, and acting on it would refuse traffic to
// endpoints that are up. A service the agent holds live endpoints for stays
// as it was until the hold ends; then the federation's latest state is
// applied. Pure.
import type { Service__Output } from '../../proto/loader';

/** How long removals from a just-started replica are held (default). */
export const REMOVAL_HOLD_DOWN_MS = 30_000;

const live = (s: Service__Output) => s.endpoints.some((e) => e.health !== 'UNHEALTHY');

/**
 * The services to use while holding: `next` (the federation's state), except
 * that a service `current` has live endpoints for and `next` removed or left
 * with none keeps its current state. `held` lists those keys.
 */
export function holdRemovals(
  current: ReadonlyMap<string, Service__Output>,
  next: ReadonlyMap<string, Service__Output>,
  /** Keys this stream has sent with endpoints: their removal is the replica's real knowledge, applied at once. */
  seenOnStream: ReadonlySet<string> = new Set(),
): { services: Map<string, Service__Output>; held: string[] } {
  const services = new Map(next);
  const held: string[] = [];
  for (const [key, svc] of current) {
    if (!live(svc) || seenOnStream.has(key)) continue;
    const n = next.get(key);
    if (n && n.endpoints.length > 0) continue;
    services.set(key, svc);
    held.push(key);
  }
  return { services, held: held.sort() };
}

/** When the hold for a registration ends: a replica up for less than the hold-down is "just started". */
export function holdDownUntil(now: number, uptimeSeconds: number, holdDownMs: number): number {
  return uptimeSeconds * 1000 < holdDownMs ? now + holdDownMs - uptimeSeconds * 1000 : 0;
}
