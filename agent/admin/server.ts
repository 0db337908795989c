// The agent's admin endpoint (localhost): GET /config (services and
// endpoints held, with the acked version, and each service's balancer),
// GET /balancer (per service: each endpoint's priority, health, ejection and
// share of new connections, and panic), GET /certs (identity and trust
// bundle), GET /stats (proxy counters), GET /healthz/ready.
import * as http from 'node:http';
import { X509Certificate } from 'node:crypto';
import type { Service__Output } from '../../proto/loader';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import { HostPort, formatHostPort } from '../../proto/model/address';
import { formatLocality } from '../../proto/model/locality';
import type { BalancerState } from '../proxy/balancers';
import type { TlsIdentity } from '../proxy/types';
import type { SessionStatus } from '../registration/session';
import type { Logger } from '../../proto/model/log';
import { LIMITS, type ListenerLimits } from '../../proto/model/limits';
import { guardListener } from '../../proto/model/listener-guard';

/** What the admin endpoint reads from the agent. */
export interface AdminDeps {
  identity: () => TlsIdentity | undefined;
  /** Serials the federation revoked, as the proxy holds them. */
  revokedSerials?: () => ReadonlySet<string>;
  services: () => ReadonlyMap<string, Service__Output>;
  session: () => SessionStatus | undefined;
  stats: () => unknown;
  ready: () => boolean;
  /** The proxy's balancers (Proxy.describeBalancers); /balancer answers 503 without it. */
  balancer?: () => BalancerState;
  /** Connection limits and idle timeout (limits.admin); the limits table's by default. */
  limits?: ListenerLimits;
  /** Where refused and idle-closed connections are logged (at a bounded rate). */
  logger?: Logger;
}

/** Starts the admin server; rejects with KEDGE_LISTEN_FAILED when the address is taken. */
export async function startAdmin(listen: HostPort, deps: AdminDeps): Promise<{ address: HostPort; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body, null, 2);
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(text);
    };
    try {
      if (req.method !== 'GET') return send(405, { code: 'KEDGE_METHOD', message: 'the admin endpoint is read-only; use GET' });
      switch (new URL(req.url ?? '/', 'http://x').pathname) {
        case '/config':
          return send(200, configDump(deps));
        case '/certs':
          return send(200, { ...certsDump(deps.identity()), revokedSerials: [...(deps.revokedSerials?.() ?? [])].sort() });
        case '/stats':
          return send(200, deps.stats());
        case '/balancer':
          return deps.balancer ? send(200, deps.balancer()) : send(503, { code: 'KEDGE_NO_BALANCER', message: 'this agent does not expose its balancers; pass balancer to startAdmin' });
        case '/healthz/ready':
          return deps.ready() ? send(200, { status: 'ready' }) : send(503, { status: 'not ready' });
        default:
          return send(404, { code: 'KEDGE_NOT_FOUND', message: 'try /config, /balancer, /certs, /stats or /healthz/ready' });
      }
    } catch (err) {
      send(500, { code: 'KEDGE_INTERNAL', message: errorMessage(err) });
    }
  });
  const limits = deps.limits ?? LIMITS.agent.admin;
  server.keepAliveTimeout = Math.min(5_000, limits.idleTimeoutMs);
  if (deps.logger) guardListener(server, { name: 'agent admin', setting: 'limits.admin', limits, logger: deps.logger });
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', (err) => reject(new KedgeError('KEDGE_LISTEN_FAILED', `cannot listen for admin on ${formatHostPort(listen)}: ${errorMessage(err)}; set admin.listen to a free address`, { cause: err })));
    server.listen(listen.port, listen.host, () => resolve((server.address() as { port: number }).port));
  });
  return {
    address: { host: listen.host, port },
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

function configDump(deps: AdminDeps) {
  const session = deps.session();
  const balancers = deps.balancer?.().services ?? {};
  return {
    version: session?.ackedVersion ?? '',
    federation: session,
    services: [...deps.services().values()].map((s) => ({
      key: s.key,
      hostname: s.hostname,
      vip: s.vip,
      version: s.version,
      trafficPolicy: s.trafficPolicy ? JSON.parse(s.trafficPolicy) : undefined,
      // The route documents the agent holds for the service (HTTPRoute, GRPCRoute, FaultInjection).
      routes: s.routes ? JSON.parse(s.routes) : undefined,
      ports: s.ports,
      endpoints: s.endpoints.map((e) => ({
        address: e.address,
        mtlsPort: e.mtlsPort,
        // false: no Kedge proxy in front; dialled in plain TCP at `ports`, unauthenticated.
        meshed: e.meshed,
        ports: e.ports,
        identity: e.identity,
        workload: e.workload,
        health: e.health,
        locality: formatLocality(e.locality),
        network: e.network,
        cluster: e.cluster,
      })),
      // null when the proxy holds no balancer for it (balancer not wired, or the snapshot not swapped in yet).
      balancer: balancers[s.key] ?? null,
    })),
  };
}

function certsDump(id: TlsIdentity | undefined) {
  if (!id) return { spiffeId: null };
  const leaf = new X509Certificate(id.certChainPem);
  return {
    spiffeId: id.spiffeId,
    serial: id.serial,
    notBefore: new Date(leaf.validFrom).toISOString(),
    notAfter: id.notAfter.toISOString(),
    chainPem: id.certChainPem,
    trustBundlePem: id.trustBundlePem,
  };
}
