// fetch() for a federation's HTTPS API in tests and benchmarks: verified
// against that federation's own root, with its admin token when asked.
import * as fs from 'node:fs';
import * as https from 'node:https';

/** What fedFetch sends. */
export interface FedRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** Send the federation's admin token. */
  admin?: boolean;
}

/**
 * fetch() for the federation's HTTPS API: verified against the federation's
 * current root-cert.pem (read at each call, so it follows a CA rotation),
 * answering a standard Response.
 */
export function fedFetch(fed: { httpsUrl: string; rootCertFile: string; adminTokenFile: string }, route: string, init: FedRequest = {}): Promise<Response> {
  const headers = { ...(init.headers ?? {}) };
  if (init.admin) headers.authorization = `Bearer ${fs.readFileSync(fed.adminTokenFile, 'utf8').trim()}`;
  const ca = fs.readFileSync(fed.rootCertFile, 'utf8');
  return new Promise((resolve, reject) => {
    const req = https.request(`${fed.httpsUrl}${route}`, { method: init.method ?? 'GET', headers, ca, agent: false, signal: init.signal ?? AbortSignal.timeout(10_000) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) h.append(k, one);
        const status = res.statusCode ?? 0;
        const body = status === 204 || status === 304 ? null : Buffer.concat(chunks);
        resolve(new Response(body, { status, headers: h }));
      });
    });
    req.on('error', reject);
    req.end(init.body);
  });
}
