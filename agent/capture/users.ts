// Resolving the proxy user and group to numeric ids. iptables' owner match
// takes numbers, and a name that does not resolve must fail at config load,
// not silently capture the proxy's own traffic into a loop.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Looks up users and groups by name; undefined when the name is unknown. */
export interface UserDb {
  uid(name: string): number | undefined;
  gid(name: string): number | undefined;
}

/** The host's users: /etc/passwd and /etc/group first, then `id -u` / `getent group` for NSS users (LDAP, sssd). */
export function systemUserDb(): UserDb {
  return {
    uid: (name) => fromFile('/etc/passwd', name) ?? fromCommand('id', ['-u', name], (out) => out),
    gid: (name) => fromFile('/etc/group', name) ?? fromCommand('getent', ['group', name], (out) => out.split(':')[2] ?? ''),
  };
}

/** A fixed table of users and groups, for tests and golden files. */
export function staticUserDb(users: Record<string, number>, groups: Record<string, number> = {}): UserDb {
  return { uid: (n) => users[n], gid: (n) => groups[n] };
}

function fromFile(file: string, name: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && /^\d+$/.test(f[2])) return Number(f[2]);
  }
  return undefined;
}

function fromCommand(cmd: string, args: string[], pick: (out: string) => string): number | undefined {
  try {
    const out = pick(execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim());
    return /^\d+$/.test(out) ? Number(out) : undefined;
  } catch {
    return undefined;
  }
}
