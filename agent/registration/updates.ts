// Applies the federation's per-service updates to the agent's state in two
// phases: every service is checked off to the side (a malformed one rejects
// only itself and is NACKed), then the proxy snapshot is rebuilt and swapped
// once. Pure.
import type { AuthzMatcher } from '../../policy/authz/compile';
import type { PeerAuthResolution } from '../../policy/peer-auth/model';
import { isIP } from 'node:net';
import type { Service__Output, ServiceUpdate__Output } from '../../proto/loader';
import { parseSpiffeId } from '../../proto/model/spiffe';
import type { ProxySnapshot, ServiceView } from '../proxy/types';
import { validateTrafficPolicy, type TrafficPolicy } from '../../policy/traffic-policy';
import { compileServiceRoutes } from '../../policy/routes/compile';
import { validateRouteDocument } from '../../policy/routes/documents';
import type { FaultObject, RouteObject } from '../../policy/routes/model';
import type { ServiceRoutes } from '../../policy/routes/types';

/** The result of applying one update. */
export interface AppliedUpdate {
  services: Map<string, Service__Output>;
  /** One line per rejected service; empty means ACK. */
  rejected: string[];
}

/** Why a pushed service cannot be used, or undefined when it can. */
export function checkService(s: Service__Output): string | undefined {
  if (!s.key || s.key !== `${s.name}.${s.namespace}`) return `service key "${s.key}" does not match ${s.name}.${s.namespace}`;
  if (!s.hostname) return `service ${s.key} has no hostname`;
  if (s.trafficPolicy) {
    const r = policyOf(s);
    if (typeof r === 'string') return `service ${s.key}: traffic policy rejected: ${r}`;
  }
  if (s.routes) {
    const r = routeDocumentsOf(s);
    if (typeof r === 'string') return `service ${s.key}: routes rejected: ${r}`;
  }
  for (const e of s.endpoints) {
    if (isIP(e.address) === 0) return `service ${s.key}: endpoint address "${e.address}" is not an IP`;
    if (e.meshed) {
      if (!(e.mtlsPort >= 1 && e.mtlsPort <= 65535)) return `service ${s.key}: endpoint ${e.address} has mTLS port ${e.mtlsPort}`;
      if (!parseSpiffeId(e.identity)) return `service ${s.key}: endpoint ${e.address} has no valid SPIFFE identity`;
    } else {
      // A plaintext endpoint is dialled at these ports.
      const bad = e.ports.find((p) => !(p.port >= 1 && p.port <= 65535));
      if (bad) return `service ${s.key}: plaintext endpoint ${e.address} has port ${bad.port} for "${bad.name}"`;
    }
  }
  return undefined;
}

/** The service's validated traffic policy, undefined for none, or why it is unusable. */
export function policyOf(s: Service__Output): TrafficPolicy | undefined | string {
  if (!s.trafficPolicy) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(s.trafficPolicy);
  } catch {
    return 'not JSON';
  }
  const r = validateTrafficPolicy(doc);
  return r.ok ? r.value.policy : r.errors.join('; ');
}

/** The service's route documents, validated again (the federation already did), or why they are unusable. */
export function routeDocumentsOf(s: Service__Output): { routes: RouteObject[]; faults: Map<string, FaultObject> } | string {
  let docs: unknown;
  try {
    docs = JSON.parse(s.routes);
  } catch {
    return 'not JSON';
  }
  if (!Array.isArray(docs)) return 'not a list of documents';
  const routes: RouteObject[] = [];
  const faults = new Map<string, FaultObject>();
  const errors: string[] = [];
  for (const doc of docs) {
    const r = validateRouteDocument(doc);
    if (!r.ok) errors.push(...r.errors);
    else if (r.value.kind === 'FaultInjection') faults.set(`${r.value.namespace}/${r.value.name}`, r.value);
    else routes.push(r.value);
  }
  return errors.length ? errors.join('; ') : { routes, faults };
}

/** The service's routes compiled for a client in `clientNamespace`; undefined when none attach. */
function routesOf(s: Service__Output, clientNamespace: string): ServiceRoutes | undefined {
  if (!s.routes) return undefined;
  const r = routeDocumentsOf(s);
  // checkService already refused a service whose routes do not validate.
  if (typeof r === 'string') return undefined;
  return compileServiceRoutes({ key: s.key, namespace: s.namespace, ports: s.ports }, r.routes, r.faults, clientNamespace);
}

/** Applies an update to the current services. */
export function applyUpdate(current: ReadonlyMap<string, Service__Output>, update: ServiceUpdate__Output): AppliedUpdate {
  const services = new Map(current);
  const rejected: string[] = [];
  for (const s of update.services) {
    const why = checkService(s);
    if (why) rejected.push(why);
    else services.set(s.key, s);
  }
  for (const key of update.removed) services.delete(key);
  return { services, rejected };
}

// applyUpdate keeps the same object for services an update left alone, so
// their views are reused and the proxy rebuilds only changed balancers.
// An agent has one namespace, so the cache needs no namespace key.
const views = new WeakMap<Service__Output, ServiceView>();

/**
 * Converts the agent's services into the proxy's immutable snapshot. Routes
 * are compiled for clients in `clientNamespace` (the agent's workload
 * namespace: consumer routes of that namespace apply, GEP-1294); revoked
 * serials travel with it so listeners refuse them.
 */
export function toProxySnapshot(services: ReadonlyMap<string, Service__Output>, version: string, clientNamespace = 'default', revokedSerials?: ReadonlySet<string>, security: { authorization?: AuthzMatcher | undefined; peerAuthentication?: PeerAuthResolution | undefined } = {}): ProxySnapshot {
  const { authorization, peerAuthentication } = security;
  const out = new Map<string, ServiceView>();
  for (const s of services.values()) {
    let view = views.get(s);
    if (!view) {
      view = toServiceView(s, clientNamespace);
      views.set(s, view);
    }
    out.set(s.key, view);
  }
  return Object.freeze({ version, services: out, ...(revokedSerials && revokedSerials.size > 0 ? { revokedSerials } : {}), ...(authorization && !authorization.empty ? { authorization } : {}), ...(peerAuthentication ? { peerAuthentication } : {}) });
}

function toServiceView(s: Service__Output, clientNamespace: string): ServiceView {
  const routes = routesOf(s, clientNamespace);
  return Object.freeze({
      key: s.key,
      hostname: s.hostname,
      vip: s.vip,
      version: s.version,
      policy: policyOf(s) as TrafficPolicy | undefined,
      ...(routes ? { routes } : {}),
      ports: Object.freeze(s.ports.map((p) => Object.freeze({ name: p.name, port: p.port, protocol: p.protocol }))),
      // Every endpoint (auto mTLS): meshed ones are dialled over mTLS and
      // must present their SPIFFE ID; plaintext ones (unmeshed pods, Consul
      // instances, service entries) in plain TCP at their own port, with
      // nothing checking who answers. A client with a network never
      // receives another network's plaintext endpoints: the federation
      // drops them, since a gateway carries mesh TLS only.
      endpoints: Object.freeze(
        s.endpoints.map((e) => Object.freeze({
          address: e.address, mtlsPort: e.mtlsPort, identity: e.identity, workload: e.workload, plaintext: !e.meshed,
          // STALE is last-known state from a source that lost its backend: still routable.
          healthy: e.health !== 'UNHEALTHY',
          ports: Object.freeze(e.ports.map((p) => ({ name: p.name, port: p.port }))),
          locality: { region: e.locality?.region ?? '', zone: e.locality?.zone ?? '', subzone: e.locality?.subzone ?? '' },
          network: e.network, cluster: e.cluster, labels: Object.freeze({ ...e.labels }), weight: e.weight || 1,
        })),
      ),
    });
}
