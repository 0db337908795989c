// Flag parsing shared by every subcommand: node's parseArgs in strict mode,
// so an unknown or malformed flag is an error that names it.
import { parseArgs, ParseArgsConfig } from 'node:util';
import { KedgeError } from '../proto/model/errors';

/** Parses argv for a subcommand; usage errors become KEDGE_USAGE, and --help or -h KEDGE_HELP (the usage, printed with exit 0). */
export function parseFlags<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O, usage: string) {
  const end = argv.indexOf('--');
  if ((end === -1 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h')) throw new KedgeError('KEDGE_HELP', `usage: ${usage}`);
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new KedgeError('KEDGE_USAGE', `${(err as Error).message}\n\nusage: ${usage}`);
  }
}
