// When to renew the workload certificate and when to retry a failed renewal.
// Pure functions over times and an injected random number in [0, 1), so
// they are tested with tables and no timers.
//
// Renewal is timed from issuance, not notBefore: the CA backdates notBefore
// by a minute for clock skew, so with short lifetimes a point computed from
// notBefore was already past when a certificate arrived, and agents renewed
// in a loop (about 80-140 times a minute at --workload-cert-ttl 20s).

import { CERT_BACKDATE_MS } from '../../proto/model/certs';

const RENEW_FROM = 0.5;
const RENEW_TO = 0.7;
/**
 * No renewal comes sooner than this after the last one was scheduled. The
 * shortest lifetime the federation grants is 10 s (renewed after 5 s), so
 * the floor only ever applies to a certificate already past its renewal
 * point (loaded from disk, or a clock that jumped).
 */
export const RENEW_FLOOR_MS = 1_000;
const RETRY_BASE_MS = 1_000;
const RETRY_CAP_MS = 60_000;
// A retry never waits more than this share of the time left, so attempts
// bunch up (rather than stop) as expiry approaches.
const RETRY_REMAINING_FRACTION = 0.25;
const RETRY_MIN_MS = 100;
const WARN_LIFETIME_FRACTION = 0.2;
const WARN_REMAINING_MS = 3_600_000;

/** A certificate's validity and the current time. */
export interface Validity {
  notBefore: Date;
  notAfter: Date;
  now: Date;
}

// Math.random() is in [0, 1); clamp anything else a caller injects.
function unit(random: number): number {
  return Number.isFinite(random) ? Math.min(Math.max(random, 0), 1) : 0;
}

/** When the agent got a certificate, for timing its renewal. */
export interface Issuance {
  /**
   * The agent's clock when the certificate arrived. Renewal is timed from
   * here, so a skewed agent clock does not move it. Unknown for a
   * certificate loaded from disk.
   */
  receivedAt?: Date;
  /** How far the CA set notBefore back from issuance (default CERT_BACKDATE_MS). */
  backdateMs?: number;
}

/**
 * The lifetime the CA granted: notAfter - notBefore without the backdate.
 * A certificate not following the convention (no room for the backdate)
 * counts with its whole validity.
 */
export function grantedLifetimeMs(v: { notBefore: Date; notAfter: Date }, backdateMs = CERT_BACKDATE_MS): number {
  const span = v.notAfter.getTime() - v.notBefore.getTime();
  return span > backdateMs ? span - backdateMs : span;
}

/**
 * Milliseconds until renewal: a uniformly jittered point between 50% and 70%
 * of the lifetime granted (jitter spreads a fleet's renewals), counted from
 * issuance: when the certificate arrived, or else notBefore plus the
 * backdate. Never less than RENEW_FLOOR_MS, so no lifetime and no clock can
 * make a renewal loop; never negative.
 */
export function renewalDelayMs(v: Validity & Issuance & { random: number }): number {
  const backdate = v.backdateMs ?? CERT_BACKDATE_MS;
  const lifetime = grantedLifetimeMs(v, backdate);
  if (!(lifetime > 0)) return RENEW_FLOOR_MS;
  const span = v.notAfter.getTime() - v.notBefore.getTime();
  const issuedAt = v.receivedAt ? v.receivedAt.getTime() : v.notBefore.getTime() + (span > backdate ? backdate : 0);
  const at = issuedAt + lifetime * (RENEW_FROM + (RENEW_TO - RENEW_FROM) * unit(v.random));
  return Math.max(RENEW_FLOOR_MS, Math.round(at - v.now.getTime()));
}

/**
 * Milliseconds before retry number `attempt` (0 = first retry) of a failed
 * renewal: exponential backoff from 1 s capped at 60 s, jittered between half
 * and all of it, but at most a quarter of the time the certificate has left,
 * and at least 100 ms.
 */
export function retryDelayMs(attempt: number, v: { notAfter: Date; now: Date; random: number }): number {
  const n = Number.isFinite(attempt) && attempt > 0 ? Math.floor(attempt) : 0;
  const backoff = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** Math.min(n, 30));
  let delay = backoff * (0.5 + 0.5 * unit(v.random));
  const remaining = v.notAfter.getTime() - v.now.getTime();
  if (remaining > 0) delay = Math.min(delay, remaining * RETRY_REMAINING_FRACTION);
  return Math.max(RETRY_MIN_MS, Math.round(delay));
}

/** How loudly to log about a certificate that could not be renewed. */
export type ExpiryState = 'ok' | 'warn' | 'expired';

/** 'expired' past notAfter; 'warn' with less than 20% of the lifetime or less than an hour left; else 'ok'. */
export function expiryWarning(v: Validity): ExpiryState {
  const remaining = v.notAfter.getTime() - v.now.getTime();
  if (remaining <= 0) return 'expired';
  const lifetime = v.notAfter.getTime() - v.notBefore.getTime();
  if (remaining < WARN_LIFETIME_FRACTION * lifetime || remaining < WARN_REMAINING_MS) return 'warn';
  return 'ok';
}
