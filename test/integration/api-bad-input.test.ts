// Small API faults from issue 11: a malformed percent-escape in a path is a
// 400, not a 500; a body over the limit gets 413, not a connection reset.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { MAX_BODY_BYTES } from '../../federation/api/http';
import { fedFetch, startFederationProc, type FederationHandle } from '../support/mesh';

describe('federation API bad input', () => {
  let fed: FederationHandle | undefined;
  after(() => fed?.proc.stop('SIGKILL'));

  it('answers 400 for GET /api/v1/services/%ff and 413 for an oversized body', async () => {
    fed = await startFederationProc();
    const auth = { authorization: `Bearer ${fs.readFileSync(fed.adminTokenFile, 'utf8').trim()}` };
    const bad = await fedFetch(fed, `/api/v1/services/%ff`, { headers: auth });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { message: string }).message, /not valid percent-encoding/);

    const big = JSON.stringify({ namespace: 'default', serviceAccount: 'x', pad: 'x'.repeat(MAX_BODY_BYTES * 3) });
    const res = await fedFetch(fed, `/api/v1/tokens`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: big });
    assert.equal(res.status, 413);
    assert.equal(((await res.json()) as { code: string }).code, 'KEDGE_TOO_LARGE');
    // The federation still serves.
    assert.equal((await fedFetch(fed, `/healthz`)).status, 200);
  });
});
