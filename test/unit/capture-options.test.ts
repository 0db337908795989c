// Capture options and flags: defaults, normalisation, and every bad input
// failing with KEDGE_CAPTURE_BAD_OPTIONS that names the field.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCidr } from '../../agent/capture/cidr';
import { parseCaptureArgs } from '../../agent/capture/flags';
import { CAPTURE_DEFAULTS, captureOptions, captureOptionsFromDoc } from '../../agent/capture/options';
import { staticUserDb } from '../../agent/capture/users';
import { hasCode } from '../../proto/model/errors';
import { Doc } from '../../proto/model/validate';

const users = staticUserDb({ kedge: 998, app: 1000 }, { kedge: 997 });
const opts = (v: Record<string, unknown>) => captureOptions(v, users, 'agent.yaml');

function rejects(v: Record<string, unknown>, ...mentions: string[]) {
  assert.throws(
    () => opts(v),
    (err: unknown) => {
      assert.ok(hasCode(err, 'KEDGE_CAPTURE_BAD_OPTIONS'), `expected KEDGE_CAPTURE_BAD_OPTIONS, got ${String(err)}`);
      for (const m of mentions) assert.ok((err as Error).message.includes(m), `"${(err as Error).message}" should mention ${m}`);
      return true;
    },
  );
}

describe('capture options', () => {
  it('fills every default from one table when the block is missing', () => {
    const o = captureOptionsFromDoc(new Doc('agent.yaml', {}).at('capture'), users);
    assert.equal(o.proxyUid, 998);
    assert.equal(o.outboundPort, 15001);
    assert.equal(o.inboundPort, 15006);
    assert.equal(o.dnsPort, 15053);
    assert.deepEqual(o.inboundPorts, []);
    assert.deepEqual(o.excludeInboundPorts, [22, 15000, 15001, 15006, 15012, 15014, 15020, 15021, 15053, 15443]);
    assert.deepEqual(o.excludeOutboundPorts, [22, 15012, 15014]);
    assert.equal(o.includeOutboundCidrs, '*');
    assert.equal(o.dns, true);
    assert.equal(o.ipv6, 'auto');
    assert.equal(o.proxyGid, undefined);
    assert.ok(Object.isFrozen(o) && Object.isFrozen(o.excludeInboundPorts));
    assert.deepEqual(CAPTURE_DEFAULTS.excludeInboundPorts, o.excludeInboundPorts);
  });

  it('resolves user and group names, and takes numeric ids as they are (containers run uids without passwd entries)', () => {
    const o = opts({ proxyUser: 'app', proxyGroup: 'kedge' });
    assert.deepEqual([o.proxyUser, o.proxyUid, o.proxyGroup, o.proxyGid], ['app', 1000, 'kedge', 997]);
    const n = opts({ proxyUser: 4242, proxyGroup: '4243' });
    assert.deepEqual([n.proxyUid, n.proxyGid], [4242, 4243]);
  });

  it('normalises CIDRs to the form iptables-save prints and drops duplicates', () => {
    const o = opts({ includeOutboundCidrs: ['10.1.2.3/8', '10.0.0.0/8', '2001:DB8:0:0::1/32'], excludeOutboundCidrs: ['192.168.1.7', 'fd00::'] });
    assert.deepEqual(o.includeOutboundCidrs, ['10.0.0.0/8', '2001:db8::/32']);
    assert.deepEqual(o.excludeOutboundCidrs, ['192.168.1.7/32', 'fd00::/128']);
  });

  it('takes inbound ports as a list or *', () => {
    assert.deepEqual(opts({ inboundPorts: [9080, 8080, 9080] }).inboundPorts, [9080, 8080]);
    assert.equal(opts({ inboundPorts: '*' }).inboundPorts, '*');
  });

  describe('bad input', () => {
    it('ports out of range or not numbers', () => {
      rejects({ outboundPort: 0 }, 'agent.yaml: outboundPort', '1 to 65535');
      rejects({ inboundPort: 70000 }, 'inboundPort');
      rejects({ excludeInboundPorts: [22, 'ssh'] }, 'excludeInboundPorts[1]', '"ssh" is not a port');
      rejects({ inboundPorts: [1.5] }, 'inboundPorts[0]');
      rejects({ inboundPorts: 'all' }, 'inboundPorts', "or '*'");
    });

    it('the same port captured and excluded', () => {
      rejects({ inboundPorts: [8080, 22] }, 'inboundPorts', 'port 22 is also in excludeInboundPorts');
      rejects({ inboundPorts: [3306], excludeInboundPorts: [3306] }, 'port 3306');
    });

    it("capturing one of Kedge's own listener ports", () => {
      rejects({ inboundPorts: [15001], excludeInboundPorts: [] }, 'inboundPorts', "port 15001 is Kedge's outboundPort");
    });

    it('two listeners on one port', () => {
      rejects({ outboundPort: 15006 }, 'inboundPort', 'is also outboundPort');
      rejects({ dnsPort: 15001 }, 'dnsPort');
    });

    it('invalid, conflicting or wrong-family CIDRs', () => {
      rejects({ excludeOutboundCidrs: ['10.0.0.0/8', '10.0.0.0/33'] }, 'excludeOutboundCidrs[1]', 'is not a CIDR');
      rejects({ excludeOutboundCidrs: ['not-an-ip'] }, 'excludeOutboundCidrs[0]');
      rejects({ includeOutboundCidrs: ['10.0.0.0/8'], excludeOutboundCidrs: ['10.9.9.9/8'] }, 'includeOutboundCidrs', '10.0.0.0/8 is also in excludeOutboundCidrs');
      rejects({ includeOutboundCidrs: 'everything' }, 'includeOutboundCidrs', "'*' or a list");
      rejects({ ipv6: false, includeOutboundCidrs: ['2001:db8::/32'] }, 'includeOutboundCidrs[0]', 'IPv6 but ipv6 is false');
    });

    it('dns capture with port 53 excluded', () => {
      rejects({ excludeOutboundPorts: [22, 53] }, 'excludeOutboundPorts', 'dns capture is on');
      assert.deepEqual(opts({ dns: false, excludeOutboundPorts: [53] }).excludeOutboundPorts, [53]);
    });

    it('a proxy user or group that does not exist', () => {
      rejects({ proxyUser: 'nosuchuser' }, 'proxyUser', 'no user "nosuchuser"', 'useradd --system nosuchuser');
      rejects({ proxyGroup: 'nosuchgroup' }, 'proxyGroup', 'no group "nosuchgroup"');
      rejects({ proxyUser: true }, 'proxyUser', 'name or a numeric id');
    });

    it('unknown keys and wrong types, with the same code', () => {
      rejects({ inboundPort: 15006, outbound: 1 }, 'unknown field "outbound"');
      rejects({ dns: 'yes' }, 'dns', 'true or false');
      rejects({ ipv6: 'maybe' }, 'ipv6', 'true, false or auto');
    });
  });
});

describe('capture flags', () => {
  it('maps flags onto capture keys', () => {
    const a = parseCaptureArgs(['install', '--dry-run', '--config', 'a.yaml', '--proxy-user=1337', '--inbound-ports', '*', '--exclude-outbound-ports', '22, 5432', '--no-dns', '--ipv6=auto']);
    assert.equal(a.command, 'install');
    assert.equal(a.dryRun, true);
    assert.equal(a.config, 'a.yaml');
    assert.deepEqual(a.overrides, { proxyUser: 1337, inboundPorts: '*', excludeOutboundPorts: [22, 5432], dns: false, ipv6: 'auto' });
    assert.equal(a.flagOf.dns, '--no-dns');
  });

  it('rejects unknown flags, missing values and unknown commands as usage errors', () => {
    for (const argv of [['install', '--bogus'], ['install', '--proxy-user'], ['frobnicate'], ['install', 'extra'], ['remove', '--no-dry-run']]) {
      assert.throws(() => parseCaptureArgs(argv), (e: unknown) => hasCode(e, 'KEDGE_USAGE'), argv.join(' '));
    }
  });

  it('is help without a command', () => {
    assert.equal(parseCaptureArgs([]).command, 'help');
  });
});

describe('parseCidr', () => {
  it('prints addresses the way inet_ntop does', () => {
    assert.equal(parseCidr('::ffff:1.2.3.4')?.text, '::ffff:1.2.3.4/128');
    assert.equal(parseCidr('0:0::1')?.text, '::1/128');
    assert.equal(parseCidr('2001:db8:0:0:1:0:0:1/128')?.text, '2001:db8::1:0:0:1/128');
    assert.equal(parseCidr('0.0.0.0/0')?.text, '0.0.0.0/0');
    assert.equal(parseCidr('::/0')?.text, '::/0');
    assert.equal(parseCidr('10.0.0.0/x'), undefined);
    assert.equal(parseCidr('10.0.0/8'), undefined);
  });
});
