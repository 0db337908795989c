// Viewer tokens: read-only access to the HTTP API and the dashboard. The
// token is `kedgeview1.<id>.<secret>`; the store keeps only the SHA-256 of
// the secret under /kedge/viewer-tokens/<id>, mirrored on every replica, so
// a token made on one replica works on all of them.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { KedgeError } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import type { Store } from '../store/types';
import { WatchedMap } from '../store/watched-map';

/** Where viewer token records live, one key per id. */
export const VIEWER_TOKEN_PREFIX = '/kedge/viewer-tokens/';

/** Longest lifetime a viewer token may ask for. */
export const MAX_VIEWER_TTL_MS = 365 * 24 * 60 * 60 * 1000;

const TOKEN_RE = /^kedgeview1\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;

interface ViewerRecord {
  hash: string;
  createdAt: number;
  expiresAt: number;
}

/** What `check` says about a presented token. */
export type ViewerCheck = 'valid' | 'expired' | 'unknown';

/** Issues and checks viewer tokens. */
export class ViewerTokens {
  private readonly mirror: WatchedMap;
  private readonly clock: () => number;

  constructor(private readonly store: Store, opts: { logger: Logger; clock?: () => number }) {
    this.clock = opts.clock ?? Date.now;
    this.mirror = new WatchedMap(store, VIEWER_TOKEN_PREFIX, { logger: opts.logger, onChange: () => undefined });
  }

  start(): Promise<void> {
    return this.mirror.start();
  }

  /** Makes a token valid for `ttlMs`; only its hash is stored. */
  async create(ttlMs: number): Promise<{ token: string; id: string; expiresAt: string }> {
    if (!Number.isFinite(ttlMs) || ttlMs <= 0 || ttlMs > MAX_VIEWER_TTL_MS) {
      throw new KedgeError('KEDGE_TOKEN_INVALID_REQUEST', `viewer token ttl must be more than 0 and at most 365d`);
    }
    const id = randomBytes(16).toString('base64url');
    const secret = randomBytes(32).toString('base64url');
    const now = this.clock();
    const rec: ViewerRecord = { hash: createHash('sha256').update(secret).digest('base64url'), createdAt: now, expiresAt: now + ttlMs };
    const value = JSON.stringify(rec);
    await this.store.put(VIEWER_TOKEN_PREFIX + id, value);
    // Usable on this replica at once, before the watch echoes the put.
    this.mirror.table().set(id, value);
    return { token: `kedgeview1.${id}.${secret}`, id, expiresAt: new Date(rec.expiresAt).toISOString() };
  }

  /** True when `token` has the viewer token's shape (so a wrong one can be told apart from a wrong admin token). */
  static looksLike(token: string): boolean {
    return token.startsWith('kedgeview1.');
  }

  /** Checks a presented token against the mirrored records. */
  check(token: string): ViewerCheck {
    const m = TOKEN_RE.exec(token);
    if (!m) return 'unknown';
    const json = this.mirror.table().get(m[1]!);
    if (!json) return 'unknown';
    let rec: ViewerRecord;
    try {
      rec = JSON.parse(json) as ViewerRecord;
    } catch {
      return 'unknown';
    }
    const want = Buffer.from(rec.hash, 'base64url');
    const got = createHash('sha256').update(m[2]!).digest();
    if (want.length !== got.length || !timingSafeEqual(want, got)) return 'unknown';
    return this.clock() >= rec.expiresAt ? 'expired' : 'valid';
  }

  close(): void {
    this.mirror.close();
  }
}
