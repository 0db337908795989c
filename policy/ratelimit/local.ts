// The server proxy's local limiter: the HTTPLocalRateLimitPolicies of the
// services it serves, compiled once per push into bucket tables. A request
// is admitted only when every bucket that applies to it has a token, and
// then takes one from each (so a refused request costs no bucket anything).
// Buckets survive a push for policies whose limits did not change.
// Pure: the clock is passed in.
import { TokenBucket } from './bucket';
import { clientMatches, type BucketSpec, type KeyedLimit, type LimitKeyPart, type LimitRoute, type LocalRateLimitPolicy } from './model';

/** What the limiter looks at for one request or connection. */
export interface LimitRequest {
  /** The peer's principal without spiffe:// (`td/ns/x/sa/y`), '' without mesh identity. */
  principal: string;
  /** name.namespace of the local service the request is for. */
  service: string;
  /** Absent for an opaque TCP connection. */
  http?: { method: string; path: string; header(name: string): string | undefined };
}

/** A refusal: which policy and limit, and when to come back. */
export interface LimitRefusal {
  policy: string;
  limit: string;
  retryAfterSeconds: number;
}

/** Keyed tables stop growing here; full buckets are swept first. A key past it shares one overflow bucket. */
export const MAX_KEYS_PER_LIMIT = 10_000;

interface Table {
  /** What the table was built from, to keep buckets across pushes. */
  sig: string;
  buckets: Map<string, TokenBucket>;
}

interface CompiledLimit {
  policy: string;
  name: string;
  sig: string;
  /** The bucket key of a request, or undefined when the limit does not count it. */
  key(r: LimitRequest): string | undefined;
  spec(r: LimitRequest): BucketSpec;
}

function principalNamespace(p: string): string {
  return /\/ns\/([^/]+)\//.exec(p)?.[1] ?? '';
}

function routeOf(routes: readonly LimitRoute[], http: NonNullable<LimitRequest['http']>): string | undefined {
  const path = http.path.split('?')[0] ?? '';
  for (const r of routes) {
    if (r.method && r.method !== http.method.toUpperCase()) continue;
    if (r.path) {
      if (r.path.type === 'Exact' ? path !== r.path.value : !(path === r.path.value || path.startsWith(r.path.value.endsWith('/') ? r.path.value : `${r.path.value}/`))) continue;
    }
    return r.name;
  }
  return undefined;
}

function partValue(part: LimitKeyPart, r: LimitRequest, route: string): string {
  switch (part.kind) {
    case 'sourcePrincipal':
      return r.principal;
    case 'sourceNamespace':
      return principalNamespace(r.principal);
    case 'destinationService':
      return r.service;
    case 'route':
      return route;
    case 'method':
      return r.http?.method ?? '';
    case 'header':
      return r.http?.header(part.name) ?? '';
  }
}

function compileKeyed(p: LocalRateLimitPolicy, l: KeyedLimit): CompiledLimit {
  const id = `${p.namespace}/${p.name}`;
  return {
    policy: id,
    name: l.name,
    sig: `${id}|keyed|${JSON.stringify(l)}`,
    spec: () => l.bucket,
    key(r) {
      if ((l.unit === 'connections') !== (r.http === undefined)) return undefined;
      let route = '';
      if (l.routes.length > 0) {
        const name = r.http ? routeOf(l.routes, r.http) : undefined;
        if (name === undefined) return undefined;
        route = name;
      }
      let k = '';
      for (const part of l.key) {
        const v = partValue(part, r, route);
        k += `${v.length}:${v}`;
      }
      return k;
    },
  };
}

/** The policy's Linkerd-style buckets: total (one), then identity or the override naming the client. */
function compileLinkerd(p: LocalRateLimitPolicy): CompiledLimit[] {
  const id = `${p.namespace}/${p.name}`;
  const out: CompiledLimit[] = [];
  const http = (r: LimitRequest): boolean => r.http !== undefined;
  if (p.total) {
    const total = p.total;
    out.push({ policy: id, name: 'total', sig: `${id}|total|${JSON.stringify(total)}`, spec: () => total, key: (r) => (http(r) ? '' : undefined) });
  }
  if (p.identity || p.overrides.length > 0) {
    const overrides = p.overrides;
    const identity = p.identity;
    const overrideOf = (principal: string): number => overrides.findIndex((o) => clientMatches(o.clients, principal));
    out.push({
      policy: id,
      name: 'identity',
      sig: `${id}|identity|${JSON.stringify({ identity, overrides })}`,
      // A client named by an override has its own limit instead of the identity one (Linkerd).
      spec: (r) => {
        const i = overrideOf(r.principal);
        return i >= 0 ? overrides[i]!.bucket : identity!;
      },
      key: (r) => {
        if (!http(r)) return undefined;
        const i = overrideOf(r.principal);
        if (i < 0 && identity === undefined) return undefined;
        return i >= 0 ? `override${i}|${r.principal}` : r.principal;
      },
    });
  }
  return out;
}

/** The compiled limits of one push, with their bucket tables. */
export class LocalLimiter {
  private readonly byService = new Map<string, CompiledLimit[]>();
  private readonly tables = new Map<string, Table>();

  /** Compiles `policies`; buckets of limits whose definition is unchanged are kept from `previous`. */
  constructor(policies: readonly LocalRateLimitPolicy[], previous?: LocalLimiter) {
    for (const p of policies) {
      const service = `${p.service}.${p.namespace}`;
      const list = this.byService.get(service) ?? [];
      list.push(...compileLinkerd(p), ...p.limits.map((l) => compileKeyed(p, l)));
      this.byService.set(service, list);
    }
    for (const list of this.byService.values()) {
      for (const l of list) {
        const old = previous?.tables.get(l.sig);
        this.tables.set(l.sig, old ?? { sig: l.sig, buckets: new Map() });
      }
    }
  }

  /** True when no policy limits anything here. */
  get empty(): boolean {
    return this.byService.size === 0;
  }

  /** Admits the request (taking a token from every bucket that applies), or says which limit refused it. */
  admit(r: LimitRequest, now: number): LimitRefusal | undefined {
    const limits = this.byService.get(r.service);
    if (limits === undefined) return undefined;
    const chosen: TokenBucket[] = [];
    for (const l of limits) {
      const key = l.key(r);
      if (key === undefined) continue;
      const table = this.tables.get(l.sig)!;
      let b = table.buckets.get(key);
      if (b === undefined) {
        if (table.buckets.size >= MAX_KEYS_PER_LIMIT) sweep(table, now);
        const k = table.buckets.size >= MAX_KEYS_PER_LIMIT ? '\u0000overflow' : key;
        b = table.buckets.get(k);
        if (b === undefined) table.buckets.set(k, (b = new TokenBucket(l.spec(r), now)));
      }
      if (!b.available(now)) return { policy: l.policy, limit: l.name, retryAfterSeconds: b.retryAfterSeconds(now) };
      chosen.push(b);
    }
    for (const b of chosen) b.take();
    return undefined;
  }
}

function sweep(t: Table, now: number): void {
  for (const [k, b] of t.buckets) if (b.full(now)) t.buckets.delete(k);
}
