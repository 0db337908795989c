// The blocking-query loop against a scripted fetch: index rules from
// Consul's documentation, backoff on errors, non-blocking read after one.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BlockingQuery, type BlockingAnswer } from '../../federation/sources/consul/blocking-query';

type Step = { index: bigint; body: string } | Error;

/** Runs a query over scripted answers; resolves with what it asked and saw once the script ends. */
async function run(script: Step[]): Promise<{ asked: (bigint | undefined)[]; data: string[]; errors: string[] }> {
  const asked: (bigint | undefined)[] = [];
  const data: string[] = [];
  const errors: string[] = [];
  let i = 0;
  let finish!: () => void;
  const finished = new Promise<void>((r) => (finish = r));
  const q = new BlockingQuery<string>({
    fetch: async (index): Promise<BlockingAnswer<string>> => {
      asked.push(index);
      const step = script[i++];
      if (!step) {
        finish();
        return new Promise(() => {}); // block "forever" until stopped
      }
      if (step instanceof Error) throw step;
      return { index: step.index, body: step.body, filteredByAcl: false };
    },
    onData: (a) => data.push(a.body),
    onError: (e) => errors.push((e as Error).message),
    backoff: { initialMs: 1, maxMs: 2 },
    minIntervalMs: 0,
  });
  await finished;
  q.stop();
  return { asked, data, errors };
}

describe('BlockingQuery', () => {
  it('asks without an index first, then blocks on the last index; hands on data only when the index moved', async () => {
    const r = await run([{ index: 5n, body: 'a' }, { index: 5n, body: 'a' }, { index: 7n, body: 'b' }]);
    assert.deepEqual(r.asked, [undefined, 5n, 5n, 7n]);
    assert.deepEqual(r.data, ['a', 'b']);
  });
  it('treats an index of 0 as 1 so it never spins on index=0', async () => {
    const r = await run([{ index: 0n, body: 'a' }, { index: 1n, body: 'a' }]);
    assert.deepEqual(r.asked, [undefined, 1n, 1n]);
    assert.deepEqual(r.data, ['a']);
  });
  it('takes an index that went backwards as a reset: the answer is new data', async () => {
    const r = await run([{ index: 9n, body: 'a' }, { index: 3n, body: 'b' }]);
    assert.deepEqual(r.asked, [undefined, 9n, 3n]);
    assert.deepEqual(r.data, ['a', 'b']);
  });
  it('after an error retries without an index, and hands on the answer even if the index is unchanged', async () => {
    const r = await run([{ index: 5n, body: 'a' }, new Error('down'), new Error('down'), { index: 5n, body: 'a' }]);
    assert.deepEqual(r.asked, [undefined, 5n, undefined, undefined, 5n]);
    assert.deepEqual(r.errors, ['down', 'down']);
    assert.deepEqual(r.data, ['a', 'a']);
  });
  it('first resolves on the first error too, and stop() ends a backoff sleep', async () => {
    const q = new BlockingQuery<string>({
      fetch: async () => {
        throw new Error('refused');
      },
      onData: () => {},
      onError: () => {},
      backoff: { initialMs: 60_000, maxMs: 60_000 },
    });
    await q.first;
    assert.equal(q.failing, true);
    q.stop();
  });
});
