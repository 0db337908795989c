// The gateway's routing decisions, pure: from a mesh SNI to the service
// port it names and the local endpoints that serve it, and the order in
// which one connection tries them. Sockets live in gateway.ts.
import { KedgeError } from '../../proto/model/errors';
import { parseSni } from '../../proto/model/sni';
import { TRAFFIC_POLICY_DEFAULTS } from '../../policy/traffic-policy';
import type { EndpointView, ProxySnapshot, ServiceView } from '../proxy/types';

/** Where one SNI leads: a service port and the endpoints to balance over. */
export interface GatewayRoute {
  service: ServiceView;
  /** Service port, as the SNI names it. */
  port: number;
  /** `<port>/<hostname>`: the round-robin key and the stats key. */
  key: string;
  /** Healthy local endpoints serving the port (all that serve it when none is healthy); never empty. */
  pool: readonly EndpointView[];
}

// Snapshots and service views are immutable and replaced as a whole, so the
// indexes below are built once per object and dropped with it.
const byHostname = new WeakMap<ProxySnapshot, ReadonlyMap<string, ServiceView>>();
const pools = new WeakMap<ServiceView, Map<number, readonly EndpointView[]>>();

/** The snapshot's services by lower-case hostname (an SNI names the hostname, the snapshot is keyed by name.namespace). */
export function hostnameIndex(snapshot: ProxySnapshot): ReadonlyMap<string, ServiceView> {
  let index = byHostname.get(snapshot);
  if (index === undefined) {
    const m = new Map<string, ServiceView>();
    for (const s of snapshot.services.values()) m.set(s.hostname.toLowerCase(), s);
    index = m;
    byHostname.set(snapshot, index);
  }
  return index;
}

/**
 * The endpoints a gateway forwards `port` of `service` to: meshed ones with
 * an mTLS port (the gateway only carries mesh TLS, so a plaintext endpoint
 * is unreachable through it) that serve the port's name (or list no ports),
 * healthy ones only unless none is healthy: then all of them, as the proxy
 * does, because a client in panic mode is better served by a try than by a
 * refusal.
 */
export function endpointPool(service: ServiceView, port: number): readonly EndpointView[] {
  let byPort = pools.get(service);
  if (byPort === undefined) {
    byPort = new Map();
    pools.set(service, byPort);
  }
  let pool = byPort.get(port);
  if (pool === undefined) {
    const name = service.ports.find((p) => p.port === port)?.name;
    const serving = service.endpoints.filter((e) => !e.plaintext && e.mtlsPort > 0 && (e.ports.length === 0 || e.ports.some((p) => p.name === name)));
    const healthy = serving.filter((e) => e.healthy);
    pool = healthy.length > 0 ? healthy : serving;
    byPort.set(port, pool);
  }
  return pool;
}

/**
 * Resolves a ClientHello's server name to a route. Throws KedgeError:
 * KEDGE_BAD_SNI (not a mesh name), KEDGE_UNKNOWN_SERVICE (no such service
 * in the gateway's view), KEDGE_UNKNOWN_SERVICE_PORT, KEDGE_NO_ENDPOINTS.
 */
export function resolveRoute(snapshot: ProxySnapshot, sni: string): GatewayRoute {
  const { port, hostname } = parseSni(sni.toLowerCase());
  const service = hostnameIndex(snapshot).get(hostname);
  if (service === undefined) {
    throw new KedgeError('KEDGE_UNKNOWN_SERVICE', `SNI ${sni} names ${hostname}, which is not in this gateway's view; check the client's service name and that the federation pushes the service to the gateway`);
  }
  if (!service.ports.some((p) => p.port === port)) {
    throw new KedgeError('KEDGE_UNKNOWN_SERVICE_PORT', `SNI ${sni} names port ${port} of ${service.key}, which has ${service.ports.map((p) => p.port).join(', ') || 'no ports'}`);
  }
  const pool = endpointPool(service, port);
  if (pool.length === 0) {
    throw new KedgeError('KEDGE_NO_ENDPOINTS', `${service.key} has no meshed endpoint for port ${port} on this gateway's network; check that its workloads here are registered and meshed`);
  }
  return { service, port, key: `${port}/${hostname}`, pool };
}

const routeViews = new WeakMap<readonly EndpointView[], ServiceView>();

/**
 * The service view the gateway balances one route over: keyed by the
 * route (`<port>/<hostname>`), holding the route's pool, balanced round
 * robin (the gateway carries whole mTLS connections from many clients and
 * has no locality of its own; the service's outlier settings still apply).
 * One object per pool, so the balancer's entry is rebuilt only when the
 * pool changes.
 */
export function routeView(route: GatewayRoute): ServiceView {
  let v = routeViews.get(route.pool);
  if (v === undefined) {
    const policy = route.service.policy ?? TRAFFIC_POLICY_DEFAULTS;
    v = { ...route.service, key: route.key, endpoints: route.pool, policy: { ...policy, loadBalancer: 'round-robin' } };
    routeViews.set(route.pool, v);
  }
  return v;
}
