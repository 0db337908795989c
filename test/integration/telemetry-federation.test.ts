// The federation's /metrics with real processes: served without the admin
// token (the API beside it still needs it), connected agents, pushes and
// their ACK latency, certificates and join tokens issued and refused, store
// operations, process metrics.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { eventually } from '../support/procs';
import { type AgentHandle, type FederationHandle, fedFetch, spawnAgentProc, startAgentProc, startFederationProc } from '../support/mesh';
import { parseExposition, select, total } from '../support/prom-text';

async function get(fed: FederationHandle, route: string): Promise<{ status: number; body: string }> {
  const res = await fedFetch(fed, route);
  return { status: res.status, body: await res.text() };
}

describe('federation /metrics', () => {
  let fed: FederationHandle;
  const agents: AgentHandle[] = [];
  const others: { stop(s: NodeJS.Signals): Promise<unknown> }[] = [];
  after(async () => {
    await Promise.all([...agents.map((a) => a.proc.stop('SIGKILL')), ...others.map((p) => p.stop('SIGKILL'))]);
    await fed?.proc.stop('SIGKILL');
  });

  it('needs no admin token, while the API still does', async () => {
    fed = await startFederationProc();
    const m = await get(fed, '/metrics');
    assert.equal(m.status, 200);
    assert.ok(total(parseExposition(m.body), 'process_resident_memory_bytes') > 0);
    assert.equal((await get(fed, '/api/v1/services')).status, 401);
  });

  it('counts agents, pushes with their ACK latency, certificates, tokens and store operations', async () => {
    agents.push(await startAgentProc(fed, { name: 'web', namespace: 'default', serviceAccount: 'web', address: '127.0.14.1', upstreams: [{ service: 'db.default', port: 5432 }] }));
    const bogus = await spawnAgentProc(fed, { name: 'intruder', namespace: 'default', serviceAccount: 'x', address: '127.0.14.2', token: 'not-a-token' });
    others.push(bogus.proc);
    const s = await eventually(async () => {
      const s = parseExposition((await get(fed, '/metrics')).body);
      return total(s, 'kedge_federation_connected_agents') === 1 && total(s, 'kedge_federation_push_latency_seconds_count') >= 1 && total(s, 'kedge_federation_join_tokens_total', { outcome: 'refused' }) >= 1 ? s : undefined;
    }, 20_000, 'one agent connected, a push acked, a token refused');
    assert.equal(total(s, 'kedge_federation_certificates_total', { credential: 'token', outcome: 'issued' }), 1);
    assert.equal(total(s, 'kedge_federation_join_tokens_total', { outcome: 'used' }), 1);
    const refused = select(s, 'kedge_federation_join_tokens_total', { outcome: 'refused' })[0]!;
    assert.match(refused.labels.reason!, /^KEDGE_/);
    assert.ok(total(s, 'kedge_federation_certificates_total', { credential: 'token', outcome: refused.labels.reason! }) >= 1);
    assert.ok(total(s, 'kedge_federation_pushes_total') >= 1);
    assert.equal(total(s, 'kedge_federation_nacks_total'), 0);
    // Latency is a duration from change to ACK: positive and bounded by the test's own run time.
    const sum = total(s, 'kedge_federation_push_latency_seconds_sum');
    assert.ok(sum > 0 && sum < 60, String(sum));
    assert.ok(total(s, 'kedge_federation_store_operation_duration_seconds_count', { store: 'embedded', op: 'put', outcome: 'ok' }) >= 1);
  });
});
