// `kedge capture install|remove|show`: reads options from --config and
// flags, then hands them to the pure builder and the thin apply edge.
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import { Doc } from '../../proto/model/validate';
import { CaptureEnv, hostHasIpv6, installCapture, plannedPayloads, removeCapture, resolveIpv6, showCapture } from './apply';
import { CAPTURE_USAGE, CaptureArgs, parseCaptureArgs } from './flags';
import { CaptureOptions, captureOptionsFromDoc } from './options';
import { CaptureRules, buildCaptureRules } from './rules';
import { CommandRunner, systemRunner } from './runner';
import { EMPTY_STATE } from './table';
import { UserDb, systemUserDb } from './users';

/** What `runCaptureCommand` needs from the process; everything but the streams has a host default. */
export interface CaptureCommandDeps {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  runner?: CommandRunner;
  users?: UserDb;
  env?: CaptureEnv;
  readFile?: (path: string) => string;
}

/** Runs `kedge capture ...` (argv is what follows "capture"); resolves to the exit code: 0 ok, 1 failed, 2 usage. */
export async function runCaptureCommand(argv: readonly string[], deps: CaptureCommandDeps): Promise<number> {
  let args: CaptureArgs | undefined;
  try {
    args = parseCaptureArgs(argv);
    const runner = deps.runner ?? systemRunner();
    const hasIpv6 = deps.env?.hasIpv6 ?? hostHasIpv6();
    const env: CaptureEnv = { ...deps.env, hasIpv6 };
    switch (args.command) {
      case 'help':
        deps.stdout.write(CAPTURE_USAGE);
        return 0;
      case 'show':
        deps.stdout.write(await showCapture(runner, env));
        return 0;
      case 'remove':
        if (args.dryRun) deps.stdout.write(await plannedPayloads(runner, { v4: EMPTY_STATE, v6: EMPTY_STATE }, env));
        else deps.stdout.write((await removeCapture(runner, env)) ? 'kedge capture: removed\n' : 'kedge capture: no Kedge rules were installed\n');
        return 0;
      case 'install': {
        if (args.dryRun) {
          // A dry run shows the rules before the proxy user exists (on a
          // host being prepared): an unknown name gets a placeholder uid, said so.
          const missing: string[] = [];
          const users = deps.users ?? systemUserDb();
          const lenient: UserDb = {
            uid: (n) => users.uid(n) ?? (missing.push(`user "${n}"`), DRY_RUN_PLACEHOLDER_ID),
            gid: (n) => users.gid(n) ?? (missing.push(`group "${n}"`), DRY_RUN_PLACEHOLDER_ID),
          };
          const opts = optionsFromArgs(args, { ...deps, users: lenient });
          const note = missing.map((m) => `# ${m} does not exist on this host: shown as id ${DRY_RUN_PLACEHOLDER_ID}; create it before kedge capture install\n`).join('');
          deps.stdout.write(note + formatRules(buildCaptureRules(resolveIpv6(opts, hasIpv6))));
          return 0;
        }
        const opts = optionsFromArgs(args, deps);
        const rules = await installCapture(opts, runner, env);
        deps.stdout.write(`kedge capture: installed (${rules.v6 === undefined ? 'IPv4' : 'IPv4 and IPv6'}); traffic of uid ${opts.proxyUid} is not captured\n`);
        return 0;
      }
    }
  } catch (err) {
    if (err instanceof KedgeError && err.code === 'KEDGE_USAGE') {
      deps.stderr.write(`${err.message}`);
      return 2;
    }
    deps.stderr.write(`kedge capture: ${withFlag(errorMessage(err), args)}${err instanceof KedgeError ? ` [${err.code}]` : ''}\n`);
    return 1;
  }
}

/** The id a dry run shows for a proxy user or group that does not exist yet. */
export const DRY_RUN_PLACEHOLDER_ID = 4294967294;

/** The rules in iptables-save form with a header per family, as `--dry-run` prints them. */
export function formatRules(rules: CaptureRules): string {
  let out = `# iptables-restore --noflush\n${rules.v4}`;
  if (rules.v6 !== undefined) out += `# ip6tables-restore --noflush\n${rules.v6}`;
  return out;
}

function optionsFromArgs(args: CaptureArgs, deps: CaptureCommandDeps): CaptureOptions {
  const users = deps.users ?? systemUserDb();
  const hasFlags = Object.keys(args.overrides).length > 0;
  if (args.config === undefined) return captureOptionsFromDoc(new Doc('command line', args.overrides), users);
  const file = args.config;
  let text: string;
  try {
    text = (deps.readFile ?? ((p) => readFileSync(p, 'utf8')))(file);
  } catch (err) {
    throw new KedgeError('KEDGE_BAD_CONFIG', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}; check the --config path`, { cause: err });
  }
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch (err) {
    throw new KedgeError('KEDGE_BAD_CONFIG', `${file}: not valid YAML: ${errorMessage(err)}`, { cause: err });
  }
  const block = new Doc(file, value).at('capture');
  if (!hasFlags) return captureOptionsFromDoc(block, users);
  const base = block.isMissing() ? {} : (block.object().value as Record<string, unknown>);
  return captureOptionsFromDoc(new Doc(`${file} with command-line flags`, { capture: { ...base, ...args.overrides } }).at('capture'), users);
}

// Names the flag when the field an error mentions was set on the command line.
function withFlag(msg: string, args: CaptureArgs | undefined): string {
  for (const [key, flag] of Object.entries(args?.flagOf ?? {})) {
    if (new RegExp(`(^|[ .])${key}(\\[\\d+\\])?: `).test(msg)) return `${msg} (set by ${flag})`;
  }
  return msg;
}
