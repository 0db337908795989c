import * as fs from 'node:fs';
import { KedgeError, errorMessage } from './errors';

/**
 * Reads a text file a setting names; failing, throws KedgeError `code`
 * saying "cannot read <what> <file>: <errno code>".
 */
export function readTextFile(file: string, code: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new KedgeError(code, `cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`, { cause: err });
  }
}

/** Writes a file atomically (temp file, fsync, rename) with the given mode. */
export function writeFileAtomic(file: string, data: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
}
