// Applying, removing and reading Kedge's capture rules on a real host. Each
// family's nat table changes in one `iptables-restore --noflush` COMMIT, which
// the kernel applies whole or not at all; when IPv6 fails after IPv4 went in,
// IPv4 is put back as it was, so a failure never leaves half a capture.
import { existsSync, readFileSync } from 'node:fs';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { CaptureOptions } from './options';
import { CaptureRules, buildCaptureRules } from './rules';
import { CommandRunner } from './runner';
import { EMPTY_STATE, KedgeTableState, convergePayload, kedgeStateFromSave, renderState, sameState } from './table';

/** The save/restore programs of one address family. */
export interface FamilyTools {
  family: 4 | 6;
  save: string;
  restore: string;
}

/** Which iptables programs to run; the default is whatever `iptables-restore` the host's alternatives select. */
export interface IptablesTools {
  v4: FamilyTools;
  v6: FamilyTools;
}

/** Programs for a backend: the host default, or explicitly nft or legacy (tests run both). */
export function iptablesTools(backend?: 'nft' | 'legacy'): IptablesTools {
  const b = backend ? `-${backend}` : '';
  return {
    v4: { family: 4, save: `iptables${b}-save`, restore: `iptables${b}-restore` },
    v6: { family: 6, save: `ip6tables${b}-save`, restore: `ip6tables${b}-restore` },
  };
}

/** Where and how capture is applied; every field has a host default. */
export interface CaptureEnv {
  tools?: IptablesTools;
  /** Whether the host has IPv6 (decides `ipv6: auto` and whether ip6tables is consulted). */
  hasIpv6?: boolean;
  /** Told about every table changed (info) and each payload (debug). */
  logger?: Logger;
}

/** Kedge's state in each family's nat table; `v6` is absent when the host has no IPv6. */
export interface CaptureState {
  v4: KedgeTableState;
  v6?: KedgeTableState;
}

/** True when the kernel lists IPv6 addresses (/proc/net/if_inet6 exists and is not empty). */
export function hostHasIpv6(): boolean {
  try {
    return existsSync('/proc/net/if_inet6') && readFileSync('/proc/net/if_inet6', 'utf8').trim() !== '';
  } catch {
    return false;
  }
}

/** Decides `ipv6: 'auto'` for this host; other values pass through. */
export function resolveIpv6(opts: CaptureOptions, hasIpv6: boolean): CaptureOptions {
  return opts.ipv6 === 'auto' ? Object.freeze({ ...opts, ipv6: hasIpv6 }) : opts;
}

/** Builds and installs the rules for `opts`, replacing any earlier Kedge rules; returns what was installed. */
export async function installCapture(opts: CaptureOptions, exec: CommandRunner, env: CaptureEnv = {}): Promise<CaptureRules> {
  const rules = buildCaptureRules(resolveIpv6(opts, env.hasIpv6 ?? hostHasIpv6()));
  await installCaptureRules(rules, exec, env);
  return rules;
}

/** Installs prebuilt rules (the seam tests use to inject a bad rule); all families change or none. */
export async function installCaptureRules(rules: CaptureRules, exec: CommandRunner, env: CaptureEnv = {}): Promise<void> {
  const tools = env.tools ?? iptablesTools();
  const plan: Array<[FamilyTools, KedgeTableState]> = [[tools.v4, kedgeStateFromSave(rules.v4)]];
  // With IPv6 off, Kedge rules left in ip6tables by an earlier install are removed.
  if (rules.v6 !== undefined) plan.push([tools.v6, kedgeStateFromSave(rules.v6)]);
  else if (env.hasIpv6 ?? hostHasIpv6()) plan.push([tools.v6, EMPTY_STATE]);
  await converge(plan, exec, rules.v6 !== undefined, env.logger);
}

/** Removes every Kedge chain and jump, leaving other software's rules untouched; true when something was removed. */
export async function removeCapture(exec: CommandRunner, env: CaptureEnv = {}): Promise<boolean> {
  const tools = env.tools ?? iptablesTools();
  const plan: Array<[FamilyTools, KedgeTableState]> = [[tools.v4, EMPTY_STATE]];
  if (env.hasIpv6 ?? hostHasIpv6()) plan.push([tools.v6, EMPTY_STATE]);
  return converge(plan, exec, false, env.logger);
}

/** Reads Kedge's current rules from the host. */
export async function readCaptureState(exec: CommandRunner, env: CaptureEnv = {}): Promise<CaptureState> {
  const tools = env.tools ?? iptablesTools();
  const v4 = (await readTable(tools.v4, exec, true)) ?? EMPTY_STATE;
  const v6 = env.hasIpv6 ?? hostHasIpv6() ? await readTable(tools.v6, exec, false) : undefined;
  return v6 ? { v4, v6 } : { v4 };
}

/** Kedge's current rules in iptables-save form, one section per family, for `kedge capture show`. */
export async function showCapture(exec: CommandRunner, env: CaptureEnv = {}): Promise<string> {
  const s = await readCaptureState(exec, env);
  const tools = env.tools ?? iptablesTools();
  const section = (t: FamilyTools, st: KedgeTableState) => `# ${t.save} -t nat (Kedge chains and jumps only)\n${renderState(st) || '# no Kedge rules\n'}`;
  return s.v6 ? `${section(tools.v4, s.v4)}${section(tools.v6, s.v6)}` : section(tools.v4, s.v4);
}

/** The payloads `install` (desired given) or `remove` would apply now, per family, for `--dry-run` of remove. */
export async function plannedPayloads(exec: CommandRunner, desired: CaptureState, env: CaptureEnv = {}): Promise<string> {
  const tools = env.tools ?? iptablesTools();
  const cur = await readCaptureState(exec, env);
  let out = `# ${tools.v4.restore} --noflush\n${convergePayload(cur.v4, desired.v4) || '# nothing to change\n'}`;
  if (cur.v6) out += `# ${tools.v6.restore} --noflush\n${convergePayload(cur.v6, desired.v6 ?? EMPTY_STATE) || '# nothing to change\n'}`;
  return out;
}

// Moves each family to its desired state in order; on failure puts the
// families already changed back to what they were and reports both.
async function converge(plan: Array<[FamilyTools, KedgeTableState]>, exec: CommandRunner, v6Required: boolean, log?: Logger): Promise<boolean> {
  const done: Array<[FamilyTools, KedgeTableState]> = [];
  let changed = false;
  for (const [tools, desired] of plan) {
    const before = await readTable(tools, exec, tools.family === 4 || v6Required);
    if (before === undefined) continue; // ip6tables absent and not needed
    const payload = convergePayload(before, desired);
    if (payload === '') continue;
    log?.debug({ family: tools.family, payload }, 'applying capture rules');
    try {
      await restore(tools, payload, exec);
    } catch (err) {
      log?.error({ family: tools.family, err: errorMessage(err) }, 'capture rules rejected; rolling back');
      throw await rollback(done, exec, err);
    }
    log?.info({ family: tools.family, chains: desired.chains.length, rules: desired.rules.length, program: tools.restore }, 'capture rules applied');
    changed = true;
    done.push([tools, before]);
  }
  return changed;
}

async function rollback(done: Array<[FamilyTools, KedgeTableState]>, exec: CommandRunner, err: unknown): Promise<unknown> {
  if (!(err instanceof KedgeError) || done.length === 0) return err;
  const notes: string[] = [];
  for (const [tools, before] of done.reverse()) {
    try {
      const now = (await readTable(tools, exec, true)) ?? EMPTY_STATE;
      if (!sameState(now, before)) await restore(tools, convergePayload(now, before), exec);
      notes.push(`the IPv${tools.family} rules already applied were rolled back`);
    } catch (rbErr) {
      notes.push(`rolling back IPv${tools.family} also failed (${errorMessage(rbErr)}); run "kedge capture remove"`);
    }
  }
  return new KedgeError(err.code, `${err.message}; ${notes.join('; ')}`, { cause: err });
}

// Reads Kedge's part of one family's nat table; undefined when the program is
// missing and `required` is false.
async function readTable(tools: FamilyTools, exec: CommandRunner, required: boolean): Promise<KedgeTableState | undefined> {
  let res;
  try {
    res = await exec.run(tools.save, ['-t', 'nat']);
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw missingOr(tools.save, err);
  }
  if (res.code !== 0) {
    // A kernel without the IPv6 nat table cannot hold Kedge rules there; nothing to read.
    if (!required) return undefined;
    throw new KedgeError('KEDGE_CAPTURE_READ_FAILED', `${tools.save} -t nat failed (exit ${res.code}): ${oneLine(res.stderr)}; capture needs root (CAP_NET_ADMIN) and the nat table`);
  }
  return kedgeStateFromSave(res.stdout);
}

async function restore(tools: FamilyTools, payload: string, exec: CommandRunner): Promise<void> {
  let res;
  try {
    // -w: wait for the xtables lock (legacy backend) rather than fail while another tool holds it.
    res = await exec.run(tools.restore, ['-w', '10', '--noflush'], payload);
  } catch (err) {
    throw missingOr(tools.restore, err);
  }
  if (res.code === 0) return;
  const e = parseRestoreError(res.stderr, payload);
  const where = e.line === undefined ? '' : ` at line ${e.line}${e.rule ? ` (${e.rule})` : ''}`;
  throw new KedgeError(
    'KEDGE_CAPTURE_APPLY_FAILED',
    `${tools.restore} rejected the Kedge rules${where}: ${e.reason}; the IPv${tools.family} nat table was left unchanged`,
  );
}

/** Where and why iptables-restore failed, from its stderr and the payload it was given. */
export function parseRestoreError(stderr: string, payload: string): { line?: number; rule?: string; reason: string } {
  const m = /Error occurred at line: (\d+)/.exec(stderr) ?? /line (\d+): /.exec(stderr) ?? /line (\d+) failed/.exec(stderr);
  const reasons = stderr
    .split('\n')
    .map((l) => l.trim().replace(/^\S*tables\S* v[\d.]+ \([^)]*\):\s*/, '').replace(/^line \d+: /, ''))
    .filter((l) => l && !l.startsWith('Try `') && !l.startsWith('Error occurred at line') && !/^\S*tables-restore: line \d+ failed$/.test(l));
  if (!m) return { reason: reasons.join('; ') || `exit status without a message` };
  const line = Number(m[1]);
  const rule = payload.split('\n')[line - 1];
  let reason = reasons.join('; ');
  if (rule === 'COMMIT' || reason === '') {
    // The legacy backend only reports that the kernel refused the whole table at COMMIT.
    reason = `${reason ? `${reason}; ` : ''}the kernel refused the table; a netfilter module is probably missing (check: modprobe iptable_nat xt_owner xt_REDIRECT xt_tcpudp)`;
  }
  return rule === undefined ? { line, reason } : { line, rule, reason };
}

function missingOr(cmd: string, err: unknown): KedgeError {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
    return new KedgeError('KEDGE_IPTABLES_MISSING', `${cmd} not found on PATH; install iptables (apt-get install iptables / dnf install iptables-nft) to use capture`, { cause: err });
  }
  return new KedgeError('KEDGE_CAPTURE_APPLY_FAILED', `cannot run ${cmd}: ${errorMessage(err)}`, { cause: err });
}

function oneLine(s: string): string {
  return s.trim().split('\n').filter(Boolean).join('; ') || '(no message)';
}
