// `kedge demo` (what `npm run demo` runs) brings up a working local mesh.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { startKedge, tempDir, eventually, KedgeProcess } from '../support/procs';
import { httpGet } from '../support/mesh';

describe('kedge demo', () => {
  let demo: KedgeProcess | undefined;
  after(async () => {
    await demo?.stop('SIGINT', 10_000);
  });
  it('starts a federation and three agents, and the printed curl works', async () => {
    demo = startKedge('demo', ['demo', '--base-dir', tempDir('demo'), '--grpc-port', '25012', '--http-port', '25014']);
    await eventually(() => demo!.stdout.join('').includes('Press Ctrl-C to stop'), 60_000, 'the demo to be up', 200);
    const out = demo.stdout.join('');
    assert.match(out, /curl http:\/\/127\.0\.0\.1:19080\//);
    const bodies = new Set<string>();
    for (let i = 0; i < 6; i++) bodies.add(JSON.parse(await httpGet('127.0.0.1:19080')).version);
    assert.deepEqual([...bodies].sort(), ['v1', 'v2']);
    const stopped = await demo.stop('SIGINT', 10_000);
    assert.equal(stopped.code, 0);
  });
});
