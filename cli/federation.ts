// `kedge federation [flags]`: runs a federation replica until signalled.
// `kedge federation backup|restore`: copies of the store's durable state.
import * as os from 'node:os';
import { createLogger } from '../proto/model/log';
import { FEDERATION_BOOLEAN_FLAGS, FEDERATION_FLAGS, resolveFederationConfig } from '../federation/config';
import { startFederation } from '../federation/server';
import { parseFlags } from './args';
import { runUntilSignal } from './daemon';
import { runBackup, runRestore } from './federation-backup';

const USAGE = `kedge federation [--config FILE] [--init] ${Object.keys(FEDERATION_FLAGS).map((f) => (FEDERATION_BOOLEAN_FLAGS.has(f) ? `[--${f}]` : `[--${f} V]`)).join(' ')}
       kedge federation backup --out FILE [--data-dir DIR | --federation URL --admin-token-file FILE]
       kedge federation restore --data-dir DIR [--force] FILE`;

/** Runs the federation (or its backup/restore); returns the exit code. */
export async function runFederationCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'backup') return runBackup(argv.slice(1));
  if (argv[0] === 'restore') return runRestore(argv.slice(1));
  const options = {
    ...Object.fromEntries([...Object.keys(FEDERATION_FLAGS), 'config'].map((f) => [f, { type: FEDERATION_BOOLEAN_FLAGS.has(f) ? ('boolean' as const) : ('string' as const) }])),
    init: { type: 'boolean' as const },
  };
  const { values, positionals } = parseFlags(argv, options, USAGE);
  if (positionals.length) throw new Error(`unexpected argument ${positionals[0]}\n\nusage: ${USAGE}`);
  const { init, ...flags } = values as Record<string, string | boolean | undefined>;
  // Boolean flags reach the config as 'true' (given) or not at all.
  const asStrings = Object.fromEntries(Object.entries(flags).map(([k, v]) => [k, v === true ? 'true' : v === false ? undefined : v]));
  const config = resolveFederationConfig(asStrings, os.hostname());
  const logger = createLogger('kedge-federation', { replica: config.replica });
  const fed = await startFederation(config, logger, { init: init === true });
  return runUntilSignal(() => fed.close(), logger);
}
