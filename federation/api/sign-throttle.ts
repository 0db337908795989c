// Who may make a Sign call now. Sign is the one call anyone may make
// without a certificate, and each costs a CSR parse, a token lookup and a
// log line: unthrottled, wrong-token calls ran at ~2,000/s from one client.
//
// Per source address: a token bucket (perSourceRate per second, up to
// perSourceBurst at once) for every attempt, and after
// failuresBeforeBackoff failed authentications in a row (wrong, expired or
// used token, rejected credential; a typo costs nothing) a wait that
// doubles per further failure (failureBackoffMs up to maxFailureBackoffMs),
// cleared by a success. Across the replica, at most
// maxPending calls are worked on at once. A refused call is answered
// RESOURCE_EXHAUSTED with the standard gRPC pushback trailer
// (grpc-retry-pushback-ms) saying when to try again; it costs no CSR
// parse, no store read and no log line of its own.
import type { SignLimits } from '../../proto/model/limits';

/** Why a Sign was not admitted, and when the source may try again. */
export interface SignRefusal {
  reason: 'rate' | 'backoff' | 'pending';
  retryAfterMs: number;
  message: string;
}

interface SourceState {
  tokens: number;
  refilledAt: number;
  failures: number;
  blockedUntil: number;
}

/** Admission for Sign calls; pure apart from the clock passed in. */
export class SignThrottle {
  private readonly sources = new Map<string, SourceState>();
  private pending = 0;
  private refusedTotal = 0;

  constructor(private readonly limits: SignLimits, private readonly clock: () => number = Date.now) {}

  /** Admits a call from `source` (and counts it pending), or says why not. */
  admit(source: string): SignRefusal | undefined {
    const now = this.clock();
    const l = this.limits;
    const st = this.state(source, now);
    if (st.blockedUntil > now) return this.refuse('backoff', st.blockedUntil - now, `${st.failures} failed Sign attempts in a row from ${source}; wait before trying again`);
    st.tokens = Math.min(l.perSourceBurst, st.tokens + ((now - st.refilledAt) / 1000) * l.perSourceRate);
    st.refilledAt = now;
    if (st.tokens < 1) return this.refuse('rate', Math.ceil(((1 - st.tokens) / l.perSourceRate) * 1000), `more than ${l.perSourceRate} Sign attempts per second from ${source} (limits.sign.perSourceRate)`);
    if (this.pending >= l.maxPending) return this.refuse('pending', 1_000, `this replica is working on ${this.pending} Sign calls already (limits.sign.maxPending); try again or another replica`);
    st.tokens -= 1;
    this.pending++;
    return undefined;
  }

  /**
   * The admitted call from `source` ended: 'ok', 'auth' (a failed
   * authentication: counts towards the wait) or 'other' (a bad CSR, a store
   * error: neither clears nor counts).
   */
  done(source: string, outcome: 'ok' | 'auth' | 'other'): void {
    const ok = outcome === 'ok';
    this.pending = Math.max(0, this.pending - 1);
    const now = this.clock();
    const st = this.state(source, now);
    if (ok) {
      st.failures = 0;
      st.blockedUntil = 0;
      return;
    }
    if (outcome === 'other') return;
    st.failures++;
    const over = st.failures - this.limits.failuresBeforeBackoff;
    if (over < 0) return;
    st.blockedUntil = now + Math.min(this.limits.maxFailureBackoffMs, this.limits.failureBackoffMs * 2 ** Math.min(over, 30));
  }

  /** Calls in progress, and refusals since start. */
  stats(): { pending: number; refused: number; sources: number } {
    return { pending: this.pending, refused: this.refusedTotal, sources: this.sources.size };
  }

  private refuse(reason: SignRefusal['reason'], retryAfterMs: number, message: string): SignRefusal {
    this.refusedTotal++;
    return { reason, retryAfterMs: Math.max(1, Math.ceil(retryAfterMs)), message };
  }

  private state(source: string, now: number): SourceState {
    let st = this.sources.get(source);
    if (st) {
      // Most recently used last: the first entry is the one to forget.
      this.sources.delete(source);
      this.sources.set(source, st);
      return st;
    }
    st = { tokens: this.limits.perSourceBurst, refilledAt: now, failures: 0, blockedUntil: 0 };
    this.sources.set(source, st);
    if (this.sources.size > this.limits.trackedSources) this.sources.delete(this.sources.keys().next().value!);
    return st;
  }
}

/** The address part of a gRPC peer string ("1.2.3.4:5678", "[::1]:5678", "ipv4:..."). */
export function peerSource(peer: string): string {
  const p = peer.replace(/^ipv[46]:/, '');
  const m = /^\[([^\]]+)\]:\d+$/.exec(p) ?? /^([^:]+):\d+$/.exec(p);
  const a = m ? m[1]! : p;
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}
