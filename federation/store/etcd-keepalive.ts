// Single lease renewals over one shared LeaseKeepAlive stream. etcd has no
// unary renew call, and a stream per renewal would cost a stream setup for
// every agent heartbeat; one long-lived bidirectional stream carries them
// all, each answer naming its lease ID. A renewal whose answer does not come
// by its deadline fails; if the stream has answered nothing since that
// renewal was written it is taken as stuck and dropped with everything
// pending on it, but a stream that is answering, only late (etcd under
// load), is kept and the other renewals on it go on. A stream that errors
// or ends fails what is pending on it, and the next renewal opens a new one.
import type { IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, IResponseHeader, LeaseClient } from 'etcd3';
import { int } from './etcd-keys';

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

interface Waiter { resolve: (ttlSeconds: number) => void; reject: (err: unknown) => void; timer: NodeJS.Timeout; sentAt: number }

/** One stream and the renewals waiting on it. */
interface Channel { stream: KeepAliveStream; waiting: Map<string, Waiter[]>; dead: boolean; /** When the last answer came (performance.now()). */ answeredAt: number }

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
      const list = ch.waiting.get(lease) ?? [];
      const waiter: Waiter = {
        resolve,
        reject,
        sentAt: performance.now(),
        timer: setTimeout(() => {
          const late = Object.assign(new Error(`4 DEADLINE_EXCEEDED: etcd sent no keepalive answer for lease ${lease} in time`), { code: 4 });
          if (ch.answeredAt < waiter.sentAt) return this.fail(ch, late);
          // Only this renewal gives up. Its answer, if it still comes, is
          // matched to the next waiter for the lease, which is just as good:
          // any answer renews the lease for a full TTL.
          const at = list.indexOf(waiter);
          if (at >= 0) list.splice(at, 1);
          if (list.length === 0 && ch.waiting.get(lease) === list) ch.waiting.delete(lease);
          reject(late);
        }, Math.max(0, deadline - Date.now())),
      };
      list.push(waiter);
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
        const ch: Channel = { stream, waiting: new Map(), dead: false, answeredAt: -1 };
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
    ch.answeredAt = performance.now();
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
