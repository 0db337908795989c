// The issue's log amplification: wrong-token Sign calls ran at ~2,000/s
// unthrottled, each writing a 277-byte warning. Now a source that keeps
// failing waits (RESOURCE_EXHAUSTED with grpc-retry-pushback-ms), the
// warnings come at a bounded rate with a count of the rest, and a right
// token from the same address is signed once it waited as told.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { after, describe, it } from 'node:test';
import { federationClient, signOnce } from '../../agent/registration/client';
import { generateKeyAndCsr } from '../../agent/identity/csr';
import { parseHostPort } from '../../proto/model/address';
import { RETRY_PUSHBACK_KEY } from '../../proto/model/grpc-errors';
import { eventually } from '../support/procs';
import { createToken, startFederationProc, writeFederationConfig, type FederationHandle } from '../support/mesh';

describe('Sign throttling', () => {
  let fed: FederationHandle | undefined;
  after(() => fed?.proc.stop('SIGKILL'));

  it('throttles 2,000 wrong-token Sign calls from one address and logs them at a bounded rate', { timeout: 90_000 }, async () => {
    const config = writeFederationConfig({ limits: { sign: { maxFailureBackoff: '1s' }, log: { linesPerWindow: 5, window: '3s' } } });
    fed = await startFederationProc({ args: ['--config', config] });
    const token = await createToken(fed, 'shop', 'web');
    const [prefix, id] = token.split('.');
    const wrong = `${prefix}.${id}.${'A'.repeat(43)}`;
    const { csrPem } = await generateKeyAndCsr();
    const client = federationClient(parseHostPort(fed.grpc, 'grpc'), fs.readFileSync(fed.rootCertFile, 'utf8'), undefined, 'cluster.local');
    const call = (t: string) =>
      new Promise<grpc.ServiceError | undefined>((resolve) => client.Sign({ csrPem, joinToken: t }, { deadline: Date.now() + 20_000 }, (err) => resolve(err ?? undefined)));

    const outcomes = { unauthenticated: 0, throttled: 0, other: 0 };
    let lastPushback = 0;
    const started = fed.proc.logs.length;
    // 50 callers at a time, 2,000 calls in all, as fast as the federation answers.
    let next = 0;
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (next++ < 2_000) {
          const err = await call(wrong);
          if (err?.code === grpc.status.UNAUTHENTICATED) outcomes.unauthenticated++;
          else if (err?.code === grpc.status.RESOURCE_EXHAUSTED) {
            outcomes.throttled++;
            assert.equal(err.metadata.get('kedge-error-code')[0], 'KEDGE_SIGN_THROTTLED');
            lastPushback = Number(err.metadata.get(RETRY_PUSHBACK_KEY)[0]);
            assert.ok(lastPushback >= 1 && lastPushback <= 1_000, `pushback ${lastPushback} ms`);
          } else outcomes.other++;
        }
      }),
    );
    assert.equal(outcomes.other, 0);
    assert.equal(outcomes.unauthenticated + outcomes.throttled, 2_000);
    assert.ok(outcomes.throttled > outcomes.unauthenticated, `throttled ${outcomes.throttled}, answered ${outcomes.unauthenticated}`);

    // A right token from the same address, after waiting as told.
    await new Promise((r) => setTimeout(r, lastPushback));
    let signed: string | undefined;
    let refusedRetries = 0;
    for (let i = 0; i < 5 && !signed; i++) {
      try {
        signed = (await signOnce(client, csrPem, token)).spiffeId;
      } catch (err) {
        const e = err as { code?: string; cause?: grpc.ServiceError };
        assert.equal(e.code, 'KEDGE_SIGN_THROTTLED');
        refusedRetries++;
        await new Promise((r) => setTimeout(r, Number(e.cause?.metadata.get(RETRY_PUSHBACK_KEY)[0] ?? 100)));
      }
    }
    assert.equal(signed, 'spiffe://cluster.local/ns/shop/sa/web');
    client.close();

    // Every refusal is a log line or counted in one; the count of the last window comes when it ends.
    const refusalLines = () => fed!.proc.logs.slice(started).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Sign refused'));
    const accounted = () => refusalLines().reduce((n, l) => n + (typeof l.suppressed === 'number' ? l.suppressed : 1), 0);
    await eventually(() => accounted() === 2_000 + refusedRetries, 25_000, 'every refusal logged or counted');
    const lines = refusalLines();
    // At most 5 lines per 3 s window plus one count per window, however many calls: read from the
    // lines' own times, any 13 in a row (more than two windows' worth) span more than one whole window.
    const times = lines.map((l) => Number(l.time));
    const t0 = times[0]!;
    for (let i = 0; i + 12 < times.length; i++) {
      assert.ok(times[i + 12]! - times[i]! > 3_000, `13 log lines within ${times[i + 12]! - times[i]!} ms for ${2_000 + refusedRetries} refused calls: ${lines.map((l) => `${Number(l.time) - t0}${typeof l.suppressed === 'number' ? `(+${l.suppressed})` : ''}`).join(' ')}`);
    }
    assert.ok(lines.some((l) => typeof l.suppressed === 'number' && l.suppressed > 0));
  });
});
