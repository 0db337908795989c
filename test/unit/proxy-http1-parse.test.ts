// The HTTP/1.1 head parser, body framing and head rewriting, and protocol
// detection, without sockets: tables of inputs and what the proxy must make
// of them (RFC 9112 framing, the smuggling cases refused, hop-by-hop headers).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BodyTracker } from '../../agent/proxy/http1/body';
import { rewriteHead } from '../../agent/proxy/http1/head';
import { parseRequestHead, parseResponseHead } from '../../agent/proxy/http1/parse';
import { detectStack, stackFor } from '../../agent/proxy/protocol';

const req = (s: string) => parseRequestHead(Buffer.from(s, 'latin1'));

describe('HTTP/1.1 request heads', () => {
  it('parses a request and its framing', () => {
    const r = req('POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello');
    assert.equal(r.kind, 'head');
    if (r.kind !== 'head') return;
    assert.equal(r.head.method, 'POST');
    assert.equal(r.head.target, '/a?b=1');
    assert.deepEqual(r.head.body, { type: 'length', length: 5 });
    assert.equal(r.head.keepAlive, true);
    assert.equal(r.end, r.head.raw.length);
    assert.deepEqual(r.head.headers.map((h) => h.name), ['host', 'content-length', 'x-a']);
  });

  const table: Array<[string, string, number | 'more' | 'head']> = [
    ['partial head', 'GET / HTTP/1.1\r\nHost: x\r\n', 'more'],
    ['chunked', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', 'head'],
    ['conflicting Content-Length', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 400],
    ['Transfer-Encoding and Content-Length', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n', 400],
    ['Transfer-Encoding not ending in chunked', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n', 501],
    ['chunked twice', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n', 400],
    ['no Host on HTTP/1.1', 'GET / HTTP/1.1\r\n\r\n', 400],
    ['two Hosts', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400],
    ['space before the colon', 'GET / HTTP/1.1\r\nHost : x\r\n\r\n', 400],
    ['obsolete line folding', 'GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  b\r\n\r\n', 400],
    ['bad request line', 'GET /\r\nHost: x\r\n\r\n', 400],
    ['HTTP/2 version', 'GET / HTTP/2.0\r\nHost: x\r\n\r\n', 400],
    ['a negative Content-Length', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n', 400],
    ['a target over 8 KiB', `GET /${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414],
    ['a head over 64 KiB', `GET / HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(66 * 1024)}\r\n\r\n`, 431],
    ['HTTP/1.0 without Host', 'GET / HTTP/1.0\r\n\r\n', 'head'],
  ];
  for (const [name, text, want] of table) {
    it(name, () => {
      const r = req(text);
      if (want === 'more' || want === 'head') assert.equal(r.kind, want);
      else assert.equal(r.kind === 'error' ? r.status : r.kind, want);
    });
  }

  it('a request line longer than the target limit is 414 before its head is complete', () => {
    const r = req(`GET /${'a'.repeat(9000)}`);
    assert.equal(r.kind === 'error' && r.status, 414);
  });

  it('knows keep-alive, tunnels and 100-continue', () => {
    const h = (s: string) => {
      const r = req(s);
      assert.equal(r.kind, 'head');
      return (r as Extract<typeof r, { kind: 'head' }>).head;
    };
    assert.equal(h('GET / HTTP/1.0\r\n\r\n').keepAlive, false);
    assert.equal(h('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n').keepAlive, true);
    assert.equal(h('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n').keepAlive, false);
    assert.equal(h('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n').tunnel, true);
    assert.equal(h('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n').tunnel, false, 'Upgrade needs Connection: upgrade');
    assert.equal(h('CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n').tunnel, true);
    assert.equal(h('PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n').expectContinue, true);
  });
});

describe('HTTP/1.1 response heads', () => {
  const res = (s: string, method = 'GET') => parseResponseHead(Buffer.from(s, 'latin1'), 0, method);
  it('frames by status, method, length, chunked or close', () => {
    const body = (s: string, method?: string) => {
      const r = res(s, method);
      return r.kind === 'head' ? r.head.body.type : r.kind;
    };
    assert.equal(body('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n'), 'length');
    assert.equal(body('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), 'chunked');
    assert.equal(body('HTTP/1.1 200 OK\r\n\r\n'), 'close');
    assert.equal(body('HTTP/1.1 204 No Content\r\n\r\n'), 'none');
    assert.equal(body('HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n'), 'none');
    assert.equal(body('HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n', 'HEAD'), 'none');
    assert.equal(body('HTTP/1.1 100 Continue\r\n\r\n'), 'none');
    assert.equal(body('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n'), 'error');
    assert.equal(body('HTTP/9 200 OK\r\n\r\n'), 'error');
    const close = res('HTTP/1.1 200 OK\r\n\r\n');
    assert.equal(close.kind === 'head' && close.head.keepAlive, false, 'a close-delimited body ends the connection');
  });
});

describe('body framing', () => {
  const feed = (t: BodyTracker, ...chunks: string[]) => chunks.map((c) => t.consume(Buffer.from(c, 'latin1'), 0));
  it('counts a Content-Length body across chunks and stops at its end', () => {
    const t = new BodyTracker({ type: 'length', length: 5 });
    assert.deepEqual(feed(t, 'he', 'llo', 'GET'), [{ used: 2, done: false }, { used: 3, done: true }, { used: 0, done: true }]);
    assert.equal(t.payload, 5);
  });

  it('follows chunk sizes, extensions and trailers split anywhere', () => {
    const whole = '5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n';
    for (let split = 1; split < whole.length; split++) {
      const t = new BodyTracker({ type: 'chunked' });
      const [a, b] = feed(t, whole.slice(0, split), `${whole.slice(split)}NEXT`);
      assert.ok(a && 'used' in a && b && 'used' in b);
      assert.equal(a.used + b.used, whole.length, `split at ${split}`);
      assert.equal(b.done, true);
      assert.equal(t.payload, 15);
    }
  });

  const bad: Array<[string, string]> = [
    ['a size that is not hex', 'zz\r\n'],
    ['data longer than its size', '2\r\nabc\r\n'],
    ['a size line without CRLF', '2\nab'],
  ];
  for (const [name, text] of bad) {
    it(`refuses ${name}`, () => {
      const t = new BodyTracker({ type: 'chunked' });
      assert.ok('error' in t.consume(Buffer.from(text), 0));
    });
  }
});

describe('head rewriting', () => {
  it('drops hop-by-hop headers and those Connection names, keeps the rest byte for byte, appends edits', () => {
    const r = req('GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Keep:  spaced \r\nTransfer-Encoding: chunked\r\n\r\n');
    assert.equal(r.kind, 'head');
    if (r.kind !== 'head') return;
    const out = rewriteHead(r.head.raw, r.head.lineEnd, r.head.headers, { add: [['x-request-id', 'id1']] }).toString('latin1');
    assert.equal(out, 'GET /x HTTP/1.1\r\nHost: a\r\nX-Keep:  spaced \r\nTransfer-Encoding: chunked\r\nx-request-id: id1\r\n\r\n');
    const tunnel = rewriteHead(r.head.raw, r.head.lineEnd, r.head.headers, { keepHopByHop: true }).toString('latin1');
    assert.equal(tunnel, r.head.raw.toString('latin1'));
    const rewritten = rewriteHead(r.head.raw, r.head.lineEnd, r.head.headers, { firstLine: 'GET /y HTTP/1.1', remove: new Set(['host']), add: [['host', 'b']] }).toString('latin1');
    assert.match(rewritten, /^GET \/y HTTP\/1\.1\r\nX-Keep: {2}spaced \r\nTransfer-Encoding: chunked\r\nhost: b\r\n\r\n$/);
  });
});

describe('protocol selection and detection', () => {
  it('maps port protocols to stacks, without case', () => {
    assert.deepEqual(['tcp', 'TCP', 'tls', 'http', 'HTTP', 'http2', 'grpc', '', 'mongo'].map(stackFor), ['opaque', 'opaque', 'tls', 'http1', 'http1', 'http2', 'http2', 'detect', 'detect']);
  });

  const cases: Array<[string, Buffer, boolean, string]> = [
    ['an HTTP/1 request line', Buffer.from('GET / HTTP/1.1\r\n'), false, 'http1'],
    ['a partial method', Buffer.from('PO'), false, 'more'],
    ['a partial method at EOF', Buffer.from('PO'), true, 'opaque'],
    ['an unknown method', Buffer.from('FROB / HTTP/1.1'), false, 'opaque'],
    ['the HTTP/2 preface', Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), false, 'http2'],
    ['half the preface', Buffer.from('PRI * HTTP/2'), false, 'more'],
    ['a TLS ClientHello', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x10]), false, 'tls'],
    ['binary', Buffer.from([0x00, 0x01, 0x02]), false, 'opaque'],
    ['nothing yet', Buffer.alloc(0), false, 'more'],
    ['silence until the timeout', Buffer.alloc(0), true, 'opaque'],
  ];
  for (const [name, bytes, ended, want] of cases) it(name, () => assert.equal(detectStack(bytes, ended), want));
});
