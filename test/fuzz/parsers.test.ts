// Property-based fuzzing (fast-check) of the parsers that read bytes from
// untrusted peers: CSRs and CA certificates, DNS queries, the TLS
// ClientHello (SNI), and HTTP/1.1 request heads. Each must finish on every
// input, fail only with its documented error, return something bounded by
// its input, and read back what its encoder (or the real client) wrote.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import dnsPacket from 'dns-packet';
import { inspectCsr, verifyCsr } from '../../federation/ca/csr';
import { loadPluggedCa } from '../../federation/ca/material';
import { generateKeyAndCsr } from '../../agent/identity/csr';
import { toPem } from '../../federation/ca/der';
import { inspectQuery } from '../../agent/dns/message';
import { parseClientHello } from '../../agent/proxy/client-hello';
import { parseRequestHead } from '../../agent/proxy/http1/parse';
import { buildSni } from '../../proto/model/sni';
import { makeCa } from '../support/pki';
import { budget, fuzzTimeout, mutated, onlyKedgeErrors } from './budget';

const derOf = (pem: string): Buffer => Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');

describe('fuzz: CSR and certificate parsers', () => {
  let csrDer: Buffer;
  let ca: { certPem: string; keyPem: string };
  before(async () => {
    csrDer = derOf((await generateKeyAndCsr({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/web' })).csrPem);
    ca = makeCa('fuzz');
  });

  it('inspectCsr and verifyCsr fail only with KEDGE_BAD_CSR, on mutated CSRs and on any text', fuzzTimeout(), () => {
    const input = fc.oneof(mutated(csrDer).map((d) => toPem(d, 'CERTIFICATE REQUEST')), fc.string({ maxLength: 400 }), fc.uint8Array({ maxLength: 300 }).map((b) => toPem(Buffer.from(b), 'CERTIFICATE REQUEST')));
    fc.assert(
      fc.property(input, (pem) => {
        onlyKedgeErrors(() => inspectCsr(pem), ['KEDGE_BAD_CSR']);
        onlyKedgeErrors(() => verifyCsr(pem), ['KEDGE_BAD_CSR']);
      }),
      budget([[''], ['-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n'], [toPem(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), 'CERTIFICATE REQUEST')]]),
    );
  });

  it('an unmodified CSR reads back its SPIFFE ID (round trip)', fuzzTimeout(), async () => {
    await fc.assert(
      fc.asyncProperty(fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/), fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/), async (ns, sa) => {
        const id = `spiffe://cluster.local/ns/${ns}/sa/${sa}`;
        const { csrPem } = await generateKeyAndCsr({ spiffeId: id });
        assert.deepEqual(inspectCsr(csrPem).requestedUris, [id]);
      }),
      // Each run makes an RSA key: a few runs, not a time budget.
      { numRuns: 3 },
    );
  });

  it('loadPluggedCa fails only with KEDGE_CA_INVALID on mutated certificates and keys', fuzzTimeout(), () => {
    const certDer = derOf(ca.certPem);
    fc.assert(
      fc.property(mutated(certDer), fc.boolean(), (der, keepKey) => {
        onlyKedgeErrors(() => loadPluggedCa(toPem(der, 'CERTIFICATE'), keepKey ? ca.keyPem : toPem(der, 'PRIVATE KEY')), ['KEDGE_CA_INVALID']);
      }),
      budget(),
    );
  });
});

describe('fuzz: DNS query parser', () => {
  it('inspectQuery never throws, and a reject answer is a header of the query id', fuzzTimeout(), () => {
    const valid = dnsPacket.encode({ type: 'query', id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'cart.shop.svc.cluster.local' }] });
    fc.assert(
      fc.property(fc.oneof(mutated(valid), fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b))), fc.constantFrom('udp' as const, 'tcp' as const), (msg, transport) => {
        const r = inspectQuery(msg, transport);
        if (r.kind === 'reject') {
          assert.equal(r.response.length, 12);
          assert.equal(r.response.readUInt16BE(0), msg.readUInt16BE(0));
        }
        if (r.kind === 'query') assert.ok(r.query.questionBytes.length <= msg.length);
      }),
      budget<[Buffer, 'udp' | 'tcp']>([[Buffer.alloc(0), 'udp'], [Buffer.from([0, 1, 0, 0]), 'tcp'], [Buffer.alloc(12), 'udp']]),
    );
  });

  it('reads back the name and type dns-packet encoded (round trip)', fuzzTimeout(), () => {
    const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/);
    fc.assert(
      fc.property(fc.array(label, { minLength: 1, maxLength: 5 }), fc.constantFrom('A', 'AAAA', 'SRV', 'TXT'), fc.nat(0xffff), (labels, type, id) => {
        const name = labels.join('.');
        const r = inspectQuery(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as 'A', name }] }), 'udp');
        assert.equal(r.kind, 'query');
        if (r.kind === 'query') {
          assert.equal(r.query.id, id);
          assert.equal(r.query.question.name, name);
          assert.equal(r.query.question.type, type);
        }
      }),
      budget(),
    );
  });
});

describe('fuzz: ClientHello (SNI) parser', () => {
  /** A real ClientHello, as Node's TLS client sends it, for `servername`. */
  const capture = (servername: string): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const server = net.createServer((s) => {
        const chunks: Buffer[] = [];
        s.on('data', (d: Buffer) => {
          chunks.push(d);
          const all = Buffer.concat(chunks);
          if (all.length >= 5 && all.length >= 5 + all.readUInt16BE(3)) {
            s.destroy();
            server.close();
            resolve(all);
          }
        });
      });
      server.listen(0, '127.0.0.1', () => {
        const c = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', servername, rejectUnauthorized: false });
        c.on('error', () => undefined);
      });
      server.on('error', reject);
    });
  let hello: Buffer;
  const sni = buildSni(8080, 'cart.shop.svc.cluster.local');
  before(async () => {
    hello = await capture(sni);
  });

  it('reads the SNI of a real ClientHello, and every prefix of it needs more', fuzzTimeout(), () => {
    assert.deepEqual(parseClientHello(hello), { kind: 'sni', name: sni });
    fc.assert(
      fc.property(fc.nat(hello.length - 1), (n) => {
        assert.equal(parseClientHello(hello.subarray(0, n)).kind, 'need-more');
      }),
      budget(),
    );
  });

  it('never throws on mutated or random bytes, and a name it returns is within the bytes', fuzzTimeout(), () => {
    fc.assert(
      fc.property(fc.oneof(mutated(hello), fc.uint8Array({ maxLength: 2_000 }).map((b) => Buffer.from(b))), (buf) => {
        const r = parseClientHello(buf);
        assert.ok(['sni', 'need-more', 'no-sni', 'invalid'].includes(r.kind));
        if (r.kind === 'sni') assert.ok(r.name.length > 0 && r.name.length <= 255 && r.name.length < buf.length);
      }),
      budget<[Buffer]>([[Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff])], [Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])]]),
    );
  });
});

describe('fuzz: HTTP/1.1 request head parser', () => {
  const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}$/);
  const value = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,40}[\x21-\x7e])?$/);

  it('reads back the method, target and headers it was given (round trip)', fuzzTimeout(), () => {
    fc.assert(
      fc.property(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH'), fc.stringMatching(/^\/[A-Za-z0-9._~/-]{0,60}$/), fc.array(fc.tuple(token, value), { maxLength: 20 }), (method, target, headers) => {
        const all = [['host', 'cart'], ...headers.filter(([n]) => !/^(host|content-length|transfer-encoding)$/i.test(n))] as [string, string][];
        const raw = Buffer.from(`${method} ${target} HTTP/1.1\r\n${all.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`);
        const r = parseRequestHead(raw);
        assert.equal(r.kind, 'head', r.kind === 'error' ? r.reason : r.kind);
        if (r.kind !== 'head') return;
        assert.equal(r.head.method, method);
        assert.equal(r.head.target, target);
        assert.equal(r.end, raw.length);
        // Names are read lowercased (they are case-insensitive); values exactly.
        assert.deepEqual(r.head.headers.map((h) => [h.name, h.value]), all.map(([n, v]) => [n.toLowerCase(), v]));
      }),
      budget(),
    );
  });

  it('never throws on mutated or random heads; refusals are 400, 414, 431 or 501; what it reads lies within the input', fuzzTimeout(), () => {
    const valid = Buffer.from('POST /cart/items?x=1 HTTP/1.1\r\nhost: cart\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\nx-a: b\r\n\r\nhello');
    fc.assert(
      fc.property(fc.oneof(mutated(valid), fc.string({ maxLength: 300 }).map((s) => Buffer.from(s)), fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b))), (buf) => {
        const r = parseRequestHead(buf);
        if (r.kind === 'error') assert.ok([400, 414, 431, 501].includes(r.status), `status ${r.status}`);
        if (r.kind === 'head') assert.ok(r.end <= buf.length && r.head.raw.length <= buf.length);
      }),
      budget<[Buffer]>([[Buffer.from('GET / HTTP/1.1\r\n\r\n')], [Buffer.from('\r\n\r\n')], [Buffer.from('GET / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n')]]),
    );
  });
});
