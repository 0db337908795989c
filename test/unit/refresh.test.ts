// Refresh timing as tables: when to renew, how long to back off, how loudly
// to warn.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { expiryWarning, renewalDelayMs, retryDelayMs, type ExpiryState } from '../../agent/identity/refresh';

const H = 3_600_000;
const T0 = Date.UTC(2030, 0, 1);
const at = (ms: number): Date => new Date(T0 + ms);

describe('renewalDelayMs', () => {
  // A 24 h certificate issued at T0: renew between 12 h (50%) and 16.8 h (70%).
  const cases: { name: string; now: number; random: number; want: number }[] = [
    { name: 'fresh, earliest jitter', now: 0, random: 0, want: 12 * H },
    { name: 'fresh, middle jitter', now: 0, random: 0.5, want: 14.4 * H },
    { name: 'fresh, latest jitter', now: 0, random: 0.999_999, want: Math.round(16.8 * H - 0.2 * 24 * H * 0.000_001) },
    { name: 'an hour in', now: H, random: 0, want: 11 * H },
    { name: 'exactly at the renewal point', now: 12 * H, random: 0, want: 0 },
    { name: 'past the renewal point', now: 13 * H, random: 0, want: 0 },
    { name: 'expired', now: 30 * H, random: 0.5, want: 0 },
    { name: 'random out of range is clamped to 1', now: 0, random: 7, want: 16.8 * H },
    { name: 'random out of range is clamped to 0', now: 0, random: -1, want: 12 * H },
    { name: 'NaN random counts as 0', now: 0, random: Number.NaN, want: 12 * H },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(renewalDelayMs({ notBefore: at(0), notAfter: at(24 * H), now: at(c.now), random: c.random }), c.want);
    });
  }

  it('is 0, never negative, for a certificate with no lifetime', () => {
    assert.equal(renewalDelayMs({ notBefore: at(H), notAfter: at(H), now: at(0), random: 0.5 }), 0);
    assert.equal(renewalDelayMs({ notBefore: at(2 * H), notAfter: at(H), now: at(0), random: 0.5 }), 0);
  });

  it('always lands between 50% and 70% of the lifetime', () => {
    for (let i = 0; i < 1000; i++) {
      const d = renewalDelayMs({ notBefore: at(0), notAfter: at(24 * H), now: at(0), random: Math.random() });
      assert.ok(d >= 12 * H && d <= 16.8 * H, String(d));
    }
  });
});

describe('retryDelayMs', () => {
  const far = at(24 * H);
  const cases: { name: string; attempt: number; random: number; notAfter: Date; now: Date; want: number }[] = [
    { name: 'first retry, least jitter: half the 1 s base', attempt: 0, random: 0, notAfter: far, now: at(0), want: 500 },
    { name: 'first retry, most jitter', attempt: 0, random: 1, notAfter: far, now: at(0), want: 1000 },
    { name: 'doubles per attempt', attempt: 3, random: 1, notAfter: far, now: at(0), want: 8000 },
    { name: 'jitter keeps at least half', attempt: 3, random: 0, notAfter: far, now: at(0), want: 4000 },
    { name: 'capped at 60 s', attempt: 6, random: 1, notAfter: far, now: at(0), want: 60_000 },
    { name: 'capped at 60 s for huge attempts', attempt: 1e9, random: 1, notAfter: far, now: at(0), want: 60_000 },
    { name: 'a negative attempt counts as the first', attempt: -5, random: 1, notAfter: far, now: at(0), want: 1000 },
    { name: 'at most a quarter of the time left', attempt: 10, random: 1, notAfter: at(100_000), now: at(0), want: 25_000 },
    { name: 'near expiry retries come quickly', attempt: 10, random: 1, notAfter: at(2000), now: at(0), want: 500 },
    { name: 'but never under 100 ms', attempt: 10, random: 1, notAfter: at(100), now: at(0), want: 100 },
    { name: 'after expiry: plain backoff', attempt: 2, random: 1, notAfter: at(0), now: at(H), want: 4000 },
    { name: 'after expiry: still capped at 60 s', attempt: 20, random: 0.5, notAfter: at(0), now: at(H), want: 45_000 },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(retryDelayMs(c.attempt, { notAfter: c.notAfter, now: c.now, random: c.random }), c.want);
    });
  }
});

describe('expiryWarning', () => {
  // notBefore at T0; 20% of 24 h is 4.8 h; 20% of 10 days is 2 days.
  const cases: { name: string; lifetime: number; now: number; want: ExpiryState }[] = [
    { name: 'fresh 24 h certificate', lifetime: 24 * H, now: 0, want: 'ok' },
    { name: 'just over 20% left', lifetime: 24 * H, now: 19 * H, want: 'ok' },
    { name: 'under 20% left', lifetime: 24 * H, now: 19.5 * H, want: 'warn' },
    { name: 'minutes left', lifetime: 24 * H, now: 23.9 * H, want: 'warn' },
    { name: 'at notAfter', lifetime: 24 * H, now: 24 * H, want: 'expired' },
    { name: 'long past', lifetime: 24 * H, now: 100 * H, want: 'expired' },
    { name: 'long certificate, 3 days left', lifetime: 240 * H, now: 168 * H, want: 'ok' },
    { name: 'long certificate, under 20% left', lifetime: 240 * H, now: 200 * H, want: 'warn' },
    { name: 'short certificate: under an hour left warns at once', lifetime: 0.5 * H, now: 0, want: 'warn' },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(expiryWarning({ notBefore: at(0), notAfter: at(c.lifetime), now: at(c.now) }), c.want);
    });
  }
});
