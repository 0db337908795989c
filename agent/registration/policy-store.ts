// The security policies last pushed by the federation, kept in the agent's
// data dir (DATA/policies.json, 0600, written atomically) so a restart while
// the federation is unreachable comes back with the same authorization and
// mTLS modes in force (last-known-good), not with none. What a restart finds:
//   - the file, readable and whole: its documents are in force before the
//     proxy binds a port, until the federation pushes the current set;
//   - a damaged file, or the marker left when saving failed: fail-closed
//     (every inbound request denied, plaintext refused) until the push;
//   - nothing (an agent that never received policies): nothing is in force
//     until the first push, as before this file existed.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { errorMessage } from '../../proto/model/errors';
import { writeFileAtomic } from '../../proto/model/files';

/** The file name in the data dir. */
export const POLICIES_FILE = 'policies.json';
/** Left in place of the file when the last push could not be saved: the file on disk would be out of date. */
export const UNSAVED_MARKER = 'policies.json.unsaved';

/** What a start finds on disk. */
export type StoredPolicies =
  | { kind: 'none' }
  | { kind: 'last-known-good'; documents: string[]; savedAt: string }
  | { kind: 'fail-closed'; reason: string };

/** Reads what the last run saved; never throws. */
export function loadPolicies(dataDir: string): StoredPolicies {
  const file = path.join(dataDir, POLICIES_FILE);
  if (fs.existsSync(path.join(dataDir, UNSAVED_MARKER))) return { kind: 'fail-closed', reason: `${path.join(dataDir, UNSAVED_MARKER)} says the last policies pushed could not be saved, so ${file} may be out of date` };
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
    return { kind: 'fail-closed', reason: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}` };
  }
  try {
    const v = JSON.parse(text) as { documents?: unknown; savedAt?: unknown };
    if (!Array.isArray(v.documents) || !v.documents.every((d) => typeof d === 'string') || typeof v.savedAt !== 'string') throw new Error('not {documents: [string], savedAt}');
    return { kind: 'last-known-good', documents: v.documents as string[], savedAt: v.savedAt };
  } catch (err) {
    return { kind: 'fail-closed', reason: `${file} is damaged (${errorMessage(err)})` };
  }
}

/**
 * Saves a pushed set; on failure moves the old file aside under the marker
 * name (a rename needs no free space), so a restart fails closed instead of
 * enforcing an older set, and returns the error.
 */
export function savePolicies(dataDir: string, documents: readonly string[], now: Date = new Date()): string | undefined {
  const file = path.join(dataDir, POLICIES_FILE);
  try {
    writeFileAtomic(file, JSON.stringify({ savedAt: now.toISOString(), documents }), 0o600);
    fs.rmSync(path.join(dataDir, UNSAVED_MARKER), { force: true });
    return undefined;
  } catch (err) {
    const msg = `cannot save the policies to ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`;
    try {
      if (fs.existsSync(file)) fs.renameSync(file, path.join(dataDir, UNSAVED_MARKER));
      else fs.writeFileSync(path.join(dataDir, UNSAVED_MARKER), '');
    } catch {
      // Nothing more can be done; the caller logs the error.
    }
    return msg;
  }
}
