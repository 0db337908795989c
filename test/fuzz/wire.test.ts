// Property-based fuzzing (fast-check) of what arrives over the wire and
// from disk: Connect messages as the federation's gRPC server decodes them
// (and the registration it builds from a Register), and the embedded
// store's WAL replay on damaged files. Decoding fails only as a decode
// error; a registration is refused only with a KedgeError; replay ends in a
// state, or KEDGE_STORE_CORRUPT/KEDGE_STORE_VERSION naming the file, never
// anything else; every record reads back what was encoded.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { kedgeProto } from '../../proto/loader';
import { recordFromRegister } from '../../federation/api/register';
import { KedgeError } from '../../proto/model/errors';
import { COMMIT_FILE, WAL_FILE, encodeRecord, loadState, parseRecord, type WalRecord } from '../../federation/store/persist';
import { openEmbeddedStore } from '../../federation/store/embedded';
import { silentLogger } from '../../proto/model/log';
import { budget, fuzzTimeout, mutated, onlyKedgeErrorsAsync } from './budget';

describe('fuzz: Connect messages', () => {
  const connect = () => kedgeProto().kedge.v1.Federation.service.Connect;
  const validRegister = {
    register: {
      workload: { name: 'web', namespace: 'shop', serviceAccount: 'web', address: '10.0.0.1', locality: { region: 'eu', zone: 'a', subzone: '' }, network: '', labels: { app: 'web' } },
      services: [{ name: 'web', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'http' }] }],
      agentVersion: '0.1.0',
    },
  };

  it('decoding any bytes fails only as a decode error, and a decoded Register is refused only with a KedgeError', fuzzTimeout(), () => {
    const valid = connect().requestSerialize(validRegister as never);
    fc.assert(
      fc.property(fc.oneof(mutated(valid), fc.uint8Array({ maxLength: 500 }).map((b) => Buffer.from(b))), (bytes) => {
        let msg: ReturnType<ReturnType<typeof connect>['requestDeserialize']>;
        try {
          msg = connect().requestDeserialize(bytes);
        } catch (err) {
          // protobufjs: grpc-js answers such a message INTERNAL and ends the call.
          assert.ok(err instanceof Error && !(err instanceof KedgeError), String(err));
          return;
        }
        if (!msg.register) return;
        try {
          recordFromRegister(msg.register, 'spiffe://cluster.local/ns/shop/sa/web', 'r1', new Date(0));
        } catch (err) {
          assert.ok(err instanceof KedgeError, `recordFromRegister threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
        }
      }),
      budget(),
    );
  });

  it('a Register reads back what was encoded (round trip)', fuzzTimeout(), () => {
    const name = fc.stringMatching(/^[a-z]([a-z0-9-]{0,20}[a-z0-9])?$/);
    fc.assert(
      fc.property(name, name, fc.array(fc.record({ name, port: fc.integer({ min: 1, max: 65535 }) }), { maxLength: 5 }), (wl, ns, ports) => {
        const m = { register: { ...validRegister.register, workload: { ...validRegister.register.workload, name: wl, namespace: ns }, services: [{ name: 'web', ports: ports.map((p) => ({ ...p, targetPort: p.port, protocol: 'tcp' })) }] } };
        const back = connect().requestDeserialize(connect().requestSerialize(m as never));
        assert.equal(back.register?.workload?.name, wl);
        assert.equal(back.register?.workload?.namespace, ns);
        assert.deepEqual(back.register?.services[0]?.ports.map((p) => [p.name, p.port]), ports.map((p) => [p.name, p.port]));
      }),
      budget(),
    );
  });
});

describe('fuzz: store WAL replay', () => {
  let template: string;
  let scratch: string;
  before(async () => {
    template = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-fuzz-wal-'));
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-fuzz-wal-run-'));
    const store = await openEmbeddedStore(template, { logger: silentLogger() });
    for (let i = 0; i < 20; i++) await store.put(`/kedge/tokens/t${i}`, JSON.stringify({ i, uses: 1 }));
    await store.delete('/kedge/tokens/t3');
    await store.close();
  });
  after(() => {
    fs.rmSync(template, { recursive: true, force: true });
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  it('every record reads back what was encoded, and no line makes parseRecord throw', fuzzTimeout(), () => {
    const rec: fc.Arbitrary<WalRecord> = fc.oneof(
      fc.record({ op: fc.constant('put' as const), rev: fc.nat(), key: fc.string(), value: fc.string(), create: fc.nat() }),
      fc.record({ op: fc.constant('delete' as const), rev: fc.nat(), key: fc.string() }),
      fc.record({ op: fc.constant('reserve' as const), rev: fc.nat() }),
    );
    fc.assert(
      fc.property(rec, fc.string({ maxLength: 200 }), (r, junk) => {
        assert.deepEqual(parseRecord(encodeRecord(r).trimEnd()), { ...r });
        parseRecord(junk);
        parseRecord(`${encodeRecord(r).slice(0, 9)}${junk}`);
      }),
      budget(),
    );
  });

  it('replaying a damaged log or COMMIT ends in a state or KEDGE_STORE_CORRUPT naming the file', fuzzTimeout(), async () => {
    const storeDir = fs.readdirSync(template).includes('store') ? path.join(template, 'store') : template;
    const files = { wal: fs.readFileSync(path.join(storeDir, WAL_FILE)), commit: fs.readFileSync(path.join(storeDir, COMMIT_FILE)) };
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('wal' as const, 'commit' as const), fc.oneof(mutated(files.wal), mutated(files.commit)), async (which, bytes) => {
        const dir = path.join(scratch, String(n++));
        fs.cpSync(storeDir, dir, { recursive: true });
        fs.writeFileSync(path.join(dir, which === 'wal' ? WAL_FILE : COMMIT_FILE), bytes);
        await onlyKedgeErrorsAsync(async () => {
          try {
            const state = await loadState(dir);
            assert.ok(state.kvs.size <= 20);
          } catch (err) {
            if (err instanceof KedgeError) assert.match(err.message, /store file .*(wal\.log|COMMIT|snapshot\.json)/);
            throw err;
          }
        }, ['KEDGE_STORE_CORRUPT', 'KEDGE_STORE_VERSION']);
        fs.rmSync(dir, { recursive: true, force: true });
      }),
      budget(),
    );
  });
});
