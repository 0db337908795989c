// The service graph across replicas. Each agent reports its traffic to the
// replica it is connected to (federation/stats.ts); with several replicas on
// etcd, each replica publishes what its own agents reported over the graph's
// window to /kedge/traffic/<replica> every few seconds, and every replica
// adds the others' to its own, so the dashboard served by any replica shows
// the whole mesh. A replica's record counts only while it is fresh (a
// replica that died stops counting after STALE_AFTER intervals); a replica
// deletes its record when it stops. With the embedded store there is one
// replica and nothing is published.
//
// The figures of another replica lag by up to one publishing interval, and
// an agent that moved between replicas inside the window is counted by both
// for the rest of the window.
import { errorMessage } from '../proto/model/errors';
import type { Logger } from '../proto/model/log';
import type { EdgeAggregate, TrafficStatsStore } from './stats';
import type { Store } from './store/types';
import { WatchedMap } from './store/watched-map';

export const TRAFFIC_PREFIX = '/kedge/traffic/';

/** How often a replica publishes its aggregates. */
export const PUBLISH_INTERVAL_MS = 5_000;
/** A record older than this many intervals is a replica that stopped publishing. */
const STALE_AFTER = 3;
/** Aggregates one replica publishes at most (the busiest first). */
const MAX_PUBLISHED = 5_000;

interface Published {
  at: number;
  windowMs: number;
  edges: EdgeAggregate[];
}

/** This replica's aggregates plus the other replicas' published ones; see the file comment. */
export class SharedTraffic {
  private mirror: WatchedMap | undefined;
  private timer: NodeJS.Timeout | undefined;
  private publishedSomething = false;

  constructor(
    private readonly store: Store,
    private readonly replica: string,
    private readonly local: TrafficStatsStore,
    private readonly opts: { logger: Logger; windowMs: number; intervalMs?: number; now?: () => number },
  ) {}

  private get now(): number {
    return (this.opts.now ?? Date.now)();
  }

  private get intervalMs(): number {
    return this.opts.intervalMs ?? PUBLISH_INTERVAL_MS;
  }

  async start(): Promise<void> {
    if (this.store.kind !== 'etcd') return;
    this.mirror = new WatchedMap(this.store, TRAFFIC_PREFIX, { logger: this.opts.logger, onChange: () => undefined });
    await this.mirror.start();
    this.timer = setInterval(() => void this.publish(), this.intervalMs);
    this.timer.unref();
  }

  /** Writes this replica's aggregates (nothing when it has had none since its last empty write). */
  async publish(): Promise<void> {
    const edges = this.local.edges(this.opts.windowMs);
    if (edges.length === 0 && !this.publishedSomething) return;
    edges.sort((a, b) => b.requests + b.tcpConnections - (a.requests + a.tcpConnections));
    const record: Published = { at: this.now, windowMs: this.opts.windowMs, edges: edges.slice(0, MAX_PUBLISHED) };
    try {
      await this.store.put(TRAFFIC_PREFIX + this.replica, JSON.stringify(record));
      this.publishedSomething = edges.length > 0;
    } catch (err) {
      this.opts.logger.warn({ err: errorMessage(err) }, 'cannot publish this replica\'s traffic figures for the other replicas\' dashboards; retrying');
    }
  }

  /** The aggregates of the window: this replica's own, and every other replica's fresh ones. */
  edges(windowMs: number): EdgeAggregate[] {
    const own = this.local.edges(windowMs);
    if (!this.mirror) return own;
    const out = [...own];
    const freshSince = this.now - STALE_AFTER * this.intervalMs;
    for (const [replica, json] of this.mirror.table()) {
      if (replica === this.replica) continue;
      try {
        const rec = JSON.parse(json) as Published;
        if (rec.at >= freshSince && Array.isArray(rec.edges)) out.push(...rec.edges);
      } catch {
        // A record this version cannot read counts as absent.
      }
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.mirror?.close();
    if (this.mirror && this.publishedSomething) await this.store.delete(TRAFFIC_PREFIX + this.replica).catch(() => undefined);
  }
}
