// The Consul source against the Consul HTTP API double, through the real
// `consul` client: initial sync, blocking queries that wake on change, an
// outage (last endpoints kept, STALE after staleAfterMs, fresh on return),
// ACL tokens, and a Consul that hangs or answers garbage.
import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConsulSource, type ConsulSourceOptions } from '../../federation/sources/consul';
import { silentLogger } from '../../proto/model/log';
import { ConsulDouble } from '../support/consul-double';
import { eventually, tempDir } from '../support/procs';

const GOOD_TOKEN = 'b2a0a6b4-4f3a-4c8e-9a57-0f6d2c1e8d11';

/** A started source with a log of onChange calls. */
interface Harness {
  src: ConsulSource;
  changes: number[];
  /** Resolves at the next onChange after now, with its delay in ms. */
  nextChange(timeoutMs?: number): Promise<number>;
}

const open: ConsulSource[] = [];

async function startSource(double: ConsulDouble, o: Partial<ConsulSourceOptions> = {}): Promise<Harness> {
  const changes: number[] = [];
  let waiter: (() => void) | undefined;
  const src = new ConsulSource({
    name: 'dc1', address: double.address, datacenter: double.datacenter, network: 'net-dc1', logger: silentLogger(),
    staleAfterMs: 1500, waitMs: 5000, requestTimeoutMs: 1000, backoff: { initialMs: 50, maxMs: 300 }, ...o,
  });
  open.push(src);
  await src.start(() => {
    changes.push(Date.now());
    waiter?.();
  });
  return {
    src,
    changes,
    nextChange: (timeoutMs = 5000) => {
      const t0 = Date.now();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no onChange within ${timeoutMs} ms`)), timeoutMs);
        waiter = () => {
          clearTimeout(timer);
          waiter = undefined;
          resolve(Date.now() - t0);
        };
      });
    },
  };
}

function endpoints(src: ConsulSource, key: string): string[] {
  const svc = src.services().find((s) => `${s.name}.${s.namespace}` === key);
  return svc ? svc.endpoints.map((e) => `${e.address}:${e.ports[0]!.port}/${e.health}`) : [];
}

after(async () => {
  await Promise.all(open.map((s) => s.close()));
});

describe('consul source: sync and blocking queries', () => {
  let consul: ConsulDouble;
  let h: Harness;
  const dir = tempDir('kedge-consul-');
  const tokenFile = path.join(dir, 'consul.token');

  before(async () => {
    consul = await ConsulDouble.start({ datacenter: 'dc1', acl: { tokens: { [GOOD_TOKEN]: { services: '*' } } } });
    fs.writeFileSync(tokenFile, `${GOOD_TOKEN}\n`);
    consul.registerInstance({ service: 'reviews', id: 'reviews-1', address: '10.0.0.1', port: 9080, tags: ['v1'], meta: { protocol: 'http', version: 'v1' }, nodeMeta: { region: 'us-east1', zone: 'us-east1-b' } });
    consul.registerInstance({ service: 'reviews', id: 'reviews-2', address: '10.0.0.2', port: 9080, meta: { protocol: 'http' } });
    consul.registerInstance({ service: 'ratings', id: 'ratings-1', address: '10.0.1.1', port: 9090 });
    consul.registerInstance({ service: 'ratings', id: 'ratings-2', address: '10.0.1.2', port: 9090, checks: 'critical' });
  });
  after(async () => {
    await consul.close();
  });

  it('syncs on start: passing instances only, mapped with cluster, network, locality and labels', async () => {
    h = await startSource(consul, { tokenFile });
    assert.equal(h.changes.length, 1, 'one onChange after the initial sync');
    assert.deepEqual(h.src.services().map((s) => `${s.name}.${s.namespace}`), ['ratings.default', 'reviews.default']);
    assert.deepEqual(endpoints(h.src, 'reviews.default'), ['10.0.0.1:9080/HEALTHY', '10.0.0.2:9080/HEALTHY']);
    assert.deepEqual(endpoints(h.src, 'ratings.default'), ['10.0.1.1:9090/HEALTHY']);
    const ep = h.src.services().find((s) => s.name === 'reviews')!.endpoints[0]!;
    assert.deepEqual([ep.cluster, ep.network, ep.locality, ep.labels, ep.meshed], ['dc1', 'net-dc1', { region: 'us-east1', zone: 'us-east1-b', subzone: '' }, { protocol: 'http', version: 'v1', 'tag/v1': 'true' }, false]);
    assert.deepEqual(h.src.services().find((s) => s.name === 'reviews')!.ports, [{ name: 'http', port: 9080, targetPort: 9080, protocol: 'http' }]);
    const st = h.src.status();
    assert.deepEqual([st.name, st.kind, st.connected, st.stale, st.error, st.services, st.endpoints], ['dc1', 'consul', true, false, undefined, 2, 3]);
    assert.ok(st.lastSync && Date.now() - Date.parse(st.lastSync) < 2000);
    // The token went in the header, and the queries it keeps open are blocking ones.
    await eventually(() => consul.requests.some((r) => r.path === '/v1/health/service/reviews' && r.query.index && r.query.wait === '5000ms' && r.query.passing === 'true' && r.query.dc === 'dc1'), 2000, 'a blocking health query');
  });

  it('a new instance reaches services() and onChange well within one wait (the blocking query wakes)', async () => {
    const change = h.nextChange(2000);
    consul.registerInstance({ service: 'reviews', id: 'reviews-3', address: '10.0.0.3', port: 9080, meta: { protocol: 'http' } });
    const ms = await change;
    assert.ok(ms < 1000, `took ${ms} ms`);
    assert.deepEqual(endpoints(h.src, 'reviews.default'), ['10.0.0.1:9080/HEALTHY', '10.0.0.2:9080/HEALTHY', '10.0.0.3:9080/HEALTHY']);
  });

  it('a failing check removes the instance promptly; passing again brings it back', async () => {
    let change = h.nextChange(2000);
    consul.setCheckStatus('reviews-2', 'critical');
    assert.ok((await change) < 1000);
    assert.deepEqual(endpoints(h.src, 'reviews.default'), ['10.0.0.1:9080/HEALTHY', '10.0.0.3:9080/HEALTHY']);
    change = h.nextChange(2000);
    consul.setCheckStatus('reviews-2', 'warning');
    await assert.rejects(change, /no onChange/, 'a warning check is still not passing: nothing changes');
    change = h.nextChange(2000);
    consul.setCheckStatus('reviews-2', 'passing');
    await change;
    assert.deepEqual(endpoints(h.src, 'reviews.default'), ['10.0.0.1:9080/HEALTHY', '10.0.0.2:9080/HEALTHY', '10.0.0.3:9080/HEALTHY']);
  });

  it('a failing node (serfHealth) removes its instances', async () => {
    const change = h.nextChange(2000);
    consul.setNodeHealth('node-10.0.1.1', 'critical');
    await change;
    assert.deepEqual(endpoints(h.src, 'ratings.default'), []);
    consul.setNodeHealth('node-10.0.1.1', 'passing');
    await eventually(() => endpoints(h.src, 'ratings.default').length === 1, 2000, 'ratings back');
  });

  it('a new service appears and a deregistered one disappears', async () => {
    const change = h.nextChange(2000);
    consul.registerInstance({ service: 'details', id: 'details-1', address: '10.0.2.1', port: 9080, meta: { 'k8s-namespace': 'shop' } });
    await change;
    await eventually(() => endpoints(h.src, 'details.shop').length === 1, 2000, 'details.shop');
    consul.deregister('details-1');
    await eventually(() => !h.src.services().some((s) => s.name === 'details'), 2000, 'details gone');
  });

  it('an index that moves without a data change does not fire onChange', async () => {
    const change = h.nextChange(800);
    consul.catalog.touch('reviews');
    consul.catalog.touch();
    await assert.rejects(change, /no onChange/);
  });

  it('Consul down: endpoints kept, STALE after staleAfterMs; back up: fresh again', async () => {
    const before = endpoints(h.src, 'reviews.default');
    const downAt = Date.now();
    await consul.down();
    try {
      await eventually(() => !h.src.status().connected, 2000, 'disconnected');
      const st = h.src.status();
      assert.match(st.error!, /cannot reach Consul dc1 at http:\/\/127\.0\.0\.1:\d+ \((ECONNREFUSED|ECONNRESET)\)/);
      assert.equal(st.stale, false, 'not stale before staleAfterMs');
      assert.deepEqual(endpoints(h.src, 'reviews.default'), before, 'last endpoints kept');

      // Each service's query goes stale on its own clock; onChange fires as each does.
      const changes = h.changes.length;
      await eventually(() => endpoints(h.src, 'reviews.default').every((e) => e.endsWith('/STALE')) && endpoints(h.src, 'ratings.default').every((e) => e.endsWith('/STALE')), 4000, 'STALE');
      assert.ok(Date.now() - downAt >= 1400, 'STALE only after staleAfterMs');
      assert.ok(h.changes.length > changes, 'onChange announced it');
      assert.deepEqual(endpoints(h.src, 'reviews.default'), before.map((e) => e.replace('HEALTHY', 'STALE')));
      assert.equal(h.src.status().stale, true);
      assert.ok(h.src.status().lastSync, 'lastSync remembers the last good view');
      consul.registerInstance({ service: 'reviews', id: 'reviews-4', address: '10.0.0.4', port: 9080, meta: { protocol: 'http' } });
    } finally {
      await consul.up();
    }
    await eventually(() => h.src.status().connected, 3000, 'reconnected');
    const back = h.src.status();
    assert.deepEqual([back.stale, back.error], [false, undefined]);
    assert.deepEqual(endpoints(h.src, 'reviews.default'), ['10.0.0.1:9080/HEALTHY', '10.0.0.2:9080/HEALTHY', '10.0.0.3:9080/HEALTHY', '10.0.0.4:9080/HEALTHY']);
  });

  it('a rotated token file is re-read after Consul rejects the old token', async () => {
    const bad = path.join(dir, 'rotating.token');
    fs.writeFileSync(bad, 'not-a-token');
    const r = await startSource(consul, { tokenFile: bad });
    assert.equal(r.src.status().connected, false);
    fs.writeFileSync(bad, GOOD_TOKEN);
    await eventually(() => r.src.status().connected, 3000, 'connected with the new token');
    assert.equal(r.src.services().length, 2);
  });
});

describe('consul source: bad input', () => {
  let consul: ConsulDouble;
  const dir = tempDir('kedge-consul-bad-');
  before(async () => {
    consul = await ConsulDouble.start({
      datacenter: 'dc1',
      acl: { tokens: { [GOOD_TOKEN]: { services: '*' }, 'revoked-token': { denied: true }, 'reviews-only': { services: ['reviews'] } } },
    });
    consul.registerInstance({ service: 'reviews', id: 'reviews-1', address: '10.0.0.1', port: 9080 });
    consul.registerInstance({ service: 'ratings', id: 'ratings-1', address: '10.0.1.1', port: 9090 });
  });
  after(async () => {
    await consul.close();
  });

  const tokenCases: [string, string | undefined, RegExp][] = [
    ['an unknown token', 'wrong-token', /refused the token in .*wrong-token\.token for catalog services \(403 ACL not found\): check the token exists and its policy grants service:read and node:read/],
    ['a token Consul denies', 'revoked-token', /\(403 Permission denied\)/],
  ];
  for (const [what, token, msg] of tokenCases) {
    it(`${what}: start resolves, status says why, nothing crashes`, async () => {
      const tokenFile = path.join(dir, `${token}.token`);
      fs.writeFileSync(tokenFile, token!);
      const t0 = Date.now();
      const { src } = await startSource(consul, { tokenFile });
      assert.ok(Date.now() - t0 < 2000);
      const st = src.status();
      assert.deepEqual([st.connected, st.stale, st.services], [false, false, 0]);
      assert.match(st.error!, msg);
      await new Promise((r) => setTimeout(r, 300)); // keeps retrying in the background without crashing
      assert.match(src.status().error!, msg);
    });
  }

  it('a missing token file is a clear error', async () => {
    const { src } = await startSource(consul, { tokenFile: path.join(dir, 'missing.token') });
    assert.match(src.status().error!, /cannot read the Consul token file .*missing\.token \(ENOENT\): check tokenFile in the cluster config/);
  });

  it('a token whose policy hides services: connected, with a warning naming the ACL filter', async () => {
    const { src } = await startSource(consul, { token: 'reviews-only' });
    assert.deepEqual(src.services().map((s) => s.name), ['reviews']);
    const st = src.status();
    assert.equal(st.connected, true);
    assert.match(st.error!, /hid some services or instances from this token \(X-Consul-Results-Filtered-By-ACLs\)/);
  });

  it('an unknown datacenter names the datacenter', async () => {
    const { src } = await startSource(consul, { token: GOOD_TOKEN, datacenter: 'dc9' });
    assert.match(src.status().error!, /cannot reach datacenter "dc9" \(No path to datacenter\)/);
  });

  it('Consul down at start: start resolves at once, syncs once Consul is up', async () => {
    await consul.down();
    try {
      const t0 = Date.now();
      const h = await startSource(consul, { token: GOOD_TOKEN });
      assert.ok(Date.now() - t0 < 1000);
      assert.match(h.src.status().error!, /ECONNREFUSED/);
      const change = h.nextChange(3000);
      await consul.up();
      await change;
      await eventually(() => h.src.status().connected, 3000, 'connected');
      assert.equal(h.src.services().length, 2);
    } finally {
      await consul.up();
    }
  });

  it('a hanging Consul: queries time out (bounded), endpoints kept then STALE; recovers when it answers again', async () => {
    const h = await startSource(consul, { token: GOOD_TOKEN, waitMs: 600, requestTimeoutMs: 400 });
    assert.equal(h.src.status().connected, true);
    consul.hang(true);
    try {
      await eventually(() => /did not answer .* in time/.test(h.src.status().error ?? ''), 3000, 'a timeout error');
      await eventually(() => h.src.status().stale, 4000, 'stale');
      assert.deepEqual(endpoints(h.src, 'reviews.default'), ['10.0.0.1:9080/STALE']);
    } finally {
      consul.hang(false);
    }
    await eventually(() => h.src.status().connected && !h.src.status().stale, 3000, 'recovered');
    assert.deepEqual(endpoints(h.src, 'reviews.default'), ['10.0.0.1:9080/HEALTHY']);
  });

  for (const mode of ['invalid-json', 'wrong-shape', 'html'] as const) {
    it(`garbage answers (${mode}): a clear error, endpoints kept, recovers`, async () => {
      const h = await startSource(consul, { token: GOOD_TOKEN, waitMs: 300, requestTimeoutMs: 400 });
      consul.garbage(mode);
      try {
        await eventually(() => !h.src.status().connected, 3000, 'error');
        assert.match(h.src.status().error!, /(unreadable answer|unexpected answer|no X-Consul-Index).*(check that the address points at a Consul HTTP API)/);
        assert.deepEqual(endpoints(h.src, 'reviews.default'), ['10.0.0.1:9080/HEALTHY']);
      } finally {
        consul.garbage(undefined);
      }
      await eventually(() => h.src.status().connected, 3000, 'recovered');
    });
  }

  it('no cluster leader: a clear error, endpoints kept', async () => {
    const h = await startSource(consul, { token: GOOD_TOKEN, waitMs: 300, requestTimeoutMs: 400 });
    consul.noLeader(true);
    try {
      await eventually(() => /has no cluster leader/.test(h.src.status().error ?? ''), 3000, 'no leader error');
      assert.equal(h.src.services().length, 2);
    } finally {
      consul.noLeader(false);
    }
    await eventually(() => h.src.status().connected, 3000, 'recovered');
  });

  it('close() ends every query: the double sees no more requests', async () => {
    const own = await ConsulDouble.start();
    try {
      own.registerInstance({ service: 'reviews', address: '10.0.0.1', port: 9080 });
      const h = await startSource(own, { waitMs: 300 });
      await h.src.close();
      await new Promise((r) => setTimeout(r, 100)); // a request already on the wire may still land
      const n = own.requests.length;
      own.catalog.touch('reviews');
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(own.requests.length, n);
    } finally {
      await own.close();
    }
  });
});
