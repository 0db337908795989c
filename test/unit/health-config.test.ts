// services[].health: defaults, the four probe kinds, and errors that name the field.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { parseHealthCheck } from '../../agent/health/config';
import { KedgeError } from '../../proto/model/errors';
import { Doc } from '../../proto/model/validate';

const FILE = '/etc/kedge/agent.yaml';

/** The health block as the agent config reaches it: services[0].health of a parsed file. */
function healthDoc(yaml: string): Doc {
  return new Doc(FILE, YAML.parse(`services:\n  - name: payments\n    health: ${yaml}\n`)).at('services').at(0).at('health');
}

const parse = (yaml: string, opts?: { appHost?: string }) => parseHealthCheck(healthDoc(yaml), opts);

describe('health config', () => {
  it('is undefined when the block is absent', () => {
    assert.equal(parseHealthCheck(new Doc(FILE, { name: 'payments' }).at('health')), undefined);
  });

  it('reads the documented example', () => {
    const c = parse('{ http: { path: /healthz, port: 18080 }, period: 5s, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 3, initialDelay: 0s }');
    assert.deepEqual(c, {
      probe: { kind: 'http', host: '127.0.0.1', port: 18080, path: '/healthz' },
      periodMs: 5000,
      timeoutMs: 1000,
      initialDelayMs: 0,
      healthyThreshold: 1,
      unhealthyThreshold: 3,
    });
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c!.probe));
  });

  const probes: Array<[string, string, unknown]> = [
    ['http with defaults', '{ http: { port: 8080 } }', { kind: 'http', host: '127.0.0.1', port: 8080, path: '/' }],
    ['http with a host', '{ http: { port: 8080, host: "::1", path: "/ready?full=1" } }', { kind: 'http', host: '::1', port: 8080, path: '/ready?full=1' }],
    ['tcp', '{ tcp: { port: 5432 } }', { kind: 'tcp', host: '127.0.0.1', port: 5432 }],
    ['tcp with a host name', '{ tcp: { port: 5432, host: db.local } }', { kind: 'tcp', host: 'db.local', port: 5432 }],
    ['grpc, whole server', '{ grpc: { port: 9090 } }', { kind: 'grpc', host: '127.0.0.1', port: 9090, service: '' }],
    ['grpc, explicit empty service', '{ grpc: { port: 9090, service: "" } }', { kind: 'grpc', host: '127.0.0.1', port: 9090, service: '' }],
    ['grpc, named service', '{ grpc: { port: 9090, service: shop.Payments } }', { kind: 'grpc', host: '127.0.0.1', port: 9090, service: 'shop.Payments' }],
    ['exec', '{ exec: { command: [ /usr/local/bin/check, --fast ] } }', { kind: 'exec', command: ['/usr/local/bin/check', '--fast'] }],
  ];
  for (const [name, yaml, probe] of probes) {
    it(`reads a ${name} probe with the default timing`, () => {
      assert.deepEqual(parse(yaml), { probe, periodMs: 5000, timeoutMs: 1000, initialDelayMs: 0, healthyThreshold: 1, unhealthyThreshold: 3 });
    });
  }

  it("probes the agent's appHost when the block names no host", () => {
    assert.deepEqual(parse('{ tcp: { port: 80 } }', { appHost: '10.0.0.7' })!.probe, { kind: 'tcp', host: '10.0.0.7', port: 80 });
    assert.deepEqual(parse('{ tcp: { port: 80, host: 127.0.0.2 } }', { appHost: '10.0.0.7' })!.probe, { kind: 'tcp', host: '127.0.0.2', port: 80 });
  });

  it('reads durations with units and thresholds', () => {
    const c = parse('{ tcp: { port: 80 }, period: 500ms, timeout: 250ms, initialDelay: 1m30s, healthyThreshold: 2, unhealthyThreshold: 5 }')!;
    assert.deepEqual([c.periodMs, c.timeoutMs, c.initialDelayMs, c.healthyThreshold, c.unhealthyThreshold], [500, 250, 90_000, 2, 5]);
  });

  const bad: Array<[string, RegExp]> = [
    ['[ http ]', /services\[0\]\.health: must be a mapping/],
    ['{ period: 5s }', /services\[0\]\.health: needs one probe: http, tcp, grpc, exec/],
    ['{ http: { port: 80 }, tcp: { port: 81 } }', /services\[0\]\.health: has http and tcp probes: choose one/],
    ['{ tcp: { port: 80 }, interval: 5s }', /services\[0\]\.health: unknown field "interval"/],
    ['{ http: { path: /healthz } }', /services\[0\]\.health\.http\.port: is required/],
    ['{ http: { port: 70000 } }', /services\[0\]\.health\.http\.port: must be between 1 and 65535/],
    ['{ http: { port: 80, path: healthz } }', /services\[0\]\.health\.http\.path: "healthz" must start with "\/"/],
    ['{ http: { port: 80, path: "/a b" } }', /services\[0\]\.health\.http\.path: .* no spaces or control characters/],
    ['{ http: { port: 80, scheme: https } }', /services\[0\]\.health\.http: unknown field "scheme"/],
    ['{ tcp: { port: "80" } }', /services\[0\]\.health\.tcp\.port: must be a whole number/],
    ['{ tcp: { port: 80, host: "not a host" } }', /services\[0\]\.health\.tcp\.host: "not a host" is not an IP address or host name/],
    ['{ grpc: { port: 9090, service: 7 } }', /services\[0\]\.health\.grpc\.service: must be a string/],
    ['{ exec: { command: "/bin/check --fast" } }', /services\[0\]\.health\.exec\.command: must be a list \(the command runs without a shell\)/],
    ['{ exec: { command: [] } }', /services\[0\]\.health\.exec\.command: must name the program to run/],
    ['{ exec: { command: [ check, "" ] } }', /services\[0\]\.health\.exec\.command\[1\]: must be a non-empty string/],
    ['{ exec: {} }', /services\[0\]\.health\.exec\.command: must name the program to run/],
    ['{ tcp: { port: 80 }, period: 5 }', /services\[0\]\.health\.period: needs a unit, such as 5s or 5ms/],
    ['{ tcp: { port: 80 }, timeout: [ 1s ] }', /services\[0\]\.health\.timeout: must be a non-empty string/],
    ['{ tcp: { port: 80 }, period: 5x }', /services\[0\]\.health\.period: invalid period "5x": use a number with a unit/],
    ['{ tcp: { port: 80 }, period: 0s }', /services\[0\]\.health\.period: must be more than 0/],
    ['{ tcp: { port: 80 }, timeout: 0ms }', /services\[0\]\.health\.timeout: must be more than 0/],
    ['{ tcp: { port: 80 }, initialDelay: soon }', /services\[0\]\.health\.initialDelay: invalid initialDelay "soon"/],
    ['{ tcp: { port: 80 }, healthyThreshold: 0 }', /services\[0\]\.health\.healthyThreshold: must be between 1 and 100/],
    ['{ tcp: { port: 80 }, unhealthyThreshold: 1.5 }', /services\[0\]\.health\.unhealthyThreshold: must be a whole number/],
  ];
  for (const [yaml, pattern] of bad) {
    it(`refuses ${yaml}`, () => {
      assert.throws(() => parse(yaml), (err: unknown) => {
        assert.ok(err instanceof KedgeError);
        assert.equal(err.code, 'KEDGE_BAD_CONFIG');
        assert.ok(err.message.startsWith(`${FILE}: `), err.message);
        assert.match(err.message, pattern);
        return true;
      });
    });
  }
});
