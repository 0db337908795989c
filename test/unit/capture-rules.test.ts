// Golden tests for the capture rules, one file per variant under
// test/golden/capture/. KEDGE_UPDATE_GOLDEN=1 rewrites them; review the diff.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { formatRules } from '../../agent/capture/cli';
import { captureOptions } from '../../agent/capture/options';
import { buildCaptureRules, captureState } from '../../agent/capture/rules';
import { convergePayload, kedgeStateFromSave, renderState } from '../../agent/capture/table';
import { staticUserDb } from '../../agent/capture/users';

// This file runs from dist/test/unit; the golden files live in the source tree.
const GOLDEN_DIR = resolve(__dirname, '..', '..', '..', 'test', 'golden', 'capture');
const UPDATE = process.env.KEDGE_UPDATE_GOLDEN === '1';
const users = staticUserDb({ kedge: 998, envoy: 1337 }, { kedge: 997 });

const CASES: Record<string, Record<string, unknown>> = {
  defaults: {},
  'inbound-all': { inboundPorts: '*' },
  'inbound-ports': { inboundPorts: [8080, 9080] },
  'excluded-ports': { inboundPorts: '*', excludeInboundPorts: [22, 15006, 3306], excludeOutboundPorts: [22, 5432, 6379] },
  'outbound-cidrs': { includeOutboundCidrs: ['10.0.0.0/8', '192.168.0.0/16'], excludeOutboundCidrs: ['10.96.0.0/12', '10.0.0.1/32'] },
  'dns-on': { dns: true, proxyUser: 'envoy', proxyGroup: 'kedge', dnsPort: 15054 },
  'dns-off': { dns: false },
  ipv6: {
    ipv6: true,
    inboundPorts: '*',
    includeOutboundCidrs: ['10.0.0.0/8', '2001:db8::/32'],
    excludeOutboundCidrs: ['fd00::/8', '10.96.0.0/12'],
  },
};

describe('capture rules golden files', () => {
  for (const [name, value] of Object.entries(CASES)) {
    it(`${name} matches test/golden/capture/${name}.golden`, () => {
      const got = formatRules(buildCaptureRules(captureOptions(value, users, name)));
      const file = join(GOLDEN_DIR, `${name}.golden`);
      if (UPDATE) {
        mkdirSync(GOLDEN_DIR, { recursive: true });
        writeFileSync(file, got);
      }
      assert.ok(existsSync(file), `missing ${file}; run with KEDGE_UPDATE_GOLDEN=1 to create it`);
      assert.equal(got, readFileSync(file, 'utf8'), `${name}: rules differ from ${file}; if the change is intended, rerun with KEDGE_UPDATE_GOLDEN=1 and review the diff`);
    });
  }

  it('has no golden file without a case', () => {
    const files = readdirSync(GOLDEN_DIR).filter((f) => f.endsWith('.golden'));
    assert.deepEqual(files.sort(), Object.keys(CASES).map((c) => `${c}.golden`).sort());
  });
});

describe('capture rules invariants', () => {
  const all = Object.entries(CASES).map(([n, v]) => [n, captureOptions(v, users, n)] as const);

  it('declares the five Kedge chains in every variant and touches only PREROUTING and OUTPUT outside them', () => {
    for (const [name, o] of all) {
      const s = captureState(o, 4);
      assert.deepEqual(s.chains, ['KEDGE_INBOUND', 'KEDGE_IN_REDIRECT', 'KEDGE_OUTPUT', 'KEDGE_OUTPUT_DNS', 'KEDGE_REDIRECT'], name);
      for (const r of s.rules) assert.match(r, /^-A (KEDGE_[A-Z_]+|PREROUTING|OUTPUT) /, name);
    }
  });

  it("returns the proxy's traffic before any redirect to the outbound port", () => {
    for (const [name, o] of all) {
      const rules = captureState(o, 4).rules.filter((r) => r.startsWith('-A KEDGE_OUTPUT '));
      const ownerReturn = rules.findIndex((r) => r === `-A KEDGE_OUTPUT -m owner --uid-owner ${o.proxyUid} -j RETURN`);
      const firstRedirect = rules.findIndex((r) => r.endsWith('-j KEDGE_REDIRECT') || r.endsWith('-j KEDGE_OUTPUT_DNS'));
      assert.ok(ownerReturn >= 0 && ownerReturn < firstRedirect, `${name}: ${rules.join('\n')}`);
    }
  });

  it('reads back exactly what it renders, so install-then-show is a fixed point', () => {
    for (const [name, o] of all) {
      const s = captureState(o, 6);
      assert.deepEqual(kedgeStateFromSave(renderState(s)), s, name);
      assert.equal(convergePayload(s, s), '', `${name}: converging a state to itself changes nothing`);
    }
  });

  it('puts IPv4 blocks only in the IPv4 table and IPv6 blocks only in the IPv6 table', () => {
    const o = captureOptions(CASES.ipv6 as Record<string, unknown>, users);
    const r = buildCaptureRules(o);
    assert.ok(r.v6 !== undefined);
    assert.ok(!r.v4.includes('2001:db8') && !r.v4.includes('fd00'));
    assert.ok(!r.v6.includes('10.0.0.0') && !r.v6.includes('10.96'));
    assert.ok(r.v6.includes('! -d ::1/128 -o lo'));
  });

  it("leaves 'auto' IPv6 out of the pure build (install decides from the host)", () => {
    assert.equal(buildCaptureRules(captureOptions({}, users)).v6, undefined);
  });
});
