// Assembles a federation replica: store, CA, tokens, agent registry, mesh
// view, push, and the gRPC and HTTP listeners.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { kedgeProto } from '../proto/loader';
import { KedgeError, errorMessage } from '../proto/model/errors';
import type { Logger } from '../proto/model/log';
import { formatHostPort, HostPort } from '../proto/model/address';
import { federationSpiffeId } from '../proto/model/spiffe';
import type { EtcdAccessConfig, FederationConfig } from './config';
import { openEmbeddedStore } from './store/embedded';
import { openEtcdStore } from './store/etcd';
import type { EtcdSecurity } from './store/etcd-rpc';
import type { Source, SourceService, SourceStatus } from './sources/types';
import { FederationMetrics } from './metrics';
import { TrafficStatsStore } from './stats';
import { SharedTraffic } from './traffic-share';
import { TRAFFIC_WINDOW_MS } from './api/dashboard-state';
import type { KubernetesSource } from './sources/kubernetes';
import { ConsulSource } from './sources/consul';
import { StaticSource } from './sources/static';
import { VipAllocator, parseCidr4 } from './mesh/vips';
import { PolicyTable } from './mesh/policies';
import { AuthzTable } from './mesh/authz';
import { RateLimitTable } from './mesh/ratelimits';
import { QuotaLeaser } from './quota/leases';
import { RouteTable, resolveRoutes, type ClusterRouteDocument, type ResolvedRoutes } from './mesh/routes';
import { gatewaysOfAgents, viewForNetwork } from './mesh/gateways';
import type { Store } from './store/types';
import { CaManager, type AgentCaView, type CaView } from './ca';
import { TokenService } from './tokens/tokens';
import { AgentRegistry, agentKey } from './sources/agents';
import { buildMeshView } from './mesh/merge';
import type { MeshView } from './mesh/types';
import { FederationService } from './api/grpc';
import { createHttpApi } from './api/http';
import { ServingContexts, serveHttpAndHttps } from './api/https';
import { ViewerTokens } from './api/viewer-tokens';
import { MemoryCertificateProvider } from './api/cert-provider';
import { ADMIN_TOKEN_KEY, loadOrCreateAdminToken } from './bootstrap';
import { refuseLostStore } from './store/data-dir-guard';
import { checkDataDirVersion, checkMeshRecord, pluginRootFingerprint, type CaSource } from './store/mesh-record';
import { exportBackup } from './store/backup';
import { readiness } from './health/readiness';
import { holdingRemovals, STARTUP_HOLD_MAX_MS } from './push/startup-hold';
import { CA_CHECK_MS, checkCaSigns } from './health/ca-check';
import { CertClusters } from './api/cert-clusters';
import { Bindings, REVOKED_PREFIX } from './grants/bindings';
import { WatchedMap } from './store/watched-map';
import type { MeshService } from './mesh/types';
import { readTextFile, writeFileAtomic } from '../proto/model/files';
import { guardListener, type GuardStats, type ListenerGuard } from '../proto/model/listener-guard';
import { warnIfDescriptorsShort } from '../proto/model/descriptors';

/** The audience pods must project their service-account token for. */
export const POD_TOKEN_AUDIENCE = 'kedge';

/** How often a replica checks whether a CA rotation can take its next step. */
export const CA_ROTATION_CHECK_MS = 1_000;
/**
 * After its start, a replica takes no rotation step for the grace period
 * plus this long: an agent's reconnect backoff is at most 5 s, jittered up
 * to 7.5 s.
 */
export const CA_ROTATION_SETTLE_MS = 10_000;

/** A running federation replica. */
export interface RunningFederation {
  grpcAddress: HostPort;
  httpAddress: HostPort;
  view(): MeshView;
  close(): Promise<void>;
  /** Connections open and refused per listener (limits.http, limits.grpc). */
  listeners(): { http: GuardStats; grpc: GuardStats };
  /** Sign calls in progress and refused by the throttle. */
  signThrottle(): { pending: number; refused: number; sources: number };
}

/** Options of one start, not kept in the config. */
export interface StartOptions {
  /** Start a new mesh even though the data dir shows an earlier one whose store is gone. */
  init?: boolean;
}

/** The running Kedge's version, recorded in store files and backups. */
export const KEDGE_VERSION: string = (require('../../package.json') as { version: string }).version;

/** Starts a replica; rejects (having released everything) when any part fails. */
export async function startFederation(config: FederationConfig, logger: Logger, start: StartOptions = {}): Promise<RunningFederation> {
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  // Before any file of the data dir is read: one from a newer Kedge is refused, naming it.
  checkDataDirVersion(config.dataDir, KEDGE_VERSION);
  const closers: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const c of closers.reverse()) {
      try {
        await c();
      } catch (err) {
        logger.warn({ err: errorMessage(err) }, 'error while shutting down');
      }
    }
  };
  try {
    const rawStore: Store =
      config.store.kind === 'etcd'
        ? await openEtcdStore(config.store.endpoints, { logger: logger.child({ component: 'store' }), security: readEtcdSecurity(config.store.access) })
        : await openEmbeddedStore(embeddedStoreParent(config.dataDir), { logger, kedgeVersion: KEDGE_VERSION });
    // Read at scrape time; the parts they name exist by the first scrape.
    let metricsSources: () => SourceStatus[] = () => [];
    let connectedAgents = () => 0;
    const metrics = new FederationMetrics({ replica: config.replica, storeKind: rawStore.kind, sources: () => metricsSources(), connectedAgents: () => connectedAgents() });
    const store = metrics.instrumentStore(rawStore);
    closers.push(() => store.close());
    await refuseLostStore(store, {
      dataDir: config.dataDir,
      adminTokenKey: ADMIN_TOKEN_KEY,
      init: start.init === true,
      where: config.store.kind === 'etcd' ? `etcd ${config.store.endpoints.join(',')}` : path.join(embeddedStoreParent(config.dataDir), 'store'),
    });

    // Every replica on this store must agree on the trust domain and the CA, and be no older than the newest that used it.
    const caSource: CaSource = config.caCertFile
      ? { kind: 'plug-in', certFile: config.caCertFile, rootFingerprint: pluginRootFingerprint(readTextFile(config.caCertFile, 'KEDGE_CA_INVALID', '--ca-cert'), config.caCertFile) }
      : { kind: 'built-in' };
    await checkMeshRecord(store, {
      trustDomain: config.trustDomain,
      ca: caSource,
      replica: config.replica,
      version: KEDGE_VERSION,
      where: config.store.kind === 'etcd' ? `etcd ${config.store.endpoints.join(',')}` : path.join(embeddedStoreParent(config.dataDir), 'store'),
    });

    const caManager = await CaManager.open({
      store,
      trustDomain: config.trustDomain,
      workloadTtlMs: config.workloadCertTtlMs,
      logger: logger.child({ component: 'ca' }),
      dataDir: config.dataDir,
      plugged: config.caCertFile && config.caKeyFile ? { certFile: config.caCertFile, keyFile: config.caKeyFile } : undefined,
      kek: config.caKek,
    });
    closers.push(() => caManager.close());
    const writeRoots = () => writeFileAtomic(path.join(config.dataDir, 'root-cert.pem'), caManager.current().roots.join(''), 0o644);
    writeRoots();
    const adminToken = await loadOrCreateAdminToken(store, config.dataDir);

    // The serving certificate names the federation by SPIFFE ID, so agents
    // can reach any replica at any address. It is issued again whenever the
    // trusted roots change (a rotation), and at half its lifetime.
    const provider = new MemoryCertificateProvider();
    let servingTimer: NodeJS.Timeout | undefined;
    closers.push(() => clearTimeout(servingTimer));
    // One issue at a time; a change while one runs issues again after it.
    let serving: Promise<void> = Promise.resolve();
    const issueServing = async () => {
      clearTimeout(servingTimer);
      let delay = 30_000;
      try {
        const id = await caManager.servingIdentity(federationSpiffeId(config.trustDomain), config.workloadCertTtlMs);
        if (id) {
          provider.update(caManager.current().roots.join(''), id.chainPem.join(''), id.keyPem);
          delay = Math.max(5_000, Math.floor((id.notAfter.getTime() - Date.now()) / 2));
        } else {
          logger.error({ retryInMs: delay }, 'no serving certificate for gRPC: the CA key is unavailable and no saved serving certificate is still valid; agents cannot connect to this replica until the CA key is available');
        }
      } catch (err) {
        logger.error({ err: errorMessage(err), retryInMs: delay }, 'cannot issue the federation serving certificate; retrying');
      }
      servingTimer = setTimeout(rotateServing, delay);
      servingTimer.unref();
    };
    const rotateServing = (): Promise<void> => (serving = serving.then(issueServing));
    closers.push(() => serving);
    await rotateServing();

    const tokens = new TokenService(store, { limits: config.tokenLimits });
    let view: MeshView = { services: new Map() };
    let service: FederationService | undefined;
    let pushTimer: NodeJS.Timeout | undefined;
    const sources = createSources(config, logger);
    // Routes are resolved again only when the applied table or a source's route list changed.
    let resolvedRoutes: { inputs: unknown[]; value: ResolvedRoutes } | undefined;
    const routeInputs = () => [routes.revision(), ...sources.map((src) => src.routes?.())];
    const clusterRoutes = (): ClusterRouteDocument[] => sources.flatMap((src) => (src.routes?.() ?? []).map((doc) => ({ cluster: src.name, doc })));
    const currentRoutes = (): ResolvedRoutes => {
      const inputs = routeInputs();
      if (!resolvedRoutes || inputs.some((v, i) => v !== resolvedRoutes!.inputs[i])) resolvedRoutes = { inputs, value: resolveRoutes(routes.table(), clusterRoutes()) };
      return resolvedRoutes.value;
    };
    const startedAt = Date.now();
    let holding = true;
    const holdNow = () => holdingRemovals({ now: Date.now(), startedAt, gracePeriodMs: config.gracePeriodMs, maxMs: STARTUP_HOLD_MAX_MS, sourcesSynced: sources.every((src) => src.status().lastSync !== undefined) });
    const holdTimer = setInterval(() => {
      if (holdNow()) return;
      holding = false;
      clearInterval(holdTimer);
      logger.info({ afterMs: Date.now() - startedAt }, 'startup hold over: pushing removals');
      scheduleRebuild();
    }, 250);
    holdTimer.unref();
    const rebuild = (): MeshView => {
      // A cluster's security policies go to agents on their own message; the table pushes when they change.
      for (const src of sources) if (src.securityPolicies) authz.setClusterDocuments(`cluster ${src.name}`, src.securityPolicies());
      const r = currentRoutes();
      const next = buildMeshView(registry.all(), { vips: vips.table(), policies: policies.table(), routes: r.perService }, sources.map((src) => src.services() as SourceService[]));
      vips.ensure(next.services.keys());
      return { services: next.services, routeBackends: r.backends, ...(holding ? { holdRemovals: true } : {}) };
    };
    // Debounced: a burst of changes becomes one recompute and one push.
    const scheduleRebuild = () => {
      if (pushTimer) return;
      pushTimer = setTimeout(() => {
        pushTimer = undefined;
        view = rebuild();
        service?.pushAll(view);
      }, config.pushDebounceMs);
    };
    const registry = new AgentRegistry(store, { replica: config.replica, gracePeriodMs: config.gracePeriodMs, logger, onChange: scheduleRebuild });
    const vips = new VipAllocator(store, parseCidr4(config.vipCidr), { logger, onChange: scheduleRebuild, retentionMs: config.vipRetentionMs });
    const policies = new PolicyTable(store, { logger, onChange: scheduleRebuild });
    const routes = new RouteTable(store, { logger, onChange: scheduleRebuild });
    // AuthorizationPolicies go to agents on their own message, not through the mesh view.
    const authz = new AuthzTable(store, { logger, onChange: () => service?.authorizationChanged() });
    closers.push(() => authz.close());
    // Rate limits and quotas, likewise on their own message, to the agents serving the targeted services.
    const rateLimits = new RateLimitTable(store, { logger, onChange: () => service?.rateLimitsChanged() });
    closers.push(() => rateLimits.close());
    const quotaLeaser = new QuotaLeaser({ store, replica: config.replica, logger: logger.child({ component: 'quota' }), quotas: () => rateLimits.quotas() });
    closers.push(() => quotaLeaser.close());
    closers.push(() => {
      clearInterval(holdTimer);
      registry.close();
      vips.close();
      policies.close();
      routes.close();
      if (pushTimer) clearTimeout(pushTimer);
    });
    await vips.start();
    await policies.start();
    await routes.start();
    await authz.start();
    await rateLimits.start();
    await registry.start();
    // Sources never block start-up: an unreachable backend retries in the background.
    await Promise.all(sources.map((src) => src.start(scheduleRebuild)));
    closers.push(() => Promise.all(sources.map((src) => src.close())).then(() => undefined));
    view = rebuild();

    const certClusters = new CertClusters(store);
    await certClusters.sweep().catch((err) => logger.warn({ err: errorMessage(err) }, 'cannot sweep expired pod certificate bindings'));
    const bindings = new Bindings(store);
    await bindings.sweep().catch((err) => logger.warn({ err: errorMessage(err) }, 'cannot sweep expired certificate bindings and revocations'));
    const sweepTimer = setInterval(() => void bindings.sweep().catch(() => undefined), 60 * 60_000);
    sweepTimer.unref();
    closers.push(() => clearInterval(sweepTimer));
    // Revoked serials, store-wide: every replica closes the streams of a
    // revoked certificate and pushes the list to its agents.
    let revokedSet: ReadonlySet<string> = new Set();
    const revocations = new WatchedMap(store, REVOKED_PREFIX, {
      logger,
      onChange: () => {
        revokedSet = new Set(revocations.table().keys());
        service?.revocationsChanged();
      },
    });
    await revocations.start();
    revokedSet = new Set(revocations.table().keys());
    closers.push(() => revocations.close());
    // VIPs of services with no endpoints and no subscribers (on any replica)
    // are freed after the retention period.
    const vipSweep = setInterval(() => {
      void (async () => {
        const subscribed = new Set<string>();
        for (const st of (await registry.statuses()).values()) for (const k of st.subscriptions) subscribed.add(k);
        for (const c of service?.connected.values() ?? []) for (const k of c.push.status().subscriptions) subscribed.add(k);
        await vips.sweep((k) => (view.services.get(k)?.endpoints.length ?? 0) > 0 || subscribed.has(k));
      })().catch((err) => logger.warn({ err: errorMessage(err) }, 'cannot sweep unused VIPs; retrying'));
    }, Math.max(1_000, Math.min(10 * 60_000, Math.floor(config.vipRetentionMs / 6))));
    vipSweep.unref();
    closers.push(() => clearInterval(vipSweep));
    const exported = new Set(config.exportedNamespaces);
    const exportsAll = exported.has('*');
    const kubeClusters = new Map(sources.flatMap((src) => (isKubernetes(src) ? [[src.name, src] as const] : [])));
    metricsSources = () => sources.map((src) => src.status());
    const trafficStats = new TrafficStatsStore();
    const sharedTraffic = new SharedTraffic(store, config.replica, trafficStats, { logger, windowMs: TRAFFIC_WINDOW_MS });
    await sharedTraffic.start();
    closers.push(() => sharedTraffic.close());
    service = new FederationService({
      metrics,
      trafficStats,
      bindings,
      revoked: () => revokedSet,
      authorizationFor: (w) => authz.documentsFor(w),
      rateLimitsFor: (services) => rateLimits.documentsFor(services),
      quotaLeaser,
      limits: config.registrationLimits,
      signLimits: config.limits.sign,
      logLimits: config.limits.log,
      certClusters,
      reviewPodToken: async (cluster, token) => {
        const c = kubeClusters.get(cluster);
        if (!c) {
          throw new KedgeError('KEDGE_UNAUTHENTICATED', `no Kubernetes cluster "${cluster}" in this federation's config (known: ${[...kubeClusters.keys()].join(', ') || 'none'}); set federation.cluster in the agent config`);
        }
        // Only tokens projected for Kedge's audience: a pod's default token
        // (audience: the API server) sent here could otherwise be replayed.
        return c.reviewToken(token, { audiences: [POD_TOKEN_AUDIENCE], cluster });
      },
      trustDomain: config.trustDomain,
      replica: config.replica,
      ca: () => caManager.authority(),
      issuers: () => caManager.current().issuers,
      bundle: () => ({ rootsPem: caManager.current().roots, sequence: caManager.current().sequence }),
      rootOf: (leafPem, spiffeId) => caManager.rootOf(leafPem, spiffeId),
      onIdentityReport: (agent) => {
        const r = caManager.current().state?.rotation;
        if (r?.phase === 'reissuing' && r.reissue && agent.certRoot !== r.to) service?.requestRenewal((c) => c === agent, 'CA rotation: renew under the new root');
      },
      tokens,
      registry,
      view: () => view,
      viewFor: (v, network, role) => {
        const forNetwork = viewForNetwork(v, network, gatewaysOfAgents(registry.all()), role);
        const out = v.holdRemovals ? { ...forNetwork, holdRemovals: true } : forNetwork;
        // A gateway carries only the namespaces exported to other networks.
        if (role !== 'gateway' || exportsAll) return out;
        const services = new Map<string, MeshService>();
        for (const [k, svc] of out.services) if (exported.has(svc.namespace)) services.set(k, svc);
        return { ...out, services };
      },
      logger,
    });
    connectedAgents = () => service?.connected.size ?? 0;
    const server = new grpc.Server({
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 5_000,
      'grpc.max_receive_message_length': config.registrationLimits.maxMessageBytes,
      'grpc.max_concurrent_streams': config.limits.grpc.maxConcurrentStreams,
    });
    server.addService(kedgeProto().kedge.v1.Federation.service, service.handlers());
    // Client certificates are requested but not required: a first Sign comes
    // with a join token; everything else is checked in authenticatePeer.
    const creds = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
    // Kedge accepts the TCP connections itself and hands them to gRPC, so
    // the connection limits and the idle timeout apply before TLS.
    const injector = server.createConnectionInjector(creds);
    // Sockets not yet handed to an HTTP/2 session (mid-handshake) are not gRPC's to close.
    const grpcSockets = new Set<net.Socket>();
    const grpcFront = net.createServer((socket) => {
      grpcSockets.add(socket);
      socket.once('close', () => grpcSockets.delete(socket));
      injector.injectConnection(socket);
    });
    grpcFront.on('error', (err) => logger.warn({ err: errorMessage(err) }, 'gRPC listener error'));
    const grpcGuard: ListenerGuard = guardListener(grpcFront, { name: 'federation gRPC', setting: 'limits.grpc', limits: config.limits.grpc, logger, log: config.limits.log });
    const grpcPort = await listen(grpcFront, config.listenGrpc, 'gRPC');
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          grpcFront.close();
          const t = setTimeout(() => {
            server.forceShutdown();
            for (const s of grpcSockets) s.destroy();
            resolve();
          }, 2_000);
          server.tryShutdown(() => {
            clearTimeout(t);
            for (const s of grpcSockets) s.destroy();
            resolve();
          });
        }),
    );
    let started = false;
    // The self-check signs through whatever CA this replica has now (none while the CA key is unavailable).
    const signingCa = { signCsr: (csr: string, id: string, o?: { ttlMs?: number }) => caManager.authority().signCsr(csr, id, o) };
    let caHealth = checkCaSigns(signingCa, config.trustDomain);
    const checkCa = () => {
      const next = checkCaSigns(signingCa, config.trustDomain);
      if (next.ok !== caHealth.ok) (next.ok ? logger.info({}, 'the CA signs again') : logger.error({ err: next.error }, 'CA self-check failed: this replica is not ready'));
      caHealth = next;
    };
    const caTimer = setInterval(checkCa, CA_CHECK_MS);
    caTimer.unref();
    closers.push(() => clearInterval(caTimer));
    const ready = () => readiness({ started, store: store.health(), ca: caHealth, sources: sources.map((src) => src.status()), needed: config.readinessSources });
    // CA changes (a rotation step on any replica, the key becoming
    // available): new roots file, new serving certificate, the bundle pushed
    // to every agent here, and renewals asked for when --reissue was given.
    let contexts: ServingContexts | undefined;
    caManager.on('change', (next: CaView, prev: CaView) => {
      checkCa();
      contexts?.clear();
      writeRoots();
      provider.updateCa(next.roots.join(''));
      void rotateServing();
      if (next.sequence !== prev.sequence) service?.broadcastBundle();
      const r = next.state?.rotation;
      if (r?.phase === 'reissuing' && r.reissue && (prev.state?.rotation?.phase !== 'reissuing' || !prev.state.rotation.reissue)) {
        const n = service?.requestRenewal((c) => c.certRoot !== r.to, 'CA rotation: renew under the new root') ?? 0;
        logger.info({ agents: n }, 'CA rotation: asked agents to renew under the new root now');
      }
    });
    const caAgents = async (): Promise<AgentCaView[]> => {
      const stored = await registry.statuses();
      return registry.all().map((a) => {
        const c = service?.connected.get(a.id);
        const st = stored.get(a.id);
        return c ? { id: a.id, bundleSequence: c.bundleSequence, certRoot: c.certRoot } : { id: a.id, bundleSequence: st?.bundleSequence, certRoot: st?.certRoot };
      });
    };
    // Every replica checks once a second while a rotation runs; the
    // revision guard lets exactly one of them take each step. A replica
    // that just started waits until its agents had time to reconnect: until
    // then it does not know them, and a rotation must not finish because
    // the agents still on the old root have not come back yet.
    const settleUntil = Date.now() + config.gracePeriodMs + CA_ROTATION_SETTLE_MS;
    const rotationTimer = setInterval(() => {
      if (!caManager.current().state?.rotation || Date.now() < settleUntil) return;
      void caAgents().then((agents) => caManager.advance(agents)).catch((err) => logger.warn({ err: errorMessage(err) }, 'CA rotation: cannot check progress; retrying'));
    }, CA_ROTATION_CHECK_MS);
    rotationTimer.unref();
    closers.push(() => clearInterval(rotationTimer));

    const viewers = new ViewerTokens(store, { logger });
    await viewers.start();
    closers.push(() => viewers.close());
    const api = createHttpApi({
      viewers,
      ca: { manager: caManager, agents: caAgents, settleUntil },
      adminToken,
      tokens,
      bindings,
      deregister: (id) => store.delete(agentKey(id)),
      view: () => view,
      agents: () => registry.all(),
      statuses: () => registry.statuses(),
      grpc: service,
      replica: config.replica,
      trustDomain: config.trustDomain,
      ready,
      sources: () => sources.map((src) => src.status()),
      policies,
      backup: () => exportBackup(store, { kedgeVersion: KEDGE_VERSION }),
      routes,
      authz,
      rateLimits,
      // Warnings about unknown services are computed against the current view, when asked.
      routeRows: () => resolveRoutes(routes.table(), clusterRoutes(), (key) => view.services.has(key)).rows,
      rebuild: scheduleRebuild,
      metrics: () => metrics.render(),
      trafficStats,
      trafficEdges: (windowMs: number) => sharedTraffic.edges(windowMs),
      logger,
      version: KEDGE_VERSION,
      limits: config.limits.http,
      join: {
        version: KEDGE_VERSION,
        grpcPort: () => grpcPort,
        rootPem: () => caManager.current().roots.join(''),
        packageDir: config.packageDir,
        // dist/federation/server.js -> install/join.sh, in a checkout and in the package.
        scriptFile: path.resolve(__dirname, '..', '..', 'install', 'join.sh'),
      },
    });
    // HTTPS (mesh-CA certificates naming the address dialled), and plain HTTP from loopback with --insecure-http, on one port.
    // Issued by the root the gRPC serving certificate comes from (the old one until a rotation ends); cleared at every CA change.
    contexts = new ServingContexts(({ ipAddresses, dnsNames }) => {
      const a = caManager.current().servingAuthority;
      if (!a) throw new KedgeError('KEDGE_CA_KEY_UNAVAILABLE', `no HTTPS certificate: ${caManager.current().unavailable ?? 'no CA key'}; make the CA key available (or, on loopback, start with --insecure-http)`);
      const s = a.issueServing(federationSpiffeId(config.trustDomain), { ttlMs: config.workloadCertTtlMs, ipAddresses, dnsNames: ['localhost', ...dnsNames] });
      return { chainPem: s.chainPem.join(''), keyPem: s.keyPem, notAfter: s.notAfter };
    });
    if (config.insecureHttp) logger.warn({ listen: formatHostPort(config.listenHttp) }, 'plain HTTP is on for loopback peers (--insecure-http): development only, the admin token crosses in clear');
    const front = serveHttpAndHttps(api, contexts, { plaintext: config.insecureHttp, logger, limits: config.limits.http, log: config.limits.log, firstByteTimeoutMs: config.limits.http.headersTimeoutMs });
    const httpPort = await listen(front, config.listenHttp, 'HTTP');
    warnIfDescriptorsShort(logger, [
      ['limits.http.maxConnections', config.limits.http.maxConnections],
      ['limits.grpc.maxConnections', config.limits.grpc.maxConnections],
    ]);
    closers.push(() => new Promise<void>((resolve) => {
      front.close(() => resolve());
      api.close(); // closes the dashboard feed's WebSockets
      api.closeAllConnections();
    }));
    started = true;
    const grpcAddress = { host: config.listenGrpc.host, port: grpcPort };
    const httpAddress = { host: config.listenHttp.host, port: httpPort };
    logger.info({ grpc: formatHostPort(grpcAddress), http: formatHostPort(httpAddress), trustDomain: config.trustDomain, replica: config.replica, dataDir: config.dataDir }, 'federation ready');
    return {
      grpcAddress,
      httpAddress,
      view: () => view,
      close: closeAll,
      listeners: () => ({ http: front.guard!.stats(), grpc: grpcGuard.stats() }),
      signThrottle: () => service!.signThrottle.stats(),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * Where the embedded store's folder lives: DIR/store. Builds before
 * kedge-store/v2 kept it one level deeper (DIR/store/store); such a data
 * dir is opened where it is (and rewritten in the current format there).
 */
export function embeddedStoreParent(dataDir: string): string {
  const older = path.join(dataDir, 'store');
  return fs.existsSync(path.join(older, 'store')) ? older : dataDir;
}

// @kubernetes/client-node is loaded only when a Kubernetes cluster is
// configured: its code alone is about 50 MB of an idle federation's RSS
// (126 MB with it, 72 MB without).
const kubernetesModule = (): typeof import('./sources/kubernetes') => require('./sources/kubernetes') as typeof import('./sources/kubernetes');
function isKubernetes(src: Source): src is KubernetesSource {
  return src.kind === 'kubernetes';
}

/** The configured endpoint sources besides agents. */
function createSources(config: FederationConfig, logger: Logger): Source[] {
  const out: Source[] = config.clusters.map((c) =>
    c.kind === 'kubernetes'
      ? new (kubernetesModule().KubernetesSource)({ name: c.name, kubeconfig: c.kubeconfig, network: c.network, staleAfterMs: c.staleAfterMs, logger: logger.child({ source: c.name }) })
      : new ConsulSource({ ...c, logger: logger.child({ source: c.name }) }),
  );
  if (config.serviceEntries.length > 0) out.push(new StaticSource({ entries: config.serviceEntries }));
  return out;
}

function listenError(what: string, addr: HostPort, err: unknown): KedgeError {
  return new KedgeError('KEDGE_LISTEN_FAILED', `cannot listen for ${what} on ${formatHostPort(addr)}: ${errorMessage(err)}; is another process using it?`, { cause: err });
}

function listen(server: net.Server, addr: HostPort, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(listenError(what, addr, err)));
    server.listen(addr.port, addr.host, () => resolve((server.address() as { port: number }).port));
  });
}

/** Reads the files of the etcd access settings; a file that cannot be read is a config error naming it. */
export function readEtcdSecurity(access: EtcdAccessConfig): EtcdSecurity {
  const read = (file: string, what: string) => readTextFile(file, 'KEDGE_BAD_CONFIG', what);
  const security: EtcdSecurity = {};
  if (access.caFile !== undefined) {
    const caPem = read(access.caFile, 'the etcd CA file (--etcd-ca)');
    if (!caPem.includes('-----BEGIN CERTIFICATE-----')) throw new KedgeError('KEDGE_BAD_CONFIG', `the etcd CA file (--etcd-ca) ${access.caFile} holds no PEM certificate`);
    security.tls = { caPem };
    if (access.certFile !== undefined && access.keyFile !== undefined) {
      security.tls.certPem = read(access.certFile, 'the etcd client certificate (--etcd-cert)');
      security.tls.keyPem = read(access.keyFile, 'the etcd client key (--etcd-key)');
    }
  }
  if (access.username !== undefined && access.passwordFile !== undefined) {
    const password = read(access.passwordFile, 'the etcd password file (--etcd-password-file)').replace(/\r?\n$/, '');
    if (password === '') throw new KedgeError('KEDGE_BAD_CONFIG', `the etcd password file (--etcd-password-file) ${access.passwordFile} is empty`);
    security.auth = { username: access.username, password };
  }
  return security;
}
