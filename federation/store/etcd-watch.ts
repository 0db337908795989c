// One Store watch on etcd: its own gRPC watch stream, resumed after any
// disconnect (an etcd restart, a dropped connection) from the revision after
// the last one it delivered, so callers see no gap and no repeat. Only a
// compaction past that revision ends it, with KEDGE_STORE_COMPACTED, so the
// caller relists.
//
// Resume bookkeeping (`next`, etcd's inclusive start_revision):
// - after events: the last event's revision + 1 (etcd never splits one
//   revision's events across responses unless asked to fragment);
// - after a progress notification: its header revision + 1 (etcd only sends
//   them to watchers that have caught up);
// - never from a `created` header, which for a watcher still replaying
//   history is the store's current revision, not how far it has got.
import type { IDuplexStream, IResponseHeader, IWatchRequest, IWatchResponse, WatchClient } from 'etcd3';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { endStream } from './etcd-keepalive';
import { classifyEtcdError, etcdFailure } from './etcd-errors';
import { backoffMs, eventRevision, int, toWatchEvent, type KeyCodec } from './etcd-keys';
import type { Watch, WatchEvent } from './types';

type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse>;

const RECONNECT_BASE_MS = 100;
const RECONNECT_MAX_MS = 2000;
// A created response normally comes within milliseconds; a stream that stays
// silent this long is stuck (for example a connection that died unnoticed).
const CREATE_TIMEOUT_MS = 10_000;

/** What an EtcdWatch needs from its store. */
export interface WatchDeps {
  watches: WatchClient;
  codec: KeyCodec;
  logger: Logger;
  endpoints: string;
  /** The highest revision the store has seen, and where to report new ones. */
  revision(): number;
  observe(h: IResponseHeader | undefined): void;
  /** Makes the next request authenticate again (a no-op without auth). */
  refreshAuth(): void;
  /** The etcd user, for messages; undefined without auth. */
  user?: string | undefined;
  /** Called once when the watch ends, by close or by error. */
  ended(w: EtcdWatch): void;
}

/** A self-healing watch on one prefix. */
export class EtcdWatch implements Watch {
  private next: number;
  // Started "from now" with the store's last seen revision as a stand-in for
  // now; allowed once to skip ahead when that stand-in was compacted (below).
  private implicitStart: boolean;
  private firstCreated: number | undefined;
  private stream: WatchStream | undefined;
  private timer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private disconnectedAt: number | undefined;
  private closed = false;

  constructor(
    private readonly deps: WatchDeps,
    private readonly prefix: string,
    fromRevision: number | undefined,
    private readonly onEvents: (events: WatchEvent[]) => void,
    private readonly onError: ((err: Error) => void) | undefined,
  ) {
    this.implicitStart = fromRevision === undefined;
    this.next = (fromRevision ?? deps.revision()) + 1;
    this.connect();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    if (this.stream) endStream(this.stream);
    this.stream = undefined;
    this.deps.ended(this);
  }

  private connect(): void {
    this.timer = undefined;
    if (this.closed) return;
    this.deps.watches.watch().then(
      (stream) => {
        stream.on('data', (res) => this.onResponse(stream, res));
        stream.on('error', (err) => this.onBroken(stream, err));
        stream.on('end', () => this.onBroken(stream, new Error('etcd ended the watch stream')));
        if (this.closed) return endStream(stream);
        this.stream = stream;
        this.timer = setTimeout(() => this.onBroken(stream, new Error(`etcd did not confirm the watch within ${CREATE_TIMEOUT_MS} ms`)), CREATE_TIMEOUT_MS);
        this.timer.unref();
        try {
          stream.write({ create_request: { ...this.deps.codec.range(this.prefix), start_revision: this.next, progress_notify: true } });
        } catch (err) {
          this.onBroken(stream, err);
        }
      },
      (err: unknown) => this.onBroken(undefined, err),
    );
  }

  private onResponse(stream: WatchStream, res: IWatchResponse): void {
    if (this.closed || stream !== this.stream) return;
    this.deps.observe(res.header);
    if (res.canceled && /invalid auth token/.test(res.cancel_reason ?? '')) {
      // The token expired (--auth-token-ttl) or died with an etcd restart:
      // authenticate again and reopen from where the watch was.
      this.deps.refreshAuth();
      return this.onBroken(stream, new Error(`etcd cancelled the watch: ${res.cancel_reason}`));
    }
    if (res.canceled) return this.onCanceled(res);
    if (res.created) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.attempt = 0;
      this.firstCreated ??= int(res.header.revision);
      if (this.disconnectedAt !== undefined) {
        this.deps.logger.info({ prefix: this.prefix, fromRevision: this.next - 1, downMs: Date.now() - this.disconnectedAt }, 'store watch resumed');
        this.disconnectedAt = undefined;
      }
    }
    if (res.events.length === 0) {
      // A progress notification: nothing under the prefix up to this revision.
      if (!res.created) this.next = Math.max(this.next, int(res.header.revision) + 1);
      return;
    }
    const events = res.events.map((e) => toWatchEvent(e, this.deps.codec)).filter((e) => eventRevision(e) >= this.next);
    if (events.length === 0) return;
    this.next = eventRevision(events[events.length - 1]!) + 1;
    this.implicitStart = false;
    try {
      this.onEvents(events);
    } catch (err) {
      this.deps.logger.error({ err, prefix: this.prefix }, 'store watch callback threw');
    }
  }

  private onCanceled(res: IWatchResponse): void {
    const compactedAt = int(res.compact_revision);
    if (compactedAt > 0 && this.implicitStart && this.firstCreated !== undefined && compactedAt <= this.firstCreated + 1) {
      // Started "from now" with a stale stand-in for now: everything from the
      // compaction point on is still there and covers every change since etcd
      // registered this watch, which is what "from now" asked for.
      this.deps.logger.debug({ prefix: this.prefix, from: this.next, compactedAt }, 'store watch start revision was compacted; starting at the compaction point');
      this.implicitStart = false;
      this.next = compactedAt;
      this.restart();
      return;
    }
    const reason = res.cancel_reason ?? '';
    const err = compactedAt > 0
      ? new KedgeError('KEDGE_STORE_COMPACTED', `watch on "${this.prefix}" from revision ${this.next - 1} asks etcd at ${this.deps.endpoints} for changes it has compacted away (it keeps those from revision ${compactedAt}); list the prefix again and watch from the revision the list returns`)
      : classifyEtcdError(reason) === 'permission-denied'
        ? etcdFailure(new Error(reason), { endpoints: this.deps.endpoints, what: `the watch on "${this.prefix}"`, mutation: false, timeoutMs: 0, ...(this.deps.user === undefined ? {} : { user: this.deps.user }) })
        : new KedgeError('KEDGE_STORE_UNAVAILABLE', `etcd at ${this.deps.endpoints} cancelled the watch on "${this.prefix}"${reason ? ` (${reason})` : ''}; check etcd's logs, then list the prefix again and watch from the revision the list returns`);
    this.fail(err);
  }

  private onBroken(stream: WatchStream | undefined, err: unknown): void {
    if (this.closed || (stream !== undefined && stream !== this.stream)) return;
    if (this.disconnectedAt === undefined) {
      this.disconnectedAt = Date.now();
      this.deps.logger.warn({ prefix: this.prefix, fromRevision: this.next - 1, err: errorMessage(err), endpoints: this.deps.endpoints }, 'store watch lost etcd; reconnecting');
    }
    this.restart(backoffMs(this.attempt++, RECONNECT_BASE_MS, RECONNECT_MAX_MS));
  }

  private restart(delayMs = 0): void {
    clearTimeout(this.timer);
    if (this.stream) endStream(this.stream);
    this.stream = undefined;
    this.timer = setTimeout(() => this.connect(), delayMs);
    this.timer.unref();
  }

  private fail(err: KedgeError): void {
    this.close();
    if (!this.onError) return this.deps.logger.error({ err, prefix: this.prefix }, 'store watch failed and has no error handler');
    try {
      this.onError(err);
    } catch (thrown) {
      this.deps.logger.error({ err: thrown, prefix: this.prefix }, 'store watch error handler threw');
    }
  }
}
