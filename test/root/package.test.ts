// `npm run package` for real: builds the .deb and the tarball from this
// checkout, inspects them with dpkg-deb, installs the .deb into a scratch
// root with dpkg (maintainer scripts included), runs the packaged kedge with
// its packaged runtime, reads SO_ORIGINAL_DST through the packaged addon in a
// lab namespace, runs lintian, and purges.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { buildPackages, type BuildResult } from '../../install/package';
import { tempDir } from '../support/procs';
import { NetLab } from '../support/netlab';

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '..', '..', '..');
const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

/** An empty root dpkg can install into: its own database, and a passwd with root only. */
export function scratchRoot(prefix: string): string {
  const root = tempDir(prefix);
  fs.mkdirSync(path.join(root, 'var', 'lib', 'dpkg', 'info'), { recursive: true });
  fs.mkdirSync(path.join(root, 'var', 'lib', 'dpkg', 'updates'), { recursive: true });
  fs.writeFileSync(path.join(root, 'var', 'lib', 'dpkg', 'status'), '');
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(root, 'etc', 'group'), 'root:x:0:\n');
  fs.writeFileSync(path.join(root, 'etc', 'shadow'), 'root:*:19000:0:99999:7:::\n', { mode: 0o600 });
  fs.writeFileSync(path.join(root, 'etc', 'gshadow'), 'root:*::\n', { mode: 0o600 });
  return root;
}

/** dpkg against a scratch root: maintainer scripts run unchrooted with DPKG_ROOT set. */
export function dpkgIn(root: string, args: string[]) {
  return run('dpkg', [`--root=${root}`, '--force-script-chrootless', '--force-depends', '--log=/dev/null', ...args], { timeout: 120_000 });
}

describe('npm run package', () => {
  let built: BuildResult;
  before(async () => {
    built = buildPackages({ repo: REPO, outDir: tempDir('package-out') });
  });
  after(() => {
    for (const f of [built?.deb, built?.tarball]) if (f) fs.rmSync(f, { force: true });
  });

  it('names the files by version and describes the package', async () => {
    assert.equal(path.basename(built.deb), `kedge_${VERSION}_amd64.deb`);
    assert.equal(path.basename(built.tarball), `kedge_${VERSION}_linux_amd64.tar.gz`);
    const { stdout: info } = await run('dpkg-deb', ['-I', built.deb]);
    assert.match(info, /^ Package: kedge$/m);
    assert.match(info, new RegExp(`^ Version: ${VERSION.replaceAll('.', '\\.')}$`, 'm'));
    assert.match(info, /^ Architecture: amd64$/m);
    assert.match(info, /^ Depends: libc6 \(>= 2\.28\)/m);
    for (const script of ['postinst', 'prerm', 'postrm', 'conffiles', 'md5sums']) assert.match(info, new RegExp(`\\b${script}\\b`));
    const { stdout: conffiles } = await run('dpkg-deb', ['-f', built.deb, 'Package']);
    assert.equal(conffiles.trim(), 'kedge');
  });

  it('holds the program, production dependencies only, the addon and the runtime', async () => {
    const { stdout } = await run('dpkg-deb', ['-c', built.deb], { maxBuffer: 64 * 1024 * 1024 });
    const files = new Map(stdout.trim().split('\n').map((l) => {
      const cols = l.trim().split(/\s+/);
      return [cols[5]!.replace(/^\.\//, '/'), l] as const;
    }));
    for (const want of [
      '/opt/kedge/runtime/bin/node', '/opt/kedge/bin/kedge', '/opt/kedge/dist/bin/kedge.js', '/opt/kedge/proto/kedge/v1/federation.proto',
      '/opt/kedge/dist/agent/native/build/Release/kedge_native.node', '/opt/kedge/node_modules/@grpc/grpc-js/package.json',
      '/lib/systemd/system/kedge-agent.service', '/lib/systemd/system/kedge-federation.service', '/etc/kedge/federation.yaml',
      '/usr/share/doc/kedge/copyright', '/usr/share/man/man1/kedge.1.gz',
    ]) assert.ok(files.has(want), `${want} is in the package`);
    assert.match(files.get('/usr/bin/kedge') ?? '', /-> \/opt\/kedge\/bin\/kedge$/);
    assert.match(files.get('/opt/kedge/runtime/bin/node') ?? '', /^-rwxr-xr-x root\/root/);
    // Exactly the production dependency tree (npm's own view of it): no dev
    // dependencies, nothing missing.
    const { stdout: prod } = await run('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: REPO, maxBuffer: 16 * 1024 * 1024 });
    const topLevel = (paths: Iterable<string>, base: string) => new Set([...paths]
      .map((p) => path.relative(base, p).split(path.sep))
      .filter((parts) => parts[0] !== '..' && parts.length >= (parts[0]?.startsWith('@') ? 2 : 1) && parts[0] !== '')
      .map((parts) => (parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!))
      .filter((name) => !name.startsWith('.') && !name.endsWith('/undefined')));
    const wantModules = topLevel(prod.trim().split('\n').map((p) => fs.realpathSync(p)), fs.realpathSync(path.join(REPO, 'node_modules')));
    const packagedModules = topLevel([...files.keys()].filter((f) => f.startsWith('/opt/kedge/node_modules/') && f.endsWith('/')), '/opt/kedge/node_modules');
    assert.deepEqual([...packagedModules].sort(), [...wantModules].sort());
    assert.ok(!packagedModules.has('typescript'));
    // No tests, sources or source maps of Kedge itself.
    const unwanted = [...files.keys()].filter((f) => f.startsWith('/opt/kedge/dist/test/') || (f.startsWith('/opt/kedge/dist/') && (f.endsWith('.map') || f.endsWith('.ts'))));
    assert.deepEqual(unwanted, []);
    const { stdout: tarList } = await run('tar', ['tzf', built.tarball], { maxBuffer: 64 * 1024 * 1024 });
    const tarFiles = new Set(tarList.trim().split('\n'));
    assert.ok(tarFiles.has('opt/kedge/runtime/bin/node') && tarFiles.has('usr/bin/kedge') && tarFiles.has('etc/kedge/federation.yaml'));
    assert.ok(![...tarFiles].some((f) => f.startsWith('DEBIAN')), 'the tarball has no maintainer scripts');
  });

  it('installs into a scratch root with its user and state dir, runs with its own runtime, and purges', async () => {
    const root = scratchRoot('dpkg-root');
    await dpkgIn(root, ['-i', built.deb]);
    const passwd = fs.readFileSync(path.join(root, 'etc', 'passwd'), 'utf8');
    const user = /^kedge:x:(\d+):(\d+):.*:\/var\/lib\/kedge:\/usr\/sbin\/nologin$/m.exec(passwd);
    assert.ok(user, `postinst made the kedge system user:\n${passwd}`);
    const state = fs.statSync(path.join(root, 'var', 'lib', 'kedge'));
    assert.equal(state.uid, Number(user[1]));
    assert.equal(state.mode & 0o777, 0o750);

    // The packaged CLI with a PATH that holds no node: only the packaged runtime can run it.
    const kedge = path.join(root, 'opt', 'kedge', 'bin', 'kedge');
    const bin = tempDir('no-node-path');
    for (const tool of ['readlink', 'dirname']) fs.symlinkSync(`/usr/bin/${tool}`, path.join(bin, tool));
    const { stdout } = await run(kedge, ['--version'], { env: { PATH: bin } });
    assert.equal(stdout.trim(), `kedge ${VERSION}`);
    const { stdout: runtime } = await run(path.join(root, 'opt', 'kedge', 'runtime', 'bin', 'node'), ['-p', 'process.version + " " + process.execPath']);
    assert.equal(runtime.trim(), `v20.20.2 ${path.join(root, 'opt', 'kedge', 'runtime', 'bin', 'node')}`);
    // systemd's own check of the installed units, against this root (its
    // /usr/bin/kedge); the root borrows the host's targets the units name.
    for (const f of fs.readdirSync('/lib/systemd/system').filter((n) => n.endsWith('.target'))) {
      fs.copyFileSync(path.join('/lib/systemd/system', f), path.join(root, 'lib', 'systemd', 'system', f));
    }
    for (const unit of ['kedge-agent.service', 'kedge-federation.service']) {
      await run('systemd-analyze', ['verify', '--man=no', `--root=${root}`, unit]);
    }
    const { stdout: list } = await run('dpkg-query', [`--root=${root}`, '-W', '-f', '${Package} ${Version} ${db:Status-Status}', 'kedge']);
    assert.equal(list, `kedge ${VERSION} installed`);

    // remove keeps configuration and state; purge removes both.
    await dpkgIn(root, ['--remove', 'kedge']);
    assert.ok(!fs.existsSync(kedge));
    assert.ok(fs.existsSync(path.join(root, 'etc', 'kedge', 'federation.yaml')));
    assert.ok(fs.existsSync(path.join(root, 'var', 'lib', 'kedge')));
    await dpkgIn(root, ['--purge', 'kedge']);
    assert.ok(!fs.existsSync(path.join(root, 'etc', 'kedge')));
    assert.ok(!fs.existsSync(path.join(root, 'var', 'lib', 'kedge')));
    assert.ok(!fs.existsSync(path.join(root, 'opt', 'kedge')));
  });

  it('reads original destinations through the packaged addon with the packaged runtime', async (t) => {
    const root = tempDir('tar-root');
    await run('tar', ['xzf', built.tarball, '-C', root]);
    const lab = await NetLab.create(t);
    const vm = await lab.host('pkgvm');
    const peer = await lab.host('pkgpeer');
    await lab.network('pkglan', [vm, peer]);
    await lab.run(vm, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', peer.ip(), '--dport', '80', '-j', 'REDIRECT', '--to-ports', '15001']);
    const wrapper = path.join(root, 'opt', 'kedge', 'dist', 'agent', 'native', 'index.js');
    const listener = `
      const { originalDst } = require(${JSON.stringify(wrapper)});
      const srv = require('net').createServer((c) => { console.log('dst:' + JSON.stringify(originalDst(c))); c.destroy(); srv.close(); })
        .listen(15001, '0.0.0.0', () => console.log('ready'));`;
    const runtime = path.join(root, 'opt', 'kedge', 'runtime', 'bin', 'node');
    const l = lab.spawn(vm, runtime, ['-e', listener]);
    await l.waitFor(/ready/);
    await lab.run(vm, runtime, ['-e', `require('net').connect(80, ${JSON.stringify(peer.ip())}).on('connect', function () { this.destroy(); })`]);
    const out = await l.waitFor(/dst:.*\n/);
    assert.deepEqual(JSON.parse(/dst:(.*)/.exec(out)?.[1] ?? 'null'), { address: peer.ip(), port: 80, family: 4 });
  });

  it('is lintian clean (each remaining tag overridden with its reason)', async (t) => {
    try {
      await run('lintian', ['--version']);
    } catch {
      t.skip('lintian is not installed (.ci/run installs it)');
      return;
    }
    const r = await run('lintian', ['--tag-display-limit', '0', built.deb], { maxBuffer: 16 * 1024 * 1024, timeout: 300_000 }).catch((e: { stdout: string }) => e);
    const tags = r.stdout.split('\n').filter((l) => /^[EW]: /.test(l));
    assert.deepEqual(tags, []);
  });
});
