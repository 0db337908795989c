// The DNS proxy's pure parts as tables: which names the mesh answers, what it
// answers, resolv.conf, query checks and response bytes, and the handler
// with a fake forwarder (no sockets).
import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as dnsPacket from 'dns-packet';
import { createQueryHandler, type QueryHandlerOptions } from '../../agent/dns/handler';
import { RCODE, addressBytes, buildResponse, inspectQuery, udpResponseLimit, type ParsedQuery } from '../../agent/dns/message';
import { classifyName, decideLocal, type MeshLookup, type NameClass } from '../../agent/dns/names';
import { parseResolvConf, upstreamsWithoutSelf } from '../../agent/dns/resolvconf';
import { silentLogger } from '../../proto/model/log';

const RD = dnsPacket.RECURSION_DESIRED;

/** A query's wire bytes; `opt` adds an EDNS OPT record with that UDP size. */
function query(name: string, type: dnsPacket.RecordType = 'A', o: { id?: number; opt?: number; flags?: number; cls?: dnsPacket.RecordClass } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: o.id ?? 0x1234,
    flags: o.flags ?? RD,
    questions: [{ name, type, class: o.cls ?? 'IN' }],
    additionals: o.opt === undefined ? [] : [{ type: 'OPT', name: '.', udpPayloadSize: o.opt, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
  });
}

function parsed(msg: Buffer, transport: 'udp' | 'tcp' = 'udp'): ParsedQuery {
  const v = inspectQuery(msg, transport);
  assert.equal(v.kind, 'query', v.kind === 'query' ? '' : v.reason);
  return (v as { query: ParsedQuery }).query;
}

const rcodeOf = (b: Buffer): number => b.readUInt16BE(2) & 0xf;

describe('classifyName', () => {
  const D = 'cluster.local';
  const cases: { q: string; domain?: string; ns?: string; want: NameClass }[] = [
    { q: 'reviews.default.svc.cluster.local', want: { kind: 'mesh', key: 'reviews.default' } },
    { q: 'reviews.default.svc.cluster.local.', want: { kind: 'mesh', key: 'reviews.default' } },
    { q: 'Reviews.DEFAULT.svc.Cluster.Local.', want: { kind: 'mesh', key: 'reviews.default' } },
    { q: 'reviews.default.svc.corp.example', domain: 'corp.example', want: { kind: 'mesh', key: 'reviews.default' } },
    { q: 'reviews.default.svc.corp.example', domain: 'Corp.Example.', want: { kind: 'mesh', key: 'reviews.default' } },
    { q: 'reviews.default.svc.cluster.local', domain: 'corp.example', want: { kind: 'other' } },
    { q: 'reviews.default', want: { kind: 'maybe-mesh', key: 'reviews.default' } },
    { q: 'REVIEWS.Default.', want: { kind: 'maybe-mesh', key: 'reviews.default' } },
    { q: 'reviews', want: { kind: 'maybe-mesh', key: 'reviews.shop' } },
    { q: 'Reviews.', want: { kind: 'maybe-mesh', key: 'reviews.shop' } },
    { q: 'reviews', ns: 'Shop', want: { kind: 'maybe-mesh', key: 'reviews.shop' } },
    { q: 'reviews', ns: '', want: { kind: 'other' } },
    { q: 'example.com', want: { kind: 'maybe-mesh', key: 'example.com' } },
    { q: 'www.example.com', want: { kind: 'other' } },
    { q: 'pod-1.reviews.default.svc.cluster.local', want: { kind: 'other' } },
    { q: 'default.svc.cluster.local', want: { kind: 'other' } },
    { q: 'reviews.default.svc', want: { kind: 'other' } },
    { q: '-bad.default.svc.cluster.local', want: { kind: 'other' } },
    { q: 'under_score.default', want: { kind: 'other' } },
    { q: `${'x'.repeat(64)}.default`, want: { kind: 'other' } },
    { q: '.', want: { kind: 'other' } },
    { q: '', want: { kind: 'other' } },
    { q: '1.0.0.127.in-addr.arpa', want: { kind: 'other' } },
  ];
  for (const c of cases) {
    it(`${JSON.stringify(c.q)}${c.domain ? ` in ${c.domain}` : ''} → ${c.want.kind}`, () => {
      assert.deepEqual(classifyName(c.q, c.domain ?? D, c.ns ?? 'shop'), c.want);
    });
  }
});

describe('decideLocal', () => {
  const mesh: NameClass = { kind: 'mesh', key: 'reviews.default' };
  const maybe: NameClass = { kind: 'maybe-mesh', key: 'reviews.default' };
  const both: MeshLookup = { vip4: '240.240.0.7', vip6: 'fd00::7' };
  const v4: MeshLookup = { vip4: '240.240.0.7' };
  const cases: { name: string; cls: NameClass; qtype: string; found: MeshLookup; want: ReturnType<typeof decideLocal> }[] = [
    { name: 'A with a v4 VIP', cls: mesh, qtype: 'A', found: both, want: { kind: 'answer', a: ['240.240.0.7'], aaaa: [] } },
    { name: 'AAAA with a v6 VIP', cls: mesh, qtype: 'AAAA', found: both, want: { kind: 'answer', a: [], aaaa: ['fd00::7'] } },
    { name: 'ANY gets both', cls: mesh, qtype: 'ANY', found: both, want: { kind: 'answer', a: ['240.240.0.7'], aaaa: ['fd00::7'] } },
    { name: 'AAAA without a v6 VIP is NODATA', cls: mesh, qtype: 'AAAA', found: v4, want: { kind: 'nodata' } },
    { name: 'A for a service with no VIP yet is NODATA', cls: mesh, qtype: 'A', found: {}, want: { kind: 'nodata' } },
    { name: 'MX for a known service is NODATA', cls: mesh, qtype: 'MX', found: both, want: { kind: 'nodata' } },
    { name: 'unknown svc name is NXDOMAIN', cls: mesh, qtype: 'A', found: undefined, want: { kind: 'nxdomain' } },
    { name: 'svc name still unknown after the wait is NXDOMAIN', cls: mesh, qtype: 'A', found: 'unknown-yet', want: { kind: 'nxdomain' } },
    { name: 'short known name answers', cls: maybe, qtype: 'A', found: v4, want: { kind: 'answer', a: ['240.240.0.7'], aaaa: [] } },
    { name: 'short known name, AAAA without v6: NODATA', cls: maybe, qtype: 'AAAA', found: v4, want: { kind: 'nodata' } },
    { name: 'short unknown name is forwarded', cls: maybe, qtype: 'A', found: undefined, want: { kind: 'forward' } },
    { name: 'short name still unknown is forwarded', cls: maybe, qtype: 'A', found: 'unknown-yet', want: { kind: 'forward' } },
    { name: 'other names are forwarded', cls: { kind: 'other' }, qtype: 'A', found: both, want: { kind: 'forward' } },
  ];
  for (const c of cases) it(c.name, () => assert.deepEqual(decideLocal(c.cls, c.qtype, c.found), c.want));
});

describe('parseResolvConf', () => {
  it('reads nameservers in order, search, options; skips comments and junk', () => {
    const conf = parseResolvConf(
      [
        '# generated by NetworkManager',
        'domain old.example',
        'search corp.example. lab.example',
        'nameserver 10.0.0.2',
        '; a comment',
        'nameserver 2001:db8::53   # trailing comment',
        'nameserver fe80::1%eth0',
        'nameserver dns.example.com',
        'nameserver',
        'options ndots:5 rotate',
        'options timeout:2',
        'sortlist 130.155.160.0/255.255.240.0',
        '\tnameserver\t10.0.0.3\r',
      ].join('\n'),
    );
    assert.deepEqual(conf.nameservers, [
      { host: '10.0.0.2', port: 53 },
      { host: '2001:db8::53', port: 53 },
      { host: 'fe80::1%eth0', port: 53 },
      { host: '10.0.0.3', port: 53 },
    ]);
    assert.deepEqual(conf.search, ['corp.example', 'lab.example']);
    assert.deepEqual(conf.options, { ndots: '5', rotate: true, timeout: '2' });
    assert.equal(conf.warnings.length, 2);
    assert.match(conf.warnings[0] ?? '', /line 8: nameserver "dns.example.com"/);
  });

  it('a later domain line replaces search (last wins)', () => {
    assert.deepEqual(parseResolvConf('search a.example b.example\ndomain c.example\n').search, ['c.example']);
  });

  it('an empty file has nothing', () => {
    assert.deepEqual(parseResolvConf(''), { nameservers: [], search: [], options: {}, warnings: [] });
  });
});

describe('upstreamsWithoutSelf', () => {
  const ns = (host: string, port = 53) => ({ host, port });
  const cases: { name: string; ups: { host: string; port: number }[]; listen: { host: string; port: number }[]; local?: string[]; want: { host: string; port: number }[] }[] = [
    { name: 'ordinary resolvers stay', ups: [ns('10.0.0.2'), ns('127.0.0.53')], listen: [ns('127.0.0.1', 15053)], want: [ns('10.0.0.2'), ns('127.0.0.53')] },
    { name: 'the proxy itself goes', ups: [ns('127.0.0.1', 15053), ns('10.0.0.2')], listen: [ns('127.0.0.1', 15053)], want: [ns('10.0.0.2')] },
    { name: 'any loopback address reaches a wildcard listener', ups: [ns('127.0.0.2', 15053), ns('::1', 15053)], listen: [ns('0.0.0.0', 15053), ns('::', 15053)], want: [] },
    { name: 'a local address reaches a wildcard listener', ups: [ns('10.1.1.1', 15053), ns('10.9.9.9', 15053)], listen: [ns('0.0.0.0', 15053)], local: ['10.1.1.1'], want: [ns('10.9.9.9', 15053)] },
    { name: 'same port on another address is fine', ups: [ns('127.0.0.2', 15053)], listen: [ns('127.0.0.1', 15053)], want: [ns('127.0.0.2', 15053)] },
    { name: 'UDP and TCP ports both count', ups: [ns('127.0.0.1', 4001), ns('127.0.0.1', 4002)], listen: [ns('127.0.0.1', 4001), ns('127.0.0.1', 4002)], want: [] },
  ];
  for (const c of cases) it(c.name, () => assert.deepEqual(upstreamsWithoutSelf(c.ups, c.listen, new Set(c.local ?? [])), c.want));
});

describe('inspectQuery', () => {
  const header = (id: number, flags: number, counts: [number, number, number, number] = [1, 0, 0, 0]): Buffer => {
    const b = Buffer.alloc(12);
    b.writeUInt16BE(id, 0);
    b.writeUInt16BE(flags, 2);
    counts.forEach((c, i) => b.writeUInt16BE(c, 4 + i * 2));
    return b;
  };
  const twoQuestions = dnsPacket.encode({ type: 'query', id: 7, questions: [{ name: 'a.example', type: 'A' }, { name: 'b.example', type: 'A' }] });
  const big = (n: number): Buffer => {
    // Pad with an unknown-type additional record so the message still decodes.
    const base = query('example.test', 'A', { id: 9 });
    const rdlen = n - base.length - 11;
    const rr = Buffer.alloc(11 + rdlen);
    rr.writeUInt16BE(65280, 1); // private-use type
    rr.writeUInt16BE(1, 3);
    rr.writeUInt16BE(rdlen, 9);
    const msg = Buffer.concat([base, rr]);
    msg.writeUInt16BE(1, 10);
    return msg;
  };
  const cases: { name: string; msg: Buffer; transport?: 'udp' | 'tcp'; want: 'query' | 'drop' | number }[] = [
    { name: 'a plain query', msg: query('example.test'), want: 'query' },
    { name: 'empty', msg: Buffer.alloc(0), want: 'drop' },
    { name: '3 bytes', msg: Buffer.from([1, 2, 3]), want: 'drop' },
    { name: 'id and flags only', msg: Buffer.from([0xab, 0xcd, 0x01, 0x00]), want: RCODE.FORMERR },
    { name: 'a response sent to us', msg: dnsPacket.encode({ type: 'response', id: 1, questions: [{ name: 'x.example', type: 'A' }] }), want: 'drop' },
    { name: 'opcode NOTIFY', msg: Buffer.concat([header(1, 4 << 11), query('x.example').subarray(12)]), want: RCODE.NOTIMP },
    { name: 'opcode UPDATE with garbage after the header', msg: Buffer.concat([header(1, 5 << 11), Buffer.from('garbage')]), want: RCODE.NOTIMP },
    { name: 'opcode 15 on 4 bytes', msg: Buffer.from([0, 1, 0x78, 0]), want: RCODE.NOTIMP },
    { name: 'no questions', msg: header(1, RD, [0, 0, 0, 0]), want: RCODE.FORMERR },
    { name: 'two questions', msg: twoQuestions, want: RCODE.FORMERR },
    { name: 'question cut short', msg: query('example.test').subarray(0, 20), want: RCODE.FORMERR },
    { name: 'type and class missing', msg: query('example.test').subarray(0, 12 + 14), want: RCODE.FORMERR },
    { name: 'compression pointer in the question', msg: Buffer.concat([header(1, RD), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]), want: RCODE.FORMERR },
    { name: 'reserved label type', msg: Buffer.concat([header(1, RD), Buffer.from([0x40, 0, 0, 1, 0, 1])]), want: RCODE.FORMERR },
    { name: 'name over 255 bytes', msg: Buffer.concat([header(1, RD), ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)])), Buffer.from([0, 0, 1, 0, 1])]), want: RCODE.FORMERR },
    { name: 'trailing garbage', msg: Buffer.concat([query('example.test'), Buffer.from([1, 2, 3])]), want: RCODE.FORMERR },
    { name: 'claims an answer that is not there', msg: (() => { const m = query('example.test'); m.writeUInt16BE(1, 6); return m; })(), want: RCODE.FORMERR },
    { name: 'two OPT records', msg: (() => { const m = query('example.test', 'A', { opt: 1232 }); const opt = m.subarray(m.length - 11); const d = Buffer.concat([m, opt]); d.writeUInt16BE(2, 10); return d; })(), want: RCODE.FORMERR },
    { name: 'random bytes with a header', msg: Buffer.concat([header(1, RD, [1, 9, 9, 9]), Buffer.from('\x05hello\xff\xff\xff\xff\xff\xff\xff', 'latin1')]), want: RCODE.FORMERR },
    { name: '512-byte UDP query', msg: big(512), want: 'query' },
    { name: '513-byte UDP query without EDNS', msg: big(513), want: RCODE.FORMERR },
    { name: '513-byte query without EDNS over TCP', msg: big(513), transport: 'tcp', want: 'query' },
    { name: '4096-byte TCP query', msg: big(4096), transport: 'tcp', want: 'query' },
    { name: '4097-byte TCP query', msg: big(4097), transport: 'tcp', want: RCODE.FORMERR },
    { name: 'oversized UDP query', msg: Buffer.concat([query('example.test'), Buffer.alloc(5000)]), want: RCODE.FORMERR },
  ];
  for (const c of cases) {
    it(`${c.name} → ${typeof c.want === 'number' ? `rcode ${c.want}` : c.want}`, () => {
      const v = inspectQuery(c.msg, c.transport ?? 'udp');
      if (typeof c.want === 'string') return assert.equal(v.kind, c.want, v.kind === 'query' ? '' : v.reason);
      assert.equal(v.kind, 'reject');
      if (v.kind !== 'reject') return;
      assert.equal(v.rcode, c.want);
      assert.equal(v.response.length, 12);
      assert.equal(v.response.readUInt16BE(0), c.msg.readUInt16BE(0), 'keeps the id');
      assert.equal(rcodeOf(v.response), c.want);
      assert.ok(v.response.readUInt16BE(2) & 0x8000, 'QR set');
    });
  }

  it('a UDP query over 512 bytes with EDNS is fine', () => {
    const withPadding = dnsPacket.encode({
      type: 'query',
      id: 3,
      flags: RD,
      questions: [{ name: 'example.test', type: 'A' }],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [{ code: 12, length: 600 }] }],
    });
    assert.ok(withPadding.length > 512);
    assert.equal(inspectQuery(withPadding, 'udp').kind, 'query');
  });

  it('parses id, question and EDNS size, keeping the question bytes as sent', () => {
    const q = parsed(query('Reviews.Default.svc.cluster.local', 'AAAA', { id: 0xbeef, opt: 4096 }));
    assert.equal(q.id, 0xbeef);
    assert.deepEqual(q.question, { name: 'Reviews.Default.svc.cluster.local', type: 'AAAA', class: 'IN' });
    assert.equal(q.questionBytes.toString('latin1').includes('Reviews'), true);
    assert.deepEqual(q.edns, { udpPayloadSize: 4096, version: 0 });
  });

  it('never throws on random bytes', () => {
    let seed = 42;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 256);
    for (let i = 0; i < 5000; i++) {
      const len = i % 700;
      const msg = Buffer.from(Array.from({ length: len }, rnd));
      // Half of them get a plausible header so the decoder is reached.
      if (len >= 12 && i % 2 === 0) msg.writeUInt16BE(RD, 2), msg.writeUInt16BE(1, 4);
      const v = inspectQuery(msg, i % 3 === 0 ? 'tcp' : 'udp');
      assert.ok(['query', 'reject', 'drop'].includes(v.kind));
    }
  });
});

describe('buildResponse', () => {
  it('answers A with the VIP: id, question echoed, AA, RD copied, RA, TTL', () => {
    const q = parsed(query('Reviews.default.svc.cluster.local', 'A', { id: 77 }));
    const r = buildResponse(q, { rcode: RCODE.NOERROR, a: ['240.240.0.7'], ttlSeconds: 30, authoritative: true });
    const d = dnsPacket.decode(r);
    assert.equal(d.id, 77);
    assert.equal(d.type, 'response');
    assert.ok(d.flag_aa && d.flag_rd && d.flag_ra && !d.flag_tc);
    assert.equal(rcodeOf(r), RCODE.NOERROR);
    assert.deepEqual(d.questions, [{ name: 'Reviews.default.svc.cluster.local', type: 'A', class: 'IN' }]);
    assert.equal(d.answers?.length, 1);
    const a = d.answers?.[0] as dnsPacket.StringAnswer;
    assert.deepEqual([a.name, a.type, a.data, a.ttl, a.class], ['Reviews.default.svc.cluster.local', 'A', '240.240.0.7', 30, 'IN']);
    assert.deepEqual(d.additionals, []);
  });

  it('answers AAAA and echoes EDNS', () => {
    const q = parsed(query('reviews.default', 'AAAA', { opt: 4096 }));
    const d = dnsPacket.decode(buildResponse(q, { rcode: RCODE.NOERROR, aaaa: ['fd00::f0f0:7'], ttlSeconds: 5, authoritative: true }));
    assert.equal((d.answers?.[0] as dnsPacket.StringAnswer).data, 'fd00::f0f0:7');
    const opt = d.additionals?.[0] as dnsPacket.OptAnswer;
    assert.equal(opt.type, 'OPT');
    assert.equal(opt.udpPayloadSize, 1232);
  });

  it('NXDOMAIN and NODATA have no answers', () => {
    const q = parsed(query('nope.default.svc.cluster.local'));
    for (const rcode of [RCODE.NXDOMAIN, RCODE.NOERROR]) {
      const r = buildResponse(q, { rcode, authoritative: true });
      assert.equal(rcodeOf(r), rcode);
      assert.deepEqual(dnsPacket.decode(r).answers, []);
    }
  });

  it('without RD in the query, none in the answer; SERVFAIL is not authoritative', () => {
    const q = parsed(query('x.example', 'A', { flags: 0 }));
    const d = dnsPacket.decode(buildResponse(q, { rcode: RCODE.SERVFAIL }));
    assert.equal(d.flag_rd, false);
    assert.equal(d.flag_aa, false);
  });

  it('sets TC and drops the answers when they do not fit', () => {
    const q = parsed(query('reviews.default'));
    const r = buildResponse(q, { rcode: RCODE.NOERROR, a: ['240.240.0.1', '240.240.0.2'], authoritative: true }, 40);
    const d = dnsPacket.decode(r);
    assert.ok(d.flag_tc);
    assert.deepEqual(d.answers, []);
  });

  it('leaves out addresses that do not parse', () => {
    const q = parsed(query('reviews.default'));
    const d = dnsPacket.decode(buildResponse(q, { rcode: RCODE.NOERROR, a: ['not-an-ip', '240.240.0.9', 'fd00::1'], aaaa: ['240.240.0.1'] }));
    assert.deepEqual(d.answers?.map((a) => (a as dnsPacket.StringAnswer).data), ['240.240.0.9']);
  });

  it('udpResponseLimit: 512 without EDNS, the advertised size with it, within 512..4096', () => {
    assert.equal(udpResponseLimit(parsed(query('a.b'))), 512);
    assert.equal(udpResponseLimit(parsed(query('a.b', 'A', { opt: 1232 }))), 1232);
    assert.equal(udpResponseLimit(parsed(query('a.b', 'A', { opt: 100 }))), 512);
    assert.equal(udpResponseLimit(parsed(query('a.b', 'A', { opt: 65000 }))), 4096);
  });
});

describe('addressBytes', () => {
  const cases: [string, 4 | 6, string | undefined][] = [
    ['240.240.0.7', 4, 'f0f00007'],
    ['::1', 6, '00000000000000000000000000000001'],
    ['::', 6, '00000000000000000000000000000000'],
    ['fd00::f0f0:7', 6, 'fd0000000000000000000000f0f00007'],
    ['1::', 6, '00010000000000000000000000000000'],
    ['2001:db8:1:2:3:4:5:6', 6, '20010db8000100020003000400050006'],
    ['::ffff:1.2.3.4', 6, '00000000000000000000ffff01020304'],
    ['240.240.0.7', 6, undefined],
    ['fd00::1', 4, undefined],
    ['bogus', 4, undefined],
  ];
  for (const [ip, fam, hex] of cases) it(`${ip} as IPv${fam}`, () => assert.equal(addressBytes(ip, fam)?.toString('hex'), hex));
});

describe('createQueryHandler', () => {
  const services: Record<string, MeshLookup> = {
    'reviews.default': { vip4: '240.240.0.7', vip6: 'fd00::7' },
    'ratings.shop': { vip4: '240.240.0.8' },
  };
  function make(over: Partial<QueryHandlerOptions> = {}) {
    const looked: string[] = [];
    const forwarded: Buffer[] = [];
    const h = createQueryHandler({
      domain: 'cluster.local',
      ownNamespace: 'shop',
      lookup: (k) => services[k],
      onLookup: (k) => looked.push(k),
      unknownWaitMs: 200,
      rewaitAfterMs: 1_000,
      pollIntervalMs: 10,
      ttlSeconds: 30,
      forward: async (q) => {
        forwarded.push(q);
        const r = Buffer.from(q);
        r.writeUInt16BE(0x8180, 2); // a canned upstream NOERROR
        return r;
      },
      logger: silentLogger(),
      ...over,
    });
    return { h, looked, forwarded };
  }

  it('answers mesh names, subscribes them, forwards the rest unchanged', async () => {
    const { h, looked, forwarded } = make();
    const r1 = await h.handle(query('reviews.default.svc.cluster.local'), 'udp');
    assert.equal((dnsPacket.decode(r1!).answers?.[0] as dnsPacket.StringAnswer).data, '240.240.0.7');
    const r2 = await h.handle(query('ratings', 'AAAA'), 'udp');
    assert.equal(rcodeOf(r2!), RCODE.NOERROR);
    assert.deepEqual(dnsPacket.decode(r2!).answers, []);
    const ext = query('example.com', 'A', { id: 4242 });
    const r3 = await h.handle(ext, 'udp');
    assert.equal(r3!.readUInt16BE(0), 4242);
    assert.deepEqual(forwarded, [ext]);
    const r4 = await h.handle(query('www.example.com'), 'tcp');
    assert.equal(rcodeOf(r4!), 0);
    assert.deepEqual(looked, ['reviews.default', 'ratings.shop', 'example.com']);
    assert.deepEqual(h.stats(), { queries: 4, answeredLocally: 2, forwarded: 2, errors: 0, formErr: 0, notImp: 0, servFail: 0, dropped: 0, nxDomain: 0, waited: 0, upstreamFailures: 0 });
  });

  it('non-IN classes are forwarded without a lookup', async () => {
    const { h, looked, forwarded } = make();
    await h.handle(query('version.bind', 'TXT', { cls: 'CH' }), 'udp');
    assert.deepEqual(looked, []);
    assert.equal(forwarded.length, 1);
  });

  it("waits for an 'unknown-yet' service by polling, then answers", async () => {
    let ready = false;
    setTimeout(() => (ready = true), 50);
    // A long limit: on a loaded machine timers run late, and the service
    // must still arrive within the wait.
    const { h } = make({ unknownWaitMs: 5_000, lookup: (k) => (k === 'late.default' ? (ready ? { vip4: '240.240.0.9' } : 'unknown-yet') : undefined) });
    const t0 = Date.now();
    const r = await h.handle(query('late.default.svc.cluster.local'), 'udp');
    assert.ok(Date.now() - t0 >= 25);
    assert.equal((dnsPacket.decode(r!).answers?.[0] as dnsPacket.StringAnswer).data, '240.240.0.9');
    assert.equal(h.stats().waited, 1);
  });

  it("still 'unknown-yet' after the wait: NXDOMAIN for svc names, forwarded for short ones", async () => {
    const { h, forwarded } = make({ lookup: () => 'unknown-yet', unknownWaitMs: 60 });
    const t0 = Date.now();
    assert.equal(rcodeOf((await h.handle(query('ghost.default.svc.cluster.local'), 'udp'))!), RCODE.NXDOMAIN);
    assert.ok(Date.now() - t0 >= 55);
    await h.handle(query('ghost.default'), 'udp');
    assert.equal(forwarded.length, 1);
    assert.equal(h.stats().nxDomain, 1);
  });

  it('a key that stayed unknown is not waited for again until rewaitAfterMs', async () => {
    let clock = 1_000_000;
    const { h, forwarded } = make({ lookup: () => 'unknown-yet', unknownWaitMs: 30, rewaitAfterMs: 30_000, now: () => clock });
    const waitedAfter = async (name: string): Promise<number> => {
      await h.handle(query(name), 'udp');
      return h.stats().waited;
    };
    assert.equal(await waitedAfter('example.com'), 1);
    clock += 29_999;
    assert.equal(await waitedAfter('example.com'), 1, 'no second wait');
    assert.equal(await waitedAfter('other.example'), 2, 'other keys still wait');
    clock += 1;
    assert.equal(await waitedAfter('example.com'), 3, 'waits again later');
    assert.equal(forwarded.length, 4);
  });

  it('uses resolveWait when given, bounded by unknownWaitMs', async () => {
    const waitedFor: string[] = [];
    const { h } = make({
      lookup: () => 'unknown-yet',
      resolveWait: (k) => {
        waitedFor.push(k);
        return k === 'soon.shop' ? new Promise((r) => setTimeout(() => r({ vip4: '240.240.0.10' }), 20)) : new Promise(() => undefined);
      },
      unknownWaitMs: 100,
    });
    const r = await h.handle(query('soon'), 'udp');
    assert.equal((dnsPacket.decode(r!).answers?.[0] as dnsPacket.StringAnswer).data, '240.240.0.10');
    const t0 = Date.now();
    assert.equal(rcodeOf((await h.handle(query('never.shop.svc.cluster.local'), 'udp'))!), RCODE.NXDOMAIN);
    assert.ok(Date.now() - t0 >= 50);
    assert.deepEqual(waitedFor, ['soon.shop', 'never.shop']);
  });

  it('SERVFAIL when forwarding fails or the lookup throws; onLookup throwing is only logged', async () => {
    const { h } = make({
      forward: () => Promise.reject(new Error('all dead')),
      lookup: (k) => {
        if (k === 'boom.shop') throw new Error('bug');
        return services[k];
      },
      onLookup: () => {
        throw new Error('subscribe failed');
      },
    });
    assert.equal(rcodeOf((await h.handle(query('example.test.org'), 'udp'))!), RCODE.SERVFAIL);
    assert.equal(rcodeOf((await h.handle(query('boom'), 'udp'))!), RCODE.SERVFAIL);
    assert.equal(rcodeOf((await h.handle(query('reviews.default'), 'udp'))!), RCODE.NOERROR);
    const s = h.stats();
    assert.deepEqual([s.servFail, s.upstreamFailures, s.errors, s.answeredLocally], [2, 1, 2, 1]);
  });

  it('bad input: FORMERR, NOTIMP or nothing, with counters', async () => {
    const { h } = make();
    assert.equal(await h.handle(Buffer.from([1]), 'udp'), undefined);
    assert.equal(rcodeOf((await h.handle(Buffer.from([0, 1, 0x20, 0, 0, 1]), 'udp'))!), RCODE.NOTIMP);
    assert.equal(rcodeOf((await h.handle(Buffer.from([0, 1, 1, 0, 0, 1, 0]), 'udp'))!), RCODE.FORMERR);
    const s = h.stats();
    assert.deepEqual([s.queries, s.dropped, s.notImp, s.formErr, s.errors], [3, 1, 1, 1, 3]);
  });
});
