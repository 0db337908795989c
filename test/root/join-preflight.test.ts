// join.sh's preflight: a host without systemd or iptables, or without the
// disk space, is told everything that is missing before anything changes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from '../support/procs';

const run = promisify(execFile);
const SCRIPT = path.resolve(__dirname, '..', '..', '..', 'install', 'join.sh');
const PIN = 'a'.repeat(64);
const ARGS = ['--federation', 'https://127.0.0.1:1', '--root-sha256', PIN, 'kedge1.payload.check'];

/** A PATH holding only the named tools from the host. */
function pathWith(tools: string[]): string {
  const dir = tempDir('join-path');
  for (const t of tools) {
    const real = ['/usr/bin', '/bin', '/usr/sbin', '/sbin'].map((d) => path.join(d, t)).find((p) => fs.existsSync(p));
    if (real) fs.symlinkSync(real, path.join(dir, t));
  }
  return dir;
}

const BASICS = ['sh', 'curl', 'sha256sum', 'tar', 'id', 'df', 'awk', 'mkdir', 'grep', 'sed', 'mktemp', 'rm', 'cat', 'cut'];

describe('join.sh preflight', () => {
  it('names every missing piece (systemd as init, iptables) and changes nothing', async () => {
    const root = tempDir('join-pre-root');
    const r = await run('/bin/sh', [SCRIPT, '--root', root, ...ARGS], { env: { PATH: pathWith(BASICS) } }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((r as { code: number }).code, 1);
    const stderr = (r as { stderr: string }).stderr;
    assert.match(stderr, /this host lacks:.*iptables\(or pass --no-capture\)/);
    if (!fs.existsSync('/run/systemd/system')) assert.match(stderr, /systemd\(as init; or pass --no-start\)/);
    assert.deepEqual(fs.readdirSync(root), []);
  });

  it('refuses a root without the space the install needs, before downloading', async (t) => {
    const mnt = tempDir('join-small');
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
    } catch (err) {
      t.skip(`cannot mount a tmpfs here: ${(err as Error).message}`);
      return;
    }
    try {
      const r = await run('/bin/sh', [SCRIPT, '--root', mnt, '--no-start', '--no-capture', ...ARGS], { env: { PATH: pathWith(BASICS) } }).catch((e: { code: number; stderr: string }) => e);
      assert.equal((r as { code: number }).code, 1);
      assert.match((r as { stderr: string }).stderr, /not enough disk space in .*: \d+ MB free, the install needs 260 MB/);
      assert.deepEqual(fs.readdirSync(mnt), []);
    } finally {
      await run('umount', [mnt]);
    }
  });

  it('refuses bad arguments before anything else', async () => {
    const bad = async (args: string[]) => (await run('/bin/sh', [SCRIPT, ...args]).catch((e: { stderr: string }) => e) as { stderr: string }).stderr;
    assert.match(await bad(['--federation', 'https://h:1', '--root-sha256', PIN]), /no join string given/);
    assert.match(await bad(['--federation', 'http://h:1', '--root-sha256', PIN, 'kedge1.a.b']), /use https:\/\/HOST:PORT \(the join refuses plain HTTP\)/);
    assert.match(await bad(['--federation', 'https://h:1', '--root-sha256', 'xyz', 'kedge1.a.b']), /--root-sha256 must be 64 hex digits/);
    assert.match(await bad(['--frob']), /unknown option --frob/);
  });
});
