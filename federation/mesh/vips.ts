// Stable virtual IPs per service, allocated by the federation from a CIDR
// (default 240.240.0.0/16) and kept durable in the store, so DNS on a VM
// can answer for services that have no cluster IP. Allocation is
// create-only on both the service key and the address, so two replicas
// racing never hand one address to two services.
import { KedgeError, errorMessage, hasCode } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import type { Store } from '../store/types';
import { WatchedMap } from '../store/watched-map';

/** Store prefix: service key -> VIP. */
export const VIPS_PREFIX = '/kedge/vips/by-service/';
/** Store prefix: VIP -> service key (the uniqueness guard), or `released <key> <ms>` while a freed VIP is held back. */
export const VIP_INDEX_PREFIX = '/kedge/vips/by-address/';
/** How long a VIP stays with a service that has no endpoints and no subscribers, and how long a freed one is held back from other services. */
export const DEFAULT_VIP_RETENTION_MS = 24 * 60 * 60 * 1000;

/** The index value of a freed VIP: which service had it, and since when it is free. */
export function releasedMarker(key: string, atMs: number): string {
  return `released ${key} ${atMs}`;
}

/** Parses a released marker; undefined for an index entry that names a live owner. */
export function parseReleased(value: string): { key: string; atMs: number } | undefined {
  const m = /^released (\S+) (\d+)$/.exec(value);
  return m ? { key: m[1]!, atMs: Number(m[2]) } : undefined;
}

/** A parsed IPv4 CIDR. */
export interface Cidr4 {
  base: number;
  bits: number;
}

/** Parses an IPv4 CIDR such as 240.240.0.0/16. */
export function parseCidr4(s: string): Cidr4 {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const bits = m ? Number(m[5]) : NaN;
  if (!m || octets.some((o) => o > 255) || !(bits >= 8 && bits <= 30)) {
    throw new KedgeError('KEDGE_BAD_CIDR', `invalid VIP range "${s}": give an IPv4 CIDR between /8 and /30, such as 240.240.0.0/16`);
  }
  const ip = octets.reduce((acc, o) => acc * 256 + o, 0);
  const size = 2 ** (32 - bits);
  return { base: ip - (ip % size), bits };
}

function toIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/**
 * The first free address of the range in a deterministic walk that starts
 * at a hash of the service key (so allocations are spread and, absent
 * collisions, the same on every fresh mesh). Network and broadcast
 * addresses are skipped. Pure.
 */
export function pickVip(cidr: Cidr4, key: string, used: ReadonlySet<string>): string | undefined {
  const size = 2 ** (32 - cidr.bits);
  const usable = size - 2;
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619) >>> 0;
  for (let i = 0; i < usable; i++) {
    const ip = toIp(cidr.base + 1 + ((h + i) % usable));
    if (!used.has(ip)) return ip;
  }
  return undefined;
}

/**
 * Keeps the VIP table in memory (list + watch), allocates missing ones, and
 * frees those of services that have had no endpoints and no subscribers for
 * the retention period. A freed VIP is held back from every other service
 * for another retention period (a client that cached it must not reach a
 * different service), and given back if its own service returns.
 */
export class VipAllocator {
  private readonly mirror: WatchedMap;
  private readonly inFlight = new Set<string>();
  /** Service key -> when this replica first saw it unused. */
  private readonly idleSince = new Map<string, number>();
  /** Freed VIPs held back: address -> { key that had it, when }. */
  private readonly held = new Map<string, { key: string; atMs: number }>();
  private readonly retentionMs: number;
  private readonly clock: () => number;

  constructor(private readonly store: Store, private readonly cidr: Cidr4, private readonly opts: { logger: Logger; onChange: () => void; retentionMs?: number; clock?: () => number }) {
    this.mirror = new WatchedMap(store, VIPS_PREFIX, opts);
    this.retentionMs = opts.retentionMs ?? DEFAULT_VIP_RETENTION_MS;
    this.clock = opts.clock ?? Date.now;
  }

  async start(): Promise<void> {
    await this.mirror.start();
    const { kvs } = await this.store.list(VIP_INDEX_PREFIX);
    for (const kv of kvs) {
      const r = parseReleased(kv.value);
      if (r) this.held.set(kv.key.slice(VIP_INDEX_PREFIX.length), r);
    }
  }

  /**
   * Frees the VIP of every service `inUse` says is unused (no endpoints, no
   * subscribers) and has been for the retention period, and forgets freed
   * VIPs whose hold-back period is over. Returns the keys freed.
   */
  async sweep(inUse: (key: string) => boolean): Promise<string[]> {
    const now = this.clock();
    const freed: string[] = [];
    for (const [key, ip] of [...this.byService]) {
      if (inUse(key)) {
        this.idleSince.delete(key);
        continue;
      }
      const since = this.idleSince.get(key);
      if (since === undefined) {
        this.idleSince.set(key, now);
        continue;
      }
      if (now - since < this.retentionMs) continue;
      const idx = await this.store.get(VIP_INDEX_PREFIX + ip);
      const vip = await this.store.get(VIPS_PREFIX + key);
      if (!vip || vip.value !== ip) continue;
      try {
        // Mark the address released first: it is never free for another service while the binding is being removed.
        await this.store.put(VIP_INDEX_PREFIX + ip, releasedMarker(key, now), { expectRevision: idx?.modRevision ?? 0 });
        await this.store.delete(VIPS_PREFIX + key, { expectRevision: vip.modRevision });
      } catch (err) {
        if (hasCode(err, 'KEDGE_STORE_CONFLICT')) continue;
        throw err;
      }
      this.byService.delete(key);
      this.idleSince.delete(key);
      this.held.set(ip, { key, atMs: now });
      freed.push(key);
      this.opts.logger.info({ service: key, vip: ip, idleMs: now - since }, 'freed the VIP of a service with no endpoints and no subscribers');
    }
    for (const [ip, r] of [...this.held]) {
      if (now - r.atMs < this.retentionMs) continue;
      const idx = await this.store.get(VIP_INDEX_PREFIX + ip);
      if (idx && parseReleased(idx.value)?.atMs === r.atMs) await this.store.delete(idx.key, { expectRevision: idx.modRevision }).catch(() => undefined);
      this.held.delete(ip);
    }
    if (freed.length > 0) this.opts.onChange();
    return freed;
  }

  /** The current table (service key -> VIP). */
  table(): ReadonlyMap<string, string> {
    return this.mirror.table();
  }

  private get byService(): Map<string, string> {
    return this.mirror.table();
  }

  /** Allocates VIPs for the keys that have none; calls onChange when any was added. */
  ensure(keys: Iterable<string>): void {
    for (const key of keys) {
      if (this.byService.has(key) || this.inFlight.has(key)) continue;
      this.inFlight.add(key);
      void this.allocate(key)
        .then(() => this.opts.onChange())
        .catch((err) => this.opts.logger.error({ service: key, err: errorMessage(err) }, 'cannot allocate a VIP'))
        .finally(() => this.inFlight.delete(key));
    }
  }

  close(): void {
    this.mirror.close();
  }

  private async allocate(key: string): Promise<void> {
    for (let attempt = 0; attempt < 64; attempt++) {
      const existing = await this.store.get(VIPS_PREFIX + key);
      if (existing) {
        this.byService.set(key, existing.value);
        return;
      }
      const used = new Set(this.byService.values());
      const now = this.clock();
      for (const [heldIp, r] of this.held) if (r.key !== key && now - r.atMs < this.retentionMs) used.add(heldIp);
      const ip = pickVip(this.cidr, key, used);
      if (!ip) throw new KedgeError('KEDGE_VIP_EXHAUSTED', `the VIP range has no free address left for ${key}; configure a larger vipCidr`);
      let claimed = true;
      try {
        // Claim the address first; only its owner may then bind the service to it.
        await this.store.put(VIP_INDEX_PREFIX + ip, key, { expectRevision: 0 });
      } catch (err) {
        if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
        const owner = await this.store.get(VIP_INDEX_PREFIX + ip);
        const released = owner ? parseReleased(owner.value) : undefined;
        if (owner && released) {
          // A freed address: its own service takes it back, others only after the hold-back period.
          if (released.key !== key && now - released.atMs < this.retentionMs) {
            this.held.set(ip, released);
            continue;
          }
          try {
            await this.store.put(owner.key, key, { expectRevision: owner.modRevision });
            this.held.delete(ip);
          } catch (e) {
            if (!hasCode(e, 'KEDGE_STORE_CONFLICT')) throw e;
            continue;
          }
        } else {
          // Another replica is allocating the same service (the walk starts at
          // the same place everywhere) and claimed this address for it: the
          // binding may be completed by either replica.
          if (owner?.value !== key) {
            if (owner) this.byService.set(owner.value, ip);
            continue;
          }
          claimed = false;
        }
      }
      try {
        await this.store.put(VIPS_PREFIX + key, ip, { expectRevision: 0 });
        this.byService.set(key, ip);
        this.opts.logger.info({ service: key, vip: ip }, 'allocated VIP');
        return;
      } catch (err) {
        if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
        // Another replica bound this service first. It may have bound it to
        // the address we claimed (see above); otherwise give the address back.
        const bound = await this.store.get(VIPS_PREFIX + key);
        if (claimed && bound?.value !== ip) await this.store.delete(VIP_INDEX_PREFIX + ip).catch(() => undefined);
        if (bound) {
          this.byService.set(key, bound.value);
          return;
        }
      }
    }
    throw new KedgeError('KEDGE_VIP_CONTENDED', `could not allocate a VIP for ${key} after 64 attempts`);
  }
}
