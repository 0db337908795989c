// On-demand subscriptions: what is sent, what the DNS proxy is told, and
// that made-up names do not accumulate.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Subscriptions, MAX_DYNAMIC_SUBSCRIPTIONS } from '../../agent/registration/subscriptions';
import type { Service__Output } from '../../proto/loader';

const svc = (key: string) => ({ key }) as Service__Output;

describe('Subscriptions', () => {
  it('always holds the upstream services and adds looked-up ones once', () => {
    const s = new Subscriptions(['reviews.default']);
    assert.equal(s.add('reviews.default'), false);
    assert.equal(s.add('ratings.default'), true);
    assert.equal(s.add('ratings.default'), false);
    assert.deepEqual(s.all(), ['ratings.default', 'reviews.default']);
  });
  it('reports pending, present and absent, and drops absent on-demand keys', () => {
    let now = 0;
    const s = new Subscriptions([], () => now, 30_000);
    s.add('ratings.default');
    s.add('nope.default');
    assert.equal(s.state('ratings.default', new Map()), 'pending');
    const services = new Map([['ratings.default', svc('ratings.default')]]);
    assert.deepEqual(s.answered(services, ['nope.default']), ['nope.default']);
    assert.equal(s.state('ratings.default', services), 'present');
    assert.equal(s.state('nope.default', services), 'absent');
    assert.deepEqual(s.all(), ['ratings.default']);
    assert.equal(s.add('nope.default'), false, 'not re-subscribed while the answer is fresh');
    now = 31_000;
    assert.equal(s.state('nope.default', services), 'unsubscribed');
    assert.equal(s.add('nope.default'), true);
  });
  it('caps on-demand subscriptions', () => {
    const s = new Subscriptions([]);
    for (let i = 0; i < MAX_DYNAMIC_SUBSCRIPTIONS; i++) assert.equal(s.add(`s${i}.ns`), true);
    assert.equal(s.add('one-more.ns'), false);
  });
});
