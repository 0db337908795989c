// Property-based fuzzing (fast-check) of what operators and clusters hand
// Kedge as documents: the agent and federation config loaders fail only
// with KEDGE_BAD_CONFIG naming the file; TrafficPolicy, HTTPRoute/GRPCRoute
// and AuthorizationPolicy validation never throws, answering ok or a list of
// errors, on any JSON and on valid documents with one field replaced.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import YAML from 'yaml';
import { parseAgentConfig } from '../../agent/config';
import { resolveFederationConfig } from '../../federation/config';
import { validateTrafficPolicy } from '../../policy/traffic-policy';
import { validateRouteDocument } from '../../policy/routes';
import { validateAuthorizationPolicy } from '../../policy/authz';
import { anyDoc, budget, fuzzTimeout, onlyKedgeErrors } from './budget';

const AGENT = {
  federation: { address: '127.0.0.1:15012', rootCert: 'root.pem' },
  workload: { name: 'web', namespace: 'shop', serviceAccount: 'web', locality: 'eu/a' },
  services: [{ name: 'web', ports: [{ port: 80, protocol: 'http' }], health: { http: { path: '/healthz', port: 80 } } }],
  upstreams: [{ service: 'cart.shop', port: 8080, listen: '127.0.0.1:18080' }],
  limits: { inbound: { maxConnections: 10, idleTimeout: '30s' } },
  telemetry: { accessLog: { level: 'info' } },
};
const FEDERATION = { trustDomain: 'example.org', gracePeriod: '5s', limits: { http: { maxConnections: 100 } }, registrationLimits: { servicesPerWorkload: 4 }, serviceEntries: [], exportedNamespaces: ['*'] };

/** `doc` with the value at one path (found by walking `steps`) replaced by `value`. */
function replaced(doc: unknown, steps: number[], value: unknown): unknown {
  if (steps.length === 0 || doc === null || typeof doc !== 'object') return value;
  const keys = Object.keys(doc as object);
  if (keys.length === 0) return value;
  const k = keys[steps[0]! % keys.length]!;
  const copy: Record<string, unknown> = Array.isArray(doc) ? [...doc] as unknown as Record<string, unknown> : { ...(doc as Record<string, unknown>) };
  copy[k] = replaced((doc as Record<string, unknown>)[k], steps.slice(1), value);
  return copy;
}
const oneFieldWrong = (valid: unknown) => fc.tuple(fc.array(fc.nat(), { maxLength: 5 }), anyDoc).map(([steps, v]) => replaced(valid, steps, v));

describe('fuzz: config loaders', () => {
  it('the agent config loader fails only with KEDGE_BAD_CONFIG, naming the file', fuzzTimeout(), () => {
    assert.equal(parseAgentConfig(YAML.stringify(AGENT), '/etc/kedge/agent.yaml').workload.name, 'web');
    fc.assert(
      fc.property(fc.oneof(oneFieldWrong(AGENT).map((d) => YAML.stringify(d)), fc.string({ maxLength: 200 }), anyDoc.map((d) => YAML.stringify(d))), (text) => {
        try {
          parseAgentConfig(text, '/etc/kedge/agent.yaml');
        } catch (err) {
          onlyKedgeErrors(() => {
            throw err;
          }, ['KEDGE_BAD_CONFIG']);
          assert.match((err as Error).message, /\/etc\/kedge\/agent\.yaml/);
        }
      }),
      budget<[string]>([['limits: { inbound: { idleTimeout: 1 } }'], ['services: [ { name: s, ports: [ { port: 1e400 } ] } ]'], ['&a [*a]']]),
    );
  });

  it('the federation config loader fails only with KEDGE_BAD_CONFIG, naming the file', fuzzTimeout(), () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-fuzz-fed-')), 'federation.yaml');
    fc.assert(
      fc.property(fc.oneof(oneFieldWrong(FEDERATION).map((d) => YAML.stringify(d)), fc.string({ maxLength: 200 })), (text) => {
        fs.writeFileSync(file, text);
        try {
          resolveFederationConfig({ config: file }, 'host', {});
        } catch (err) {
          onlyKedgeErrors(() => {
            throw err;
          }, ['KEDGE_BAD_CONFIG']);
          assert.match((err as Error).message, /federation\.yaml/);
        }
      }),
      budget(),
    );
  });
});

const POLICY = { kind: 'TrafficPolicy', metadata: { name: 'cart' }, spec: { service: 'cart.shop', loadBalancer: 'round-robin', connectTimeout: '1s' } };
const ROUTE = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name: 'cart', namespace: 'shop' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'cart', port: 8080 }],
    rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-v', value: '2' }] }], backendRefs: [{ name: 'cart-v2', port: 8080, weight: 90 }, { name: 'cart', port: 8080, weight: 10 }], timeouts: { request: '2s' } }],
  },
};
const AUTHZ = {
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'cart', namespace: 'shop' },
  spec: { selector: { matchLabels: { app: 'cart' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'], ipBlocks: ['10.0.0.0/8'] } }], to: [{ operation: { methods: ['GET'], paths: ['/api/*'] } }], when: [{ key: 'request.headers[x-a]', values: ['b'] }] }] },
};

describe('fuzz: policy and route validation', () => {
  const validator = (name: string, valid: unknown, validate: (d: unknown) => { ok: boolean; errors?: string[] }) =>
    it(`${name} never throws; it answers ok, or errors that are non-empty strings`, fuzzTimeout(), () => {
      assert.equal(validate(valid).ok, true, JSON.stringify(validate(valid).errors));
      fc.assert(
        fc.property(fc.oneof(oneFieldWrong(valid), anyDoc), (doc) => {
          const r = validate(doc);
          if (!r.ok) assert.ok(r.errors!.length > 0 && r.errors!.every((e) => typeof e === 'string' && e.length > 0));
        }),
        budget(),
      );
    });
  validator('TrafficPolicy validation', POLICY, (d) => validateTrafficPolicy(d));
  validator('HTTPRoute validation', ROUTE, (d) => validateRouteDocument(d));
  validator('GRPCRoute validation', { ...ROUTE, kind: 'GRPCRoute', spec: { parentRefs: ROUTE.spec.parentRefs, rules: [{ matches: [{ method: { service: 'shop.Cart', method: 'Get' } }], backendRefs: [{ name: 'cart', port: 8080 }] }] } }, (d) => validateRouteDocument(d));
  validator('AuthorizationPolicy validation', AUTHZ, (d) => validateAuthorizationPolicy(d));
});
