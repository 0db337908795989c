// The `agents` source: registrations of connected agents, written to the
// store so every replica sees every agent.
//
// All registrations a replica holds hang off one lease of its own (a
// session, in etcd's terms), renewed by one keepalive every third of the
// grace period, so a thousand agents cost the store one renewal, not a
// thousand. What the lease gives is the replica's death: kill -9 a replica
// and every registration it held expires after the grace period, unless
// the agent has reconnected to another replica by then, whose put moves the
// key to that replica's lease. An agent whose own stream is lost is the
// replica's job: the registration is deleted when the grace period passes,
// guarded on the revision this replica last wrote, so an agent that came
// back meanwhile (here or on another replica) is never deleted. A graceful
// stop deletes at once.
//
// Status for `kedge status` (acked version, last contact) changes with
// every ack. It is kept apart from the registrations (writing it into them
// would wake every replica's registry for nothing) and written in batches:
// every few seconds, when anything changed, each replica writes the status
// of all the agents it holds as a few documents of STATUS_SHARD agents
// under its own prefix, on its lease. A thousand agents acking cost the
// store one write per interval, not a thousand.
import type { Logger } from '../../proto/model/log';
import { errorMessage, hasCode } from '../../proto/model/errors';
import type { Store, WatchEvent } from '../store/types';
import type { AgentRecord, AgentStatus } from '../mesh/types';

/** Store prefix of agent registrations. */
export const AGENTS_PREFIX = '/kedge/agents/';
/** Store prefix of agent status: `<replica>/<shard>` -> { agent id: AgentStatus }, written by the replica holding the agents. */
export const AGENT_STATUS_PREFIX = '/kedge/agent-status/';
/** Agents per status document: keeps one write far below etcd's 1.5 MiB request limit. */
export const STATUS_SHARD = 250;
/** How often a replica writes its agents' status when any changed. */
export const STATUS_WRITE_INTERVAL_MS = 5_000;

/** Store key of one agent's registration. */
export function agentKey(id: string): string {
  return `${AGENTS_PREFIX}${id}`;
}

/** A live registration held by this replica's stream. */
export interface Registration {
  /** Rewrites the record (e.g. new health). */
  update(record: AgentRecord): Promise<void>;
  /** The agent's push or contact state changed: it is written with the next batch. */
  statusChanged(): void;
  /** Graceful stop: delete now. */
  remove(): Promise<void>;
  /** Stream lost: the registration is deleted after the grace period unless the agent is back. */
  abandon(): void;
}

/** What this replica holds for one agent id. */
interface Held {
  record: AgentRecord;
  /** Reads the agent's current status, when a batch is written. */
  status: () => AgentStatus;
  /** modRevision of this replica's last write of the registration; 0 before the first. */
  revision: number;
  expiry: NodeJS.Timeout | undefined;
}

/** Every agent registration in the store, kept current by a watch. */
export class AgentRegistry {
  private readonly records = new Map<string, AgentRecord>();
  /** The stored text of each record, to tell a real change from a rewrite of the same registration. */
  private readonly raw = new Map<string, string>();
  private readonly held = new Map<string, Held>();
  private watch: { close(): void } | undefined;
  private closed = false;
  private lease: Promise<string> | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewing = false;
  private lastRenewed = 0;
  /** Set when the lease was replaced and not every held registration is written under the new one yet. */
  private unwritten = false;
  private statusDirty = false;
  private statusTimer: NodeJS.Timeout | undefined;
  private statusWriting = false;
  /** Status documents this replica wrote last (their count), to delete the ones no longer needed. */
  private statusShards = 0;

  constructor(
    private readonly store: Store,
    private readonly opts: { replica: string; gracePeriodMs: number; logger: Logger; onChange: () => void; clock?: () => number; statusIntervalMs?: number },
  ) {}

  /** Lists then watches the prefix; relists when the watch falls behind. */
  async start(): Promise<void> {
    const { kvs, revision } = await this.store.list(AGENTS_PREFIX);
    this.records.clear();
    this.raw.clear();
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

  /**
   * Status of every agent of the mesh, as the replicas holding them last
   * wrote it. An agent that moved can be in two replicas' documents for a
   * moment; the newer contact wins.
   */
  async statuses(): Promise<Map<string, AgentStatus>> {
    const { kvs } = await this.store.list(AGENT_STATUS_PREFIX);
    const out = new Map<string, AgentStatus>();
    for (const kv of kvs) {
      let doc: Record<string, AgentStatus>;
      try {
        doc = JSON.parse(kv.value) as Record<string, AgentStatus>;
      } catch {
        continue; // an unreadable document is shown as no status
      }
      for (const [id, st] of Object.entries(doc)) {
        const seen = out.get(id);
        if (!seen || st.lastContact > seen.lastContact) out.set(id, st);
      }
    }
    return out;
  }

  /** Writes a registration under this replica's lease; the agent is held until its stream ends. */
  async register(record: AgentRecord, status: () => AgentStatus): Promise<Registration> {
    const id = record.id;
    const previous = this.held.get(id);
    if (previous?.expiry) clearTimeout(previous.expiry);
    const entry: Held = { record, status, revision: 0, expiry: undefined };
    this.held.set(id, entry);
    const current = () => this.held.get(id) === entry;
    try {
      await this.write(id, entry);
    } catch (err) {
      if (current()) this.held.delete(id);
      throw err;
    }
    return {
      update: async (next) => {
        if (!current()) return;
        entry.record = next;
        await this.write(id, entry);
      },
      statusChanged: () => {
        if (current()) this.statusSoon();
      },
      remove: async () => {
        if (!current()) return;
        this.held.delete(id);
        this.statusSoon();
        await this.deleteIfOurs(id, entry.revision);
      },
      abandon: () => {
        if (!current() || entry.expiry) return;
        entry.expiry = setTimeout(() => {
          if (!current()) return;
          this.held.delete(id);
          this.statusSoon();
          void this.deleteIfOurs(id, entry.revision).catch((err) =>
            this.opts.logger.warn({ agent: id, err: errorMessage(err) }, 'cannot delete an expired agent registration; it goes when this replica\'s lease does'),
          );
        }, this.opts.gracePeriodMs);
        entry.expiry.unref();
      },
    };
  }

  /**
   * Stops renewing. The lease is left to expire, not revoked: the agents
   * this replica held reconnect elsewhere within the grace period and their
   * endpoints never leave anyone's view.
   */
  close(): void {
    this.closed = true;
    this.watch?.close();
    if (this.renewTimer) clearInterval(this.renewTimer);
    if (this.statusTimer) clearTimeout(this.statusTimer);
    for (const h of this.held.values()) if (h.expiry) clearTimeout(h.expiry);
    this.held.clear();
  }

  private now(): number {
    return (this.opts.clock ?? Date.now)();
  }

  private async write(id: string, entry: Held): Promise<void> {
    const lease = await this.sessionLease();
    const { revision } = await this.store.put(agentKey(id), JSON.stringify(entry.record), { lease });
    entry.revision = revision;
  }

  /** Deletes a registration unless someone wrote it after `revision`. */
  private async deleteIfOurs(id: string, revision: number): Promise<void> {
    try {
      await this.store.delete(agentKey(id), { expectRevision: revision });
    } catch (err) {
      if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
      // the agent is back (here or on another replica): its registration is not ours to delete
    }
  }

  /** Marks the status documents stale; they are written within one interval. */
  private statusSoon(): void {
    this.statusDirty = true;
    if (this.statusTimer || this.closed) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      void this.writeStatus();
    }, this.opts.statusIntervalMs ?? STATUS_WRITE_INTERVAL_MS);
    this.statusTimer.unref();
  }

  /** Writes the status of every agent held here, STATUS_SHARD per document; failures are retried next interval. */
  private async writeStatus(): Promise<void> {
    if (this.statusWriting || this.closed || !this.statusDirty) return;
    this.statusWriting = true;
    this.statusDirty = false;
    try {
      const ids = [...this.held.keys()].sort();
      const lease = await this.sessionLease();
      const shards = Math.ceil(ids.length / STATUS_SHARD);
      for (let i = 0; i < shards; i++) {
        const doc: Record<string, AgentStatus> = {};
        for (const id of ids.slice(i * STATUS_SHARD, (i + 1) * STATUS_SHARD)) doc[id] = this.held.get(id)!.status();
        await this.store.put(this.statusKey(i), JSON.stringify(doc), { lease });
      }
      for (let i = shards; i < this.statusShards; i++) await this.store.delete(this.statusKey(i));
      this.statusShards = shards;
    } catch (err) {
      this.opts.logger.warn({ err: errorMessage(err), agents: this.held.size }, 'cannot record agent status; retrying');
      this.statusDirty = true;
    } finally {
      this.statusWriting = false;
      if (this.statusDirty) this.statusSoon();
    }
  }

  private statusKey(shard: number): string {
    return `${AGENT_STATUS_PREFIX}${this.opts.replica}/${shard}`;
  }

  /** This replica's lease, granted on first use; renewal starts with it. */
  private sessionLease(): Promise<string> {
    if (this.lease) return this.lease;
    const granting = this.store.grantLease(this.opts.gracePeriodMs).then(
      (id) => {
        this.lastRenewed = this.now();
        this.startRenewing();
        return id;
      },
      (err: unknown) => {
        if (this.lease === granting) this.lease = undefined;
        throw err;
      },
    );
    this.lease = granting;
    return granting;
  }

  private startRenewing(): void {
    if (this.renewTimer || this.closed) return;
    this.renewTimer = setInterval(() => void this.renew(), Math.max(100, Math.floor(this.opts.gracePeriodMs / 3)));
    this.renewTimer.unref();
  }

  /**
   * One keepalive. When the store says the lease is gone (a pause longer
   * than the grace period, a store that lost it), a new lease is granted and
   * every registration and status this replica holds is written again under
   * it; failures are retried on the next tick.
   */
  private async renew(): Promise<void> {
    if (this.renewing || this.closed || !this.lease) return;
    this.renewing = true;
    try {
      const lease = await this.lease;
      if (await this.store.keepAlive(lease)) {
        this.lastRenewed = this.now();
      } else {
        this.opts.logger.warn({ lease, held: this.held.size }, 'this replica\'s agent lease expired; writing its registrations again under a new one');
        this.lease = undefined;
        await this.sessionLease();
        this.unwritten = true;
      }
      if (this.unwritten) this.unwritten = !(await this.rewriteHeld());
    } catch (err) {
      const silentMs = this.now() - this.lastRenewed;
      this.opts.logger.warn({ err: errorMessage(err), sinceLastRenewalMs: silentMs, held: this.held.size }, 'cannot renew this replica\'s agent lease; retrying');
    } finally {
      this.renewing = false;
    }
  }

  /** Writes every held registration again (and the status documents soon); false when any write failed (retried next tick). */
  private async rewriteHeld(): Promise<boolean> {
    let failed = 0;
    for (const [id, entry] of [...this.held]) {
      if (this.held.get(id) !== entry) continue;
      try {
        await this.write(id, entry);
      } catch (err) {
        failed += 1;
        if (failed === 1) this.opts.logger.warn({ agent: id, err: errorMessage(err) }, 'cannot write a registration again after the lease expired; retrying');
      }
    }
    this.statusShards = 0;
    this.statusSoon();
    return failed === 0;
  }

  private applyEvents(events: readonly WatchEvent[]): void {
    let changed = false;
    for (const ev of events) {
      if (ev.type === 'put') changed = this.applyPut(ev.kv.key, ev.kv.value) || changed;
      else {
        const id = ev.key.slice(AGENTS_PREFIX.length);
        this.raw.delete(id);
        changed = this.records.delete(id) || changed;
      }
    }
    if (changed) this.opts.onChange();
  }

  /** Stores a record; returns false when it is the same as the one held (a lease move, say). */
  private applyPut(key: string, value: string): boolean {
    let rec: AgentRecord;
    try {
      rec = JSON.parse(value) as AgentRecord;
    } catch (err) {
      this.opts.logger.error({ key, err: errorMessage(err) }, 'ignoring unreadable agent registration');
      return false;
    }
    const id = key.slice(AGENTS_PREFIX.length);
    // The old object is kept when nothing changed: the merge reuses work per unchanged record.
    if (this.raw.get(id) === value) return false;
    this.records.set(id, rec);
    this.raw.set(id, value);
    return true;
  }
}
