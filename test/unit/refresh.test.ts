// Refresh timing as tables: when to renew, how long to back off, how loudly
// to warn.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { expiryWarning, grantedLifetimeMs, renewalDelayMs, retryDelayMs, RENEW_FLOOR_MS, type ExpiryState } from '../../agent/identity/refresh';
import { CERT_BACKDATE_MS } from '../../proto/model/certs';

const H = 3_600_000;
const T0 = Date.UTC(2030, 0, 1);
const at = (ms: number): Date => new Date(T0 + ms);

describe('renewalDelayMs', () => {
  // A 24 h certificate issued at T0 with no backdate: renew between 12 h (50%) and 16.8 h (70%).
  const cases: { name: string; now: number; random: number; want: number }[] = [
    { name: 'fresh, earliest jitter', now: 0, random: 0, want: 12 * H },
    { name: 'fresh, middle jitter', now: 0, random: 0.5, want: 14.4 * H },
    { name: 'fresh, latest jitter', now: 0, random: 0.999_999, want: Math.round(16.8 * H - 0.2 * 24 * H * 0.000_001) },
    { name: 'an hour in', now: H, random: 0, want: 11 * H },
    { name: 'exactly at the renewal point: the floor', now: 12 * H, random: 0, want: RENEW_FLOOR_MS },
    { name: 'past the renewal point: the floor', now: 13 * H, random: 0, want: RENEW_FLOOR_MS },
    { name: 'expired: the floor', now: 30 * H, random: 0.5, want: RENEW_FLOOR_MS },
    { name: 'random out of range is clamped to 1', now: 0, random: 7, want: 16.8 * H },
    { name: 'random out of range is clamped to 0', now: 0, random: -1, want: 12 * H },
    { name: 'NaN random counts as 0', now: 0, random: Number.NaN, want: 12 * H },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(renewalDelayMs({ notBefore: at(0), notAfter: at(24 * H), now: at(c.now), random: c.random, backdateMs: 0 }), c.want);
    });
  }

  it('is the floor, never less, for a certificate with no lifetime', () => {
    assert.equal(renewalDelayMs({ notBefore: at(H), notAfter: at(H), now: at(0), random: 0.5 }), RENEW_FLOOR_MS);
    assert.equal(renewalDelayMs({ notBefore: at(2 * H), notAfter: at(H), now: at(0), random: 0.5 }), RENEW_FLOOR_MS);
  });

  it('always lands between 50% and 70% of the lifetime', () => {
    for (let i = 0; i < 1000; i++) {
      const d = renewalDelayMs({ notBefore: at(0), notAfter: at(24 * H), now: at(0), random: Math.random(), backdateMs: 0 });
      assert.ok(d >= 12 * H && d <= 16.8 * H, String(d));
    }
  });
});

describe('renewal timed from issuance, for lifetimes from the minimum to days, under clock skew', () => {
  const S = 1000;
  const ttls = [1 * S, 10 * S, 20 * S, 30 * S, 59 * S, 60 * S, 61 * S, 90 * S, 5 * 60 * S, H, 24 * H, 7 * 24 * H];
  const skews = [-5 * 60 * S, -30 * S, 0, 30 * S, 5 * 60 * S]; // the agent's clock minus the CA's
  // What the CA issues at CA time `t`: notBefore backdated, notAfter t + ttl, both in whole seconds as on the wire.
  const issue = (t: number, ttl: number) => ({
    notBefore: new Date(Math.floor((t - CERT_BACKDATE_MS) / 1000) * 1000),
    notAfter: new Date(Math.floor((t + ttl) / 1000) * 1000),
  });

  it('knows the granted lifetime from notAfter - notBefore minus the backdate', () => {
    for (const ttl of ttls) assert.equal(grantedLifetimeMs(issue(T0, ttl)), ttl);
    assert.equal(grantedLifetimeMs({ notBefore: at(0), notAfter: at(30 * S) }), 30 * S, 'no room for a backdate: the whole validity');
  });

  for (const ttl of ttls) {
    for (const skew of skews) {
      it(`a ${ttl / S} s certificate with the agent clock ${skew / S} s off renews at 50-70% of ${ttl / S} s after it was requested`, () => {
        const cert = issue(T0, ttl);
        for (const random of [0, 0.5, 0.999]) {
          const agentNow = at(skew);
          const d = renewalDelayMs({ ...cert, now: agentNow, receivedAt: agentNow, random });
          const granted = grantedLifetimeMs(cert);
          assert.ok(d >= Math.max(RENEW_FLOOR_MS, 0.5 * granted) - 1 && d <= Math.max(RENEW_FLOOR_MS, 0.7 * granted) + 1, `delay ${d} for ttl ${ttl}, skew ${skew}, random ${random}`);
        }
      });
    }
  }

  it('a certificate loaded from disk (arrival unknown) renews from notBefore plus the backdate', () => {
    const cert = issue(T0, 24 * H);
    assert.equal(renewalDelayMs({ ...cert, now: at(H), random: 0 }), 11 * H);
    assert.equal(renewalDelayMs({ ...cert, now: at(23 * H), random: 0 }), RENEW_FLOOR_MS, 'past its renewal point: soon, never at once');
  });

  it('no lifetime and no skew renews more often than once per half lifetime over a simulated day', () => {
    for (const ttl of ttls) {
      for (const skew of skews) {
        // Each renewal: the agent asks at agent time `now`; the CA issues at its time now - skew.
        let now = T0 + skew;
        let renewals = 0;
        while (now < T0 + skew + 24 * H && renewals < 1_000_000) {
          const cert = issue(now - skew, ttl);
          now += renewalDelayMs({ ...cert, now: new Date(now), receivedAt: new Date(now), random: 0 });
          renewals++;
        }
        const bound = Math.ceil((24 * H) / Math.max(RENEW_FLOOR_MS, 0.5 * grantedLifetimeMs(issue(T0, ttl)))) + 1;
        assert.ok(renewals <= bound, `ttl ${ttl} skew ${skew}: ${renewals} renewals in a day, bound ${bound}`);
      }
    }
  });

  it('the old computation from notBefore looped for a 20 s certificate (the bug this prevents)', () => {
    const cert = issue(T0, 20 * S);
    // Timed from notBefore, 50% of the 80 s validity is 40 s after notBefore: 20 s before the certificate even arrived.
    const fromNotBefore = cert.notBefore.getTime() + 0.5 * (cert.notAfter.getTime() - cert.notBefore.getTime()) - T0;
    assert.ok(fromNotBefore < 0);
    assert.ok(renewalDelayMs({ ...cert, now: at(0), receivedAt: at(0), random: 0 }) >= 10 * S);
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
