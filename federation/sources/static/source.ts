// The `static` source: service entries from the federation config, fixed
// for the life of the process. Always connected; its endpoints are HEALTHY
// (Kedge does not probe them), unmeshed and without identity.
import type { MeshEndpoint } from '../../mesh/types';
import type { Source, SourceService, SourceStatus } from '../types';
import type { ServiceEntry } from './entries';

/** The source name static entries appear under in `kedge get clusters`. */
export const STATIC_SOURCE_NAME = 'static';

/** Maps validated entries to source services, sorted by namespace then name. Pure. */
export function servicesFromEntries(entries: readonly ServiceEntry[]): SourceService[] {
  return entries
    .map((e): SourceService => ({
      name: e.name,
      namespace: e.namespace,
      ports: e.ports.map((p) => ({ ...p })).sort((a, b) => a.port - b.port || a.name.localeCompare(b.name)),
      endpoints: e.endpoints
        .map((ep): MeshEndpoint => ({
          address: ep.address,
          ports: e.ports.map((p) => ({ name: p.name, port: ep.ports[p.name] ?? p.targetPort })),
          mtlsPort: 0,
          locality: { ...ep.locality },
          cluster: e.cluster,
          network: ep.network,
          health: 'HEALTHY',
          weight: ep.weight,
          labels: { ...ep.labels },
          identity: '',
          meshed: false,
          workload: `static/${e.namespace}/${e.name}/${ep.address}`,
        }))
        .sort((a, b) => a.address.localeCompare(b.address)),
    }))
    .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
}

/** Service entries as a Source. */
export class StaticSource implements Source {
  readonly kind = 'static' as const;
  readonly name: string;
  private readonly view: readonly SourceService[];
  private startedAt: string | undefined;

  constructor(opts: { entries: readonly ServiceEntry[]; name?: string }) {
    this.name = opts.name ?? STATIC_SOURCE_NAME;
    this.view = servicesFromEntries(opts.entries);
  }

  async start(onChange: () => void): Promise<void> {
    this.startedAt = new Date().toISOString();
    onChange();
  }

  services(): readonly SourceService[] {
    return this.view;
  }

  status(): SourceStatus {
    return {
      name: this.name,
      kind: this.kind,
      connected: true,
      lastSync: this.startedAt,
      stale: false,
      error: undefined,
      services: this.view.length,
      endpoints: this.view.reduce((n, s) => n + s.endpoints.length, 0),
    };
  }

  async close(): Promise<void> {}
}
