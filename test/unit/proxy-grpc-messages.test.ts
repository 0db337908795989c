// The length-prefix reader both proxies run over gRPC streams: messages
// counted across any chunking, and the first over-long one stopped at its
// prefix, so not one byte of it is forwarded when the prefix came whole.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MessageCounter } from '../../agent/proxy/http2/stream';

const message = (len: number): Buffer => {
  const b = Buffer.alloc(5 + len, 7);
  b[0] = 0;
  b.writeUInt32BE(len, 1);
  return b;
};

describe('gRPC message prefixes', () => {
  it('counts messages however the stream is cut', () => {
    const stream = Buffer.concat([message(0), message(3), message(100), message(1)]);
    for (const size of [1, 2, 5, 7, 64, stream.length]) {
      const c = new MessageCounter(1000);
      for (let i = 0; i < stream.length; i += size) assert.equal(c.feed(stream.subarray(i, i + size)), Math.min(size, stream.length - i));
      assert.equal(c.count, 4, `chunks of ${size}`);
      assert.equal(c.tooLong, undefined);
    }
  });

  it('stops at the prefix of the first message over the limit', () => {
    const stream = Buffer.concat([message(10), message(11), message(2)]);
    const c = new MessageCounter(10);
    assert.equal(c.feed(stream), 15, 'the first message passes; the second stops at its prefix');
    assert.equal(c.tooLong, 11);
    assert.equal(c.count, 1);
    assert.equal(c.feed(message(1)), 0, 'nothing after it passes');
  });

  it('a prefix cut across chunks: what came before it was already forwarded', () => {
    const c = new MessageCounter(10);
    const long = message(50);
    assert.equal(c.feed(Buffer.concat([message(1), long.subarray(0, 3)])), 9, 'the first message and the prefix start pass (unknown yet)');
    assert.equal(c.feed(long.subarray(3)), 0);
    assert.equal(c.tooLong, 50);
  });
});
