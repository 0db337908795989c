// One agent's push state on this replica: subscriptions, what was sent, and
// what the agent acked. Sends go through an injected function so the session
// is tested without gRPC.
import type { ServiceUpdate } from '../../proto/loader';
import type { MeshView } from '../mesh/types';
import { applySent, computeDelta } from './delta';

/** What `kedge status` shows about a stream's push state. */
export interface PushStatus {
  subscriptions: string[];
  sentNonce: string;
  ackedNonce: string;
  ackedAt: string | undefined;
  lastNack: string | undefined;
}

/** Push state of one connected agent. */
export class PushSession {
  private readonly subscriptions = new Set<string>();
  private readonly sent = new Map<string, string>();
  private nonce = 0;
  private acked = '';
  private ackedAt: string | undefined;
  private lastNack: string | undefined;
  private initialSent = false;
  /** Gateways receive every service of the mesh. */
  private subscribeAll = false;

  constructor(private readonly send: (u: ServiceUpdate) => void, private readonly clock: () => number = Date.now) {}

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
    return changed;
  }

  /** Sends what changed since the last push; the first push is sent even when empty. */
  push(view: MeshView): boolean {
    const keys = this.subscribeAll ? new Set([...view.services.keys(), ...[...this.sent.keys()].filter((k) => this.sent.get(k) !== '')]) : this.subscriptions;
    const delta = computeDelta(view, keys, this.sent);
    if (this.initialSent && delta.services.length === 0 && delta.removed.length === 0) return false;
    this.initialSent = true;
    this.nonce += 1;
    applySent(this.sent, delta);
    this.send({ nonce: String(this.nonce), services: delta.services, removed: delta.removed });
    return true;
  }

  /** Records an ACK (errorDetail empty) or NACK for a nonce. */
  ack(nonce: string, errorDetail: string): void {
    if (errorDetail) {
      this.lastNack = `${nonce}: ${errorDetail}`;
      return;
    }
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
