// List-then-watch of one resource, kept current like client-go's reflector:
// relist when the resourceVersion expired (410 Gone), resume the watch from
// the last resourceVersion (bookmarks keep it fresh) when a stream ends,
// retry with jittered backoff when the API server fails, and report
// connected / error for the source's status. The objects are replaced as a
// whole on relist, so a relist never duplicates or loses an object.
import type { Logger } from '../../../proto/model/log';
import { KedgeError } from '../../../proto/model/errors';
import { backoffDelay, type BackoffPolicy } from './backoff';
import { httpStatusOf, K8S_ERRORS } from './errors';
import type { WatchCallbacks, WatchHandle } from './client';

/** The part of a Kubernetes object a reflector reads. */
export interface KubeObjectLike {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

/** A list response as the generated clients return it. */
export interface KubeList<T> {
  items?: T[];
  metadata?: { resourceVersion?: string };
}

/** What changed in a reflector's objects: everything (after a list) or one object. */
export type ObjectChange<T> = { kind: 'reset' } | { kind: 'set'; obj: T; prev: T | undefined } | { kind: 'delete'; prev: T };

/** How a reflector talks to its API server. */
export interface ReflectorOptions<T> {
  /** Plural resource name, for messages: "services". */
  resource: string;
  /** API path of the collection: "/api/v1/services". */
  watchPath: string;
  server: string;
  list(signal: AbortSignal): Promise<KubeList<T>>;
  /** Keeps only what the mapping reads (a Node's status lists every image on it). */
  trim(obj: T): T;
  openWatch(path: string, params: Record<string, string | number | boolean>, cb: WatchCallbacks): WatchHandle;
  /** Turns a client error into an operator-facing KedgeError. */
  describe(err: unknown, what: string): KedgeError;
  logger: Logger;
  requestTimeoutMs: number;
  /** Server-side watch timeout; each watch asks for a random value between this and twice it. */
  watchTimeoutSeconds: number;
  backoff: BackoffPolicy;
  /** The objects changed (called synchronously, after the change is applied). */
  onObjects(change: ObjectChange<T>): void;
  /** connected or error changed. */
  onState(): void;
}

type WatchOutcome = { kind: 'expired' } | { kind: 'ended'; events: number; ms: number } | { kind: 'error'; err: KedgeError };

// A watch the server closes sooner than this with no event counts as a
// failure: a server that answers and hangs up at once must not be hammered.
const MIN_HEALTHY_WATCH_MS = 1000;
// A watch still open this long after its own timeoutSeconds is stuck (a
// half-open connection): abort it and resume.
const WATCH_DEADLINE_GRACE_MS = 15_000;

/** One resource's objects, kept in sync with the API server. */
export class Reflector<T extends KubeObjectLike> {
  private readonly objects = new Map<string, T>();
  private rv = '';
  /** True while the last list or watch of this resource succeeded. */
  connected = false;
  /** True once a list succeeded. */
  synced = false;
  /** The current failure, undefined while connected. */
  error: KedgeError | undefined;
  /** Resolves once the first list succeeded or failed. */
  readonly firstAttempt: Promise<void>;
  private resolveFirst: () => void = () => {};
  private failures = 0;
  private expiredInARow = 0;
  private closed = false;
  private watch: WatchHandle | undefined;
  private listAbort: AbortController | undefined;
  private sleeping: { timer: NodeJS.Timeout; wake: () => void } | undefined;

  constructor(private readonly o: ReflectorOptions<T>) {
    this.firstAttempt = new Promise((resolve) => (this.resolveFirst = resolve));
  }

  /** The current objects (the reflector's own; do not mutate). */
  items(): T[] {
    return [...this.objects.values()];
  }

  /** One object by `namespace/name` (`/name` for cluster-scoped ones). */
  get(key: string): T | undefined {
    return this.objects.get(key);
  }

  start(): void {
    void this.run();
  }

  close(): void {
    this.closed = true;
    this.watch?.abort();
    this.listAbort?.abort();
    if (this.sleeping) {
      clearTimeout(this.sleeping.timer);
      this.sleeping.wake();
    }
    this.resolveFirst();
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      try {
        if (this.rv === '') await this.relist();
        if (this.closed) return;
        const outcome = await this.watchOnce();
        if (this.closed) return;
        if (outcome.kind === 'expired') {
          this.o.logger.info({ resource: this.o.resource }, 'resourceVersion expired (410 Gone); relisting');
          this.rv = '';
          // A second 410 right after a fresh list: the server cannot keep up; do not spin.
          if (++this.expiredInARow > 1) await this.sleep(backoffDelay(this.expiredInARow - 2, this.o.backoff));
          continue;
        }
        if (outcome.kind === 'error') throw outcome.err;
        if (outcome.events === 0 && outcome.ms < MIN_HEALTHY_WATCH_MS) {
          throw new KedgeError(K8S_ERRORS.BAD_RESPONSE, `${this.o.server} closed the ${this.o.resource} watch at once without events: is it a Kubernetes API server?`);
        }
        this.failures = 0;
      } catch (err) {
        if (this.closed) return;
        this.fail(err instanceof KedgeError ? err : this.o.describe(err, `sync ${this.o.resource}`));
        await this.sleep(backoffDelay(this.failures++, this.o.backoff));
      }
    }
  }

  private async relist(): Promise<void> {
    const abort = new AbortController();
    this.listAbort = abort;
    let list: KubeList<T>;
    try {
      list = await this.o.list(AbortSignal.any([abort.signal, AbortSignal.timeout(this.o.requestTimeoutMs)]));
    } catch (err) {
      throw this.o.describe(err, `list ${this.o.resource}`);
    } finally {
      this.listAbort = undefined;
    }
    const rv = list?.metadata?.resourceVersion;
    if (!list || !Array.isArray(list.items) || !rv) {
      throw new KedgeError(K8S_ERRORS.BAD_RESPONSE, `${this.o.server} sent a ${this.o.resource} list without items or resourceVersion: is it a Kubernetes API server?`);
    }
    this.objects.clear();
    let skipped = 0;
    for (const item of list.items) {
      const key = keyOf(item);
      if (key) this.objects.set(key, this.o.trim(item));
      else skipped++;
    }
    if (skipped > 0) this.o.logger.warn({ resource: this.o.resource, skipped }, 'ignoring listed objects without metadata.name');
    this.rv = rv;
    this.synced = true;
    this.resolveFirst();
    this.setConnected();
    this.o.onObjects({ kind: 'reset' });
  }

  private watchOnce(): Promise<WatchOutcome> {
    return new Promise((resolve) => {
      const started = Date.now();
      const timeoutSeconds = this.o.watchTimeoutSeconds + Math.floor(Math.random() * this.o.watchTimeoutSeconds);
      let events = 0;
      let settled = false;
      const finish = (outcome: WatchOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        this.watch?.abort();
        this.watch = undefined;
        resolve(outcome);
      };
      const deadline = setTimeout(() => finish({ kind: 'ended', events: 1, ms: Date.now() - started }), timeoutSeconds * 1000 + WATCH_DEADLINE_GRACE_MS);
      this.watch = this.o.openWatch(this.o.watchPath, { resourceVersion: this.rv, allowWatchBookmarks: true, timeoutSeconds }, {
        onEstablished: () => this.setConnected(),
        onEvent: (type, obj) => {
          if (settled) return;
          events++;
          // The client's Watch swallows exceptions from this callback; report them instead.
          try {
            const status = this.apply(type, obj);
            if (status === 'expired') finish({ kind: 'expired' });
            else if (status) finish({ kind: 'error', err: status });
          } catch (err) {
            this.o.logger.error({ resource: this.o.resource, type, err: err instanceof Error ? err.message : String(err) }, 'applying a watch event failed; relisting');
            this.rv = '';
            finish({ kind: 'expired' });
          }
        },
        onDone: (err) => {
          if (err && httpStatusOf(err) === 410) finish({ kind: 'expired' });
          else if (err) finish({ kind: 'error', err: this.o.describe(err, `watch ${this.o.resource}`) });
          else finish({ kind: 'ended', events, ms: Date.now() - started });
        },
      });
    });
  }

  /** Applies one watch event; returns 'expired' or an error for ERROR events. */
  private apply(type: string, obj: unknown): 'expired' | KedgeError | undefined {
    if (!obj || typeof obj !== 'object') return undefined;
    const o = obj as T & { code?: unknown; reason?: unknown; message?: unknown };
    const rv = o.metadata?.resourceVersion;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        const key = keyOf(o);
        if (!key) {
          this.o.logger.warn({ resource: this.o.resource, type }, 'ignoring watch event without metadata.name');
          return undefined;
        }
        const prev = this.objects.get(key);
        const kept = this.o.trim(o);
        if (type === 'DELETED') this.objects.delete(key);
        else this.objects.set(key, kept);
        if (rv) this.rv = rv;
        this.expiredInARow = 0;
        if (type !== 'DELETED') this.o.onObjects({ kind: 'set', obj: kept, prev });
        else if (prev) this.o.onObjects({ kind: 'delete', prev });
        return undefined;
      }
      case 'BOOKMARK':
        if (rv) this.rv = rv;
        return undefined;
      case 'ERROR':
        if (o.code === 410) return 'expired';
        return new KedgeError(
          K8S_ERRORS.SERVER_ERROR,
          `${this.o.server} ended the ${this.o.resource} watch: ${String(o.reason ?? 'error')} ${String(o.message ?? '')}`.trim(),
        );
      default:
        return undefined;
    }
  }

  private setConnected(): void {
    if (this.connected && !this.error) return;
    const wasFailing = this.error !== undefined;
    this.connected = true;
    this.error = undefined;
    if (wasFailing) this.o.logger.info({ resource: this.o.resource }, 'Kubernetes API reachable again');
    this.o.onState();
  }

  private fail(err: KedgeError): void {
    const changed = this.connected || this.error?.message !== err.message;
    this.connected = false;
    this.error = err;
    this.resolveFirst();
    if (changed) {
      this.o.logger.warn({ resource: this.o.resource, code: err.code, err: err.message }, 'Kubernetes list/watch failed; retrying with backoff');
      this.o.onState();
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.sleeping = undefined;
        resolve();
      };
      this.sleeping = { timer: setTimeout(wake, ms), wake };
    });
  }
}

/** The key objects are stored under: `namespace/name`. */
export function keyOf(o: KubeObjectLike): string | undefined {
  const name = o.metadata?.name;
  return name ? `${o.metadata?.namespace ?? ''}/${name}` : undefined;
}
