// `kedge demo` (what `npm run demo` runs) brings up a working local mesh.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { runKedge, startKedge, tempDir, eventually, KedgeProcess } from '../support/procs';
import { httpGet } from '../support/mesh';

describe('kedge demo', () => {
  let demo: KedgeProcess | undefined;
  after(async () => {
    await demo?.stop('SIGINT', 10_000);
  });
  it('starts a federation and three agents, and the printed curl works', async () => {
    const base = tempDir('demo');
    demo = startKedge('demo', ['demo', '--base-dir', base, '--grpc-port', '25012', '--http-port', '25014']);
    await eventually(() => demo!.stdout.join('').includes('Press Ctrl-C to stop'), 60_000, 'the demo to be up', 200);
    const out = demo.stdout.join('');
    assert.match(out, /curl http:\/\/127\.0\.0\.1:19080\//);
    const bodies = new Set<string>();
    for (let i = 0; i < 6; i++) bodies.add(JSON.parse(await httpGet('127.0.0.1:19080')).version);
    assert.deepEqual([...bodies].sort(), ['v1', 'v2']);
    assert.match(out, /least request/);
    // The printed commands talk HTTPS; get clusters names where the endpoints come from.
    assert.match(out, /--federation https:\/\/127\.0\.0\.1:25014/);
    const clusters = await runKedge(['get', 'clusters', '-o', 'json', '--federation', 'https://127.0.0.1:25014', '--admin-token-file', path.join(base, 'federation', 'admin-token')]);
    const vms = (JSON.parse(clusters.stdout) as { name: string; kind: string; endpoints: number }[]).find((c) => c.name === 'vms');
    assert.deepEqual(vms && [vms.kind, vms.endpoints], ['agents', 3]);
    const stopped = await demo.stop('SIGINT', 10_000);
    assert.equal(stopped.code, 0);
  });
});
