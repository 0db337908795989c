// The gateway's ClientHello parser against real ClientHellos: the first
// bytes Node's tls.connect and `openssl s_client` send to a raw TCP server
// (TLS 1.2 and 1.3, with and without SNI), split across TCP segments and
// re-framed across TLS records; then built malformed ones, garbage, and
// seeded random mutations that must never throw.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { before, describe, it } from 'node:test';
import { ClientHelloReader, type ClientHelloResult, MAX_CLIENT_HELLO, MAX_CLIENT_HELLO_RECORDS, parseClientHello } from '../../agent/proxy/client-hello';

const MESH_SNI = 'outbound_.9080_._.reviews.default.svc.cluster.local';

// ---- capturing real ClientHellos -------------------------------------------

/**
 * Starts a raw TCP server, runs `client` against its port and resolves with
 * the first TLS record(s) the client sends: bytes up to the end of the
 * first record (records are counted by their own headers, not by the parser
 * under test).
 */
function captureFirstRecord(client: (port: number) => () => void): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let stopClient: (() => void) | undefined;
    const server = net.createServer((socket) => {
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => {
        chunks.push(c);
        const all = Buffer.concat(chunks);
        if (all.length >= 5 && all.length >= 5 + all.readUInt16BE(3)) {
          socket.destroy();
          server.close();
          stopClient?.();
          resolve(all.subarray(0, 5 + all.readUInt16BE(3)));
        }
      });
      socket.on('error', () => undefined);
    });
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      stopClient = client((server.address() as net.AddressInfo).port);
    });
    setTimeout(() => reject(new Error('no ClientHello captured within 5 s')), 5_000).unref();
  });
}

function nodeClient(opts: { servername?: string; version: tls.SecureVersion }) {
  return (port: number) => {
    const s = tls.connect({ host: '127.0.0.1', port, minVersion: opts.version, maxVersion: opts.version, rejectUnauthorized: false, ...(opts.servername ? { servername: opts.servername } : {}) });
    s.on('error', () => undefined);
    return () => s.destroy();
  };
}

function opensslClient(args: string[]) {
  return (port: number) => {
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, ...args], { stdio: ['pipe', 'ignore', 'ignore'] });
    p.on('error', () => undefined);
    return () => p.kill('SIGKILL');
  };
}

interface Capture {
  name: string;
  bytes: Buffer;
  want: ClientHelloResult;
}

const captures: Capture[] = [];

before(async () => {
  const cases: { name: string; run: (port: number) => () => void; want: ClientHelloResult }[] = [
    { name: 'node TLS 1.3 with SNI', run: nodeClient({ version: 'TLSv1.3', servername: MESH_SNI }), want: { kind: 'sni', name: MESH_SNI } },
    { name: 'node TLS 1.2 with SNI', run: nodeClient({ version: 'TLSv1.2', servername: MESH_SNI }), want: { kind: 'sni', name: MESH_SNI } },
    { name: 'node TLS 1.3 without SNI', run: nodeClient({ version: 'TLSv1.3' }), want: { kind: 'no-sni' } },
    { name: 'node TLS 1.2 without SNI', run: nodeClient({ version: 'TLSv1.2' }), want: { kind: 'no-sni' } },
    { name: 'node TLS 1.3 with a DNS name', run: nodeClient({ version: 'TLSv1.3', servername: 'example.com' }), want: { kind: 'sni', name: 'example.com' } },
    { name: 'openssl TLS 1.3 with SNI', run: opensslClient(['-tls1_3', '-servername', MESH_SNI]), want: { kind: 'sni', name: MESH_SNI } },
    { name: 'openssl TLS 1.2 with SNI', run: opensslClient(['-tls1_2', '-servername', MESH_SNI]), want: { kind: 'sni', name: MESH_SNI } },
    { name: 'openssl without SNI', run: opensslClient(['-noservername']), want: { kind: 'no-sni' } },
  ];
  for (const c of cases) captures.push({ name: c.name, bytes: await captureFirstRecord(c.run), want: c.want });
});

// ---- helpers ---------------------------------------------------------------

/** Re-frames the handshake bytes of `hello` (one record) into records of at most `size` bytes. */
function reframe(hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5);
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const frag = body.subarray(i, i + size);
    const h = Buffer.from([0x16, hello[1]!, hello[2]!, 0, 0]);
    h.writeUInt16BE(frag.length, 3);
    out.push(h, frag);
  }
  return Buffer.concat(out);
}

/** A deterministic PRNG (mulberry32), so a failing fuzz case can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff]);

/** A server_name extension with the given entries (type 0 is host_name). */
function sniExtension(entries: { type?: number; name: Buffer | string }[]): Buffer {
  const list = Buffer.concat(entries.map((e) => {
    const n = Buffer.isBuffer(e.name) ? e.name : Buffer.from(e.name, 'latin1');
    return Buffer.concat([Buffer.from([e.type ?? 0]), u16(n.length), n]);
  }));
  const data = Buffer.concat([u16(list.length), list]);
  return Buffer.concat([u16(0), u16(data.length), data]);
}

/** Builds a ClientHello record from parts; every part has a sane default. */
function buildHello(p: { extensions?: Buffer[] | null; sessionId?: number; suites?: Buffer; compression?: Buffer; legacyVersion?: Buffer; trailing?: Buffer; extLengthDelta?: number } = {}): Buffer {
  const exts = p.extensions === null ? undefined : Buffer.concat(p.extensions ?? [sniExtension([{ name: MESH_SNI }])]);
  const body = Buffer.concat([
    p.legacyVersion ?? Buffer.from([3, 3]),
    Buffer.alloc(32, 7),
    Buffer.from([p.sessionId ?? 0]),
    Buffer.alloc(p.sessionId ?? 0, 1),
    p.suites ?? Buffer.concat([u16(2), Buffer.from([0x13, 0x01])]),
    p.compression ?? Buffer.from([1, 0]),
    ...(exts === undefined ? [] : [u16(exts.length + (p.extLengthDelta ?? 0)), exts]),
    p.trailing ?? Buffer.alloc(0),
  ]);
  const msg = Buffer.concat([Buffer.from([1]), u24(body.length), body]);
  return Buffer.concat([Buffer.from([0x16, 3, 1]), u16(msg.length), msg]);
}

const KINDS = new Set(['sni', 'need-more', 'no-sni', 'invalid']);

function assertNeverThrows(buf: Buffer, what: string): ClientHelloResult {
  let r: ClientHelloResult;
  try {
    r = parseClientHello(buf);
  } catch (err) {
    assert.fail(`${what}: parser threw ${String(err)} on ${buf.toString('hex')}`);
  }
  assert.ok(KINDS.has(r.kind), `${what}: unknown result ${JSON.stringify(r)}`);
  return r;
}

// ---- tests -----------------------------------------------------------------

describe('gateway ClientHello parser: real clients', () => {
  it('reads the SNI (or its absence) from every captured ClientHello', () => {
    assert.equal(captures.length, 8);
    for (const c of captures) assert.deepEqual(parseClientHello(c.bytes), c.want, c.name);
  });

  it('says need-more for every proper prefix of every captured ClientHello, down to the empty buffer', () => {
    for (const c of captures) {
      for (let n = 0; n < c.bytes.length; n++) assert.deepEqual(parseClientHello(c.bytes.subarray(0, n)), { kind: 'need-more' }, `${c.name}, ${n} of ${c.bytes.length} bytes`);
    }
  });

  it('ignores bytes after the ClientHello (a client that pipelines early data)', () => {
    for (const c of captures) assert.deepEqual(parseClientHello(Buffer.concat([c.bytes, Buffer.from([0x17, 3, 3, 0, 5, 1, 2, 3])])), c.want, c.name);
  });

  it('reads a ClientHello re-framed across several TLS records, and need-more on its prefixes', () => {
    for (const c of captures) {
      for (const size of [1, 3, 4, 5, 100, 512]) {
        const framed = reframe(c.bytes, size);
        const records = Math.ceil((c.bytes.length - 5) / size);
        const r = parseClientHello(framed);
        if (records > MAX_CLIENT_HELLO_RECORDS) {
          assert.equal(r.kind, 'invalid', `${c.name} in ${records} records`);
          continue;
        }
        assert.deepEqual(r, c.want, `${c.name} in ${size}-byte records`);
        for (let n = 0; n < framed.length; n += 7) assert.deepEqual(parseClientHello(framed.subarray(0, n)), { kind: 'need-more' }, `${c.name} in ${size}-byte records, ${n} bytes`);
      }
    }
  });

  it('ClientHelloReader decides on the last TCP segment of a split ClientHello and keeps every byte', () => {
    const rand = rng(42);
    for (const c of captures) {
      for (let round = 0; round < 20; round++) {
        const input = round % 2 === 0 ? c.bytes : reframe(c.bytes, 200);
        const reader = new ClientHelloReader();
        let at = 0;
        let r: ClientHelloResult = { kind: 'need-more' };
        while (at < input.length) {
          const n = 1 + Math.floor(rand() * 300);
          const chunk = Buffer.from(input.subarray(at, at + n));
          at += chunk.length;
          r = reader.push(chunk);
          if (at < input.length) assert.deepEqual(r, { kind: 'need-more' }, `${c.name}: decided early at ${at}`);
        }
        assert.deepEqual(r, c.want, c.name);
        assert.ok(reader.bytes().equals(input), `${c.name}: bytes kept`);
      }
    }
  });

  it('ClientHelloReader keeps bytes that arrive with the ClientHello for forwarding', () => {
    const c = captures[0]!;
    const extra = Buffer.from('0123456789');
    const reader = new ClientHelloReader();
    assert.deepEqual(reader.push(Buffer.from(c.bytes.subarray(0, 10))), { kind: 'need-more' });
    assert.deepEqual(reader.push(Buffer.concat([c.bytes.subarray(10), extra])), c.want);
    assert.ok(reader.bytes().equals(Buffer.concat([c.bytes, extra])));
  });
});

describe('gateway ClientHello parser: bad input', () => {
  const cases: { name: string; bytes: Buffer; want: ClientHelloResult['kind']; tooLarge?: boolean }[] = [
    { name: 'HTTP request', bytes: Buffer.from('GET / HTTP/1.1\r\n'), want: 'invalid' },
    { name: 'one byte of HTTP', bytes: Buffer.from('G'), want: 'invalid' },
    { name: 'SSH banner', bytes: Buffer.from('SSH-2.0-OpenSSH_9.6\r\n'), want: 'invalid' },
    { name: 'SSL 2 style', bytes: Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01]), want: 'invalid' },
    { name: 'handshake byte then non-TLS version', bytes: Buffer.from([0x16, 0x02]), want: 'invalid' },
    { name: 'bad minor version', bytes: Buffer.from([0x16, 0x03, 0x09]), want: 'invalid' },
    { name: 'application data record', bytes: Buffer.from([0x17, 0x03, 0x03, 0x00, 0x01, 0x00]), want: 'invalid' },
    { name: 'zero-length record', bytes: Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00]), want: 'invalid' },
    { name: 'record longer than 2^14', bytes: Buffer.from([0x16, 0x03, 0x01, 0x40, 0x01]), want: 'invalid' },
    { name: 'ServerHello, not ClientHello', bytes: Buffer.from([0x16, 0x03, 0x03, 0x00, 0x30, 0x02]), want: 'invalid' },
    { name: 'huge ClientHello, judged on its header alone', bytes: Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x00]), want: 'invalid', tooLarge: true },
    { name: 'ClientHello of 16 MiB', bytes: Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff]), want: 'invalid', tooLarge: true },
    { name: 'truncated header', bytes: Buffer.from([0x16, 0x03, 0x01, 0x02]), want: 'need-more' },
    { name: 'header only', bytes: Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), want: 'need-more' },
    { name: 'no extensions', bytes: buildHello({ extensions: null }), want: 'no-sni' },
    { name: 'built, with SNI', bytes: buildHello(), want: 'sni' },
    { name: 'legacy_version 2.0', bytes: buildHello({ legacyVersion: Buffer.from([2, 0]) }), want: 'invalid' },
    { name: 'session id of 33 bytes', bytes: buildHello({ sessionId: 33 }), want: 'invalid' },
    { name: 'odd cipher_suites length', bytes: buildHello({ suites: Buffer.concat([u16(3), Buffer.from([0x13, 0x01, 0x00])]) }), want: 'invalid' },
    { name: 'no compression method', bytes: buildHello({ compression: Buffer.from([0]) }), want: 'invalid' },
    { name: 'extensions overrun', bytes: buildHello({ extLengthDelta: 1 }), want: 'invalid' },
    { name: 'bytes after the extensions', bytes: buildHello({ trailing: Buffer.from([0]) }), want: 'invalid' },
    { name: 'two server_name extensions', bytes: buildHello({ extensions: [sniExtension([{ name: 'a' }]), sniExtension([{ name: 'b' }])] }), want: 'invalid' },
    { name: 'two host names', bytes: buildHello({ extensions: [sniExtension([{ name: 'a' }, { name: 'b' }])] }), want: 'invalid' },
    { name: 'empty host name', bytes: buildHello({ extensions: [sniExtension([{ name: '' }])] }), want: 'invalid' },
    { name: 'NUL in the host name', bytes: buildHello({ extensions: [sniExtension([{ name: Buffer.from('a\0b') }])] }), want: 'invalid' },
    { name: 'host name of 300 bytes', bytes: buildHello({ extensions: [sniExtension([{ name: 'a'.repeat(300) }])] }), want: 'invalid' },
    { name: 'server_name with only an unknown name type', bytes: buildHello({ extensions: [sniExtension([{ type: 7, name: 'x' }])] }), want: 'no-sni' },
    { name: 'server_name list length mismatch', bytes: buildHello({ extensions: [Buffer.from([0, 0, 0, 4, 0, 9, 0, 0])] }), want: 'invalid' },
    { name: 'other extensions first, then SNI', bytes: buildHello({ extensions: [Buffer.from([0, 0x2b, 0, 3, 2, 3, 4]), sniExtension([{ name: MESH_SNI }])] }), want: 'sni' },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = parseClientHello(c.bytes);
      assert.equal(r.kind, c.want, JSON.stringify(r));
      if (c.tooLarge) assert.equal(r.kind === 'invalid' && r.tooLarge, true);
      if (r.kind === 'invalid') assert.ok(r.reason.length > 0);
    });
  }

  it('gives up on a ClientHello spread over more than the record limit', () => {
    const tiny = reframe(buildHello(), 1);
    const r = parseClientHello(tiny);
    assert.equal(r.kind, 'invalid');
  });

  it('accepts a ClientHello of exactly the limit and refuses one byte more', () => {
    const pad = (n: number): Buffer => Buffer.concat([u16(0x15), u16(n), Buffer.alloc(n)]); // padding extension
    const base = buildHello();
    const baseLen = base.readUIntBE(6, 3);
    const atLimit = buildHello({ extensions: [sniExtension([{ name: MESH_SNI }]), pad(MAX_CLIENT_HELLO - baseLen - 4)] });
    assert.equal(atLimit.readUIntBE(6, 3), MAX_CLIENT_HELLO);
    // A 16 KiB message needs two records (a record carries at most 2^14 bytes).
    assert.deepEqual(parseClientHello(reframe(atLimit, 16384)), { kind: 'sni', name: MESH_SNI });
    const over = buildHello({ extensions: [sniExtension([{ name: MESH_SNI }]), pad(MAX_CLIENT_HELLO - baseLen - 3)] });
    const r = parseClientHello(reframe(over, 16384).subarray(0, 9));
    assert.equal(r.kind === 'invalid' && r.tooLarge, true);
  });
});

describe('gateway ClientHello parser: fuzz', () => {
  it('never throws on random bytes, with and without a plausible record header', () => {
    const rand = rng(7);
    for (let i = 0; i < 5_000; i++) {
      const len = Math.floor(rand() * 600);
      const b = Buffer.alloc(len);
      for (let j = 0; j < len; j++) b[j] = Math.floor(rand() * 256);
      if (i % 2 === 0 && len >= 6) {
        b[0] = 0x16;
        b[1] = 0x03;
        b[2] = Math.floor(rand() * 4);
        b.writeUInt16BE(Math.min(len - 5, 1 + Math.floor(rand() * 700)), 3);
        b[5] = 0x01;
      }
      assertNeverThrows(b, `random #${i}`);
    }
  });

  it('never throws on mutated, truncated and re-framed real ClientHellos', () => {
    const rand = rng(99);
    for (const c of captures) {
      for (let i = 0; i < 1_500; i++) {
        const b = Buffer.from(i % 3 === 0 ? reframe(c.bytes, 1 + Math.floor(rand() * 400)) : c.bytes);
        const flips = 1 + Math.floor(rand() * 4);
        for (let f = 0; f < flips; f++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
        const cut = rand() < 0.3 ? Math.floor(rand() * b.length) : b.length;
        const r = assertNeverThrows(b.subarray(0, cut), `${c.name} mutation #${i}`);
        if (r.kind === 'sni') assert.ok(/^[\x21-\x7e]{1,255}$/.test(r.name), `${c.name}: name ${JSON.stringify(r.name)}`);
      }
    }
  });
});
