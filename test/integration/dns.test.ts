// The DNS proxy end to end on 127.0.0.1 with real clients: Node's c-ares
// resolver (dig is not installed here), raw UDP/TCP sockets for bad input,
// and a small fake upstream resolver speaking real DNS (dns-packet) for
// forwarding, failover and SERVFAIL.
import assert from 'node:assert/strict';
import * as dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import * as dnsPacket from 'dns-packet';
import { startDnsServer, type DnsServer, type DnsServerOptions } from '../../agent/dns/server';
import type { MeshLookup } from '../../agent/dns/names';
import type { HostPort } from '../../proto/model/address';
import { silentLogger } from '../../proto/model/log';

const LOCAL = { host: '127.0.0.1', port: 0 };
const T = { timeout: 15_000 };
const RD = dnsPacket.RECURSION_DESIRED;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function query(name: string, type: dnsPacket.RecordType = 'A', id = 0x1234, opt?: number): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: RD,
    questions: [{ name, type }],
    additionals: opt === undefined ? [] : [{ type: 'OPT', name: '.', udpPayloadSize: opt, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
  });
}
const rcodeOf = (b: Buffer): number => b.readUInt16BE(2) & 0xf;
const idOf = (b: Buffer): number => b.readUInt16BE(0);
const firstA = (b: Buffer): string | undefined => (dnsPacket.decode(b).answers?.[0] as dnsPacket.StringAnswer | undefined)?.data;

/** Sends one datagram; resolves with the first reply, or undefined after `waitMs`. */
function rawUdp(port: number, msg: Buffer, waitMs = 2_000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    const done = (b?: Buffer): void => {
      clearTimeout(timer);
      sock.close();
      resolve(b);
    };
    const timer = setTimeout(() => done(), waitMs);
    sock.on('message', (b) => done(b));
    sock.on('error', () => done());
    sock.send(msg, port, '127.0.0.1');
  });
}

function frame(msg: Buffer): Buffer {
  const f = Buffer.alloc(2 + msg.length);
  f.writeUInt16BE(msg.length, 0);
  msg.copy(f, 2);
  return f;
}

/** A raw TCP client collecting length-framed responses; `closed` resolves when the server closes. */
async function rawTcp(port: number): Promise<{ sock: net.Socket; next: (ms?: number) => Promise<Buffer>; closed: Promise<void> }> {
  const sock = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  let buf = Buffer.alloc(0);
  const got: Buffer[] = [];
  let wake: (() => void) | undefined;
  sock.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      got.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      buf = buf.subarray(2 + buf.readUInt16BE(0));
    }
    wake?.();
  });
  const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
  sock.on('error', () => undefined);
  const next = async (ms = 3_000): Promise<Buffer> => {
    const end = Date.now() + ms;
    while (got.length === 0) {
      if (Date.now() > end) throw new Error('no TCP response in time');
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
    return got.shift()!;
  };
  return { sock, next, closed };
}

/** A UDP + TCP listener pair on one free port; `udp` and `tcp` handle messages. */
async function bindPair(onUdp: (s: dgram.Socket, m: Buffer, r: dgram.RemoteInfo) => void, onTcp: (c: net.Socket) => void): Promise<{ port: number; close: () => Promise<void> }> {
  for (;;) {
    const tcp = net.createServer(onTcp);
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const port = (tcp.address() as net.AddressInfo).port;
    const udp = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((r) => {
      udp.once('error', () => r(false));
      udp.bind(port, '127.0.0.1', () => r(true));
    });
    if (!ok) {
      await new Promise((r) => tcp.close(r));
      continue;
    }
    udp.on('message', (m, ri) => onUdp(udp, m, ri));
    const conns = new Set<net.Socket>();
    tcp.on('connection', (c) => {
      conns.add(c);
      c.on('close', () => conns.delete(c));
    });
    return {
      port,
      close: async () => {
        for (const c of conns) c.destroy();
        await Promise.all([new Promise((r) => tcp.close(r)), new Promise<void>((r) => udp.close(() => r()))]);
      },
    };
  }
}

/**
 * The fake upstream resolver: example.test A/AAAA; tc.example.test is
 * truncated over UDP and answered over TCP; everything else NXDOMAIN.
 */
async function fakeUpstream(): Promise<{ hp: HostPort; seen: { id: number; name: string; transport: string }[]; close: () => Promise<void> }> {
  const seen: { id: number; name: string; transport: string }[] = [];
  const answer = (m: Buffer, transport: 'udp' | 'tcp'): Buffer => {
    const q = dnsPacket.decode(m);
    const question = q.questions![0]!;
    seen.push({ id: q.id!, name: question.name, transport });
    const base = { type: 'response' as const, id: q.id!, questions: q.questions! };
    if (question.name === 'example.test' && question.type === 'A') {
      return dnsPacket.encode({ ...base, flags: RD | dnsPacket.RECURSION_AVAILABLE, answers: [{ type: 'A', name: question.name, ttl: 60, data: '192.0.2.10' }] });
    }
    if (question.name === 'example.test' && question.type === 'AAAA') {
      return dnsPacket.encode({ ...base, flags: RD | dnsPacket.RECURSION_AVAILABLE, answers: [{ type: 'AAAA', name: question.name, ttl: 60, data: '2001:db8::10' }] });
    }
    if (question.name === 'tc.example.test') {
      if (transport === 'udp') return dnsPacket.encode({ ...base, flags: RD | dnsPacket.RECURSION_AVAILABLE | dnsPacket.TRUNCATED_RESPONSE });
      return dnsPacket.encode({ ...base, flags: RD | dnsPacket.RECURSION_AVAILABLE, answers: [{ type: 'A', name: question.name, ttl: 60, data: '192.0.2.99' }] });
    }
    return dnsPacket.encode({ ...base, flags: RD | dnsPacket.RECURSION_AVAILABLE | 3 });
  };
  const pair = await bindPair(
    (s, m, r) => s.send(answer(m, 'udp'), r.port, r.address),
    (c) => {
      let buf = Buffer.alloc(0);
      c.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const m = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + m.length);
          c.write(frame(answer(m, 'tcp')));
        }
      });
      c.on('error', () => undefined);
    },
  );
  return { hp: { host: '127.0.0.1', port: pair.port }, seen, close: pair.close };
}

/** Accepts everything on UDP and TCP and never answers. */
async function blackhole(): Promise<{ hp: HostPort; close: () => Promise<void> }> {
  const pair = await bindPair(
    () => undefined,
    (c) => c.on('error', () => undefined),
  );
  return { hp: { host: '127.0.0.1', port: pair.port }, close: pair.close };
}

/** A port that was free a moment ago (bound, then released). */
async function freePort(): Promise<HostPort> {
  const pair = await bindPair(
    () => undefined,
    () => undefined,
  );
  await pair.close();
  return { host: '127.0.0.1', port: pair.port };
}

// Nothing listens here, so UDP gets ICMP port unreachable and TCP a reset.
// A far corner of 127/8 rather than a just-closed port on 127.0.0.1, which
// another test running at the same time could bind in between.
const DEAD: HostPort = { host: '127.254.254.254', port: 9 };

function resolverFor(port: number): Resolver {
  // tries: c-ares (1.34) shortens its timeout to the latency it has seen;
  // on a loaded machine one slow answer must not fail a test.
  const r = new Resolver({ timeout: 3_000, tries: 3 });
  r.setServers([`127.0.0.1:${port}`]);
  return r;
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, code);
    return true;
  });
}

describe('DNS proxy with real clients', () => {
  let upstream: Awaited<ReturnType<typeof fakeUpstream>>;
  let server: DnsServer;
  let resolver: Resolver;
  const looked: string[] = [];
  const lateReadyAt = { t: 0 };
  const services: Record<string, MeshLookup> = {
    'reviews.default': { vip4: '240.240.0.7', vip6: 'fd00:f0f0::7' },
    'ratings.default': { vip4: '240.240.0.8' },
    'cart.shop': { vip4: '240.240.1.1' },
  };
  const lookup = (key: string): MeshLookup => {
    if (key === 'late.default') return Date.now() >= lateReadyAt.t ? { vip4: '240.240.0.42' } : 'unknown-yet';
    if (key === 'ghost.default') return 'unknown-yet';
    return services[key];
  };

  before(async () => {
    upstream = await fakeUpstream();
    server = await startDnsServer({
      listen: LOCAL,
      ownNamespace: 'default',
      lookup,
      onLookup: (k) => looked.push(k),
      upstreams: [upstream.hp],
      logger: silentLogger(),
      unknownWaitMs: 400,
      tcpIdleTimeoutMs: 600,
      upstreamTimeoutMs: 3_000,
    });
    resolver = resolverFor(server.udp.port);
  });
  after(async () => {
    await server?.close();
    await upstream?.close();
  });

  it('binds UDP and TCP, on the same port when it can', T, () => {
    assert.ok(server.udp.port > 0 && server.tcp.port > 0);
    assert.equal(server.udp.port, server.tcp.port);
    assert.deepEqual(server.upstreams, [upstream.hp]);
  });

  it('answers the three mesh forms with the VIP, any case, with or without the trailing dot', T, async () => {
    looked.length = 0;
    assert.deepEqual(await resolver.resolve4('reviews.default.svc.cluster.local'), ['240.240.0.7']);
    assert.deepEqual(await resolver.resolve4('Reviews.DEFAULT.svc.Cluster.Local.'), ['240.240.0.7']);
    assert.deepEqual(await resolver.resolve4('reviews.default'), ['240.240.0.7']);
    assert.deepEqual(await resolver.resolve4('reviews'), ['240.240.0.7']);
    assert.deepEqual(await resolver.resolve4('cart.shop.svc.cluster.local'), ['240.240.1.1']);
    assert.deepEqual(looked, ['reviews.default', 'reviews.default', 'reviews.default', 'reviews.default', 'cart.shop']);
    const ttl = await resolver.resolve4('reviews', { ttl: true });
    assert.deepEqual(ttl, [{ address: '240.240.0.7', ttl: 30 }]);
  });

  it('AAAA answers the v6 VIP, or NODATA when there is none', T, async () => {
    assert.deepEqual(await resolver.resolve6('reviews.default.svc.cluster.local'), ['fd00:f0f0::7']);
    await rejectsWith(resolver.resolve6('ratings'), 'ENODATA');
    assert.deepEqual(await resolver.resolve4('ratings'), ['240.240.0.8']);
  });

  it('an svc name the mesh does not know is NXDOMAIN, and is not forwarded', T, async () => {
    const before = upstream.seen.length;
    await rejectsWith(resolver.resolve4('nope.default.svc.cluster.local'), 'ENOTFOUND');
    assert.equal(upstream.seen.length, before);
  });

  it('forwards everything else, two-label names the mesh does not know included', T, async () => {
    upstream.seen.length = 0;
    assert.deepEqual(await resolver.resolve4('example.test'), ['192.0.2.10']);
    assert.deepEqual(await resolver.resolve6('example.test'), ['2001:db8::10']);
    await rejectsWith(resolver.resolve4('www.unknown.test'), 'ENOTFOUND');
    assert.deepEqual(
      upstream.seen.map((s) => [s.name, s.transport]),
      [
        ['example.test', 'udp'],
        ['example.test', 'udp'],
        ['www.unknown.test', 'udp'],
      ],
    );
    assert.ok(looked.includes('example.test'), 'two-label names are offered to the mesh first');
  });

  it("relays a truncated UDP answer; the client's TCP retry is forwarded over TCP", T, async () => {
    upstream.seen.length = 0;
    assert.deepEqual(await resolver.resolve4('tc.example.test'), ['192.0.2.99']);
    assert.deepEqual(
      upstream.seen.map((s) => s.transport),
      ['udp', 'tcp'],
    );
  });

  it("keeps the client's query id, and relays the upstream answer byte for byte", T, async () => {
    upstream.seen.length = 0;
    const r = await rawUdp(server.udp.port, query('example.test', 'A', 0xabcd));
    assert.ok(r);
    assert.equal(idOf(r), 0xabcd);
    assert.equal(upstream.seen[0]?.id, 0xabcd);
    assert.equal(firstA(r), '192.0.2.10');
  });

  it("waits for a service the federation has not pushed yet ('unknown-yet')", T, async () => {
    lateReadyAt.t = Date.now() + 150;
    const t0 = Date.now();
    // Raw sockets here: c-ares adapts its timeout to the latency it has
    // seen, and on a loaded machine could give up on a deliberately slow answer.
    const r = await rawUdp(server.udp.port, query('late.default.svc.cluster.local'));
    assert.equal(firstA(r!), '240.240.0.42');
    assert.ok(Date.now() - t0 >= 100);
  });

  it('gives up after the wait: NXDOMAIN', T, async () => {
    const t0 = Date.now();
    const r = await rawUdp(server.udp.port, query('ghost.default.svc.cluster.local'));
    assert.equal(rcodeOf(r!), 3);
    assert.ok(Date.now() - t0 >= 350);
  });

  describe('bad input over UDP', () => {
    const cases: { name: string; msg: () => Buffer; want: number | 'nothing' }[] = [
      { name: 'garbage after a header', msg: () => Buffer.concat([Buffer.from([0x11, 0x22, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from('\x3fnot a name', 'latin1')]), want: 1 },
      { name: 'id and flags only', msg: () => Buffer.from([0x11, 0x22, 0x01, 0x00]), want: 1 },
      { name: 'three bytes', msg: () => Buffer.from([1, 2, 3]), want: 'nothing' },
      { name: 'an empty datagram', msg: () => Buffer.alloc(0), want: 'nothing' },
      { name: 'a response', msg: () => dnsPacket.encode({ type: 'response', id: 0x1122, questions: [{ name: 'x.test', type: 'A' }] }), want: 'nothing' },
      { name: 'opcode NOTIFY', msg: () => { const m = query('x.test', 'A', 0x1122); m.writeUInt16BE(4 << 11, 2); return m; }, want: 4 },
      { name: 'two questions', msg: () => dnsPacket.encode({ type: 'query', id: 0x1122, questions: [{ name: 'a.test', type: 'A' }, { name: 'b.test', type: 'A' }] }), want: 1 },
      { name: '600 bytes without EDNS', msg: () => { const m = Buffer.concat([query('x.test', 'A', 0x1122), Buffer.alloc(600)]); return m; }, want: 1 },
      { name: '5000 bytes', msg: () => Buffer.concat([query('x.test', 'A', 0x1122, 1232), Buffer.alloc(5000)]), want: 1 },
      { name: 'a header claiming 65535 answers', msg: () => { const m = query('x.test', 'A', 0x1122); m.writeUInt16BE(0xffff, 6); return m; }, want: 1 },
    ];
    for (const c of cases) {
      it(`${c.name} → ${c.want === 'nothing' ? 'no answer' : `rcode ${c.want}`}`, T, async () => {
        const r = await rawUdp(server.udp.port, c.msg(), c.want === 'nothing' ? 300 : 2_000);
        if (c.want === 'nothing') return assert.equal(r, undefined);
        assert.ok(r, 'answered');
        assert.equal(idOf(r), 0x1122);
        assert.equal(rcodeOf(r), c.want);
      });
    }

    it('a flood of junk leaves the server answering', T, async () => {
      const sock = dgram.createSocket('udp4');
      for (let i = 0; i < 2_000; i++) sock.send(Buffer.from(Array.from({ length: i % 300 }, (_, j) => (i * 31 + j * 7) & 0xff)), server.udp.port, '127.0.0.1');
      await sleep(200);
      sock.close();
      // UDP may lose a datagram while the socket buffers are full: retry.
      let r: Buffer | undefined;
      for (let i = 0; i < 5 && r === undefined; i++) r = await rawUdp(server.udp.port, query('reviews', 'A', 0x7777), 500);
      assert.equal(firstA(r!), '240.240.0.7');
      assert.deepEqual(await resolverFor(server.udp.port).resolve4('reviews'), ['240.240.0.7']);
    });
  });

  describe('TCP', () => {
    it('serves several queries on one connection, pipelined, matched by id', T, async () => {
      const c = await rawTcp(server.tcp.port);
      c.sock.write(Buffer.concat([frame(query('reviews', 'A', 1)), frame(query('example.test', 'A', 2)), frame(Buffer.from([0, 3, 1, 0, 0, 1, 0xff])), frame(query('nope.default.svc.cluster.local', 'A', 4))]));
      const got = new Map<number, Buffer>();
      for (let i = 0; i < 4; i++) {
        const r = await c.next();
        got.set(idOf(r), r);
      }
      assert.equal(firstA(got.get(1)!), '240.240.0.7');
      assert.equal(firstA(got.get(2)!), '192.0.2.10');
      assert.equal(rcodeOf(got.get(3)!), 1);
      assert.equal(rcodeOf(got.get(4)!), 3);
      // Still open: one more query.
      c.sock.write(frame(query('cart.shop.svc.cluster.local', 'A', 5)));
      assert.equal(firstA(await c.next()), '240.240.1.1');
      c.sock.destroy();
    });

    it('answers more queries than the pipeline limit, also after the client half-closes', T, async () => {
      const c = await rawTcp(server.tcp.port);
      const n = 40; // the server keeps 16 in flight and reads the rest later
      c.sock.end(Buffer.concat(Array.from({ length: n }, (_, i) => frame(query(i % 2 ? 'reviews' : 'example.test', 'A', 100 + i)))));
      const ids: number[] = [];
      for (let i = 0; i < n; i++) ids.push(idOf(await c.next()));
      assert.deepEqual(ids.sort((a, b) => a - b), Array.from({ length: n }, (_, i) => 100 + i));
      await c.closed;
    });

    it('reassembles a query sent a byte at a time', T, async () => {
      const c = await rawTcp(server.tcp.port);
      for (const b of frame(query('reviews.default', 'A', 9))) {
        c.sock.write(Buffer.from([b]));
        await sleep(2);
      }
      const r = await c.next();
      assert.equal(idOf(r), 9);
      assert.equal(firstA(r), '240.240.0.7');
      c.sock.destroy();
    });

    it('answers an oversized frame with FORMERR, then closes', T, async () => {
      const c = await rawTcp(server.tcp.port);
      c.sock.write(frame(Buffer.concat([query('x.test', 'A', 0x5555), Buffer.alloc(60_000)])));
      const r = await c.next();
      assert.equal(idOf(r), 0x5555);
      assert.equal(rcodeOf(r), 1);
      await c.closed;
    });

    it('closes a connection idle for tcpIdleTimeoutMs', T, async () => {
      const c = await rawTcp(server.tcp.port);
      const t0 = Date.now();
      await c.closed;
      const idle = Date.now() - t0;
      assert.ok(idle >= 300 && idle < 3_000, String(idle));
    });

    it('a client that half-closes still gets its answers', T, async () => {
      const c = await rawTcp(server.tcp.port);
      c.sock.end(Buffer.concat([frame(query('reviews', 'A', 21)), frame(query('example.test', 'A', 22))]));
      const ids = [idOf(await c.next()), idOf(await c.next())].sort();
      assert.deepEqual(ids, [21, 22]);
      await c.closed;
    });
  });

  it('counts what it did', T, () => {
    const s = server.stats();
    assert.ok(s.queries > 20);
    assert.ok(s.answeredLocally >= 10);
    assert.ok(s.forwarded >= 5);
    assert.ok(s.formErr >= 6 && s.notImp >= 1 && s.dropped >= 3);
    assert.equal(s.errors, s.formErr + s.notImp + s.servFail + s.dropped);
    assert.ok(s.nxDomain >= 2 && s.waited >= 2);
  });
});

describe('DNS proxy upstream failover', () => {
  let upstream: Awaited<ReturnType<typeof fakeUpstream>>;
  let hole: Awaited<ReturnType<typeof blackhole>>;
  const dead = DEAD;
  const servers: DnsServer[] = [];
  const start = async (upstreams: HostPort[], extra: Partial<DnsServerOptions> = {}): Promise<DnsServer> => {
    const s = await startDnsServer({ listen: LOCAL, ownNamespace: 'default', lookup: () => undefined, upstreams, logger: silentLogger(), upstreamTimeoutMs: 250, ...extra });
    servers.push(s);
    return s;
  };

  before(async () => {
    upstream = await fakeUpstream();
    hole = await blackhole();
  });
  after(async () => {
    for (const s of servers) await s.close();
    await upstream?.close();
    await hole?.close();
  });

  it('skips a dead first upstream (refused) without waiting out the timeout', T, async () => {
    const s = await start([dead, upstream.hp], { upstreamTimeoutMs: 5_000 });
    const t0 = Date.now();
    assert.deepEqual(await resolverFor(s.udp.port).resolve4('example.test'), ['192.0.2.10']);
    assert.ok(Date.now() - t0 < 2_000);
    const c = await rawTcp(s.tcp.port);
    c.sock.write(frame(query('example.test', 'A', 31)));
    assert.equal(firstA(await c.next()), '192.0.2.10');
    c.sock.destroy();
  });

  it('fails over from a silent upstream after the timeout, on UDP and TCP', T, async () => {
    const s = await start([hole.hp, upstream.hp]);
    let t0 = Date.now();
    assert.equal(firstA((await rawUdp(s.udp.port, query('example.test', 'A', 32)))!), '192.0.2.10');
    assert.ok(Date.now() - t0 >= 150);
    const c = await rawTcp(s.tcp.port);
    t0 = Date.now();
    c.sock.write(frame(query('example.test', 'A', 33)));
    assert.equal(firstA(await c.next()), '192.0.2.10');
    assert.ok(Date.now() - t0 >= 150);
    c.sock.destroy();
  });

  it('answers SERVFAIL, with the query id, when every upstream is dead or silent', T, async () => {
    const s = await start([dead, hole.hp]);
    const r = await rawUdp(s.udp.port, query('example.test', 'A', 0x4242, 1232));
    assert.ok(r);
    assert.equal(idOf(r), 0x4242);
    assert.equal(rcodeOf(r), 2);
    const d = dnsPacket.decode(r);
    assert.equal(d.questions?.[0]?.name, 'example.test');
    await rejectsWith(resolverFor(s.udp.port).resolve4('example.test'), 'ESERVFAIL');
    const c = await rawTcp(s.tcp.port);
    c.sock.write(frame(query('example.test', 'A', 34)));
    assert.equal(rcodeOf(await c.next()), 2);
    c.sock.destroy();
    assert.equal(s.stats().upstreamFailures, 3);
    assert.equal(s.stats().servFail, 3);
  });

  it('with no upstreams at all: SERVFAIL at once, mesh names still answered', T, async () => {
    const s = await start([], { lookup: (k) => (k === 'reviews.default' ? { vip4: '240.240.0.7' } : undefined) });
    assert.equal(rcodeOf((await rawUdp(s.udp.port, query('example.test')))!), 2);
    assert.deepEqual(await resolverFor(s.udp.port).resolve4('reviews'), ['240.240.0.7']);
  });

  it('never forwards to itself', T, async () => {
    // Take a port pair, free it, and ask the server to listen there with
    // itself listed as an upstream.
    const p = await freePort();
    const s = await start([p, upstream.hp], { listen: p });
    assert.deepEqual(s.upstreams, [upstream.hp]);
    assert.deepEqual(await resolverFor(s.udp.port).resolve4('example.test'), ['192.0.2.10']);
  });

  it('close() stops both listeners and ends open connections', T, async () => {
    const s = await start([upstream.hp]);
    const c = await rawTcp(s.tcp.port);
    await s.close();
    await c.closed;
    assert.equal(await rawUdp(s.udp.port, query('example.test'), 300), undefined);
    await assert.rejects(rawTcp(s.tcp.port));
    await s.close(); // idempotent
  });
});

describe('DNS proxy listen errors', () => {
  it('a port already in use is KEDGE_DNS_LISTEN', T, async () => {
    const s = await startDnsServer({ listen: LOCAL, ownNamespace: 'default', lookup: () => undefined, upstreams: [], logger: silentLogger() });
    try {
      await assert.rejects(
        startDnsServer({ listen: { host: '127.0.0.1', port: s.tcp.port }, ownNamespace: 'default', lookup: () => undefined, upstreams: [], logger: silentLogger() }),
        (err: { code?: string; message?: string }) => err.code === 'KEDGE_DNS_LISTEN' && /choose a free listen address/.test(err.message ?? ''),
      );
    } finally {
      await s.close();
    }
  });

  it('an upstream given by name is KEDGE_DNS_CONFIG', T, async () => {
    await assert.rejects(
      startDnsServer({ listen: LOCAL, ownNamespace: 'default', lookup: () => undefined, upstreams: [{ host: 'dns.example', port: 53 }], logger: silentLogger() }),
      (err: { code?: string }) => err.code === 'KEDGE_DNS_CONFIG',
    );
  });
});
