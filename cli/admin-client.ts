// The CLI's client for the federation's HTTP API: finds the admin token,
// sends it as a bearer token, and turns failures into errors that say what
// to check.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { KedgeError, errorMessage } from '../proto/model/errors';

/** Flags every admin command takes. */
export const ADMIN_FLAGS = {
  federation: { type: 'string' },
  'admin-token-file': { type: 'string' },
  'root-cert': { type: 'string' },
  'root-sha256': { type: 'string' },
  'insecure-http': { type: 'boolean' },
} as const;

/** The admin flags as parsed. */
export interface AdminFlags {
  federation?: string | undefined;
  'admin-token-file'?: string | undefined;
  'root-cert'?: string | undefined;
  'root-sha256'?: string | undefined;
  'insecure-http'?: boolean | undefined;
}

/** Where to reach the federation's HTTP API and with which token. */
export interface AdminTarget {
  baseUrl: string;
  token: string;
  /** The root(s) the federation's HTTPS certificate must chain to (https only). */
  ca?: string | undefined;
  /** A pinned SHA-256 of the federation's root-cert.pem, checked before the token is sent. */
  rootSha256?: string | undefined;
}

/** The federation's HTTPS API on this host, by default. */
export const DEFAULT_FEDERATION_URL = 'https://127.0.0.1:15014';

/** Default token locations, tried in order when --admin-token-file is not given. */
export function defaultTokenFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  return [env.KEDGE_ADMIN_TOKEN_FILE, 'admin-token', '/var/lib/kedge/federation/admin-token'].filter((f): f is string => !!f);
}

/** Checks --federation: https by default; plain http only when asked for explicitly. */
export function resolveBaseUrl(flags: AdminFlags, env: NodeJS.ProcessEnv = process.env): string {
  const baseUrl = (flags.federation ?? env.KEDGE_FEDERATION ?? DEFAULT_FEDERATION_URL).replace(/\/+$/, '');
  if (!/^https?:\/\/[^/]+$/.test(baseUrl)) {
    throw new KedgeError('KEDGE_USAGE', `--federation ${JSON.stringify(baseUrl)} is not a URL like ${DEFAULT_FEDERATION_URL}`);
  }
  if (baseUrl.startsWith('http://') && !flags['insecure-http'] && env.KEDGE_INSECURE_HTTP !== '1') {
    throw new KedgeError('KEDGE_USAGE', `--federation ${baseUrl} is plain HTTP, which sends the admin token in clear: use ${baseUrl.replace('http://', 'https://')}, or add --insecure-http (loopback development only)`);
  }
  return baseUrl;
}

/**
 * The root the HTTPS API is checked against: --root-cert, else the
 * root-cert.pem beside the admin token file, else $KEDGE_ROOT_CERT.
 */
export function resolveRootCert(flags: AdminFlags, tokenFile: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (flags['root-cert']) {
    try {
      return fs.readFileSync(flags['root-cert'], 'utf8');
    } catch (err) {
      throw new KedgeError('KEDGE_USAGE', `cannot read --root-cert ${flags['root-cert']}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  }
  for (const f of [tokenFile ? path.join(path.dirname(tokenFile), 'root-cert.pem') : undefined, env.KEDGE_ROOT_CERT]) {
    if (!f) continue;
    try {
      return fs.readFileSync(f, 'utf8');
    } catch {
      // try the next
    }
  }
  return undefined;
}

/** Resolves --federation, --admin-token-file and the root to verify against (or their environment and defaults). */
export function resolveAdminTarget(flags: AdminFlags, env: NodeJS.ProcessEnv = process.env): AdminTarget {
  const baseUrl = resolveBaseUrl(flags, env);
  const pin = flags['root-sha256'];
  if (pin !== undefined && !/^[0-9a-f]{64}$/.test(pin)) throw new KedgeError('KEDGE_USAGE', `--root-sha256 ${pin}: give the 64 hex digits of sha256sum root-cert.pem`);
  const candidates = flags['admin-token-file'] ? [flags['admin-token-file']] : defaultTokenFiles(env);
  for (const file of candidates) {
    try {
      const token = fs.readFileSync(file, 'utf8').trim();
      if (token) return { baseUrl, token, ca: baseUrl.startsWith('https://') ? resolveRootCert(flags, file, env) : undefined, rootSha256: pin };
    } catch (err) {
      if (flags['admin-token-file']) {
        throw new KedgeError('KEDGE_USAGE', `cannot read admin token file ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
      }
    }
  }
  throw new KedgeError('KEDGE_USAGE', `no admin token found (looked in ${candidates.map((f) => path.resolve(f)).join(', ')}); pass --admin-token-file DATA_DIR/admin-token`);
}

interface RawResponse {
  status: number;
  header: (name: string) => string | undefined;
  text: string;
}

// One request over https (verified against target.ca, or the pinned root)
// or plain http. Errors name what failed: the connection, or the certificate.
async function send(target: Pick<AdminTarget, 'baseUrl' | 'ca' | 'rootSha256'>, method: string, route: string, headers: Record<string, string>, body?: string): Promise<RawResponse> {
  const url = new URL(`${target.baseUrl}${route}`);
  let ca = target.ca;
  if (url.protocol === 'https:' && target.rootSha256) {
    // The pin decides: the root is fetched without trust and kept only if it hashes to it.
    const root = await rawRequest(new URL('/join/root-cert.pem', url), 'GET', {}, undefined, { rejectUnauthorized: false });
    const got = createHash('sha256').update(root.text).digest('hex');
    if (root.status !== 200 || got !== target.rootSha256) {
      throw new KedgeError('KEDGE_ROOT_MISMATCH', `the federation at ${target.baseUrl} does not have the pinned root (its root-cert.pem hashes to ${got}, --root-sha256 is ${target.rootSha256}); nothing was sent`);
    }
    ca = root.text;
  }
  if (url.protocol === 'https:' && !ca) {
    throw new KedgeError('KEDGE_USAGE', `no root certificate to check ${target.baseUrl} against: pass --root-cert DATA_DIR/root-cert.pem (or put it beside the admin token file, or set $KEDGE_ROOT_CERT), or --root-sha256 PIN`);
  }
  try {
    return await rawRequest(url, method, headers, body, url.protocol === 'https:' ? { ca } : {});
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? errorMessage(err);
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(String(code))) {
      throw new KedgeError('KEDGE_FEDERATION_UNTRUSTED', `the federation at ${target.baseUrl} presented a certificate that does not chain to the given root (${code}): check --root-cert, or that --federation names the federation you mean`, { cause: err });
    }
    if (code === 'EPROTO' || /wrong version number|packet length too long/i.test(errorMessage(err))) {
      throw new KedgeError('KEDGE_NOT_A_FEDERATION', `${target.baseUrl} does not speak HTTPS: is it a Kedge federation's HTTP port (15014)?`, { cause: err });
    }
    throw new KedgeError('KEDGE_FEDERATION_UNREACHABLE', `cannot reach the federation at ${target.baseUrl} (${code}); is it running, and is --federation right?`, { cause: err });
  }
}

function rawRequest(url: URL, method: string, headers: Record<string, string>, body: string | undefined, tlsOptions: https.RequestOptions): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, { method, headers, timeout: 10_000, ...tlsOptions }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const h = res.headers;
        resolve({ status: res.statusCode ?? 0, header: (n) => { const v = h[n.toLowerCase()]; return Array.isArray(v) ? v[0] : v; }, text: Buffer.concat(chunks).toString('utf8') });
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(body);
  });
}

// An HTTPS-only federation answers plain HTTP with this code (and no version header).
function refusedPlainHttp(res: RawResponse): void {
  if (res.status !== 400 || !res.text.includes('KEDGE_HTTPS_ONLY')) return;
  let e: { code?: string; message?: string } = {};
  try {
    e = JSON.parse(res.text) as typeof e;
  } catch {
    return;
  }
  if (e.code === 'KEDGE_HTTPS_ONLY') throw new KedgeError('KEDGE_HTTPS_ONLY', e.message ?? 'the federation serves HTTPS only: use https://');
}

/** The federation's version, from the header every answer carries (GET /healthz, no token needed). */
export async function federationVersion(target: Pick<AdminTarget, 'baseUrl' | 'ca' | 'rootSha256'>): Promise<string> {
  const res = await send(target, 'GET', '/healthz', {});
  refusedPlainHttp(res);
  const v = res.header('x-kedge-federation');
  if (!v) throw new KedgeError('KEDGE_NOT_A_FEDERATION', `${target.baseUrl} is not a Kedge federation (no x-kedge-federation header): point --federation at the federation's HTTP port (15014)`);
  return v;
}

/** Calls the API; non-2xx answers become KedgeErrors carrying the server's code. */
export async function apiRequest<T>(target: AdminTarget, method: 'GET' | 'POST' | 'DELETE', route: string, body?: unknown): Promise<T> {
  const res = await send(target, method, route, { authorization: `Bearer ${target.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body === undefined ? undefined : JSON.stringify(body));
  refusedPlainHttp(res);
  // Every answer of a Kedge federation carries this header; anything else on
  // the port (an agent's admin port, another server) is named as such.
  if (!res.header('x-kedge-federation')) {
    throw new KedgeError('KEDGE_NOT_A_FEDERATION', `${target.baseUrl} answered ${res.status} but is not a Kedge federation (no x-kedge-federation header): point --federation at the federation's HTTP port (15014)`);
  }
  let parsed: unknown;
  try {
    parsed = res.text ? JSON.parse(res.text) : undefined;
  } catch {
    throw new KedgeError('KEDGE_FEDERATION_ERROR', `the federation at ${target.baseUrl} answered ${res.status} with something that is not JSON`);
  }
  if (res.status < 200 || res.status >= 300) {
    const e = (parsed ?? {}) as { code?: string; message?: string };
    throw new KedgeError(e.code ?? 'KEDGE_FEDERATION_ERROR', e.message ?? `HTTP ${res.status}`);
  }
  return parsed as T;
}
