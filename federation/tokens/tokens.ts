// Join tokens: how a VM or bare-metal agent proves, once, which namespace and
// service account it may get a certificate for. The token is
// `kedge1.<id>.<secret>`; the store keeps only the SHA-256 of the secret, so
// reading the store (or a backup of it) does not let anyone join.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { KedgeError } from '../../proto/model/errors';
import { isValidName } from '../../proto/model/spiffe';
import type { KeyValue, Store } from '../store/types';
import { EMPTY_GRANT, type Grant, RESERVED_NAMESPACE, validateGrant } from '../grants/grant';

/**
 * The identity a token grants (namespace + service account) and what the
 * workload holding it may register (services, workload name, labels,
 * gateway role).
 */
export interface TokenBinding { namespace: string; serviceAccount: string; grant?: Grant }

/** What `kedge get tokens` shows; `uses` is how many redemptions the token allowed in total. */
export interface TokenInfo { id: string; namespace: string; serviceAccount: string; grant: Grant; usesLeft: number; uses: number; expiresAt: string; createdAt: string }

/** Where token records live in the store, one key per token id. */
export const TOKEN_PREFIX = '/kedge/tokens/';

// Used-up and expired records stay this long after expiry, so a late redeem
// is told "expired" or "used" (actionable) instead of "unknown" (suspicious).
const DEFAULT_RETAIN_MS = 24 * 60 * 60 * 1000;

const TOKEN_RE = /^kedge1\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/; // 16-byte id, 32-byte secret, base64url
const CREATE_HINT = 'create a new one with `kedge token create`';

/** The stored record; `hash` is base64url SHA-256 of the secret. */
interface TokenRecord {
  hash: string;
  namespace: string;
  serviceAccount: string;
  grant?: Grant;
  uses: number;
  used: number;
  createdAt: number;
  expiresAt: number;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

function invalidRequest(message: string): KedgeError {
  return new KedgeError('KEDGE_TOKEN_INVALID_REQUEST', message);
}

// One message for "no such id" and "wrong secret", so ids cannot be probed.
function unknownToken(): KedgeError {
  return new KedgeError('KEDGE_TOKEN_UNKNOWN', `join token not recognised: it was never issued here, was mistyped, or was deleted; ${CREATE_HINT}`);
}

function validateBinding(b: TokenBinding): Grant {
  if (!isValidName(b.namespace)) throw invalidRequest(`namespace "${b.namespace}" is not a valid name: use lowercase letters, digits, '-' and '.'`);
  if (!isValidName(b.serviceAccount)) throw invalidRequest(`service account "${b.serviceAccount}" is not a valid name: use lowercase letters, digits, '-' and '.'`);
  if (b.namespace === RESERVED_NAMESPACE) {
    throw new KedgeError('KEDGE_RESERVED_IDENTITY', `namespace ${RESERVED_NAMESPACE} is reserved for the mesh's own components (the federation's identity lives there); workloads join in another namespace`);
  }
  return validateGrant(b.grant);
}

function parseRecord(kv: KeyValue): TokenRecord {
  try {
    return JSON.parse(kv.value) as TokenRecord;
  } catch (err) {
    throw new KedgeError('KEDGE_TOKEN_STORE_CORRUPT', `token record ${kv.key} in the store is not valid JSON; delete it and create a new token`, { cause: err });
  }
}

/** Caps on what one token may ask for (the federation's --max-token-ttl and --max-token-uses). */
export interface TokenLimits { maxTtlMs: number; maxUses: number }

/** Defaults of the caps: 30 days, a million uses (the CLI's own bound). */
export const DEFAULT_TOKEN_LIMITS: TokenLimits = Object.freeze({ maxTtlMs: 30 * 24 * 60 * 60 * 1000, maxUses: 1_000_000 });

/** Issues, redeems and lists join tokens kept in a Store. */
export class TokenService {
  private readonly clock: () => number;
  private readonly retainMs: number;
  private readonly limits: TokenLimits;

  constructor(private readonly store: Store, opts: { clock?: () => number; retainMs?: number; limits?: TokenLimits } = {}) {
    this.clock = opts.clock ?? Date.now;
    this.retainMs = opts.retainMs ?? DEFAULT_RETAIN_MS;
    this.limits = opts.limits ?? DEFAULT_TOKEN_LIMITS;
  }

  /** Issues a token; `uses` defaults to 1. The token string is returned once and never stored. */
  async create(binding: TokenBinding, opts: { ttlMs: number; uses?: number }): Promise<{ token: string; info: TokenInfo }> {
    const grant = validateBinding(binding);
    const uses = opts.uses ?? 1;
    if (!Number.isSafeInteger(uses) || uses < 1) throw invalidRequest(`token uses must be a whole number of at least 1, got ${uses}`);
    if (uses > this.limits.maxUses) throw invalidRequest(`token uses ${uses} is over this federation's limit of ${this.limits.maxUses}; ask for fewer, or start the federation with a higher --max-token-uses`);
    if (!Number.isFinite(opts.ttlMs) || opts.ttlMs <= 0) throw invalidRequest(`token TTL must be positive, got ${opts.ttlMs} ms`);
    if (opts.ttlMs > this.limits.maxTtlMs) throw invalidRequest(`token TTL of ${describeMs(opts.ttlMs)} is over this federation's limit of ${describeMs(this.limits.maxTtlMs)}; ask for a shorter --ttl, or start the federation with a higher --max-token-ttl`);
    // An id starting with '-' would read as a flag in `kedge delete token ID`; draw again (a 1-in-64 case).
    let id: string;
    do id = randomBytes(16).toString('base64url');
    while (id.startsWith('-'));
    const secret = randomBytes(32).toString('base64url');
    const now = this.clock();
    const rec: TokenRecord = {
      hash: sha256(secret).toString('base64url'),
      namespace: binding.namespace,
      serviceAccount: binding.serviceAccount,
      grant,
      uses,
      used: 0,
      createdAt: now,
      expiresAt: now + opts.ttlMs,
    };
    await this.store.put(TOKEN_PREFIX + id, JSON.stringify(rec), { expectRevision: 0 });
    return { token: `kedge1.${id}.${secret}`, info: toInfo(id, rec) };
  }

  /**
   * Checks a token and consumes one use. The use is taken with a guarded put
   * on the record's modRevision and retried on conflict, so N concurrent
   * redemptions of a one-use token succeed exactly once. The loop ends: every
   * conflict means another redemption (or a delete) got through, which uses
   * the token up in at most `uses` rounds. `check` sees the binding before
   * a use is taken and may refuse by throwing.
   */
  async redeem(token: string, check?: (binding: TokenBinding) => void): Promise<TokenBinding> {
    const m = typeof token === 'string' ? TOKEN_RE.exec(token.trim()) : null;
    if (!m) throw new KedgeError('KEDGE_TOKEN_MALFORMED', `join token is malformed (expected kedge1.<id>.<secret>); check it was copied whole, or ${CREATE_HINT}`);
    const [, id, secret] = m as unknown as [string, string, string];
    const presented = sha256(secret);
    for (;;) {
      const kv = await this.store.get(TOKEN_PREFIX + id);
      if (!kv) throw unknownToken();
      const rec = parseRecord(kv);
      const stored = Buffer.from(rec.hash, 'base64url');
      if (stored.length !== presented.length || !timingSafeEqual(stored, presented)) throw unknownToken();
      const now = this.clock();
      if (now >= rec.expiresAt) {
        await this.collect(kv, rec, now);
        throw new KedgeError('KEDGE_TOKEN_EXPIRED', `join token ${id} expired at ${new Date(rec.expiresAt).toISOString()}; ${CREATE_HINT}`);
      }
      if (rec.used >= rec.uses) {
        throw new KedgeError('KEDGE_TOKEN_USED', `join token ${id} has been used ${rec.used} of ${rec.uses} time(s) and cannot be used again; ${CREATE_HINT}`);
      }
      // What the caller asks must fit the token before a use is taken (a CSR for another identity costs nothing).
      check?.({ namespace: rec.namespace, serviceAccount: rec.serviceAccount, grant: rec.grant ?? EMPTY_GRANT });
      try {
        await this.store.put(kv.key, JSON.stringify({ ...rec, used: rec.used + 1 }), { expectRevision: kv.modRevision });
      } catch (err) {
        if (err instanceof KedgeError && err.code === 'KEDGE_STORE_CONFLICT') continue;
        throw err;
      }
      return { namespace: rec.namespace, serviceAccount: rec.serviceAccount, grant: rec.grant ?? EMPTY_GRANT };
    }
  }

  /** Every token still on record, oldest first; records past their retention are deleted here. */
  async list(): Promise<TokenInfo[]> {
    const { kvs } = await this.store.list(TOKEN_PREFIX);
    const now = this.clock();
    const out: { info: TokenInfo; createdAt: number }[] = [];
    for (const kv of kvs) {
      const rec = parseRecord(kv);
      if (await this.collect(kv, rec, now)) continue;
      out.push({ info: toInfo(kv.key.slice(TOKEN_PREFIX.length), rec), createdAt: rec.createdAt });
    }
    return out.sort((a, b) => a.createdAt - b.createdAt).map((e) => e.info);
  }

  /** Deletes a token so it can no longer be redeemed; false when there was none. Identities it already yielded stay (revoke those with kedge delete workload). */
  async delete(id: string): Promise<boolean> {
    if (!/^[A-Za-z0-9_-]{22}$/.test(id)) throw invalidRequest(`"${id}" is not a token id (the 22 characters after kedge1. in the token, as kedge get tokens lists them)`);
    return this.store.delete(TOKEN_PREFIX + id);
  }

  // Deletes a record once it is past expiry plus retention; true when it did.
  private async collect(kv: KeyValue, rec: TokenRecord, now: number): Promise<boolean> {
    if (now < rec.expiresAt + this.retainMs) return false;
    // Guarded so a record changed meanwhile is left for the next pass.
    await this.store.delete(kv.key, { expectRevision: kv.modRevision }).catch((err: unknown) => {
      if (!(err instanceof KedgeError && err.code === 'KEDGE_STORE_CONFLICT')) throw err;
    });
    return true;
  }
}

// A record written before the caps (or edited) may hold a time no Date can
// show; listing must still work, so such a time is shown, not thrown.
function isoTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `out of range (${String(ms)} ms since the epoch)` : d.toISOString();
}

function describeMs(ms: number): string {
  const days = ms / 86_400_000;
  return days >= 1 ? `${Number(days.toPrecision(6))} days` : `${Math.round(ms / 1000)} s`;
}

function toInfo(id: string, rec: TokenRecord): TokenInfo {
  return {
    id,
    namespace: rec.namespace,
    serviceAccount: rec.serviceAccount,
    grant: rec.grant ?? EMPTY_GRANT,
    usesLeft: Math.max(0, rec.uses - rec.used),
    uses: rec.uses,
    expiresAt: isoTime(rec.expiresAt),
    createdAt: isoTime(rec.createdAt),
  };
}
