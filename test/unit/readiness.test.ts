// Readiness as a table: which inputs make /readyz fail, and what it says.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readiness, type ReadinessInputs } from '../../federation/health/readiness';
import type { SourceStatus } from '../../federation/sources/types';

const source = (name: string, synced: boolean, error?: string): SourceStatus => ({
  name, kind: 'kubernetes', connected: synced, lastSync: synced ? '2030-01-01T00:00:00.000Z' : undefined, stale: false, error, services: 0, endpoints: 0,
});
const base: ReadinessInputs = { started: true, store: { writable: true }, ca: { ok: true }, sources: [source('east', true)], needed: 'all' };

describe('readiness', () => {
  const cases: { name: string; in: Partial<ReadinessInputs>; ready: boolean; failing?: string; says?: RegExp }[] = [
    { name: 'everything fine', in: {}, ready: true },
    { name: 'still starting', in: { started: false }, ready: false, failing: 'started' },
    { name: 'store cannot write', in: { store: { writable: false, error: 'writing the store log failed (ENOSPC)' } }, ready: false, failing: 'store', says: /ENOSPC/ },
    { name: 'CA cannot sign', in: { ca: { ok: false, error: 'the CA cannot sign: expired' } }, ready: false, failing: 'ca', says: /expired/ },
    { name: 'a needed source never synced', in: { sources: [source('east', true), source('west', false, 'connection refused')] }, ready: false, failing: 'source:west', says: /kubernetes source west has never synced: connection refused/ },
    { name: 'a source that never synced but is not needed', in: { sources: [source('west', false)], needed: ['east'] }, ready: true },
    { name: 'no sources needed', in: { sources: [source('west', false)], needed: 'none' }, ready: true },
    { name: 'a source that synced once and is down now (serving stale)', in: { sources: [{ ...source('east', true), connected: false, stale: true }] }, ready: true },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = readiness({ ...base, ...c.in });
      assert.equal(r.ready, c.ready);
      const failing = r.checks.filter((k) => !k.ok);
      if (c.failing) {
        assert.deepEqual(failing.map((k) => k.name), [c.failing]);
        if (c.says) assert.match(failing[0]!.error!, c.says);
      } else {
        assert.deepEqual(failing, []);
      }
    });
  }
});
