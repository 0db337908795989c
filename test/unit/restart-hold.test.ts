// The two holds that keep a federation restart from removing live services:
// the replica's startup hold (no removals pushed while sources resync) and
// the agent's hold-down of removals from a just-started replica. Tables.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { holdDownUntil, holdRemovals } from '../../agent/registration/hold-down';
import { holdingRemovals } from '../../federation/push/startup-hold';
import { PushSession } from '../../federation/push/session';
import type { Service__Output } from '../../proto/loader';
import type { MeshService, MeshView } from '../../federation/mesh/types';

describe('startup hold (federation)', () => {
  const base = { startedAt: 0, gracePeriodMs: 10_000, maxMs: 60_000 };
  const cases: { name: string; now: number; sourcesSynced: boolean; holding: boolean }[] = [
    { name: 'just started', now: 0, sourcesSynced: true, holding: true },
    { name: 'inside the grace period, sources synced', now: 9_999, sourcesSynced: true, holding: true },
    { name: 'grace over, sources synced', now: 10_000, sourcesSynced: true, holding: false },
    { name: 'grace over, a source not synced yet', now: 30_000, sourcesSynced: false, holding: true },
    { name: 'a source that never syncs holds at most maxMs', now: 60_000, sourcesSynced: false, holding: false },
  ];
  for (const c of cases) it(c.name, () => assert.equal(holdingRemovals({ ...base, now: c.now, sourcesSynced: c.sourcesSynced }), c.holding));

  it('a push while holding carries new services but no removal, and the removal follows the hold', () => {
    const sent: { services: string[]; removed: string[] }[] = [];
    const s = new PushSession((u, flushed) => {
      sent.push({ services: (u.services ?? []).map((x) => String(x.key)), removed: [...(u.removed ?? [])] });
      flushed();
    });
    s.subscribe(['a.default', 'b.default'], []);
    const svc = (key: string) => ({ key, version: '1', endpoints: [] }) as unknown as MeshService;
    const view = (holdRemovals: boolean): MeshView => ({ services: new Map([['a.default', svc('a.default')]]), ...(holdRemovals ? { holdRemovals } : {}) });
    s.push(view(true));
    assert.deepEqual(sent, [{ services: ['a.default'], removed: [] }], 'b.default is not said to be absent while holding');
    assert.equal(s.push(view(true)), false, 'nothing more to say while holding');
    s.push(view(false));
    assert.deepEqual(sent[1], { services: [], removed: ['b.default'] });
    // A service this stream sent, then missing: a real removal, pushed even while holding.
    s.push({ services: new Map(), holdRemovals: true });
    assert.deepEqual(sent[2], { services: [], removed: ['a.default'] });
  });
});

describe('removal hold-down (agent)', () => {
  const svc = (key: string, health: string[]) => ({ key, endpoints: health.map((h, i) => ({ address: `10.0.0.${i + 1}`, health: h })) }) as unknown as Service__Output;
  const current = new Map([['a', svc('a', ['HEALTHY'])], ['b', svc('b', ['UNHEALTHY'])], ['c', svc('c', ['HEALTHY'])], ['d', svc('d', ['STALE'])]]);

  it('keeps services with live endpoints that the update removed or emptied, and only those', () => {
    const next = new Map([['a', svc('a', [])], ['e', svc('e', ['HEALTHY'])]]);
    const r = holdRemovals(current, next);
    assert.deepEqual(r.held, ['a', 'c', 'd']);
    assert.deepEqual([...r.services.keys()].sort(), ['a', 'c', 'd', 'e']);
    assert.equal(r.services.get('a'), current.get('a'), 'the held service keeps its endpoints');
    assert.equal(r.services.has('b'), false, 'no live endpoints: removed at once');
  });

  it('applies at once the removal of a service this stream sent with endpoints', () => {
    const r = holdRemovals(current, new Map(), new Set(['a']));
    assert.deepEqual(r.held, ['c', 'd']);
  });

  it('holds only for a replica up for less than the hold-down', () => {
    assert.equal(holdDownUntil(1_000, 0, 30_000), 31_000);
    assert.equal(holdDownUntil(1_000, 10, 30_000), 21_000);
    assert.equal(holdDownUntil(1_000, 30, 30_000), 0);
    assert.equal(holdDownUntil(1_000, 3_600, 30_000), 0);
  });
});
