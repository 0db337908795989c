// `kedge federation [flags]`: runs a federation replica until signalled.
import * as os from 'node:os';
import { createLogger } from '../proto/model/log';
import { FEDERATION_FLAGS, resolveFederationConfig } from '../federation/config';
import { startFederation } from '../federation/server';
import { parseFlags } from './args';
import { runUntilSignal } from './daemon';

const USAGE = `kedge federation [--config FILE] ${Object.keys(FEDERATION_FLAGS).map((f) => `[--${f} V]`).join(' ')}`;

/** Runs the federation; returns the exit code. */
export async function runFederationCommand(argv: string[]): Promise<number> {
  const options = Object.fromEntries([...Object.keys(FEDERATION_FLAGS), 'config'].map((f) => [f, { type: 'string' as const }]));
  const { values, positionals } = parseFlags(argv, options, USAGE);
  if (positionals.length) throw new Error(`unexpected argument ${positionals[0]}\n\nusage: ${USAGE}`);
  const config = resolveFederationConfig(values as Record<string, string | undefined>, os.hostname());
  const logger = createLogger('kedge-federation', { replica: config.replica });
  const fed = await startFederation(config, logger);
  return runUntilSignal(() => fed.close(), logger);
}
