// What the agent asks the federation for: the services of its explicit
// upstreams (always), plus services looked up through DNS or captured
// destinations (on demand). An on-demand key the federation answers with
// "no such service" is dropped again, so made-up names cannot grow the set.
import type { Service__Output } from '../../proto/loader';

/** Most on-demand subscriptions held at once. */
export const MAX_DYNAMIC_SUBSCRIPTIONS = 4096;

/** The state of one subscribed key, as the DNS proxy needs it. */
export type KeyState = 'pending' | 'present' | 'absent' | 'unsubscribed';

/** Tracks subscriptions and which of them the federation has answered. */
export class Subscriptions {
  private readonly fixed: ReadonlySet<string>;
  private readonly dynamic = new Map<string, 'pending' | 'present'>();
  /** Recently answered "absent" keys, so a repeated lookup is not re-subscribed at once. */
  private readonly absent = new Map<string, number>();

  constructor(fixed: Iterable<string>, private readonly clock: () => number = Date.now, private readonly absentTtlMs = 30_000) {
    this.fixed = new Set(fixed);
  }

  /** Every key to send with Register. */
  all(): string[] {
    return [...new Set([...this.fixed, ...this.dynamic.keys()])].sort();
  }

  /** Adds an on-demand key; returns true when it must be sent to the federation. */
  add(key: string): boolean {
    if (this.fixed.has(key) || this.dynamic.has(key)) return false;
    const absentAt = this.absent.get(key);
    if (absentAt !== undefined && this.clock() - absentAt < this.absentTtlMs) return false;
    if (this.dynamic.size >= MAX_DYNAMIC_SUBSCRIPTIONS) return false;
    this.dynamic.set(key, 'pending');
    return true;
  }

  /**
   * Records an accepted update; returns the on-demand keys to unsubscribe
   * (those the federation said do not exist).
   */
  answered(services: ReadonlyMap<string, Service__Output>, removed: readonly string[]): string[] {
    for (const key of services.keys()) if (this.dynamic.has(key)) this.dynamic.set(key, 'present');
    const drop: string[] = [];
    for (const key of removed) {
      if (this.dynamic.delete(key)) {
        this.absent.set(key, this.clock());
        drop.push(key);
      }
    }
    if (this.absent.size > MAX_DYNAMIC_SUBSCRIPTIONS) this.absent.clear();
    return drop;
  }

  state(key: string, services: ReadonlyMap<string, Service__Output>): KeyState {
    if (services.has(key)) return 'present';
    const d = this.dynamic.get(key);
    if (d === 'pending' || (this.fixed.has(key) && !services.has(key))) return d ?? 'absent';
    const absentAt = this.absent.get(key);
    return absentAt !== undefined && this.clock() - absentAt < this.absentTtlMs ? 'absent' : 'unsubscribed';
  }
}
