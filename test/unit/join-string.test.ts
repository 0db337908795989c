// The join string: what it carries survives the round trip, and a truncated,
// altered, expired or foreign string is refused before anything is contacted.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeJoinString, encodeJoinString, rootFingerprint, type JoinSpec } from '../../proto/model/join';
import { agentConfigFor, workloadNameOf } from '../../cli/join';

const SPEC: JoinSpec = {
  token: 'kedge1.abc.def',
  http: '10.0.0.5:15014',
  grpc: ['10.0.0.5:15012'],
  rootSha256: rootFingerprint('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'),
  namespace: 'shop',
  serviceAccount: 'payments',
  labels: { app: 'payments' },
  locality: 'us-east1/us-east1-b',
  network: 'net-a',
  services: ['payments:9080:18080:http'],
  version: '0.1.0',
  expiresAt: '2099-01-01T00:00:00.000Z',
};

const code = (c: string) => (err: unknown) => (err as { code?: string }).code === c;

describe('join string', () => {
  it('round-trips everything it carries', () => {
    const s = encodeJoinString(SPEC);
    assert.match(s, /^kedge1\.[A-Za-z0-9_-]+\.[0-9a-f]{8}$/);
    assert.deepEqual(decodeJoinString(s), SPEC);
    assert.deepEqual(decodeJoinString(`  ${s}\n`), SPEC, 'surrounding whitespace from a paste is fine');
  });

  it('refuses a truncated string, naming what to do', () => {
    const s = encodeJoinString(SPEC);
    for (const cut of [s.slice(0, s.length - 3), s.slice(0, s.lastIndexOf('.')), s.slice(0, 40)]) {
      assert.throws(() => decodeJoinString(cut), (err: Error) => code('KEDGE_BAD_JOIN_STRING')(err) && /truncated|incomplete/.test(err.message) && /kedge token create/.test(err.message));
    }
  });

  it('refuses an altered string (a changed pin or token breaks the checksum)', () => {
    const s = encodeJoinString(SPEC);
    const [prefix, payload, sum] = s.split('.') as [string, string, string];
    const json = JSON.parse(Buffer.from(payload, 'base64url').toString()) as JoinSpec;
    json.rootSha256 = 'f'.repeat(64);
    const forged = `${prefix}.${Buffer.from(JSON.stringify(json)).toString('base64url')}.${sum}`;
    assert.throws(() => decodeJoinString(forged), code('KEDGE_BAD_JOIN_STRING'));
    const flipped = s.slice(0, 20) + (s[20] === 'A' ? 'B' : 'A') + s.slice(21);
    assert.throws(() => decodeJoinString(flipped), code('KEDGE_BAD_JOIN_STRING'));
  });

  it('refuses an expired string, a foreign one and a newer format', () => {
    const s = encodeJoinString({ ...SPEC, expiresAt: '2020-01-01T00:00:00.000Z' });
    assert.throws(() => decodeJoinString(s), (err: Error) => code('KEDGE_JOIN_EXPIRED')(err) && /2020-01-01/.test(err.message));
    assert.throws(() => decodeJoinString('hello'), /not a Kedge join string/);
    assert.throws(() => decodeJoinString('kedge2.abc.def'), /format "kedge2"/);
  });

  it('refuses to encode a spec with bad fields', () => {
    assert.throws(() => encodeJoinString({ ...SPEC, namespace: 'Bad NS' }), /namespace/);
    assert.throws(() => encodeJoinString({ ...SPEC, grpc: [] }), /grpc/);
    assert.throws(() => encodeJoinString({ ...SPEC, services: ['payments'] }), /services/);
  });

  it('yields the agent config of the joined host', () => {
    assert.deepEqual(agentConfigFor(SPEC, { name: 'vm-1', address: '10.0.0.7' }), {
      federation: { address: ['10.0.0.5:15012'], rootCert: '/etc/kedge/root-cert.pem', tokenFile: '/var/lib/kedge/agent/join-token' },
      workload: { name: 'vm-1', namespace: 'shop', serviceAccount: 'payments', address: '10.0.0.7', locality: 'us-east1/us-east1-b', network: 'net-a', labels: { app: 'payments' } },
      services: [{ name: 'payments', ports: [{ name: 'http', port: 9080, targetPort: 18080, protocol: 'http' }] }],
      dataDir: '/var/lib/kedge/agent',
    });
    assert.equal(workloadNameOf('Web_01.example.com'), 'web-01');
  });
});
