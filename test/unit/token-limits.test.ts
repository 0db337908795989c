// Caps on join tokens: a TTL or a number of uses over the federation's
// limit is refused before anything is stored, and a record holding a time
// no Date can show (written before the caps existed) never breaks listing.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveFederationConfig } from '../../federation/config';
import { openEmbeddedStore } from '../../federation/store/embedded';
import type { Store } from '../../federation/store/types';
import { DEFAULT_TOKEN_LIMITS, TOKEN_PREFIX, TokenService } from '../../federation/tokens/tokens';
import { hasCode } from '../../proto/model/errors';
import { silentLogger } from '../../proto/model/log';

const HOUR = 3_600_000;
const binding = { namespace: 'shop', serviceAccount: 'web' };

describe('join token limits', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'kedge-token-limits-'));
    store = await openEmbeddedStore(dir, { logger: silentLogger() });
  });
  after(async () => {
    await store.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  const refused = (mention: RegExp) => (err: unknown) => {
    assert.ok(hasCode(err, 'KEDGE_TOKEN_INVALID_REQUEST'), String(err));
    assert.match((err as Error).message, mention);
    return true;
  };

  it('refuses a TTL over the cap, naming the cap and the flag, and stores nothing', async () => {
    const svc = new TokenService(store);
    await assert.rejects(svc.create(binding, { ttlMs: 100_000_000_000_000 * HOUR }), refused(/over this federation's limit of 30 days.*--max-token-ttl/));
    await assert.rejects(svc.create(binding, { ttlMs: DEFAULT_TOKEN_LIMITS.maxTtlMs + 1 }), refused(/--max-token-ttl/));
    assert.deepEqual((await store.list(TOKEN_PREFIX)).kvs, []);
    await svc.create(binding, { ttlMs: DEFAULT_TOKEN_LIMITS.maxTtlMs }); // the cap itself is allowed
  });

  it('refuses more uses than the cap', async () => {
    const svc = new TokenService(store, { limits: { maxTtlMs: HOUR, maxUses: 10 } });
    await assert.rejects(svc.create(binding, { ttlMs: HOUR, uses: 11 }), refused(/uses 11 is over this federation's limit of 10.*--max-token-uses/));
    await svc.create(binding, { ttlMs: HOUR, uses: 10 });
    await assert.rejects(svc.create(binding, { ttlMs: 2 * HOUR }), refused(/limit of 3600 s/));
  });

  it('lists a stored record whose expiry no Date can show, instead of failing', async () => {
    const rec = { hash: 'x', namespace: 'shop', serviceAccount: 'old', uses: 1, used: 0, createdAt: Date.now(), expiresAt: Date.now() + 100_000_000_000_000 * HOUR };
    await store.put(`${TOKEN_PREFIX}AAAAAAAAAAAAAAAAAAAAAA`, JSON.stringify(rec));
    const list = await new TokenService(store).list();
    const row = list.find((t) => t.serviceAccount === 'old');
    assert.ok(row);
    assert.match(row.expiresAt, /^out of range \(\d/);
  });

  it('takes the caps from flags and the config file', () => {
    const c = resolveFederationConfig({ 'max-token-ttl': '2h', 'max-token-uses': '5' }, 'h');
    assert.deepEqual(c.tokenLimits, { maxTtlMs: 2 * HOUR, maxUses: 5 });
    assert.deepEqual(resolveFederationConfig({}, 'h').tokenLimits, DEFAULT_TOKEN_LIMITS);
    assert.throws(() => resolveFederationConfig({ 'max-token-uses': '0' }, 'h'), /--max-token-uses: must be a whole number of at least 1/);
    assert.throws(() => resolveFederationConfig({ 'max-token-ttl': 'forever' }, 'h'), /--max-token-ttl: invalid maximum token TTL/);
  });
});
