// Flag parsing shared by every subcommand: node's parseArgs in strict mode,
// so an unknown or malformed flag is an error that names it.
import { parseArgs, ParseArgsConfig } from 'node:util';
import { KedgeError } from '../proto/model/errors';

/** Parses argv for a subcommand; usage errors become KEDGE_USAGE. */
export function parseFlags<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O, usage: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new KedgeError('KEDGE_USAGE', `${(err as Error).message}\n\nusage: ${usage}`);
  }
}
