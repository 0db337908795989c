// The `agents` source: registrations of connected agents, written to the
// store under a lease refreshed while the agent's stream lives, so every
// replica sees every agent and a vanished agent disappears after the grace
// period. A graceful stop deletes the registration at once.
import type { Logger } from '../../proto/model/log';
import { errorMessage } from '../../proto/model/errors';
import type { Store, WatchEvent } from '../store/types';
import type { AgentRecord } from '../mesh/types';

/** Store prefix of agent registrations. */
export const AGENTS_PREFIX = '/kedge/agents/';

/** Store key of one agent's registration. */
export function agentKey(id: string): string {
  return `${AGENTS_PREFIX}${id}`;
}

/** A live registration held by this replica's stream. */
export interface Registration {
  /** Refreshes the record (e.g. new health) keeping the lease. */
  update(record: AgentRecord): Promise<void>;
  /** Graceful stop: delete now. */
  remove(): Promise<void>;
  /** Stream lost: stop refreshing; the lease expires after the grace period. */
  abandon(): void;
}

/** Every agent registration in the store, kept current by a watch. */
export class AgentRegistry {
  private readonly records = new Map<string, AgentRecord>();
  private watch: { close(): void } | undefined;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly opts: { gracePeriodMs: number; logger: Logger; onChange: () => void },
  ) {}

  /** Lists then watches the prefix; relists when the watch falls behind. */
  async start(): Promise<void> {
    const { kvs, revision } = await this.store.list(AGENTS_PREFIX);
    this.records.clear();
    for (const kv of kvs) this.applyPut(kv.key, kv.value);
    this.opts.onChange();
    this.watch?.close();
    this.watch = this.store.watch(
      AGENTS_PREFIX,
      { fromRevision: revision },
      (events) => this.applyEvents(events),
      (err) => {
        if (this.closed) return;
        this.opts.logger.warn({ err: errorMessage(err) }, 'agent registration watch failed; relisting');
        setTimeout(() => void this.start().catch((e) => this.opts.logger.error({ err: errorMessage(e) }, 'relist failed')), 500).unref();
      },
    );
  }

  all(): AgentRecord[] {
    return [...this.records.values()];
  }

  get(id: string): AgentRecord | undefined {
    return this.records.get(id);
  }

  /** Writes a registration under a fresh lease and keeps the lease alive. */
  async register(record: AgentRecord): Promise<Registration> {
    const { store, opts } = this;
    const key = agentKey(record.id);
    let lease = await store.grantLease(opts.gracePeriodMs);
    await store.put(key, JSON.stringify(record), { lease });
    let current = record;
    let stopped = false;
    const refresh = async () => {
      if (stopped) return;
      try {
        if (!(await store.keepAlive(lease))) {
          // The lease lapsed (store restart, long pause): re-grant and rewrite.
          lease = await store.grantLease(opts.gracePeriodMs);
          await store.put(key, JSON.stringify(current), { lease });
        }
      } catch (err) {
        opts.logger.warn({ agent: record.id, err: errorMessage(err) }, 'refreshing agent lease failed');
      }
    };
    const timer = setInterval(() => void refresh(), Math.max(100, Math.floor(opts.gracePeriodMs / 3)));
    timer.unref();
    return {
      update: async (next) => {
        current = next;
        await store.put(key, JSON.stringify(next), { lease });
      },
      remove: async () => {
        stopped = true;
        clearInterval(timer);
        await store.revokeLease(lease);
      },
      abandon: () => {
        stopped = true;
        clearInterval(timer);
      },
    };
  }

  close(): void {
    this.closed = true;
    this.watch?.close();
  }

  private applyEvents(events: readonly WatchEvent[]): void {
    let changed = false;
    for (const ev of events) {
      if (ev.type === 'put') changed = this.applyPut(ev.kv.key, ev.kv.value) || changed;
      else changed = this.records.delete(ev.key.slice(AGENTS_PREFIX.length)) || changed;
    }
    if (changed) this.opts.onChange();
  }

  /**
   * Stores a record; returns false when only its status changed. A status
   * write (acked version, last contact) does not touch the mesh view, so the
   * old record object is kept (the merge reuses work per unchanged record)
   * and no rebuild is triggered.
   */
  private applyPut(key: string, value: string): boolean {
    let rec: AgentRecord;
    try {
      rec = JSON.parse(value) as AgentRecord;
    } catch (err) {
      this.opts.logger.error({ key, err: errorMessage(err) }, 'ignoring unreadable agent registration');
      return false;
    }
    const id = key.slice(AGENTS_PREFIX.length);
    const old = this.records.get(id);
    if (old && sameExceptStatus(old, rec)) {
      if (rec.status) old.status = rec.status;
      return false;
    }
    this.records.set(id, rec);
    return true;
  }
}

function sameExceptStatus(a: AgentRecord, b: AgentRecord): boolean {
  const { status: _a, ...restA } = a;
  const { status: _b, ...restB } = b;
  return JSON.stringify(restA) === JSON.stringify(restB);
}
