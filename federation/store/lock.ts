// A pid lock file that keeps a second process off one store directory. Two
// writers appending to the same log would interleave records and each would
// replay a different history, so the second one must refuse to start.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';

/** A held lock; `release` removes the file if it is still ours. */
export interface DirLock {
  readonly path: string;
  release(): Promise<void>;
}

/** True when a process with this pid exists (EPERM: it exists but is not ours). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes `<dir>/LOCK`, or throws KEDGE_STORE_LOCKED naming the holder. A lock
 * whose pid is dead (a crash or SIGKILL) is taken over. The file is written
 * under a temporary name and hard-linked into place, so it never exists
 * without a pid in it and a reader never mistakes a starting process for a
 * dead one. Not detected: two processes taking over the same stale lock at
 * the same instant.
 */
export async function acquireDirLock(dir: string, dataDir: string, logger: Logger): Promise<DirLock> {
  const path = join(dir, 'LOCK');
  const tmp = join(dir, `LOCK.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  await fs.writeFile(tmp, `${process.pid}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await fs.link(tmp, path);
        return { path, release: () => releaseLock(path) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = await readPid(path);
      if (holder === 'gone') continue; // released between our link and read: try again
      if (holder !== 'invalid' && pidAlive(holder)) {
        throw new KedgeError(
          'KEDGE_STORE_LOCKED',
          `store in data dir ${dataDir} is in use by process ${holder} (lock file ${path}); ` +
            `stop that process or give this one another data dir. If no Kedge federation with pid ${holder} is running, delete the lock file.`,
        );
      }
      logger.warn({ lock: path, pid: holder }, 'taking over a stale store lock left by a process that is no longer running');
      await fs.rm(path, { force: true });
    }
    throw new KedgeError('KEDGE_STORE_LOCKED', `could not take the store lock ${path} in data dir ${dataDir}: another process keeps replacing it; check for a second federation using this data dir`);
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

async function readPid(path: string): Promise<number | 'gone' | 'invalid'> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw err;
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : 'invalid';
}

async function releaseLock(path: string): Promise<void> {
  // Only remove our own lock: if an operator deleted it and another process
  // took it, removing theirs would let a third one in.
  if ((await readPid(path)) === process.pid) await fs.rm(path, { force: true });
}
