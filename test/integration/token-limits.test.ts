// The admin request that broke `token list` for good: a TTL of
// 100000000000000h answered 500, stored the token, and every later
// GET /api/v1/tokens failed. Now it is a 400 naming the cap, through the API
// and the CLI, and listing keeps working.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { fedFetch, startFederationProc, type FederationHandle } from '../support/mesh';
import { runKedge } from '../support/procs';

describe('token caps through the API and the CLI', () => {
  let fed: FederationHandle | undefined;
  after(() => fed?.proc.stop('SIGKILL'));

  it('refuses a TTL over the cap with 400 and keeps GET /api/v1/tokens working', async () => {
    fed = await startFederationProc({ args: ['--max-token-ttl', '48h'] });
    const auth = { authorization: `Bearer ${fs.readFileSync(fed.adminTokenFile, 'utf8').trim()}`, 'content-type': 'application/json' };
    const res = await fedFetch(fed, `/api/v1/tokens`, { method: 'POST', headers: auth, body: JSON.stringify({ namespace: 'default', serviceAccount: 'x', ttl: '100000000000000h' }) });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { code: string; message: string };
    assert.equal(body.code, 'KEDGE_TOKEN_INVALID_REQUEST');
    assert.match(body.message, /over this federation's limit of 2 days/);

    const cli = await runKedge(['token', 'create', '--namespace', 'default', '--service-account', 'x', '--ttl', '100000000000000h', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /over this federation's limit of 2 days; ask for a shorter --ttl, or start the federation with a higher --max-token-ttl \[KEDGE_TOKEN_INVALID_REQUEST\]/);

    const ok = await runKedge(['token', 'create', '--namespace', 'default', '--service-account', 'x', '--ttl', '48h', '--federation', fed.httpsUrl, '--admin-token-file', fed.adminTokenFile]);
    assert.equal(ok.code, 0, ok.stderr);
    const list = await fedFetch(fed, `/api/v1/tokens`, { headers: auth });
    assert.equal(list.status, 200);
    assert.equal(((await list.json()) as unknown[]).length, 1, 'only the token within the cap was stored');
  });
});
