// The etcd store's decisions without an etcd: key ranges, error
// classification and messages, the retry loop, and the watch and keepalive
// state machines driven through fake gRPC streams.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { IEvent, ILeaseKeepAliveResponse, IWatchRequest, IWatchResponse, LeaseClient, WatchClient } from 'etcd3';
import { classifyEtcdError, etcdFailure, grpcCode, type EtcdFailure } from '../../federation/store/etcd-errors';
import { LeaseKeepAliver } from '../../federation/store/etcd-keepalive';
import { backoffMs, isLeaseId, KeyCodec, leaseTtlSeconds, prefixRangeEnd, toKeyValue, toWatchEvent } from '../../federation/store/etcd-keys';
import { EtcdRpc } from '../../federation/store/etcd-rpc';
import { EtcdWatch } from '../../federation/store/etcd-watch';
import type { WatchEvent } from '../../federation/store/types';
import { hasCode, KedgeError } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';
import { etcdBinary } from '../support/etcd';
import { waitFor } from '../support/store-conformance';

const b = (s: string) => Buffer.from(s, 'utf8');
const grpcError = (code: number, text: string) => Object.assign(new Error(`${code} ${text}`), { code });

describe('etcd store keys', () => {
  it('computes prefix range ends like etcd', () => {
    const cases: [number[], number[]][] = [
      [[0x61], [0x62]],
      [[0x61, 0x2f], [0x61, 0x30]],
      [[0x61, 0xff], [0x62]],
      [[0x61, 0xff, 0xff], [0x62]],
      [[0xff], [0]],
      [[], [0]],
    ];
    for (const [prefix, end] of cases) assert.deepEqual([...prefixRangeEnd(Buffer.from(prefix))], end, `prefix ${prefix}`);
  });

  it('namespaces keys and ranges, and treats an empty prefix as every key', () => {
    const plain = new KeyCodec('');
    assert.deepEqual(plain.range(''), { key: Buffer.from([0]), range_end: Buffer.from([0]) });
    assert.deepEqual(plain.range('/a/'), { key: b('/a/'), range_end: b('/a0') });
    const ns = new KeyCodec('/kedge/');
    assert.deepEqual(ns.encode('/x'), b('/kedge//x'));
    assert.equal(ns.decode(b('/kedge//x')), '/x');
    assert.deepEqual(ns.range(''), { key: b('/kedge/'), range_end: b('/kedge0') });
    assert.equal(new KeyCodec('\u00e9/').decode(Buffer.from('\u00e9/k\u4e2d', 'utf8')), 'k\u4e2d', 'namespaces are measured in bytes');
  });

  it('maps etcd key-values and events, leaving out lease "0"', () => {
    const codec = new KeyCodec('/ns');
    const raw = { key: b('/ns/a'), value: b('v\u00e9'), create_revision: '5', mod_revision: '7', version: '2', lease: '0' };
    assert.deepEqual(toKeyValue(raw, codec), { key: '/a', value: 'v\u00e9', createRevision: 5, modRevision: 7 });
    assert.deepEqual(toKeyValue({ ...raw, lease: '694d7a' }, codec).lease, '694d7a');
    assert.deepEqual(toWatchEvent({ type: 'PUT', kv: raw } as unknown as IEvent, codec), { type: 'put', kv: { key: '/a', value: 'v\u00e9', createRevision: 5, modRevision: 7 } });
    assert.deepEqual(toWatchEvent({ type: 'DELETE', kv: { ...raw, value: b(''), mod_revision: '9' } } as unknown as IEvent, codec), { type: 'delete', key: '/a', modRevision: 9 });
  });

  it('rounds lease TTLs up to whole seconds, at least one', () => {
    for (const [ms, s] of [[1, 1], [500, 1], [1000, 1], [1001, 2], [2500, 3], [60_000, 60]]) assert.equal(leaseTtlSeconds(ms!), s, `${ms} ms`);
  });

  it('accepts only decimal int64 lease IDs', () => {
    for (const id of ['1', '7677689638993806598']) assert.equal(isLeaseId(id), true, id);
    for (const id of ['', '0', '01', '-1', 'abc', '1.5', '12345678901234567890']) assert.equal(isLeaseId(id), false, id);
  });

  it('backs off exponentially with jitter between half and all of the step, capped', () => {
    assert.equal(backoffMs(0, 100, 2000, () => 0), 50);
    assert.equal(backoffMs(0, 100, 2000, () => 1), 100);
    assert.equal(backoffMs(3, 100, 2000, () => 1), 800);
    assert.equal(backoffMs(10, 100, 2000, () => 0), 1000);
    assert.equal(backoffMs(1000, 100, 2000, () => 1), 2000);
  });
});

describe('etcd store errors', () => {
  it('classifies etcd and gRPC failures', () => {
    const cases: [unknown, EtcdFailure][] = [
      [grpcError(14, 'UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:2379'), 'not-sent'],
      [new Error('14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:2379'), 'not-sent'],
      [grpcError(14, 'UNAVAILABLE: Connection dropped'), 'transient'],
      [new Error('4 DEADLINE_EXCEEDED: Deadline exceeded after 1.004s,LB pick: 0.001s'), 'transient'],
      [new Error('1 CANCELLED: Cancelled on client'), 'transient'],
      [new Error('14 UNAVAILABLE: etcdserver: leader changed'), 'transient'],
      [new Error('2 UNKNOWN: etcdserver: request timed out'), 'transient'],
      [new Error('8 RESOURCE_EXHAUSTED: etcdserver: mvcc: database space exceeded'), 'no-space'],
      [new Error('5 NOT_FOUND: etcdserver: requested lease not found'), 'lease-not-found'],
      [new Error('3 INVALID_ARGUMENT: etcdserver: request is too large'), 'too-large'],
      [new Error('8 RESOURCE_EXHAUSTED: grpc: received message larger than max (2097175 vs. 2097152)'), 'too-large'],
      [new Error('11 OUT_OF_RANGE: etcdserver: mvcc: required revision has been compacted'), 'compacted'],
      [new Error('7 PERMISSION_DENIED: etcdserver: permission denied'), 'permission-denied'],
      [new Error('3 INVALID_ARGUMENT: etcdserver: user name is empty'), 'permission-denied'],
      [new Error('3 INVALID_ARGUMENT: etcdserver: authentication failed, invalid user ID or password'), 'auth-failed'],
      [new Error('9 FAILED_PRECONDITION: etcdserver: something else'), 'rejected'],
      [new Error('boom'), 'rejected'],
      ['a string', 'rejected'],
    ];
    for (const [err, kind] of cases) assert.equal(classifyEtcdError(err), kind, String(err));
    assert.equal(grpcCode(new Error('GRPCUnavailableError: 14 UNAVAILABLE: x')), 14);
    assert.equal(grpcCode(new Error('nothing')), undefined);
  });

  it('turns failures into KedgeErrors with stable codes and what to check', () => {
    const ctx = { endpoints: '10.0.0.1:2379,10.0.0.2:2379', what: 'put "/k"', mutation: true, timeoutMs: 5000, lease: '42' };
    const cases: [Error, string, string[]][] = [
      [new Error('14 UNAVAILABLE: No connection established'), 'KEDGE_STORE_UNAVAILABLE', ['cannot reach etcd at 10.0.0.1:2379,10.0.0.2:2379', 'endpoint health']],
      [new Error('14 UNAVAILABLE: Connection dropped'), 'KEDGE_STORE_UNAVAILABLE', ['may or may not have been applied', 'put "/k"']],
      [new Error('8 RESOURCE_EXHAUSTED: etcdserver: mvcc: database space exceeded'), 'KEDGE_STORE_UNAVAILABLE', ['refuses writes', 'NOSPACE', 'etcdctl alarm disarm']],
      [new Error('5 NOT_FOUND: etcdserver: requested lease not found'), 'KEDGE_STORE_LEASE_NOT_FOUND', ['lease 42', 'put "/k"']],
      [new Error('3 INVALID_ARGUMENT: etcdserver: request is too large'), 'KEDGE_STORE_INVALID_REQUEST', ['--max-request-bytes']],
      [new Error('11 OUT_OF_RANGE: etcdserver: mvcc: required revision has been compacted'), 'KEDGE_STORE_COMPACTED', ['list again']],
      [new Error('7 PERMISSION_DENIED: etcdserver: permission denied'), 'KEDGE_STORE_AUTH', ['denied put "/k"', 'authentication is enabled', 'etcdUser', 'grant-permission']],
      [new Error('9 FAILED_PRECONDITION: etcdserver: something else'), 'KEDGE_STORE_UNAVAILABLE', ['rejected put "/k"', 'something else']],
    ];
    for (const [err, code, mentions] of cases) {
      const e = etcdFailure(err, ctx);
      assert.equal(e.code, code, err.message);
      assert.equal(e.cause, err);
      for (const m of mentions) assert.ok(e.message.includes(m), `"${e.message}" should mention ${m}`);
    }
    assert.ok(!etcdFailure(new Error('14 UNAVAILABLE: Connection dropped'), { ...ctx, mutation: false }).message.includes('may or may not'), 'reads do not warn about half-applied changes');
    const denied = etcdFailure(new Error('7 PERMISSION_DENIED: etcdserver: permission denied'), { ...ctx, user: 'kedge' });
    assert.match(denied.message, /denied put "\/k" to user "kedge": none of its roles grants readwrite/);
    const refused = etcdFailure(new Error('3 INVALID_ARGUMENT: etcdserver: authentication failed, invalid user ID or password'), { ...ctx, user: 'kedge' });
    assert.equal(refused.code, 'KEDGE_STORE_AUTH');
    assert.match(refused.message, /refused user "kedge".*wrong user name or password.*etcdPasswordFile/);
  });
});

describe('etcd store retry loop', () => {
  const rpc = () => new EtcdRpc(['127.0.0.1:1'], 300, () => new KedgeError('KEDGE_STORE_CLOSED', 'closed'));

  it('retries a request that never left until it succeeds, and records the revision', async () => {
    const r = rpc();
    let attempts = 0;
    const res = await r.call({ what: 'put "/k"', mutation: true }, async () => {
      if (++attempts < 3) throw grpcError(14, 'UNAVAILABLE: No connection established');
      return { header: { revision: '17' } };
    });
    assert.equal(attempts, 3);
    assert.deepEqual(res, { header: { revision: '17' } });
    assert.equal(r.revision, 17);
    r.close();
  });

  it('retries reads on transient failures but never a mutation whose outcome is unknown', async () => {
    const r = rpc();
    let reads = 0;
    await r.call({ what: 'get "/k"', mutation: false }, async () => {
      if (++reads < 2) throw grpcError(14, 'UNAVAILABLE: Connection dropped');
      return {};
    });
    assert.equal(reads, 2);
    let writes = 0;
    await assert.rejects(r.call({ what: 'put "/k"', mutation: true }, async () => {
      writes++;
      throw grpcError(14, 'UNAVAILABLE: Connection dropped');
    }), (err: unknown) => hasCode(err, 'KEDGE_STORE_UNAVAILABLE') && (err as Error).message.includes('may or may not'));
    assert.equal(writes, 1);
    r.close();
  });

  it('gives up at one shared deadline, passing it to every attempt', async () => {
    const r = rpc();
    const deadlines = new Set<unknown>();
    const t0 = Date.now();
    await assert.rejects(r.call({ what: 'get "/k"', mutation: false }, async (o) => {
      deadlines.add(o.deadline);
      throw grpcError(14, 'UNAVAILABLE: No connection established');
    }), (err: unknown) => hasCode(err, 'KEDGE_STORE_UNAVAILABLE'));
    const took = Date.now() - t0;
    assert.ok(took >= 240 && took < 600, `gave up after ${took} ms with a 300 ms timeout`);
    assert.equal(deadlines.size, 1);
    r.close();
  });

  it('does not retry final answers, and refuses to run once closed', async () => {
    const r = rpc();
    let n = 0;
    await assert.rejects(r.call({ what: 'put "/k"', mutation: true, lease: '7' }, async () => {
      n++;
      throw new Error('5 NOT_FOUND: etcdserver: requested lease not found');
    }), (err: unknown) => hasCode(err, 'KEDGE_STORE_LEASE_NOT_FOUND'));
    assert.equal(n, 1);
    r.close();
    await assert.rejects(r.call({ what: 'get "/k"', mutation: false }, async () => ({})), (err: unknown) => hasCode(err, 'KEDGE_STORE_CLOSED'));
  });
});

/** A gRPC duplex stream double: records writes, emits what the test says. */
class FakeStream<Req, Res> extends EventEmitter {
  readonly written: Req[] = [];
  ended = false;
  cancelled = false;
  write(req: Req): void {
    this.written.push(req);
  }
  end(): void {
    this.ended = true;
  }
  cancel(): void {
    this.cancelled = true;
  }
  send(res: Res): void {
    this.emit('data', res);
  }
}

type FakeWatchStream = FakeStream<IWatchRequest, IWatchResponse>;

const header = (revision: number) => ({ cluster_id: '1', member_id: '1', raft_term: '2', revision: String(revision) });
function watchResponse(revision: number, fields: Partial<IWatchResponse> & { puts?: [string, number][]; deletes?: [string, number][] } = {}): IWatchResponse {
  const { puts = [], deletes = [], ...rest } = fields;
  const kv = (key: string, rev: number) => ({ key: b(key), value: b('v'), create_revision: String(rev), mod_revision: String(rev), version: '1', lease: '0' });
  const events = [
    ...puts.map(([k, r]) => ({ type: 'PUT', kv: kv(k, r) })),
    ...deletes.map(([k, r]) => ({ type: 'DELETE', kv: kv(k, r) })),
  ].sort((x, y) => Number(x.kv.mod_revision) - Number(y.kv.mod_revision)) as unknown as IEvent[];
  return { header: header(revision), watch_id: '0', created: false, canceled: false, compact_revision: '0', cancel_reason: '', fragment: false, events, ...rest };
}

function watchHarness(fromRevision: number | undefined, seen = 100) {
  const streams: FakeWatchStream[] = [];
  const events: WatchEvent[][] = [];
  const errors: Error[] = [];
  let ended = 0;
  let refreshes = 0;
  const watches = { watch: async () => {
    const s: FakeWatchStream = new FakeStream();
    streams.push(s);
    return s;
  } } as unknown as WatchClient;
  const w = new EtcdWatch({
    watches, codec: new KeyCodec(''), logger: silentLogger(), endpoints: '127.0.0.1:2379',
    revision: () => seen, observe: () => undefined, ended: () => ended++, refreshAuth: () => refreshes++,
  }, '/p/', fromRevision, (batch) => events.push(batch), (err) => errors.push(err));
  const stream = async (n: number) => {
    await waitFor(() => streams.length >= n && streams[n - 1]!.written.length > 0, 3000, `watch stream ${n}`);
    return streams[n - 1]!;
  };
  const startOf = (s: FakeWatchStream) => Number(s.written[0]?.create_request?.start_revision);
  const keys = () => events.flat().map((e) => (e.type === 'put' ? `put ${e.kv.key}@${e.kv.modRevision}` : `delete ${e.key}@${e.modRevision}`));
  return { w, streams, events, errors, stream, startOf, keys, ended: () => ended, refreshes: () => refreshes };
}

describe('etcd store watch', () => {
  it('starts after fromRevision, and resumes after the last delivered revision without repeats', async () => {
    const h = watchHarness(10);
    const s1 = await h.stream(1);
    assert.equal(h.startOf(s1), 11);
    assert.deepEqual(s1.written[0]?.create_request?.key, b('/p/'));
    s1.send(watchResponse(20, { created: true }));
    s1.send(watchResponse(20, { puts: [['/p/a', 11], ['/p/b', 12]] }));
    s1.emit('error', grpcError(14, 'UNAVAILABLE: Connection dropped'));
    const s2 = await h.stream(2);
    assert.equal(h.startOf(s2), 13);
    assert.ok(s1.ended && s1.cancelled, 'the broken stream is ended');
    s2.send(watchResponse(25, { created: true }));
    s2.send(watchResponse(25, { puts: [['/p/b', 12], ['/p/c', 13]], deletes: [['/p/a', 13]] })); // 12 again: dropped
    s1.send(watchResponse(30, { puts: [['/p/old', 30]] })); // a stale stream: ignored
    assert.deepEqual(h.keys(), ['put /p/a@11', 'put /p/b@12', 'put /p/c@13', 'delete /p/a@13']);
    assert.equal(h.events.length, 2, 'one batch per response');
    h.w.close();
  });

  it('advances on progress notifications but not on the created header', async () => {
    const h = watchHarness(10);
    const s1 = await h.stream(1);
    s1.send(watchResponse(50, { created: true })); // still replaying 11..50: must not skip ahead
    s1.emit('end');
    const s2 = await h.stream(2);
    assert.equal(h.startOf(s2), 11);
    s2.send(watchResponse(60, { created: true }));
    s2.send(watchResponse(60)); // progress: nothing under the prefix up to 60
    s2.emit('error', grpcError(14, 'UNAVAILABLE: Connection dropped'));
    assert.equal(h.startOf(await h.stream(3)), 61);
    h.w.close();
  });

  it('without fromRevision starts after the newest revision the store has seen', async () => {
    const h = watchHarness(undefined, 100);
    assert.equal(h.startOf(await h.stream(1)), 101);
    h.w.close();
  });

  it('reports a compacted start revision with KEDGE_STORE_COMPACTED and stops', async () => {
    const h = watchHarness(10);
    const s1 = await h.stream(1);
    s1.send(watchResponse(50, { created: true }));
    s1.send(watchResponse(0, { canceled: true, compact_revision: '30' }));
    assert.equal(h.errors.length, 1);
    assert.ok(hasCode(h.errors[0], 'KEDGE_STORE_COMPACTED') && h.errors[0]!.message.includes('"/p/"'));
    assert.ok(s1.ended && s1.cancelled);
    assert.equal(h.ended(), 1);
    s1.send(watchResponse(51, { puts: [['/p/late', 51]] }));
    assert.deepEqual(h.events, []);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(h.streams.length, 1, 'no reconnect after a final error');
  });

  it('skips to the compaction point when "from now" was a compacted stand-in', async () => {
    const h = watchHarness(undefined, 100);
    const s1 = await h.stream(1);
    s1.send(watchResponse(500, { created: true }));
    s1.send(watchResponse(0, { canceled: true, compact_revision: '450' }));
    const s2 = await h.stream(2);
    assert.equal(h.startOf(s2), 450);
    assert.deepEqual(h.errors, []);
    // Only once: a later compaction past what it delivered is final.
    s2.send(watchResponse(600, { created: true }));
    s2.send(watchResponse(0, { canceled: true, compact_revision: '550' }));
    assert.ok(hasCode(h.errors[0], 'KEDGE_STORE_COMPACTED'));
  });

  it('ends with KEDGE_STORE_UNAVAILABLE when etcd cancels it for another reason, KEDGE_STORE_AUTH when denied', async () => {
    const h = watchHarness(10);
    const s1 = await h.stream(1);
    s1.send(watchResponse(0, { canceled: true, cancel_reason: 'etcdserver: no space' }));
    assert.ok(hasCode(h.errors[0], 'KEDGE_STORE_UNAVAILABLE') && h.errors[0]!.message.includes('(etcdserver: no space)'));
    const d = watchHarness(10);
    (await d.stream(1)).send(watchResponse(0, { canceled: true, cancel_reason: 'rpc error: code = PermissionDenied desc = etcdserver: permission denied' }));
    assert.ok(hasCode(d.errors[0], 'KEDGE_STORE_AUTH'), String(d.errors[0]));
    assert.match(d.errors[0]!.message, /denied the watch on "\/p\/".*grant-permission/);
  });

  it('authenticates again and resumes when etcd cancels it for an expired auth token', async () => {
    const h = watchHarness(10);
    const s1 = await h.stream(1);
    s1.send(watchResponse(20, { created: true }));
    s1.send(watchResponse(20, { puts: [['/p/a', 11]] }));
    s1.emit('error', grpcError(14, 'UNAVAILABLE: Connection dropped')); // say, etcd restarted: its simple tokens are gone
    const s2 = await h.stream(2);
    s2.send(watchResponse(25, { created: true, canceled: true, cancel_reason: 'rpc error: code = Unauthenticated desc = etcdserver: invalid auth token' }));
    const s3 = await h.stream(3);
    assert.equal(h.refreshes(), 1, 'the token was dropped before reopening');
    assert.equal(h.startOf(s3), 12, 'resumes after the last delivered revision');
    s3.send(watchResponse(30, { created: true }));
    s3.send(watchResponse(30, { puts: [['/p/b', 12]] }));
    assert.deepEqual(h.keys(), ['put /p/a@11', 'put /p/b@12']);
    assert.deepEqual(h.errors, []);
    h.w.close();
  });

  it('delivers nothing after close, and survives a throwing callback', async () => {
    const streams: FakeWatchStream[] = [];
    const watches = { watch: async () => {
      const s: FakeWatchStream = new FakeStream();
      streams.push(s);
      return s;
    } } as unknown as WatchClient;
    let calls = 0;
    const w = new EtcdWatch({ watches, codec: new KeyCodec(''), logger: silentLogger(), endpoints: 'x', revision: () => 1, observe: () => undefined, ended: () => undefined, refreshAuth: () => undefined }, '/p/', 1, () => {
      calls++;
      throw new Error('callback bug');
    }, undefined);
    await waitFor(() => streams.length === 1 && streams[0]!.written.length === 1, 3000, 'the stream');
    streams[0]!.send(watchResponse(3, { puts: [['/p/a', 2]] }));
    streams[0]!.send(watchResponse(4, { puts: [['/p/a', 3]] }));
    assert.equal(calls, 2, 'a throwing callback does not stop the watch');
    w.close();
    streams[0]!.send(watchResponse(5, { puts: [['/p/a', 4]] }));
    assert.equal(calls, 2);
  });
});

describe('etcd store lease keepalive', () => {
  type FakeKaStream = FakeStream<{ ID?: string | number }, ILeaseKeepAliveResponse>;
  function harness() {
    const streams: FakeKaStream[] = [];
    const leases = { leaseKeepAlive: async () => {
      const s: FakeKaStream = new FakeStream();
      streams.push(s);
      return s;
    } } as unknown as LeaseClient;
    const seen: string[] = [];
    const ka = new LeaseKeepAliver(leases, (h) => seen.push(String(h?.revision)));
    const answer = (s: FakeKaStream, id: string, ttl: number) => s.send({ header: header(9), ID: id, TTL: String(ttl) });
    return { ka, streams, answer, seen };
  }

  it('multiplexes renewals on one stream and matches answers by lease ID', async () => {
    const h = harness();
    const deadline = Date.now() + 2000;
    const a = h.ka.once('1', deadline);
    const b2 = h.ka.once('2', deadline);
    const a2 = h.ka.once('1', deadline);
    await waitFor(() => h.streams[0]?.written.length === 3, 2000, 'three keepalives written');
    assert.equal(h.streams.length, 1);
    h.answer(h.streams[0]!, '2', 0);
    h.answer(h.streams[0]!, '1', 5);
    h.answer(h.streams[0]!, '1', 5);
    assert.deepEqual(await Promise.all([a, b2, a2]), [5, 0, 5]);
    assert.deepEqual(h.seen, ['9', '9', '9']);
    h.ka.close();
    assert.ok(h.streams[0]!.ended);
  });

  it('fails pending renewals when the stream breaks, and opens a new stream for the next', async () => {
    const h = harness();
    const p = h.ka.once('1', Date.now() + 2000);
    await waitFor(() => h.streams[0]?.written.length === 1, 2000, 'the keepalive');
    h.streams[0]!.emit('error', grpcError(14, 'UNAVAILABLE: Connection dropped'));
    await assert.rejects(p, /Connection dropped/);
    const q = h.ka.once('1', Date.now() + 2000);
    await waitFor(() => h.streams[1]?.written.length === 1, 2000, 'a second stream');
    h.answer(h.streams[1]!, '1', 3);
    assert.equal(await q, 3);
    h.ka.close();
  });

  it('drops a stream that does not answer by the deadline', async () => {
    const h = harness();
    await assert.rejects(h.ka.once('1', Date.now() + 100), (err: unknown) => grpcCode(err) === 4);
    assert.ok(h.streams[0]!.cancelled);
    const q = h.ka.once('1', Date.now() + 2000);
    await waitFor(() => h.streams.length === 2, 2000, 'a fresh stream');
    h.answer(h.streams[1]!, '1', 3);
    assert.equal(await q, 3);
    h.ka.close();
    await assert.rejects(h.ka.once('1', Date.now() + 100), /closed/);
  });

  it('fails only the late renewal when the stream is answering others', async () => {
    const h = harness();
    const late = h.ka.once('1', Date.now() + 300);
    const other = h.ka.once('2', Date.now() + 5000);
    const third = h.ka.once('3', Date.now() + 5000);
    await waitFor(() => h.streams[0]?.written.length === 3, 2000, 'three keepalives written');
    h.answer(h.streams[0]!, '2', 7); // the stream is alive, only slow for lease 1
    assert.equal(await other, 7);
    await assert.rejects(late, (err: unknown) => grpcCode(err) === 4 && /lease 1/.test(String(err)));
    assert.ok(!h.streams[0]!.cancelled, 'the stream is kept');
    h.answer(h.streams[0]!, '1', 5); // the late answer matches no one now and is dropped
    h.answer(h.streams[0]!, '3', 4);
    assert.equal(await third, 4);
    const again = h.ka.once('1', Date.now() + 2000);
    await waitFor(() => h.streams[0]!.written.length === 4, 2000, 'renewal on the same stream');
    h.answer(h.streams[0]!, '1', 6);
    assert.equal(await again, 6);
    assert.equal(h.streams.length, 1);
    h.ka.close();
  });
});

describe('etcd test harness', () => {
  it('fails loudly, saying what to install, when the etcd binary is missing', () => {
    const saved = process.env.KEDGE_TEST_ETCD;
    process.env.KEDGE_TEST_ETCD = '/nonexistent/etcd';
    try {
      assert.throws(() => etcdBinary(), /\/nonexistent\/etcd.*apt-get install etcd-server/s);
    } finally {
      if (saved === undefined) delete process.env.KEDGE_TEST_ETCD;
      else process.env.KEDGE_TEST_ETCD = saved;
    }
  });
});
