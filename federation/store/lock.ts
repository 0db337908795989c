// The lock that keeps a second process off one store directory. Two writers
// appending to the same log would interleave records and each would replay a
// different history, so the second one must refuse to start.
//
// The lock is flock(2) on <dir>/LOCK, taken through the native addon (the
// one agent/native builds; Node has no flock). The kernel releases a flock
// when its holder dies, however it dies, so a crash never leaves a stale lock
// and a reused pid (a container's PID 1 after a restart) is never mistaken
// for the holder. The file also names the holder, for the error message.
//
// Without the addon (a build with no C compiler) the lock falls back to the
// file's contents: pid, the process's start time and the kernel's boot id.
// A holder counts as alive only when a process with that pid exists, is not
// a zombie and started at the recorded time since the same boot, so pid
// reuse and zombies do not block a restart either.
import { randomBytes } from 'node:crypto';
import * as fsSync from 'node:fs';
import { promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';

/** A held lock; `release` gives it up. */
export interface DirLock {
  readonly path: string;
  /** `flock` when the kernel holds it, `pidfile` for the fallback. */
  readonly kind: 'flock' | 'pidfile';
  release(): Promise<void>;
}

/** Who holds a lock, as written in the lock file. */
export interface LockHolder { pid: number; start?: string; boot?: string; host?: string }

interface FlockAddon { tryLockExclusive(fd: number): boolean }

let addonCache: FlockAddon | null | undefined;

/** The addon's flock, or null when the addon is not built or predates it. */
export function flockAddon(): FlockAddon | null {
  if (addonCache !== undefined) return addonCache;
  const file = join('build', 'Release', 'kedge_native.node');
  const fromEnv = process.env.KEDGE_NATIVE_ADDON;
  // This file runs from dist/federation/store; the addon is built in agent/native.
  const candidates = fromEnv ? [fromEnv] : [resolve(__dirname, '..', '..', 'agent', 'native', file), resolve(__dirname, '..', '..', '..', 'agent', 'native', file)];
  addonCache = null;
  for (const c of candidates) {
    if (!fsSync.existsSync(c)) continue;
    try {
      const a = require(c) as Partial<FlockAddon>;
      if (typeof a.tryLockExclusive === 'function') addonCache = a as FlockAddon;
    } catch {
      // an addon that does not load is the same as none: fall back
    }
    break;
  }
  return addonCache;
}

/** The kernel's id of this boot, or undefined off Linux. */
function bootId(): string | undefined {
  try {
    return fsSync.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** A process's state letter and start time (clock ticks since boot) from /proc, or undefined when there is no such process. */
function procStat(pid: number): { state: string; start: string } | undefined | 'no-proc' {
  let text: string;
  try {
    text = fsSync.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return fsSync.existsSync('/proc/self/stat') ? undefined : 'no-proc';
    return 'no-proc';
  }
  // The command name (field 2) is in parentheses and may hold spaces; fields after it are plain.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: rest[0] ?? '?', start: rest[19] ?? '' };
}

/** This process as a lock holder. */
export function selfHolder(): LockHolder {
  const stat = procStat(process.pid);
  const boot = bootId();
  return { pid: process.pid, ...(typeof stat === 'object' ? { start: stat.start } : {}), ...(boot ? { boot } : {}), host: hostname() };
}

/**
 * True when the recorded holder is still running: the pid exists, is not a
 * zombie, and (where /proc tells) started at the recorded time in this boot.
 */
export function holderAlive(h: LockHolder): boolean {
  if (h.boot !== undefined && h.boot !== bootId()) return false; // recorded before a reboot
  const stat = procStat(h.pid);
  if (stat === 'no-proc') {
    try {
      process.kill(h.pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  if (stat === undefined || stat.state === 'Z' || stat.state === 'X') return false;
  return h.start === undefined || h.start === stat.start;
}

function parseHolder(text: string): LockHolder | undefined {
  const t = text.trim();
  if (/^\d+$/.test(t)) return { pid: Number(t) }; // the earlier format: a bare pid
  try {
    const h = JSON.parse(t) as Partial<LockHolder>;
    if (Number.isSafeInteger(h.pid) && (h.pid as number) > 0) return h as LockHolder;
  } catch {
    // not ours: treated as no holder
  }
  return undefined;
}

function lockedError(dataDir: string, path: string, h: LockHolder | undefined, kind: DirLock['kind']): KedgeError {
  const who = h ? `process ${h.pid}${h.host ? ` on ${h.host}` : ''}` : 'another process';
  const advice = kind === 'flock'
    ? 'stop that process or give this one another data dir (the lock is held by the kernel for as long as the holder runs, so it cannot be stale)'
    : `stop that process or give this one another data dir. If no Kedge federation${h ? ` with pid ${h.pid}` : ''} is running, delete the lock file`;
  return new KedgeError('KEDGE_STORE_LOCKED', `store in data dir ${dataDir} is in use by ${who} (lock file ${path}); ${advice}.`);
}

/** Takes `<dir>/LOCK`, or throws KEDGE_STORE_LOCKED naming the holder. */
export async function acquireDirLock(dir: string, dataDir: string, logger: Logger): Promise<DirLock> {
  const path = join(dir, 'LOCK');
  const addon = flockAddon();
  if (addon) return acquireFlock(addon, path, dataDir, logger);
  logger.warn({ lock: path }, 'the native addon (flock) is not built; locking the store with a pid file instead (run npm run build:native for a lock the kernel releases)');
  return acquirePidLock(path, dataDir, logger);
}

async function acquireFlock(addon: FlockAddon, path: string, dataDir: string, logger: Logger): Promise<DirLock> {
  // The file is never deleted: removing a flocked file lets a second process
  // lock a new file of the same name while the first still holds the old one.
  const fh = await fs.open(path, fsSync.constants.O_RDWR | fsSync.constants.O_CREAT, 0o600);
  try {
    const recorded = parseHolder(await fh.readFile('utf8'));
    if (!addon.tryLockExclusive(fh.fd)) throw lockedError(dataDir, path, recorded, 'flock');
    // A pid-file holder (a build without the addon on the same dir) takes no flock: respect it too.
    if (recorded && recorded.pid !== process.pid && holderAlive(recorded) && recorded.start !== undefined) throw lockedError(dataDir, path, recorded, 'pidfile');
    if (recorded && recorded.pid !== process.pid) logger.info({ lock: path, pid: recorded.pid }, 'took the store lock; its last holder is no longer running');
    await fh.truncate(0);
    await fh.write(`${JSON.stringify(selfHolder())}\n`, 0);
    await fh.datasync();
  } catch (err) {
    await fh.close();
    throw err;
  }
  let released = false;
  return {
    path,
    kind: 'flock',
    release: async () => {
      if (released) return;
      released = true;
      try {
        await fh.truncate(0);
      } finally {
        await fh.close(); // closing the last descriptor drops the flock
      }
    },
  };
}

/**
 * The fallback: `<dir>/LOCK` holds the holder's identity. It is written under
 * a temporary name and hard-linked into place, so it never exists without
 * its contents. Not detected: two processes taking over the same stale lock
 * at the same instant.
 */
async function acquirePidLock(path: string, dataDir: string, logger: Logger): Promise<DirLock> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const me = selfHolder();
  await fs.writeFile(tmp, `${JSON.stringify(me)}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await fs.link(tmp, path);
        return { path, kind: 'pidfile', release: () => releasePidLock(path, me) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let text: string;
      try {
        text = await fs.readFile(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // released between our link and read: try again
        throw err;
      }
      const holder = parseHolder(text);
      if (holder && holderAlive(holder)) throw lockedError(dataDir, path, holder, 'pidfile');
      logger.warn({ lock: path, pid: holder?.pid }, 'taking over a stale store lock left by a process that is no longer running');
      await fs.rm(path, { force: true });
    }
    throw new KedgeError('KEDGE_STORE_LOCKED', `could not take the store lock ${path} in data dir ${dataDir}: another process keeps replacing it; check for a second federation using this data dir`);
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

async function releasePidLock(path: string, me: LockHolder): Promise<void> {
  // Only remove our own lock: if an operator deleted it and another process
  // took it, removing theirs would let a third one in.
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch {
    return;
  }
  const h = parseHolder(text);
  if (h && h.pid === me.pid && h.start === me.start) await fs.rm(path, { force: true });
}
