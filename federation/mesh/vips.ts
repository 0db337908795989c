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
/** Store prefix: VIP -> service key (the uniqueness guard). */
export const VIP_INDEX_PREFIX = '/kedge/vips/by-address/';

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

/** Keeps the VIP table in memory (list + watch) and allocates missing ones. */
export class VipAllocator {
  private readonly mirror: WatchedMap;
  private readonly inFlight = new Set<string>();

  constructor(private readonly store: Store, private readonly cidr: Cidr4, private readonly opts: { logger: Logger; onChange: () => void }) {
    this.mirror = new WatchedMap(store, VIPS_PREFIX, opts);
  }

  start(): Promise<void> {
    return this.mirror.start();
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
      const ip = pickVip(this.cidr, key, used);
      if (!ip) throw new KedgeError('KEDGE_VIP_EXHAUSTED', `the VIP range has no free address left for ${key}; configure a larger vipCidr`);
      let claimed = true;
      try {
        // Claim the address first; only its owner may then bind the service to it.
        await this.store.put(VIP_INDEX_PREFIX + ip, key, { expectRevision: 0 });
      } catch (err) {
        if (!hasCode(err, 'KEDGE_STORE_CONFLICT')) throw err;
        const owner = await this.store.get(VIP_INDEX_PREFIX + ip);
        // Another replica is allocating the same service (the walk starts at
        // the same place everywhere) and claimed this address for it: the
        // binding may be completed by either replica.
        if (owner?.value !== key) {
          if (owner) this.byService.set(owner.value, ip);
          continue;
        }
        claimed = false;
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
