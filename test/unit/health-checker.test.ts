// The health state machine as tables, and the HealthChecker loop on a fake
// clock with scripted probe results: thresholds, the first decision, period
// timing, no overlapping runs, stop. No sockets here; test/integration/
// health-*.test.ts runs the real probes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HealthChecker, INITIAL_HEALTH, nextHealth, type HealthState, type Timers } from '../../agent/health/checker';
import type { HealthCheckConfig, HealthThresholds } from '../../agent/health/config';
import type { ProbeResult, ProbeRunner } from '../../agent/health/probes';
import { silentLogger } from '../../proto/model/log';

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A manual clock: timers fire only inside advance(), in time order. */
class FakeClock implements Timers {
  private t = 0;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();
  setTimeout(fn: () => void, ms: number): unknown {
    this.pending.set(++this.seq, { at: this.t + ms, fn });
    return this.seq;
  }
  clearTimeout(h: unknown): void {
    this.pending.delete(h as number);
  }
  now(): number {
    return this.t;
  }
  get timerCount(): number {
    return this.pending.size;
  }
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await flush();
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.pending) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.pending.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

function check(over: Partial<HealthCheckConfig> = {}): HealthCheckConfig {
  return { probe: { kind: 'tcp', host: '127.0.0.1', port: 1 }, periodMs: 1000, timeoutMs: 500, initialDelayMs: 0, healthyThreshold: 1, unhealthyThreshold: 3, ...over };
}

interface Report {
  at: number;
  service: string;
  healthy: boolean;
  detail: string;
}

function harness(checks: Record<string, HealthCheckConfig>, runProbe: ProbeRunner) {
  const clock = new FakeClock();
  const reports: Report[] = [];
  const checker = new HealthChecker({
    targets: Object.entries(checks).map(([service, c]) => ({ service, check: c })),
    onChange: (service, healthy, detail) => reports.push({ at: clock.now(), service, healthy, detail }),
    log: silentLogger(),
    runProbe,
    timers: clock,
  });
  return { clock, reports, checker };
}

/** Answers '+' (success) or '-' (failure) in turn, then keeps answering the last one. */
function scripted(script: string): { run: ProbeRunner; calls: number[]; clock?: FakeClock } {
  const calls: number[] = [];
  const out = {
    calls,
    clock: undefined as FakeClock | undefined,
    run: (async () => {
      calls.push(out.clock?.now() ?? -1);
      const c = script[Math.min(calls.length, script.length) - 1];
      return c === '+' ? { ok: true, detail: `ok #${calls.length}` } : { ok: false, detail: `failed #${calls.length}` };
    }) as ProbeRunner,
  };
  return out;
}

/** A probe that settles only when told to or aborted (as real probes do), recording the signal it got. */
function deferredProbe() {
  const pending: Array<{ resolve: (r: ProbeResult) => void; signal: AbortSignal | undefined }> = [];
  const run: ProbeRunner = (_p, _t, signal) =>
    new Promise((resolve) => {
      pending.push({ resolve, signal });
      signal?.addEventListener('abort', () => resolve({ ok: false, detail: 'probe cancelled' }));
    });
  return { run, pending };
}

const T = (healthyThreshold: number, unhealthyThreshold: number): HealthThresholds => ({ healthyThreshold, unhealthyThreshold });

describe('nextHealth', () => {
  const S = (status: HealthState['status'], successes = 0, failures = 0): HealthState => ({ status, successes, failures });
  const cases: Array<[string, HealthState, boolean, HealthThresholds, HealthState]> = [
    ['unknown, success meeting healthyThreshold 1: healthy', INITIAL_HEALTH, true, T(1, 3), S('healthy', 1)],
    ['unknown, success short of healthyThreshold 2: still unknown', INITIAL_HEALTH, true, T(2, 3), S('unknown', 1)],
    ['unknown, second success of 2: healthy', S('unknown', 1), true, T(2, 3), S('healthy', 2)],
    ['unknown, one failure: unhealthy at once (not ready until proven)', INITIAL_HEALTH, false, T(1, 3), S('unhealthy', 0, 1)],
    ['unknown with a success, then a failure: unhealthy, successes reset', S('unknown', 1), false, T(2, 3), S('unhealthy', 0, 1)],
    ['healthy, first failure of 3: stays healthy', S('healthy', 4), false, T(1, 3), S('healthy', 0, 1)],
    ['healthy, second failure of 3: stays healthy', S('healthy', 0, 1), false, T(1, 3), S('healthy', 0, 2)],
    ['healthy, third failure of 3: unhealthy', S('healthy', 0, 2), false, T(1, 3), S('unhealthy', 0, 3)],
    ['healthy, unhealthyThreshold 1: one failure is enough', S('healthy', 1), false, T(1, 1), S('unhealthy', 0, 1)],
    ['healthy with failures, a success: failures reset', S('healthy', 0, 2), true, T(1, 3), S('healthy', 1)],
    ['unhealthy, success short of healthyThreshold 3', S('unhealthy', 0, 5), true, T(3, 3), S('unhealthy', 1)],
    ['unhealthy, third success of 3: healthy', S('unhealthy', 2), true, T(3, 3), S('healthy', 3)],
    ['unhealthy with successes, a failure: successes reset', S('unhealthy', 2), false, T(3, 3), S('unhealthy', 0, 1)],
    ['unhealthy, more failures: stays unhealthy, counting', S('unhealthy', 0, 7), false, T(1, 3), S('unhealthy', 0, 8)],
  ];
  for (const [name, state, ok, t, want] of cases) {
    it(name, () => assert.deepEqual(nextHealth(state, { ok }, t), want));
  }
});

describe('HealthChecker reports', () => {
  // Results, one per period ('+' success, '-' failure), and the report each
  // one causes: H healthy, U unhealthy, '.' none.
  const sequences: Array<[HealthThresholds, string, string]> = [
    [T(1, 3), '++--+---+', 'H......UH'],
    [T(1, 3), '-+', 'UH'],
    [T(1, 3), '---', 'U..'],
    [T(2, 2), '+-++--', '.U.H.U'],
    [T(3, 1), '+++-+++', '..HU..H'],
    [T(2, 3), '+-+-+-', '.U....'],
    [T(1, 1), '-+-+', 'UHUH'],
  ];
  for (const [t, results, want] of sequences) {
    it(`healthy ${t.healthyThreshold}, unhealthy ${t.unhealthyThreshold}: ${results} reports ${want}`, async () => {
      const probe = scripted(results);
      const { clock, reports, checker } = harness({ payments: check({ ...t, periodMs: 1000 }) }, probe.run);
      checker.start();
      let got = '';
      for (let i = 0; i < results.length; i++) {
        const before = reports.length;
        await clock.advance(i === 0 ? 0 : 1000);
        assert.equal(probe.calls.length, i + 1, `probe ${i + 1} ran`);
        assert.ok(reports.length - before <= 1);
        got += reports.length === before ? '.' : reports[reports.length - 1]!.healthy ? 'H' : 'U';
      }
      assert.equal(got, want);
      await checker.stop();
    });
  }

  it('reports nothing before the first decision, and the snapshot says the service is waiting (unhealthy)', async () => {
    const probe = scripted('++');
    const { clock, reports, checker } = harness({ payments: check({ healthyThreshold: 2 }) }, probe.run);
    assert.deepEqual(checker.snapshot(), [{ service: 'payments', healthy: false, detail: 'waiting for the first probe result' }]);
    checker.start();
    await clock.advance(0);
    assert.equal(reports.length, 0);
    assert.equal(checker.snapshot()[0]!.healthy, false);
    assert.deepEqual(checker.state('payments'), { status: 'unknown', successes: 1, failures: 0 });
    await clock.advance(1000);
    assert.deepEqual(reports, [{ at: 1000, service: 'payments', healthy: true, detail: 'ok #2' }]);
    assert.deepEqual(checker.snapshot(), [{ service: 'payments', healthy: true, detail: 'ok #2' }]);
    await checker.stop();
  });

  it('says how many failures in a row turned a service unhealthy, and the snapshot keeps the latest failure', async () => {
    const probe = scripted('+----');
    const { clock, reports, checker } = harness({ payments: check() }, probe.run);
    checker.start();
    await clock.advance(3000);
    assert.deepEqual(reports.map((r) => [r.healthy, r.detail]), [
      [true, 'ok #1'],
      [false, '3 consecutive failures, last: failed #4'],
    ]);
    await clock.advance(1000);
    assert.equal(reports.length, 2);
    assert.deepEqual(checker.snapshot(), [{ service: 'payments', healthy: false, detail: '4 consecutive failures, last: failed #5' }]);
    await checker.stop();
  });

  it('a healthy service below its failure threshold keeps its healthy detail', async () => {
    const probe = scripted('+-');
    const { clock, checker } = harness({ payments: check() }, probe.run);
    checker.start();
    await clock.advance(1000);
    assert.deepEqual(checker.snapshot(), [{ service: 'payments', healthy: true, detail: 'ok #1' }]);
    await checker.stop();
  });

  it('probes services independently, each on its own period and thresholds', async () => {
    const a = scripted('+');
    const b = scripted('-');
    const { clock, reports, checker } = harness(
      { a: check({ periodMs: 1000, probe: { kind: 'tcp', host: '127.0.0.1', port: 1 } }), b: check({ periodMs: 300, probe: { kind: 'tcp', host: '127.0.0.1', port: 2 } }) },
      (p, t, s) => ((p as { port: number }).port === 1 ? a.run(p, t, s) : b.run(p, t, s)),
    );
    a.clock = clock;
    b.clock = clock;
    checker.start();
    await clock.advance(1000);
    assert.deepEqual(a.calls, [0, 1000]);
    assert.deepEqual(b.calls, [0, 300, 600, 900]);
    assert.deepEqual(reports.map((r) => [r.service, r.healthy]), [
      ['a', true],
      ['b', false],
    ]);
    await checker.stop();
  });
});

describe('HealthChecker timing', () => {
  it('waits initialDelay for the first probe, then one period from each start', async () => {
    const calls: number[] = [];
    let clock!: FakeClock;
    // Each probe takes 300ms of clock time; the period counts from the start.
    const run: ProbeRunner = (_p, _t, signal) => {
      calls.push(clock.now());
      return new Promise((resolve) => {
        clock.setTimeout(() => resolve({ ok: true, detail: 'ok' }), 300);
        signal?.addEventListener('abort', () => resolve({ ok: false, detail: 'probe cancelled' }));
      });
    };
    const h = harness({ payments: check({ initialDelayMs: 2500, periodMs: 1000 }) }, run);
    clock = h.clock;
    h.checker.start();
    await clock.advance(2499);
    assert.deepEqual(calls, []);
    await clock.advance(1 + 3000);
    assert.deepEqual(calls, [2500, 3500, 4500, 5500]);
    assert.deepEqual(h.reports.map((r) => r.at), [2800]);
    await h.checker.stop();
  });

  it('never overlaps runs of one probe: a slow probe holds the next one back', async () => {
    const probe = deferredProbe();
    const { clock, checker } = harness({ payments: check({ periodMs: 1000 }) }, probe.run);
    checker.start();
    await clock.advance(10_000);
    assert.equal(probe.pending.length, 1, 'one run while the first is still out');
    assert.equal(clock.timerCount, 0, 'no next run is scheduled while one is out');
    probe.pending[0]!.resolve({ ok: true, detail: 'slow ok' });
    await clock.advance(0);
    assert.equal(probe.pending.length, 2, 'the overdue run starts as soon as the slow one settles');
    await checker.stop();
  });

  it('stop() cancels the timer and the probe in flight, and nothing is reported afterwards', async () => {
    const probe = deferredProbe();
    const { clock, reports, checker } = harness({ payments: check() }, probe.run);
    checker.start();
    await clock.advance(0);
    const signal = probe.pending[0]!.signal!;
    assert.equal(signal.aborted, false);
    const stopped = checker.stop();
    assert.equal(signal.aborted, true);
    await stopped;
    await clock.advance(10_000);
    assert.equal(probe.pending.length, 1);
    assert.deepEqual(reports, []);
    assert.equal(clock.timerCount, 0);
  });

  it('stop() before the first probe leaves no timers', async () => {
    const probe = scripted('+');
    const { clock, checker } = harness({ payments: check({ initialDelayMs: 5000 }) }, probe.run);
    checker.start();
    assert.equal(clock.timerCount, 1);
    await checker.stop();
    assert.equal(clock.timerCount, 0);
    checker.start();
    await clock.advance(10_000);
    assert.equal(probe.calls.length, 0, 'a stopped checker does not start again');
  });
});

describe('HealthChecker robustness', () => {
  it('a probe runner that throws counts as a failed probe', async () => {
    const { clock, reports, checker } = harness({ payments: check() }, async () => {
      throw new Error('boom');
    });
    checker.start();
    await clock.advance(0);
    assert.deepEqual(reports.map((r) => [r.healthy, r.detail]), [[false, 'probe failed: boom']]);
    await checker.stop();
  });

  it('a listener that throws does not stop the probing', async () => {
    const probe = scripted('-+');
    const clock = new FakeClock();
    const seen: boolean[] = [];
    const checker = new HealthChecker({
      targets: [{ service: 'payments', check: check() }],
      onChange: (_s, healthy) => {
        seen.push(healthy);
        throw new Error('listener bug');
      },
      log: silentLogger(),
      runProbe: probe.run,
      timers: clock,
    });
    checker.start();
    await clock.advance(1000);
    assert.deepEqual(seen, [false, true]);
    await checker.stop();
  });

  it('bounds the detail it reports', async () => {
    const { clock, reports, checker } = harness({ payments: check() }, async () => ({ ok: false, detail: 'x'.repeat(10_000) }));
    checker.start();
    await clock.advance(0);
    assert.equal(reports[0]!.detail.length, 1024);
    await checker.stop();
  });

  it('refuses two checks for one service', () => {
    assert.throws(
      () => new HealthChecker({ targets: [{ service: 'a', check: check() }, { service: 'a', check: check() }], onChange: () => undefined, log: silentLogger() }),
      /service "a" has two health checks/,
    );
  });
});
