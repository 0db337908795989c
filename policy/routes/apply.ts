// What the engine does with a matched target, as pure functions over the
// compiled data: pick a weighted backend, rewrite a path, build a redirect's
// Location. No allocation beyond the strings they return.
import type { PathModifier, RedirectFilter, RouteBackend, RouteTarget } from './types';

/**
 * The backend for a request: `random` in [0, 1) picks by weight (weight 0
 * never). Undefined only for a redirect target, which has no backends.
 */
export function pickBackend(target: RouteTarget, random: number): RouteBackend | undefined {
  let point = random * target.totalWeight;
  const bs = target.backends;
  for (let i = 0; i < bs.length; i++) {
    const b = bs[i]!;
    if (b.weight === 0) continue;
    if (point < b.weight) return b;
    point -= b.weight;
  }
  // Rounding at the top end: the last backend with weight.
  for (let i = bs.length - 1; i >= 0; i--) if (bs[i]!.weight > 0) return bs[i];
  return undefined;
}

/**
 * A request path after a path modifier (URLRewrite or RequestRedirect), as
 * the Gateway API's ReplacePrefixMatch table says: `/foo/bar` with prefix
 * `/foo` and replacement `/xyz` becomes `/xyz/bar`; replacement '' or `/`
 * leaves `/bar`; `/foo` alone becomes `/xyz` (or `/`).
 */
export function modifyPath(path: string, mod: PathModifier): string {
  if (mod.type === 'ReplaceFullPath') return mod.replaceFullPath;
  // The matcher guarantees `path` starts with the prefix at a segment boundary.
  const rest = path.slice(mod.prefix.length);
  let replacement = mod.replacePrefixMatch;
  if (replacement.endsWith('/')) replacement = replacement.slice(0, -1);
  if (rest === '' || rest === '/') return replacement === '' ? '/' : replacement + rest;
  return replacement + rest;
}

/** The parts of the request a redirect's Location is built from. */
export interface RedirectRequest {
  /** `http` or `https`, as the client spoke to the proxy. */
  scheme: string;
  /** Host (or :authority) without its port. */
  host: string;
  /** The port the client connected to (the service port). */
  port: number;
  path: string;
  /** Query without '?', '' when none; kept in the Location. */
  query: string;
}

/**
 * The Location header of a RequestRedirect. The port follows the Gateway
 * API: a given port wins; else a given scheme means its well-known port;
 * else the request's port. 80 for http and 443 for https are left out.
 */
export function redirectLocation(r: RedirectFilter, req: RedirectRequest): string {
  const scheme = r.scheme ?? req.scheme;
  const host = r.hostname ?? req.host;
  const port = r.port ?? (r.scheme !== undefined ? (scheme === 'https' ? 443 : 80) : req.port);
  const defaultPort = (scheme === 'http' && port === 80) || (scheme === 'https' && port === 443);
  const path = r.path ? modifyPath(req.path, r.path) : req.path;
  return `${scheme}://${host}${defaultPort ? '' : `:${port}`}${path}${req.query ? `?${req.query}` : ''}`;
}
