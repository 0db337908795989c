// Where the CA key-encryption key (KEK) comes from: a file
// (--ca-key-encryption-key-file), an environment variable
// (KEDGE_CA_KEY_ENCRYPTION_KEY) or a command whose stdout is the key
// (--ca-key-command, for a KMS or a secret manager's CLI). One trailing
// newline is not part of the key.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { KedgeError } from '../../proto/model/errors';
import { checkKek } from './key-wrap';

/** The environment variable that may hold the KEK itself. */
export const KEK_ENV = 'KEDGE_CA_KEY_ENCRYPTION_KEY';
/** How long --ca-key-command may run. */
export const KEK_COMMAND_TIMEOUT_MS = 15_000;

/** A configured KEK source. */
export type KekSource = { kind: 'file'; file: string } | { kind: 'env'; name: string } | { kind: 'command'; command: string };

/** How a source is named in messages. */
export function describeKekSource(src: KekSource): string {
  if (src.kind === 'file') return `--ca-key-encryption-key-file ${src.file}`;
  if (src.kind === 'env') return `the environment variable ${src.name}`;
  return `--ca-key-command ${JSON.stringify(src.command)}`;
}

function stripNewline(b: Buffer): Buffer {
  let end = b.length;
  if (end > 0 && b[end - 1] === 0x0a) end--;
  if (end > 0 && b[end - 1] === 0x0d) end--;
  return b.subarray(0, end);
}

/**
 * Reads the KEK. A file that cannot be read or a too-short key is
 * KEDGE_CA_KEK_INVALID (a configuration error); a command that fails or
 * times out is KEDGE_CA_KEK_UNAVAILABLE (the caller may retry later).
 */
export async function obtainKek(src: KekSource, env: NodeJS.ProcessEnv = process.env): Promise<Buffer> {
  const what = describeKekSource(src);
  let kek: Buffer;
  if (src.kind === 'file') {
    try {
      kek = stripNewline(fs.readFileSync(src.file));
    } catch (err) {
      throw new KedgeError('KEDGE_CA_KEK_INVALID', `cannot read the CA key-encryption key file ${src.file}: ${(err as NodeJS.ErrnoException).code ?? err}`, { cause: err });
    }
  } else if (src.kind === 'env') {
    kek = stripNewline(Buffer.from(env[src.name] ?? '', 'utf8'));
  } else {
    kek = await new Promise<Buffer>((resolve, reject) => {
      execFile('/bin/sh', ['-c', src.command], { encoding: 'buffer', timeout: KEK_COMMAND_TIMEOUT_MS, maxBuffer: 64 * 1024 }, (err, stdout, stderr) => {
        if (err) {
          const detail = (stderr as Buffer).toString('utf8').trim().split('\n').slice(-3).join(' | ');
          const why = (err as { killed?: boolean }).killed ? `did not finish within ${KEK_COMMAND_TIMEOUT_MS} ms` : `failed (${err.code ?? err.message})`;
          reject(new KedgeError('KEDGE_CA_KEK_UNAVAILABLE', `${what} ${why}${detail ? `: ${detail}` : ''}`, { cause: err }));
        } else resolve(stripNewline(stdout as Buffer));
      });
    });
  }
  checkKek(kek, what);
  return kek;
}
