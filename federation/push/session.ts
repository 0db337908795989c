// One agent's push state on this replica: subscriptions, what was sent, and
// what the agent acked. Sends go through an injected function so the session
// is tested without gRPC.
import type { ServiceUpdate } from '../../proto/loader';
import type { MeshService, MeshView } from '../mesh/types';
import { applySent, deltaOfSorted } from './delta';
import type { PushObserver } from '../metrics';

/**
 * Most endpoints one update carries, unless a single service has more (a
 * service is never split). A push with more is sent as several updates, each
 * a valid delta of its own. gRPC encodes a stream's next message only once the
 * previous one left, so this bounds what every stream holds encoded in memory
 * at once: an agent's initial state (20 services of 20 endpoints at the scale
 * of issue 4, 56 KB) written to 1,000 streams at the same moment otherwise
 * sat encoded in memory in full until each agent had read it. About 140 bytes
 * per endpoint on the wire, so about 18 KB per update.
 */
export const MAX_UPDATE_ENDPOINTS = 128;

/** What `kedge status` shows about a stream's push state. */
export interface PushStatus {
  subscriptions: string[];
  sentNonce: string;
  ackedNonce: string;
  ackedAt: string | undefined;
  lastNack: string | undefined;
}

/**
 * Sends one update and calls `flushed` once it has left for the network (for
 * gRPC, the write callback: the message was handed to HTTP/2 within the
 * stream's flow-control window).
 */
export type SendUpdate = (u: ServiceUpdate, flushed: () => void) => void;

/**
 * Push state of one connected agent. While updates are in flight (sent, not
 * yet flushed) pushes are not sent but coalesced: once they have left, the
 * newest view asked for is pushed as one delta. An agent that reads slowly
 * (1,000 agents connecting at once) so gets each service's latest state once
 * instead of every intermediate one queued behind each other.
 */
export class PushSession {
  private readonly subscriptions = new Set<string>();
  /** `subscriptions` sorted, kept until they change: every push walks them in this order. */
  private sorted: string[] | undefined;
  private readonly sent = new Map<string, string>();
  private nonce = 0;
  private acked = '';
  private ackedAt: string | undefined;
  private lastNack: string | undefined;
  private initialSent = false;
  /** Gateways receive every service of the mesh. */
  private subscribeAll = false;
  /** Updates sent and not yet flushed. */
  private inFlight = 0;
  /** The newest view pushed while updates were in flight; pushed once they are flushed. */
  private waiting: MeshView | undefined;
  /** Route backends of subscribed services pushed last time (not subscribed themselves). */
  private backends: ReadonlySet<string> = new Set();
  /** Backends no longer referenced, to be sent as removed by this push. */
  private goneBackends: string[] = [];
  /** When the oldest change not yet sent was asked to be pushed. */
  private changeAt: number | undefined;
  /** Nonce -> when the change it carries was asked to be pushed, until acked (a few at most). */
  private readonly changeOf = new Map<number, number>();

  constructor(
    private readonly send: SendUpdate,
    private readonly clock: () => number = Date.now,
    private readonly maxUpdateEndpoints = MAX_UPDATE_ENDPOINTS,
    /** Metrics: pushes, ACK latency from the change, NACKs. */
    private readonly observer?: PushObserver,
  ) {}

  /** How many services the agent is subscribed to. */
  get subscriptionCount(): number {
    return this.subscriptions.size;
  }

  /** Subscribes to every service, present and future (east-west gateways). */
  subscribeToAll(): void {
    this.subscribeAll = true;
  }

  /** Changes the subscription set; returns true when something changed. */
  subscribe(add: readonly string[], remove: readonly string[]): boolean {
    let changed = false;
    for (const k of add) {
      if (!this.subscriptions.has(k)) {
        this.subscriptions.add(k);
        changed = true;
      }
    }
    for (const k of remove) {
      if (this.subscriptions.delete(k)) {
        this.sent.delete(k);
        changed = true;
      }
    }
    if (changed) this.sorted = undefined;
    return changed;
  }

  /**
   * Sends what changed since the last push; the first push is sent even when
   * empty. Returns false when nothing changed, or when updates are still in
   * flight (the view is then pushed once they are flushed).
   */
  push(view: MeshView): boolean {
    this.changeAt ??= this.clock();
    if (this.inFlight > 0) {
      this.waiting = view;
      return false;
    }
    const keys = this.subscribeAll
      ? [...new Set([...view.services.keys(), ...[...this.sent.keys()].filter((k) => this.sent.get(k) !== '')])].sort()
      : this.keysWithBackends(view);
    let found = deltaOfSorted(view, keys, this.sent);
    // A just-started replica does not yet know a service it never saw is
    // gone: say nothing about it (not even "absent") until the hold ends;
    // the answer is computed again then, since nothing was recorded as sent.
    // Only keys this stream never sent: one it sent and is now missing left this replica's view, a real removal.
    if (found && view.holdRemovals && found.removed.length > 0) {
      const removed = found.removed.filter((k) => this.sent.get(k) !== undefined);
      found = found.services.length > 0 || removed.length > 0 ? { services: found.services, removed } : undefined;
    }
    if (this.goneBackends.length > 0) {
      (found ??= { services: [], removed: [] }).removed.push(...this.goneBackends);
      found.removed.sort();
      this.goneBackends = [];
    }
    if (this.initialSent && !found) {
      this.changeAt = undefined;
      return false;
    }
    const delta = found ?? { services: [], removed: [] };
    this.initialSent = true;
    applySent(this.sent, delta);
    // Removals go with the first update; services in key order, split by
    // endpoint count (see MAX_UPDATE_ENDPOINTS).
    let removed = delta.removed;
    let part: MeshService[] = [];
    let endpoints = 0;
    for (const svc of delta.services) {
      if (part.length > 0 && endpoints + svc.endpoints.length > this.maxUpdateEndpoints) {
        this.sendUpdate(part, removed);
        removed = [];
        part = [];
        endpoints = 0;
      }
      part.push(svc);
      endpoints += svc.endpoints.length;
    }
    if (part.length > 0 || removed.length > 0 || delta.services.length === 0) this.sendUpdate(part, removed);
    this.changeAt = undefined;
    return true;
  }

  /**
   * The subscriptions plus the services their routes send traffic to. A
   * backend no route references any more, and not subscribed, is removed
   * from the agent (listed once as removed, so it stops holding stale endpoints).
   */
  private keysWithBackends(view: MeshView): string[] {
    const sorted = (this.sorted ??= [...this.subscriptions].sort());
    const routeBackends = view.routeBackends;
    let extra: Set<string> | undefined;
    if (routeBackends && routeBackends.size > 0) {
      for (const k of sorted) {
        const bs = routeBackends.get(k);
        if (bs) for (const b of bs) if (!this.subscriptions.has(b)) (extra ??= new Set()).add(b);
      }
    }
    if (extra === undefined && this.backends.size === 0) return sorted;
    const now = extra ?? new Set<string>();
    this.goneBackends = [...this.backends].filter((b) => !now.has(b) && !this.subscriptions.has(b) && this.sent.has(b) && this.sent.get(b) !== '');
    this.backends = now;
    return now.size === 0 ? sorted : [...new Set([...sorted, ...now])].sort();
  }

  private sendUpdate(services: MeshService[], removed: string[]): void {
    this.nonce += 1;
    this.inFlight += 1;
    if (this.changeAt !== undefined && this.observer) {
      this.changeOf.set(this.nonce, this.changeAt);
      // An agent that never acks must not grow this.
      if (this.changeOf.size > 64) this.changeOf.delete(this.changeOf.keys().next().value as number);
    }
    this.observer?.pushed();
    let done = false;
    const flushed = () => {
      if (done) return;
      done = true;
      this.inFlight -= 1;
      if (this.inFlight > 0 || !this.waiting) return;
      const view = this.waiting;
      this.waiting = undefined;
      this.push(view);
    };
    try {
      this.send({ nonce: String(this.nonce), services, removed }, flushed);
    } catch (err) {
      // Not in flight, so later pushes are not held for it.
      done = true;
      this.inFlight -= 1;
      throw err;
    }
  }

  /** Records an ACK (errorDetail empty) or NACK for a nonce. */
  ack(nonce: string, errorDetail: string): void {
    const n = Number(nonce);
    const changedAt = this.changeOf.get(n);
    // This nonce and every earlier one are answered.
    for (const k of this.changeOf.keys()) if (k <= n) this.changeOf.delete(k);
    if (errorDetail) {
      this.lastNack = `${nonce}: ${errorDetail}`;
      this.observer?.nacked();
      return;
    }
    if (changedAt !== undefined) this.observer?.acked(this.clock() - changedAt);
    this.acked = nonce;
    this.ackedAt = new Date(this.clock()).toISOString();
  }

  status(): PushStatus {
    return {
      subscriptions: [...this.subscriptions].sort(),
      sentNonce: String(this.nonce),
      ackedNonce: this.acked,
      ackedAt: this.ackedAt,
      lastNack: this.lastNack,
    };
  }
}
