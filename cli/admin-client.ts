// The CLI's client for the federation's HTTP API: finds the admin token,
// sends it as a bearer token, and turns failures into errors that say what
// to check.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KedgeError, errorMessage } from '../proto/model/errors';

/** Flags every admin command takes. */
export const ADMIN_FLAGS = {
  federation: { type: 'string' },
  'admin-token-file': { type: 'string' },
} as const;

/** Where to reach the federation's HTTP API and with which token. */
export interface AdminTarget {
  baseUrl: string;
  token: string;
}

/** Default token locations, tried in order when --admin-token-file is not given. */
export function defaultTokenFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  return [env.KEDGE_ADMIN_TOKEN_FILE, 'admin-token', '/var/lib/kedge/federation/admin-token'].filter((f): f is string => !!f);
}

/** Resolves --federation and --admin-token-file (or their environment and defaults). */
export function resolveAdminTarget(flags: { federation?: string | undefined; 'admin-token-file'?: string | undefined }, env: NodeJS.ProcessEnv = process.env): AdminTarget {
  const baseUrl = (flags.federation ?? env.KEDGE_FEDERATION ?? 'http://127.0.0.1:15014').replace(/\/+$/, '');
  if (!/^https?:\/\/[^/]+$/.test(baseUrl)) {
    throw new KedgeError('KEDGE_USAGE', `--federation ${JSON.stringify(baseUrl)} is not a URL like http://127.0.0.1:15014`);
  }
  const candidates = flags['admin-token-file'] ? [flags['admin-token-file']] : defaultTokenFiles(env);
  for (const file of candidates) {
    try {
      const token = fs.readFileSync(file, 'utf8').trim();
      if (token) return { baseUrl, token };
    } catch (err) {
      if (flags['admin-token-file']) {
        throw new KedgeError('KEDGE_USAGE', `cannot read admin token file ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
      }
    }
  }
  throw new KedgeError('KEDGE_USAGE', `no admin token found (looked in ${candidates.map((f) => path.resolve(f)).join(', ')}); pass --admin-token-file DATA_DIR/admin-token`);
}

/** The federation's version, from the header every answer carries (GET /healthz, no token needed). */
export async function federationVersion(baseUrl: string): Promise<string> {
  let res: Response;
  try {
    res = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(5_000) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? errorMessage(err);
    throw new KedgeError('KEDGE_FEDERATION_UNREACHABLE', `cannot reach the federation at ${baseUrl} (${cause}); is it running, and is --federation right?`, { cause: err });
  }
  await res.text();
  const v = res.headers.get('x-kedge-federation');
  if (!v) throw new KedgeError('KEDGE_NOT_A_FEDERATION', `${baseUrl} is not a Kedge federation (no x-kedge-federation header): point --federation at the federation's HTTP port (15014)`);
  return v;
}

/** Calls the API; non-2xx answers become KedgeErrors carrying the server's code. */
export async function apiRequest<T>(target: AdminTarget, method: 'GET' | 'POST' | 'DELETE', route: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${target.baseUrl}${route}`, {
      method,
      headers: { authorization: `Bearer ${target.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? errorMessage(err);
    throw new KedgeError('KEDGE_FEDERATION_UNREACHABLE', `cannot reach the federation at ${target.baseUrl} (${cause}); is it running, and is --federation right?`, { cause: err });
  }
  const text = await res.text();
  // Every answer of a Kedge federation carries this header; anything else on
  // the port (an agent's admin port, another server) is named as such.
  if (!res.headers.get('x-kedge-federation')) {
    throw new KedgeError('KEDGE_NOT_A_FEDERATION', `${target.baseUrl} answered ${res.status} but is not a Kedge federation (no x-kedge-federation header): point --federation at the federation's HTTP port (15014)`);
  }
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    throw new KedgeError('KEDGE_FEDERATION_ERROR', `the federation at ${target.baseUrl} answered ${res.status} with something that is not JSON`);
  }
  if (!res.ok) {
    const e = (parsed ?? {}) as { code?: string; message?: string };
    throw new KedgeError(e.code ?? 'KEDGE_FEDERATION_ERROR', e.message ?? `HTTP ${res.status}`);
  }
  return parsed as T;
}
