// The pure decisions behind transparent capture: what a connection's first
// bytes are, what SNI a ClientHello carries, where an original destination
// lies in the mesh, and what each policy and mode does with it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { describe, it } from 'node:test';
import { decideInbound } from '../../agent/proxy/capture-front';
import { buildDestinationIndex, canonicalIp, decideOutbound, type DestinationIndex } from '../../agent/proxy/destinations';
import { parseClientHello } from '../../agent/proxy/client-hello';
import { classifyFirstBytes, type FirstBytes } from '../../agent/proxy/sniff';
import type { EndpointView, ProxySnapshot, ServiceView } from '../../agent/proxy/types';
import { buildSni } from '../../proto/model/sni';

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 255]);
const u24 = (n: number): Buffer => Buffer.from([n >> 16, (n >> 8) & 255, n & 255]);
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);

/** A minimal ClientHello handshake message (type, length, body) naming `sni`. */
function clientHello(sni?: string, withExtensions = true): Buffer {
  const exts: Buffer[] = [Buffer.concat([u16(0x0a), vec16(vec16(u16(0x001d)))])]; // supported_groups, before SNI
  if (sni !== undefined) exts.push(Buffer.concat([u16(0), vec16(vec16(Buffer.concat([Buffer.from([0]), vec16(Buffer.from(sni))])))]));
  const body = Buffer.concat([
    u16(0x0303),
    randomBytes(32),
    Buffer.from([32]),
    randomBytes(32),
    vec16(u16(0x1301)),
    Buffer.from([1, 0]),
    ...(withExtensions ? [vec16(Buffer.concat(exts))] : []),
  ]);
  return Buffer.concat([Buffer.from([1]), u24(body.length), body]);
}

/** `handshake` in TLS records of at most `size` bytes each. */
function records(handshake: Buffer, size = 16384, version = 0x0301): Buffer {
  const out: Buffer[] = [];
  for (let at = 0; at < handshake.length; at += size) {
    const frag = handshake.subarray(at, at + size);
    out.push(Buffer.concat([Buffer.from([0x16]), u16(version), u16(frag.length), frag]));
  }
  return Buffer.concat(out);
}

/** The first bytes Node's own TLS client sends, read by a plain server. */
async function realClientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const got = new Promise<Buffer>((resolve) => server.once('connection', (s) => s.once('data', (d: Buffer) => (resolve(d), s.destroy()))));
  const c = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, rejectUnauthorized: false, ...options });
  c.on('error', () => undefined);
  try {
    return await got;
  } finally {
    c.destroy();
    server.close();
  }
}

describe('classifyFirstBytes', () => {
  const cases: Array<[string, Buffer, FirstBytes]> = [
    ['SSL 3.0 ClientHello record', Buffer.from([0x16, 0x03, 0x00, 0x00, 0x2f, 0x01]), 'tls'],
    ['TLS 1.0 ClientHello record', Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]), 'tls'],
    ['TLS 1.1 ClientHello record', Buffer.from([0x16, 0x03, 0x02, 0x00, 0xa5, 0x01]), 'tls'],
    ['TLS 1.2 ClientHello record', Buffer.from([0x16, 0x03, 0x03, 0x00, 0xa5, 0x01]), 'tls'],
    ['TLS 1.3 ClientHello record (legacy record version 3,1)', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), 'tls'],
    ['two bytes of a ClientHello', Buffer.from([0x16, 0x03]), 'tls'],
    ['HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'plaintext'],
    ['HTTP/2 preface', Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), 'plaintext'],
    ['SSH banner', Buffer.from('SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n'), 'plaintext'],
    ['SSLv2-compatible hello (not accepted as TLS)', Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01]), 'plaintext'],
    ['0x16 with another second byte', Buffer.from([0x16, 0x01, 0x00]), 'plaintext'],
    ['one plaintext byte', Buffer.from('G'), 'plaintext'],
    ['one byte 0x16: wait for the next', Buffer.from([0x16]), 'more'],
    ['nothing yet', Buffer.alloc(0), 'more'],
  ];
  for (const [name, bytes, want] of cases) it(name, () => assert.equal(classifyFirstBytes(bytes), want));

  it('classifies what real TLS 1.2 and 1.3 clients send as TLS', async () => {
    for (const v of ['TLSv1.2', 'TLSv1.3'] as const) {
      const hello = await realClientHello({ servername: 'x.example', minVersion: v, maxVersion: v });
      assert.equal(classifyFirstBytes(hello), 'tls', v);
    }
  });
});

describe('parseClientHello', () => {
  const SNI = buildSni(9080, 'reviews.default.svc.cluster.local');

  it('reads the SNI of real Node TLS 1.2 and 1.3 ClientHellos', async () => {
    for (const v of ['TLSv1.2', 'TLSv1.3'] as const) {
      const hello = await realClientHello({ servername: SNI, minVersion: v, maxVersion: v });
      assert.deepEqual(parseClientHello(hello), { kind: 'sni', name: SNI }, v);
    }
  });

  it('reports no SNI when the client sends none (a client dialling an IP)', async () => {
    assert.deepEqual(parseClientHello(await realClientHello({})), { kind: 'no-sni' });
    assert.deepEqual(parseClientHello(records(clientHello())), { kind: 'no-sni' });
    assert.deepEqual(parseClientHello(records(clientHello(undefined, false))), { kind: 'no-sni' });
  });

  it('asks for more at every truncation, and parses once whole', () => {
    const whole = records(clientHello('app.example.com'));
    for (let n = 0; n < whole.length; n++) assert.deepEqual(parseClientHello(whole.subarray(0, n)), { kind: 'need-more' }, `${n} of ${whole.length} bytes`);
    assert.deepEqual(parseClientHello(whole), { kind: 'sni', name: 'app.example.com' });
  });

  it('joins a ClientHello split across records, including a 3-byte first record', () => {
    const hs = clientHello(SNI);
    assert.deepEqual(parseClientHello(records(hs, 100)), { kind: 'sni', name: SNI });
    assert.deepEqual(parseClientHello(records(hs, 3)), { kind: 'sni', name: SNI });
    assert.deepEqual(parseClientHello(records(hs, 100).subarray(0, 110)), { kind: 'need-more' });
  });

  const invalid: Array<[string, Buffer, RegExp]> = [
    ['plaintext', Buffer.from('GET / HTTP/1.1\r\n\r\n'), /not a TLS handshake record/],
    ['a ServerHello', records(Buffer.concat([Buffer.from([2]), u24(4), Buffer.alloc(4)])), /type 2 is not a ClientHello/],
    ['an oversized ClientHello', records(Buffer.concat([Buffer.from([1]), u24(100_000)]), 4), /exceeds/],
    ['an empty record', Buffer.from([0x16, 3, 1, 0, 0]), /record length 0/],
    ['a ClientHello cut inside its own length', records(Buffer.concat([Buffer.from([1]), u24(10), Buffer.alloc(10)])), /malformed ClientHello/],
  ];
  for (const [name, bytes, reason] of invalid) {
    it(`refuses ${name}`, () => {
      const r = parseClientHello(bytes);
      assert.equal(r.kind, 'invalid');
      assert.match((r as { reason: string }).reason, reason);
    });
  }

  it('never throws on garbage after a valid record header', () => {
    for (let i = 0; i < 2000; i++) {
      const body = randomBytes(1 + (i % 300));
      const r = parseClientHello(Buffer.concat([Buffer.from([0x16, 3, 1]), u16(body.length + 4), Buffer.from([1]), u24(body.length), body]));
      assert.ok(['sni', 'no-sni', 'invalid'].includes(r.kind), r.kind);
    }
  });
});

const ep = (address: string, ports: Array<[string, number]>, healthy = true): EndpointView => ({
  address,
  mtlsPort: 15006,
  identity: `spiffe://kedge.test/ns/default/sa/${address}`,
  workload: `w-${address}`,
  healthy,
  ports: ports.map(([name, port]) => ({ name, port })),
});

function service(key: string, vip: string, ports: Array<[string, number]>, endpoints: EndpointView[]): ServiceView {
  const [name, ns] = key.split('.');
  return { key, hostname: `${name}.${ns}.svc.cluster.local`, vip, ports: ports.map(([n, port]) => ({ name: n, port, protocol: 'TCP' })), endpoints, version: '1' };
}

function snap(...services: ServiceView[]): ProxySnapshot {
  return { version: 'v', services: new Map(services.map((s) => [s.key, s])) };
}

describe('buildDestinationIndex', () => {
  const r1 = ep('198.18.0.2', [['http', 8080], ['grpc', 9090]]);
  const r2 = ep('198.18.0.3', [['http', 8081]]);
  const reviews = service('reviews.default', '240.240.0.10', [['http', 9080], ['grpc', 9090]], [r1, r2]);
  const v6 = service('ratings.default', '2001:DB8:0:0::0A', [['http', 80]], [ep('2001:db8:1::5', [['http', 8080]])]);
  const novip = service('legacy.default', '', [['http', 80]], [ep('198.18.0.9', [['http', 80], ['metrics', 9100]])]);
  const index = buildDestinationIndex(snap(reviews, v6, novip));
  const at = (a: string, p: number) => decideOutbound({ address: a, port: p }, { address: '127.0.0.1', port: 15001 }, index, 'registry-only');

  const cases: Array<[string, string, number, string | undefined, number | undefined, string | undefined]> = [
    // name, address, port -> service, service port, endpoint
    ['a VIP:port', '240.240.0.10', 9080, 'reviews.default', 9080, undefined],
    ['a second port of the VIP', '240.240.0.10', 9090, 'reviews.default', 9090, undefined],
    ['an endpoint address:targetPort, mapped to the service port by name', '198.18.0.2', 8080, 'reviews.default', 9080, '198.18.0.2'],
    ['another endpoint whose target port differs', '198.18.0.3', 8081, 'reviews.default', 9080, '198.18.0.3'],
    ['an endpoint port with the same number as the service port', '198.18.0.2', 9090, 'reviews.default', 9090, '198.18.0.2'],
    ['an IPv6 VIP spelled differently by the federation', '2001:db8::a', 80, 'ratings.default', 80, undefined],
    ['an IPv6 endpoint', '2001:db8:1::5', 8080, 'ratings.default', 80, '2001:db8:1::5'],
    ['an IPv4-mapped IPv6 original destination', '::ffff:240.240.0.10', 9080, 'reviews.default', 9080, undefined],
    ['an endpoint of a service without a VIP', '198.18.0.9', 80, 'legacy.default', 80, '198.18.0.9'],
    ['a VIP on a port the service does not have', '240.240.0.10', 80, undefined, undefined, undefined],
    ['an endpoint on a port it does not serve', '198.18.0.2', 22, undefined, undefined, undefined],
    ['an endpoint port named for no service port', '198.18.0.9', 9100, undefined, undefined, undefined],
    ['an unknown address', '93.184.216.34', 443, undefined, undefined, undefined],
  ];
  for (const [name, address, port, svc, svcPort, endpoint] of cases) {
    it(name, () => {
      const d = at(address, port);
      if (svc === undefined) return assert.equal(d.action, 'refuse');
      assert.equal(d.action, 'mesh');
      if (d.action !== 'mesh') return;
      assert.equal(d.destination.service.key, svc);
      assert.equal(d.destination.port, svcPort);
      assert.equal(d.destination.endpoint?.address, endpoint);
      assert.equal(d.via, endpoint ? 'endpoint' : 'vip');
    });
  }

  it('keys by canonical ip:port and holds each entry once', () => {
    assert.deepEqual([...index.keys()].sort(), [
      '198.18.0.2:8080',
      '198.18.0.2:9090',
      '198.18.0.3:8081',
      '198.18.0.9:80',
      '240.240.0.10:9080',
      '240.240.0.10:9090',
      '[2001:db8:1::5]:8080',
      '[2001:db8::a]:80',
    ]);
  });

  it('lets a VIP win over an endpoint claiming the same ip:port', () => {
    const clash = service('clash.default', '198.18.0.50', [['http', 80]], []);
    const owner = service('owner.default', '240.240.0.11', [['http', 80]], [ep('198.18.0.50', [['http', 80]])]);
    const d = buildDestinationIndex(snap(owner, clash)).get('198.18.0.50:80');
    assert.equal(d?.service.key, 'clash.default');
    assert.equal(d?.endpoint, undefined);
  });
});

describe('decideOutbound policies and the loop guard', () => {
  const empty: DestinationIndex = new Map();
  const self = { address: '127.0.0.1', port: 15001 };
  const cases: Array<[string, string, number, 'allow-any' | 'registry-only', string]> = [
    ['passes an unknown destination through under allow-any', '93.184.216.34', 443, 'allow-any', 'passthrough'],
    ['refuses an unknown destination under registry-only', '93.184.216.34', 443, 'registry-only', 'refuse:KEDGE_OUTBOUND_NOT_IN_REGISTRY'],
    ['refuses the listener itself', '127.0.0.1', 15001, 'allow-any', 'refuse:KEDGE_ORIGINAL_DST_LOOP'],
    ['refuses another loopback address on the listener port', '127.0.0.53', 15001, 'allow-any', 'refuse:KEDGE_ORIGINAL_DST_LOOP'],
    ['refuses IPv6 loopback on the listener port', '::1', 15001, 'allow-any', 'refuse:KEDGE_ORIGINAL_DST_LOOP'],
    ['refuses the IPv4-mapped listener address', '::ffff:127.0.0.1', 15001, 'allow-any', 'refuse:KEDGE_ORIGINAL_DST_LOOP'],
    ['passes another host on port 15001 through', '198.18.0.7', 15001, 'allow-any', 'passthrough'],
    ['passes loopback on another port through', '127.0.0.1', 8080, 'allow-any', 'passthrough'],
  ];
  for (const [name, address, port, policy, want] of cases) {
    it(name, () => {
      const d = decideOutbound({ address, port }, self, empty, policy);
      assert.equal(d.action === 'refuse' ? `refuse:${d.code}` : d.action, want);
    });
  }

  it('says in the refusal why, and what to check', () => {
    const d = decideOutbound({ address: '93.184.216.34', port: 443 }, self, empty, 'registry-only');
    assert.ok(d.action === 'refuse');
    assert.match(d.reason, /93\.184\.216\.34:443 is neither a service VIP:port nor an endpoint address:port.*registry-only/);
  });
});

describe('decideInbound', () => {
  const mesh = { kind: 'sni', name: buildSni(9080, 'reviews.default.svc.cluster.local') } as const;
  const other = { kind: 'sni', name: 'app.example.com' } as const;
  const none = { kind: 'no-sni' } as const;
  const bad = { kind: 'invalid', reason: 'x' } as const;
  const cases: Array<[string, 'tls' | 'plaintext', Parameters<typeof decideInbound>[1], 'PERMISSIVE' | 'STRICT', string]> = [
    ['PERMISSIVE forwards plaintext', 'plaintext', undefined, 'PERMISSIVE', 'passthrough'],
    ['STRICT refuses plaintext', 'plaintext', undefined, 'STRICT', 'refuse'],
    ['PERMISSIVE terminates mesh TLS', 'tls', mesh, 'PERMISSIVE', 'mtls'],
    ['PERMISSIVE passes TLS with another SNI through', 'tls', other, 'PERMISSIVE', 'passthrough'],
    ['PERMISSIVE passes TLS without SNI through', 'tls', none, 'PERMISSIVE', 'passthrough'],
    ['PERMISSIVE leaves an unreadable ClientHello to the TLS server', 'tls', bad, 'PERMISSIVE', 'mtls'],
    ['STRICT gives all TLS to the TLS server', 'tls', other, 'STRICT', 'mtls'],
    ['STRICT does not need the ClientHello', 'tls', undefined, 'STRICT', 'mtls'],
  ];
  for (const [name, first, hello, mode, want] of cases) it(name, () => assert.equal(decideInbound(first, hello, mode), want));
});

describe('canonicalIp', () => {
  const cases: Array<[string, string]> = [
    ['240.240.0.10', '240.240.0.10'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::FFFF:a00:1', '10.0.0.1'],
    ['fe80::1%eth0', 'fe80::1%eth0'],
    ['not-an-ip', 'not-an-ip'],
  ];
  for (const [input, want] of cases) it(`${input} -> ${want}`, () => assert.equal(canonicalIp(input), want));
});
