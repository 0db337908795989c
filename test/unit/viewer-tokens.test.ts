// Viewer tokens against a real embedded store: valid until expiry, then
// expired; a tampered secret, a made-up id or another shape is unknown; a
// second replica on the same store accepts a token the first made; only
// the hash is stored.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { openEmbeddedStore } from '../../federation/store/embedded';
import { ViewerTokens, VIEWER_TOKEN_PREFIX } from '../../federation/api/viewer-tokens';
import { silentLogger } from '../../proto/model/log';
import { eventually } from '../support/procs';

describe('viewer tokens', () => {
  it('are valid until they expire, and unknown when tampered with', async () => {
    const store = await openEmbeddedStore(fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-viewer-')), { logger: silentLogger() });
    let now = Date.parse('2030-01-01T00:00:00Z');
    const viewers = new ViewerTokens(store, { logger: silentLogger(), clock: () => now });
    await viewers.start();
    const other = new ViewerTokens(store, { logger: silentLogger(), clock: () => now });
    await other.start();
    try {
      const { token, id, expiresAt } = await viewers.create(60_000);
      assert.match(token, /^kedgeview1\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/);
      assert.equal(expiresAt, '2030-01-01T00:01:00.000Z');
      assert.equal(viewers.check(token), 'valid');
      await eventually(() => other.check(token) === 'valid', 5_000, 'the other replica to see the token');
      const stored = (await store.get(VIEWER_TOKEN_PREFIX + id))!.value;
      assert.ok(!stored.includes(token.split('.')[2]!), 'the secret is not stored');
      const secret = token.split('.')[2]!;
      const flipped = `kedgeview1.${id}.${secret[0] === 'A' ? 'B' : 'A'}${secret.slice(1)}`;
      assert.equal(viewers.check(flipped), 'unknown');
      assert.equal(viewers.check(`kedgeview1.${'A'.repeat(22)}.${secret}`), 'unknown');
      assert.equal(viewers.check('kedgeview1.short'), 'unknown');
      assert.ok(ViewerTokens.looksLike(token) && !ViewerTokens.looksLike('an-admin-token'));
      now += 60_000;
      assert.equal(viewers.check(token), 'expired');
      await assert.rejects(viewers.create(0), /ttl must be more than 0/);
      await assert.rejects(viewers.create(366 * 86_400_000), /at most 365d/);
    } finally {
      viewers.close();
      other.close();
      await store.close();
    }
  });
});
