// A prefix of the store mirrored in memory: listed once, then kept current
// by a watch, relisting when the watch falls behind. Every replica reads
// shared tables (VIPs, traffic policies) this way.
import { errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import type { Store, WatchEvent } from './types';

/** Keys under `prefix` (without it) mapped to their values. */
export class WatchedMap {
  private readonly map = new Map<string, string>();
  private watch: { close(): void } | undefined;
  private closed = false;

  constructor(private readonly store: Store, private readonly prefix: string, private readonly opts: { logger: Logger; onChange: () => void }) {}

  async start(): Promise<void> {
    const { kvs, revision } = await this.store.list(this.prefix);
    this.map.clear();
    for (const kv of kvs) this.map.set(kv.key.slice(this.prefix.length), kv.value);
    this.watch?.close();
    this.watch = this.store.watch(this.prefix, { fromRevision: revision }, (events: WatchEvent[]) => {
      for (const ev of events) {
        if (ev.type === 'put') this.map.set(ev.kv.key.slice(this.prefix.length), ev.kv.value);
        else this.map.delete(ev.key.slice(this.prefix.length));
      }
      this.opts.onChange();
    }, (err) => {
      if (this.closed) return;
      this.opts.logger.warn({ prefix: this.prefix, err: errorMessage(err) }, 'watch failed; relisting');
      setTimeout(() => void this.start().then(this.opts.onChange, () => undefined), 500).unref();
    });
  }

  /** The current table; also updated locally by set() before the watch echoes it. */
  table(): Map<string, string> {
    return this.map;
  }

  close(): void {
    this.closed = true;
    this.watch?.close();
  }
}
