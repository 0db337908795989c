// Plain connection counters. Listeners bump them on the hot path (map
// lookups keyed by precomputed strings); stats() copies them out so a reader
// never sees, or holds, the live objects.

/** Totals for one direction, peer or endpoint. */
export interface ConnectionCounters {
  total: number;
  active: number;
  failed: number;
}

/** Failures by KedgeError code, e.g. KEDGE_PEER_IDENTITY_MISMATCH. */
export type FailureCounts = Record<string, number>;

/**
 * A copy of the proxy's counters. `total` counts accepted connections,
 * `active` those being forwarded now, `failed` those closed without being
 * forwarded (inbound: refused handshake, bad SNI, no or unreachable target,
 * plaintext in STRICT mode; outbound: unknown service, no endpoints, every
 * attempt failed, outside the registry). Outbound `byEndpoint` and
 * `failures` count connect attempts, so a connection that was retried twice
 * shows up on three endpoints. `passthrough` is the part of the totals that
 * bypassed mesh TLS with capture on: inbound plaintext and non-mesh TLS
 * handed to the app, outbound connections to destinations outside the mesh.
 */
export interface ProxyStats {
  inbound: ConnectionCounters & { byPeer: Record<string, ConnectionCounters>; failures: FailureCounts; passthrough: ConnectionCounters };
  outbound: ConnectionCounters & { byEndpoint: Record<string, ConnectionCounters>; failures: FailureCounts; passthrough: ConnectionCounters };
}

/** The live counters of one direction. */
export class DirectionCounters {
  readonly totals: ConnectionCounters = { total: 0, active: 0, failed: 0 };
  /** The connections (also in totals) forwarded outside mesh TLS; see ProxyStats. */
  readonly passthrough: ConnectionCounters = { total: 0, active: 0, failed: 0 };
  private readonly by = new Map<string, ConnectionCounters>();
  private readonly failures = new Map<string, number>();

  /** Counters for one peer or endpoint, created on first use. */
  key(k: string): ConnectionCounters {
    let c = this.by.get(k);
    if (c === undefined) {
      c = { total: 0, active: 0, failed: 0 };
      this.by.set(k, c);
    }
    return c;
  }

  failure(code: string): void {
    this.failures.set(code, (this.failures.get(code) ?? 0) + 1);
  }

  /** Copies: totals, the per-key breakdown and failures by code. */
  snapshot(): { totals: ConnectionCounters; by: Record<string, ConnectionCounters>; failures: FailureCounts; passthrough: ConnectionCounters } {
    const by: Record<string, ConnectionCounters> = {};
    for (const [k, c] of this.by) by[k] = { ...c };
    return { totals: { ...this.totals }, by, failures: Object.fromEntries(this.failures), passthrough: { ...this.passthrough } };
  }
}

/** The error code to count for anything thrown or emitted on a socket. */
export function failureCode(err: unknown, fallback: string): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('KEDGE_') ? code : fallback;
}
