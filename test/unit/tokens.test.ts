import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openEmbeddedStore } from '../../federation/store/embedded';
import type { Store } from '../../federation/store/types';
import { TOKEN_PREFIX, TokenService, type TokenBinding } from '../../federation/tokens/tokens';
import { hasCode } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';

const web: TokenBinding = { namespace: 'shop', serviceAccount: 'web', grant: { services: ['web'], workload: '', labels: { app: 'web', 'kedge.io/zone': 'a' }, gateway: '' } };
const HOUR = 60 * 60 * 1000;

function code(expected: string, mention?: string) {
  return (err: unknown) => {
    assert.ok(hasCode(err, expected), `expected ${expected}, got ${String(err)}`);
    if (mention) assert.ok((err as Error).message.includes(mention), `"${(err as Error).message}" should mention ${mention}`);
    return true;
  };
}

describe('join tokens', () => {
  let dir: string;
  let store: Store;
  let now = Date.parse('2030-01-01T00:00:00Z');
  const clock = () => now;
  const tokens = () => new TokenService(store, { clock });

  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'kedge-tokens-'));
    store = await openEmbeddedStore(dir, { logger: silentLogger() });
  });
  after(async () => {
    await store.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('issues kedge1.<id>.<secret> tokens that redeem to their binding', async () => {
    const { token, info } = await tokens().create(web, { ttlMs: HOUR, uses: 1 });
    assert.match(token, /^kedge1\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/);
    assert.equal(token.split('.')[1], info.id);
    assert.deepEqual(info, {
      id: info.id, namespace: 'shop', serviceAccount: 'web', grant: web.grant, usesLeft: 1, uses: 1,
      createdAt: '2030-01-01T00:00:00.000Z', expiresAt: '2030-01-01T01:00:00.000Z',
    });
    assert.deepEqual(await tokens().redeem(token), web);
  });

  it('is single use by default: a second redeem fails with KEDGE_TOKEN_USED', async () => {
    const { token } = await tokens().create({ namespace: 'shop', serviceAccount: 'db' }, { ttlMs: HOUR });
    assert.deepEqual(await tokens().redeem(token), { namespace: 'shop', serviceAccount: 'db', grant: { services: [], workload: '', labels: {}, gateway: '' } });
    await assert.rejects(tokens().redeem(token), code('KEDGE_TOKEN_USED', 'kedge token create'));
  });

  it('allows exactly `uses` redemptions and counts them down in list', async () => {
    const svc = tokens();
    const { token, info } = await svc.create(web, { ttlMs: HOUR, uses: 3 });
    await svc.redeem(token);
    assert.equal((await svc.list()).find((t) => t.id === info.id)?.usesLeft, 2);
    await svc.redeem(token);
    await svc.redeem(token);
    await assert.rejects(svc.redeem(token), code('KEDGE_TOKEN_USED'));
    assert.deepEqual((await svc.list()).find((t) => t.id === info.id), { ...info, usesLeft: 0 });
  });

  it('expires by the clock, says "expired" while retained, and is collected afterwards', async () => {
    const svc = new TokenService(store, { clock, retainMs: HOUR });
    const { token, info } = await svc.create(web, { ttlMs: 60_000, uses: 5 });
    const created = now;
    try {
      now = created + 59_999;
      await svc.redeem(token);
      now = created + 60_000;
      await assert.rejects(svc.redeem(token), code('KEDGE_TOKEN_EXPIRED', 'kedge token create'));
      assert.ok((await svc.list()).some((t) => t.id === info.id), 'kept while retained');
      now = created + 60_000 + HOUR;
      assert.ok(!(await svc.list()).some((t) => t.id === info.id), 'dropped from list after retention');
      assert.equal(await store.get(TOKEN_PREFIX + info.id), undefined, 'and deleted from the store');
      await assert.rejects(svc.redeem(token), code('KEDGE_TOKEN_UNKNOWN'));
    } finally {
      now = created;
    }
  });

  it('rejects malformed tokens with KEDGE_TOKEN_MALFORMED', async () => {
    const { token } = await tokens().create(web, { ttlMs: HOUR });
    const bad = ['', 'kedge1', token.replace('kedge1', 'kedge2'), token.slice(0, -1), `${token}x`, token.replace(/\.[^.]+$/, '.!!!'), 'kedge1..'];
    for (const t of bad) await assert.rejects(tokens().redeem(t), code('KEDGE_TOKEN_MALFORMED'), JSON.stringify(t));
    await tokens().redeem(`  ${token}\n`); // surrounding whitespace from a copy-paste is fine
  });

  it('answers an unknown id and a wrong secret identically', async () => {
    const { token } = await tokens().create(web, { ttlMs: HOUR });
    const [, id, secret] = token.split('.') as [string, string, string];
    const otherId = `kedge1.${'A'.repeat(22)}.${secret}`;
    const wrongSecret = `kedge1.${id}.${secret.startsWith('A') ? 'B' : 'A'}${secret.slice(1)}`;
    const messages: string[] = [];
    for (const t of [otherId, wrongSecret]) {
      await assert.rejects(tokens().redeem(t), (err: unknown) => {
        assert.ok(hasCode(err, 'KEDGE_TOKEN_UNKNOWN'));
        messages.push((err as Error).message);
        return true;
      });
    }
    assert.equal(messages[0], messages[1]);
    assert.ok(!messages[0]!.includes(id), 'the message does not echo the id');
    await tokens().redeem(token); // the failed attempts did not use it up
  });

  it('stores only a hash of the secret', async () => {
    const { token, info } = await tokens().create(web, { ttlMs: HOUR });
    const secret = token.split('.')[2]!;
    const kv = await store.get(TOKEN_PREFIX + info.id);
    assert.ok(kv);
    for (const { value } of (await store.list('')).kvs) assert.ok(!value.includes(secret), 'secret found in the store');
    const walAndSnapshot = await Promise.all(['wal.log', 'snapshot.json'].map((f) => fs.readFile(join(dir, 'store', f), 'utf8').catch(() => '')));
    assert.ok(!walAndSnapshot.join('').includes(secret), 'secret found on disk');
  });

  it('lets exactly one of 20 concurrent redemptions of a one-use token through', async () => {
    const { token } = await tokens().create(web, { ttlMs: HOUR, uses: 1 });
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => new TokenService(store, { clock }).redeem(token)));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') assert.ok(hasCode(r.reason, 'KEDGE_TOKEN_USED'), String(r.reason));
  });

  it('lets exactly 5 of 20 concurrent redemptions of a five-use token through', async () => {
    const { token, info } = await tokens().create(web, { ttlMs: HOUR, uses: 5 });
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => tokens().redeem(token)));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 5);
    assert.equal((await tokens().list()).find((t) => t.id === info.id)?.usesLeft, 0);
  });

  it('rejects invalid requests with KEDGE_TOKEN_INVALID_REQUEST', async () => {
    const cases: [TokenBinding, { ttlMs: number; uses?: number }][] = [
      [{ namespace: 'Shop', serviceAccount: 'web' }, { ttlMs: HOUR }],
      [{ namespace: 'shop', serviceAccount: '' }, { ttlMs: HOUR }],
      [{ namespace: 'shop', serviceAccount: 'web/x' }, { ttlMs: HOUR }],
      [{ namespace: 'shop', serviceAccount: 'web', grant: { services: [], workload: '', labels: { 'bad key!': 'x' }, gateway: '' } }, { ttlMs: HOUR }],
      [{ namespace: 'shop', serviceAccount: 'web', grant: { services: ['Bad_Name'], workload: '', labels: {}, gateway: '' } }, { ttlMs: HOUR }],
      [{ namespace: 'shop', serviceAccount: 'web', grant: { services: [], workload: 'VM 1', labels: {}, gateway: '' } }, { ttlMs: HOUR }],
      [web, { ttlMs: HOUR, uses: 0 }],
      [web, { ttlMs: HOUR, uses: 1.5 }],
      [web, { ttlMs: 0 }],
      [web, { ttlMs: -5 }],
      [web, { ttlMs: Number.NaN }],
    ];
    for (const [binding, opts] of cases) {
      await assert.rejects(tokens().create(binding, opts), code('KEDGE_TOKEN_INVALID_REQUEST'), JSON.stringify([binding, opts]));
    }
  });

  it('lists tokens oldest first without secrets or hashes', async () => {
    const svc = tokens();
    const first = await svc.create(web, { ttlMs: HOUR });
    now += 1000;
    const second = await svc.create(web, { ttlMs: HOUR });
    now -= 1000;
    const ids = (await svc.list()).map((t) => t.id);
    assert.ok(ids.indexOf(first.info.id) < ids.indexOf(second.info.id));
    for (const info of await svc.list()) assert.deepEqual(Object.keys(info).sort(), ['createdAt', 'expiresAt', 'grant', 'id', 'namespace', 'serviceAccount', 'uses', 'usesLeft']);
  });
});

describe('token ids', () => {
  it('never start with "-", so kedge delete token ID never reads one as a flag', async () => {
    const dir = await fs.mkdtemp(join(tmpdir(), 'kedge-token-ids-'));
    const store = await openEmbeddedStore(dir, { logger: silentLogger() });
    try {
      const svc = new TokenService(store);
      // 1 in 64 random ids would start with '-'; 256 draws all but guarantee some would.
      for (let i = 0; i < 256; i++) {
        const { info } = await svc.create({ namespace: 'shop', serviceAccount: 'web' }, { ttlMs: HOUR });
        assert.ok(!info.id.startsWith('-'), info.id);
      }
    } finally {
      await store.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
