// The one limits table: parsed over its defaults from both configs, every
// group and field configurable, bad values named; the bounded-rate log and
// the Sign throttle as pure code with a clock passed in.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { LIMITS, parseLimits, yamlKey } from '../../proto/model/limits';
import { Doc } from '../../proto/model/validate';
import { BoundedLog } from '../../proto/model/bounded-log';
import { openFilesLimit, warnIfDescriptorsShort } from '../../proto/model/descriptors';
import { SignThrottle, peerSource } from '../../federation/api/sign-throttle';
import { resolveFederationConfig } from '../../federation/config';
import { parseAgentConfig } from '../../agent/config';
import { hasCode } from '../../proto/model/errors';
import { logCapture } from '../support/logs';

const AGENT_YAML = `
federation: { address: 127.0.0.1:15012, rootCert: root.pem }
workload: { name: w, namespace: shop, serviceAccount: web }
`;

describe('limits table', () => {
  it('every federation and agent limit is configurable through its config', () => {
    // One value per field, different from its default: every one must come through.
    const bump = (group: Record<string, number>) => Object.fromEntries(Object.entries(group).map(([k, v]) => [yamlKey(k), yamlKey(k) === k ? v + 1 : `${v + 1}ms`]));
    const fedDoc = Object.fromEntries(Object.entries(LIMITS.federation).map(([g, v]) => [g, bump(v as unknown as Record<string, number>)]));
    const fed = resolveFederationConfig({}, 'h');
    assert.deepEqual(fed.limits, LIMITS.federation);
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-limits-')), 'federation.yaml');
    fs.writeFileSync(file, YAML.stringify({ limits: fedDoc }));
    const parsedFed = resolveFederationConfig({ config: file }, 'h').limits;
    for (const [g, fields] of Object.entries(LIMITS.federation)) {
      for (const [k, v] of Object.entries(fields as Record<string, number>)) assert.equal((parsedFed as unknown as Record<string, Record<string, number>>)[g]![k], v + 1, `federation limits.${g}.${k}`);
    }
    const agentDoc = Object.fromEntries(Object.entries(LIMITS.agent).map(([g, v]) => [g, bump(v as unknown as Record<string, number>)]));
    const agent = parseAgentConfig(`${AGENT_YAML}limits: ${JSON.stringify(agentDoc)}\n`, '/etc/kedge/agent.yaml');
    for (const [g, fields] of Object.entries(LIMITS.agent)) {
      for (const [k, v] of Object.entries(fields as Record<string, number>)) assert.equal((agent.limits as unknown as Record<string, Record<string, number>>)[g]![k], v + 1, `agent limits.${g}.${k}`);
    }
    assert.deepEqual(parseAgentConfig(AGENT_YAML, '/etc/kedge/agent.yaml').limits, LIMITS.agent);
  });

  it('names the field and what is wrong', () => {
    const bad = (doc: unknown, re: RegExp) =>
      assert.throws(() => parseLimits(new Doc('f.yaml', doc), LIMITS.agent), (err: unknown) => hasCode(err, 'KEDGE_BAD_CONFIG') && re.test((err as Error).message));
    bad({ inbound: { maxConnections: 0 } }, /f\.yaml: inbound\.maxConnections: must be between 1 and/);
    bad({ inbound: { idleTimeout: 30 } }, /inbound\.idleTimeout: must be a string, not the bare number 30/);
    bad({ inbound: { idleTimeoutMs: '1s' } }, /unknown field "idleTimeoutMs" \(expected one of: maxConnections, maxConnectionsPerPeer, idleTimeout\)/);
    bad({ inbound: { maxConnections: 10, maxConnectionsPerPeer: 20 } }, /inbound\.maxConnectionsPerPeer: is 20, more than maxConnections \(10\)/);
    bad({ inbnd: {} }, /unknown field "inbnd"/);
    // Found by fuzzing: lowering maxConnections alone lowers the per-address default with it.
    assert.equal(parseLimits(new Doc('f.yaml', { inbound: { maxConnections: 10 } }), LIMITS.agent).inbound.maxConnectionsPerPeer, 10);
    assert.throws(() => parseLimits(new Doc('x', { sign: { perSourceRate: -1 } }), LIMITS.federation), /sign\.perSourceRate: must be between 1/);
  });

  it('warns when the connection limits exceed the descriptor limit', () => {
    assert.equal(openFilesLimit('Limit Soft Limit Hard Limit Units\nMax open files            1024                 4096                 files\n'), 1024);
    assert.equal(openFilesLimit('Max open files            unlimited            unlimited            files\n'), undefined);
    const { logger, lines } = logCapture();
    assert.equal(warnIfDescriptorsShort(logger, [['limits.http.maxConnections', 512], ['limits.grpc.maxConnections', 16_384]], 1024), true);
    assert.match(lines[0]!.msg, /limits\.http\.maxConnections=512, limits\.grpc\.maxConnections=16384.*exceed this process's open-file limit \(1024\)/);
    assert.equal(warnIfDescriptorsShort(logger, [['limits.http.maxConnections', 512]], 1024), false);
  });
});

describe('bounded-rate log', () => {
  it('writes linesPerWindow lines per window and the count of the rest on the next', () => {
    const { logger, lines } = logCapture();
    let now = 0;
    const log = new BoundedLog(logger, 'Sign refused', { linesPerWindow: 3, windowMs: 1_000 }, 'warn', () => now);
    for (let i = 0; i < 2_000; i++) log.log({ i });
    assert.equal(lines.length, 3);
    now = 1_000;
    log.log({ i: 'next' });
    assert.equal(lines.length, 5);
    assert.equal(lines[3]!.suppressed, 1_997);
    assert.match(lines[3]!.msg, /Sign refused \(1997 more like this not logged in the last window\)/);
    assert.equal(lines[4]!.i, 'next');
    assert.equal(log.suppressedCount(), 1_997);
    log.close();
  });

  it('a window ended by a line is not ended again by its summary timer', async () => {
    const { logger, lines } = logCapture();
    let now = 0;
    const log = new BoundedLog(logger, 'refused', { linesPerWindow: 2, windowMs: 40 }, 'warn', () => now);
    for (let i = 0; i < 5; i++) log.log({});
    now = 40;
    for (let i = 0; i < 5; i++) log.log({}); // rolls: count of 3, then 2 lines, 3 counted
    assert.equal(lines.length, 5);
    // Were the first window's timer still armed it would end this window early and let 2 more lines through.
    await new Promise((r) => setTimeout(r, 60));
    for (let i = 0; i < 5; i++) log.log({});
    assert.equal(lines.length, 5, 'no new window while the clock says the same window');
    log.close();
    assert.equal(lines.at(-1)!.suppressed, 8);
  });

  it('writes the count when the flood stopped, once the window ends', async () => {
    const { logger, lines } = logCapture();
    const log = new BoundedLog(logger, 'refused', { linesPerWindow: 1, windowMs: 50 });
    for (let i = 0; i < 10; i++) log.log({});
    assert.equal(lines.length, 1);
    await new Promise<void>((resolve) => {
      const t = setInterval(() => lines.length === 2 && (clearInterval(t), resolve()), 5);
    });
    assert.equal(lines[1]!.suppressed, 9);
    log.close();
  });
});

describe('Sign throttle', () => {
  const limits = { ...LIMITS.federation.sign, perSourceRate: 10, perSourceBurst: 5, failuresBeforeBackoff: 3, failureBackoffMs: 100, maxFailureBackoffMs: 1_000, maxPending: 4, trackedSources: 3 };

  it('admits a burst per source, then refills at the rate, with a retry hint', () => {
    let now = 0;
    const t = new SignThrottle(limits, () => now);
    for (let i = 0; i < 5; i++) {
      assert.equal(t.admit('10.0.0.1'), undefined);
      t.done('10.0.0.1', 'ok');
    }
    const r = t.admit('10.0.0.1');
    assert.equal(r?.reason, 'rate');
    assert.equal(r?.retryAfterMs, 100);
    assert.match(r!.message, /more than 10 Sign attempts per second from 10\.0\.0\.1 \(limits\.sign\.perSourceRate\)/);
    assert.equal(t.admit('10.0.0.2'), undefined, 'another source has its own bucket');
    t.done('10.0.0.2', 'ok');
    now = 100;
    assert.equal(t.admit('10.0.0.1'), undefined);
  });

  it('makes a source that keeps failing to authenticate wait, doubling, capped, until a success', () => {
    let now = 0;
    const t = new SignThrottle({ ...limits, perSourceBurst: 1_000 }, () => now);
    const fail = () => {
      assert.equal(t.admit('10.0.0.9'), undefined);
      t.done('10.0.0.9', 'auth');
    };
    fail();
    fail();
    t.done('10.0.0.9', 'other'); // a bad CSR neither counts nor clears
    t.admit('10.0.0.9');
    fail();
    const waits: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = t.admit('10.0.0.9');
      assert.equal(r?.reason, 'backoff');
      waits.push(r!.retryAfterMs);
      now += r!.retryAfterMs;
      fail();
    }
    assert.deepEqual(waits, [100, 200, 400, 800, 1_000, 1_000]);
    now += 1_000;
    assert.equal(t.admit('10.0.0.9'), undefined);
    t.done('10.0.0.9', 'ok');
    assert.equal(t.admit('10.0.0.9'), undefined, 'a success clears the wait');
  });

  it('bounds calls in progress across sources, and the sources remembered', () => {
    const t = new SignThrottle(limits, () => 0);
    for (let i = 0; i < 4; i++) assert.equal(t.admit(`10.0.1.${i}`), undefined);
    assert.equal(t.admit('10.0.1.9')?.reason, 'pending');
    t.done('10.0.1.0', 'ok');
    assert.equal(t.admit('10.0.1.9'), undefined);
    assert.ok(t.stats().sources <= 3);
  });

  it('reads the source address of a gRPC peer', () => {
    assert.equal(peerSource('127.0.0.1:5000'), '127.0.0.1');
    assert.equal(peerSource('ipv4:10.1.2.3:443'), '10.1.2.3');
    assert.equal(peerSource('[::1]:5000'), '::1');
    assert.equal(peerSource('[::ffff:10.0.0.1]:5000'), '10.0.0.1');
  });
});
