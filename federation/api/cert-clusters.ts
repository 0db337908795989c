// Remembers which Kubernetes cluster admitted the holder of a certificate
// (pods join with their service-account token). The SPIFFE ID names no
// cluster, so the binding is kept per certificate serial in the store and
// carried over on renewal. It is what lets the merge mesh a pod's
// EndpointSlice endpoint with its agent. Entries are durable (an embedded
// store keeps leased keys in memory only, and a federation restart must not
// unmesh pods) and carry their certificate's expiry; expired ones are
// removed by sweep().
import type { Store } from '../store/types';

/** Store prefix: certificate serial -> {cluster, notAfter}. */
export const CERT_CLUSTERS_PREFIX = '/kedge/cert-clusters/';

/** Serial-to-cluster bindings of pod certificates. */
export class CertClusters {
  constructor(private readonly store: Store, private readonly clock: () => number = Date.now) {}

  async put(serial: string, cluster: string, ttlMs: number): Promise<void> {
    await this.store.put(CERT_CLUSTERS_PREFIX + serial.toUpperCase(), JSON.stringify({ cluster, notAfter: this.clock() + ttlMs }));
  }

  async get(serial: string): Promise<string | undefined> {
    const kv = await this.store.get(CERT_CLUSTERS_PREFIX + serial.toUpperCase());
    if (!kv) return undefined;
    const v = JSON.parse(kv.value) as { cluster: string; notAfter: number };
    return v.notAfter > this.clock() ? v.cluster : undefined;
  }

  /** Deletes bindings of expired certificates; returns how many. */
  async sweep(): Promise<number> {
    const { kvs } = await this.store.list(CERT_CLUSTERS_PREFIX);
    let n = 0;
    for (const kv of kvs) {
      const v = JSON.parse(kv.value) as { notAfter: number };
      if (v.notAfter <= this.clock()) {
        await this.store.delete(kv.key, { expectRevision: kv.modRevision }).catch(() => undefined);
        n += 1;
      }
    }
    return n;
  }
}
