// The SO_ORIGINAL_DST wrapper without root: a clear error when the addon is
// not built, and errno names when the kernel has no original destination.
// The redirected case needs iptables: test/root/native.test.ts.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { originalDst, originalDstAvailable, originalDstOfFd } from '../../agent/native';
import { hasCode } from '../../proto/model/errors';

const WRAPPER = join(__dirname, '..', '..', 'agent', 'native', 'index.js');

describe('original destination addon', () => {
  it('is built (npm ci runs node-gyp; a missing build fails here, not later in production)', () => {
    assert.ok(originalDstAvailable(), 'agent/native/build/Release/kedge_native.node is missing; run npm run build:native');
  });

  it('throws KEDGE_NATIVE_MISSING with the fix when the addon file is absent', () => {
    const script = `try { require(${JSON.stringify(WRAPPER)}).originalDstOfFd(0) } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, KEDGE_NATIVE_ADDON: '/nonexistent/kedge_native.node' } });
    const e = JSON.parse(r.stdout) as { code: string; message: string };
    assert.equal(e.code, 'KEDGE_NATIVE_MISSING');
    assert.match(e.message, /the SO_ORIGINAL_DST addon is not built; run npm ci \/ npm run build:native/);
    assert.match(e.message, /\/nonexistent\/kedge_native\.node/);
  });

  it('names the errno when a connection was not redirected', async () => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'connection');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const [sock] = (await accepted) as [net.Socket];
    try {
      assert.throws(
        () => originalDst(sock),
        // ENOENT: conntrack has no NAT entry; ENOPROTOOPT: conntrack is not loaded at all.
        (e: unknown) => hasCode(e, 'KEDGE_ORIGINAL_DST_UNAVAILABLE') && /\((ENOENT|ENOPROTOOPT)\)/.test((e as Error).message),
      );
    } finally {
      client.destroy();
      sock.destroy();
      server.close();
    }
  });

  it('names EBADF for a descriptor that is not open, and refuses a socket without one', () => {
    assert.throws(() => originalDstOfFd(987654), (e: unknown) => hasCode(e, 'KEDGE_ORIGINAL_DST_UNAVAILABLE') && /\(EBADF\)/.test((e as Error).message));
    const s = new net.Socket();
    assert.throws(() => originalDst(s), (e: unknown) => hasCode(e, 'KEDGE_ORIGINAL_DST_UNAVAILABLE') && /no file descriptor/.test((e as Error).message));
  });
});
