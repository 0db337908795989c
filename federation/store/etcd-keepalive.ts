// Single lease renewals over one shared LeaseKeepAlive stream. etcd has no
// unary renew call, and a stream per renewal would cost a stream setup for
// every agent heartbeat; one long-lived bidirectional stream carries them
// all, each answer naming its lease ID. A stream that fails or stops
// answering is dropped (its pending renewals fail and are retried by the
// caller's deadline loop) and the next renewal opens a new one.
import type { IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, IResponseHeader, LeaseClient } from 'etcd3';
import { int } from './etcd-keys';

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

interface Waiter { resolve: (ttlSeconds: number) => void; reject: (err: unknown) => void; timer: NodeJS.Timeout }

/** One stream and the renewals waiting on it. */
interface Channel { stream: KeepAliveStream; waiting: Map<string, Waiter[]>; dead: boolean }

/** Renews leases one keepalive at a time over a shared stream. */
export class LeaseKeepAliver {
  private ch: Channel | undefined;
  private opening: Promise<Channel> | undefined;
  private closed = false;

  constructor(private readonly leases: LeaseClient, private readonly observe: (h: IResponseHeader | undefined) => void) {}

  /**
   * Sends one keepalive for `lease` and resolves with the TTL etcd granted,
   * 0 when etcd does not know the lease (expired or revoked). Rejects with
   * the gRPC error when the stream fails or no answer comes by `deadline`.
   */
  async once(lease: string, deadline: number): Promise<number> {
    const ch = this.ch ?? (await this.open());
    if (ch.dead) throw unavailable('the lease keepalive stream closed');
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(ch, Object.assign(new Error(`4 DEADLINE_EXCEEDED: etcd sent no keepalive answer for lease ${lease}`), { code: 4 })), Math.max(0, deadline - Date.now()));
      const list = ch.waiting.get(lease) ?? [];
      list.push({ resolve, reject, timer });
      ch.waiting.set(lease, list);
      ch.stream.write({ ID: lease });
    });
  }

  close(): void {
    this.closed = true;
    if (this.ch) this.fail(this.ch, cancelled());
  }

  private open(): Promise<Channel> {
    if (this.closed) return Promise.reject(cancelled());
    this.opening ??= this.leases.leaseKeepAlive().then(
      (stream) => {
        this.opening = undefined;
        const ch: Channel = { stream, waiting: new Map(), dead: false };
        stream.on('data', (res) => this.answer(ch, res));
        stream.on('error', (err) => this.fail(ch, err));
        stream.on('end', () => this.fail(ch, unavailable('etcd ended the lease keepalive stream')));
        this.ch = ch;
        if (this.closed) this.fail(ch, cancelled());
        return ch;
      },
      (err: unknown) => {
        this.opening = undefined;
        throw err;
      },
    );
    return this.opening;
  }

  private answer(ch: Channel, res: ILeaseKeepAliveResponse): void {
    this.observe(res.header);
    const id = String(res.ID);
    const list = ch.waiting.get(id);
    const w = list?.shift();
    if (list?.length === 0) ch.waiting.delete(id);
    if (!w) return;
    clearTimeout(w.timer);
    w.resolve(int(res.TTL));
  }

  private fail(ch: Channel, err: unknown): void {
    if (ch.dead) return;
    ch.dead = true;
    if (this.ch === ch) this.ch = undefined;
    endStream(ch.stream);
    for (const list of ch.waiting.values()) {
      for (const w of list) {
        clearTimeout(w.timer);
        w.reject(err);
      }
    }
    ch.waiting.clear();
  }
}

const unavailable = (why: string) => Object.assign(new Error(`14 UNAVAILABLE: ${why}`), { code: 14 });
const cancelled = () => Object.assign(new Error('1 CANCELLED: the store was closed'), { code: 1 });

/**
 * Ends and cancels a stream this side gives up on. Ending it first matters:
 * etcd3's own error listener treats an error on a still-writable stream as a
 * host failure and closes every gRPC client of that host, which would cut
 * the other watch and keepalive streams too.
 */
export function endStream(stream: { end(): void; cancel(): void }): void {
  try {
    stream.end();
    stream.cancel();
  } catch {
    // already finished
  }
}
