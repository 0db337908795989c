// Short certificate lifetimes must not make agents renew in a loop. With
// --workload-cert-ttl 20s, certificates are backdated (then 60 s) for clock skew;
// renewal timed from notBefore fell in the past for every new certificate
// and an agent renewed about 140 times a minute. Timed from issuance, each
// certificate is renewed after 50-70% of the 20 s it was granted.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startAgentProc, startFederationProc, type AgentHandle, type FederationHandle } from '../support/mesh';

describe('certificate renewal with a 20 s lifetime', () => {
  let fed: FederationHandle | undefined;
  let agent: AgentHandle | undefined;
  after(async () => {
    await agent?.proc.stop('SIGKILL');
    await fed?.proc.stop('SIGKILL');
  });

  it('renews each certificate once, after at least half of its granted lifetime', { timeout: 90_000 }, async () => {
    fed = await startFederationProc({ args: ['--workload-cert-ttl', '20s'] });
    agent = await startAgentProc(fed, { name: 'short-lived', namespace: 'default', serviceAccount: 'short', address: '127.0.31.1' });
    const renewed = (n: number) => agent!.proc.waitForLog(() => agent!.proc.logs.filter((l) => l.msg === 'certificate renewed').length >= n, 60_000, `${n} renewals`);
    await renewed(3);
    const times = agent.proc.logs.filter((l) => l.msg === 'certificate renewed' || l.msg === 'joined the mesh').map((l) => Number(l.time));
    // Each gap is a property of the schedule (50-70% of 20 s), not of the machine's speed.
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    for (const gap of gaps.slice(0, 3)) assert.ok(gap >= 10_000 - 50, `renewed after ${gap} ms; a 20 s certificate must not be renewed before 10 s`);
  });
});
