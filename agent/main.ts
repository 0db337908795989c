// The agent supervisor: identity, proxy, registration and admin, wired
// together. Configuration was validated before this runs; nothing here binds
// a port until the identity is in hand.
import * as fs from 'node:fs';
import type { HostFacts, Register, Service__Output } from '../proto/loader';
import { KedgeError, errorMessage } from '../proto/model/errors';
import type { Logger } from '../proto/model/log';
import { formatHostPort } from '../proto/model/address';
import { serviceHostname } from '../proto/model/service';
import type { AgentConfig } from './config';
import { collectHostFacts, detectWorkloadAddress } from './host';
import { IdentityManager } from './identity/manager';
import { Proxy } from './proxy/proxy';
import type { LocalTarget } from './proxy/types';
import { RegistrationSession, type SessionOptions } from './registration/session';
import { toProxySnapshot } from './registration/updates';
import { applyAuthorization, failClosed, type AppliedAuthorization } from './registration/authz';
import { loadPolicies, savePolicies } from './registration/policy-store';
import { applyRateLimits } from './registration/ratelimit';
import { InboundRateLimits } from './proxy/ratelimit';
import { startAdmin } from './admin/server';
import type { FederationTarget } from './registration/client';
import { Subscriptions } from './registration/subscriptions';
import { captureOptionsFromDoc, hostHasIpv6, resolveIpv6, type CaptureOptions } from './capture';
import { readResolvConf, startDnsServer, type DnsServer, type MeshLookup } from './dns';
import { HealthChecker } from './health';
import { EastWestGateway } from './gateway/gateway';
import type { ProxySnapshot } from './proxy/types';
import { AgentTelemetry } from './telemetry/telemetry';
import { workloadMetadata } from './telemetry/workload';
import { accessLogSink } from './telemetry/access-log';
import { SpanSink } from './telemetry/tracing';

/** The agent's version, reported at registration. */
export const AGENT_VERSION = '0.1.0';

/** A running agent. */
export interface RunningAgent {
  /** The sidecar's proxy (absent in gateway mode). */
  proxy: Proxy | undefined;
  identity: IdentityManager;
  session: RegistrationSession;
  /** Graceful stop: Goodbye to the federation, drain, close. */
  stop(): Promise<void>;
}

/** Local app targets behind the inbound listener, from the configured services. */
export function localTargets(config: AgentConfig): LocalTarget[] {
  return config.services.flatMap((s) =>
    s.ports.map((p) => ({
      hostname: serviceHostname({ name: s.name, namespace: config.workload.namespace }),
      servicePort: p.port,
      host: config.proxy.appHost,
      targetPort: p.targetPort,
    })),
  );
}

/** Starts an agent from a validated config. */
export async function runAgent(config: AgentConfig, logger: Logger, mode: 'sidecar' | 'gateway' = 'sidecar'): Promise<RunningAgent> {
  if (mode === 'gateway') return runGateway(config, logger);
  // Transparent capture is on when the config has a capture block (the
  // iptables rules themselves are installed by `kedge capture install`).
  const capture: CaptureOptions | undefined = config.captureDoc.isMissing() ? undefined : captureOptionsFromDoc(config.captureDoc);
  const rootCertPem = readRootCert(config);
  const target: FederationTarget = { addresses: config.federation.addresses, rootCertPem, trustDomain: config.federation.trustDomain };

  // Host facts take a second or two to collect: overlap them with the join.
  const facts = startHostFacts(config);

  const kubernetes = config.federation.kubernetesTokenFile && config.federation.cluster ? { tokenFile: config.federation.kubernetesTokenFile, cluster: config.federation.cluster } : undefined;
  const identity = new IdentityManager({ dataDir: config.dataDir, tokenFile: config.federation.tokenFile, kubernetes, federation: target, logger: logger.child({ component: 'identity' }) });
  const id = await identity.ensure();
  const expected = `/ns/${config.workload.namespace}/sa/${config.workload.serviceAccount}`;
  if (!id.spiffeId.endsWith(expected)) {
    throw new KedgeError('KEDGE_IDENTITY_MISMATCH', `${config.file}: workload is ${config.workload.namespace}/${config.workload.serviceAccount} but the agent's certificate is ${id.spiffeId}; fix the config or rejoin with a token for that identity`);
  }

  const telemetry = agentTelemetry(config, id.spiffeId, 'sidecar', logger);
  // Rate limits and quota leases live beside the snapshot: buckets and counts outlast pushes.
  const rateLimits = new InboundRateLimits(logger.child({ component: 'ratelimit' }));
  const proxy = new Proxy({
    rateLimits,
    inboundListen: config.proxy.inboundListen,
    targets: localTargets(config),
    upstreams: config.upstreams,
    identity: id,
    logger,
    connectTimeoutMs: config.proxy.connectTimeoutMs,
    ...(config.proxy.core !== undefined ? { core: config.proxy.core } : {}),
    client: { locality: config.workload.locality, network: config.workload.network, labels: { ...config.workload.labels } },
    records: telemetry.sink,
    workload: telemetry.local,
    // Trace headers are rewritten (each hop a span) only when the spans go somewhere.
    traceSample: config.telemetry.tracing.otlpEndpoint ? config.telemetry.tracing.sample : undefined,
    limits: config.limits,
    ...(capture
      ? {
          // REDIRECT delivers captured local traffic to loopback.
          outboundListen: [{ host: '127.0.0.1', port: capture.outboundPort }, ...(resolveIpv6(capture, hostHasIpv6()).ipv6 === true ? [{ host: '::1', port: capture.outboundPort }] : [])],
          outboundPolicy: config.proxy.outboundPolicy,
          inboundCapture: { mode: config.proxy.inboundMode, appHost: config.proxy.appHost },
        }
      : {}),
  });
  // The policies the last run saved are in force before the proxy binds (policy-store.ts).
  const selfWorkload = { namespace: config.workload.namespace, labels: config.workload.labels };
  let security: AppliedAuthorization | undefined;
  const stored = loadPolicies(config.dataDir);
  if (stored.kind === 'last-known-good') {
    security = applyAuthorization(stored.documents, selfWorkload, { fallback: config.proxy.inboundMode });
    logger.info({ component: 'registration', savedAt: stored.savedAt, ...security.counts, rejected: security.rejected, peerAuthentication: describeModes(security) }, 'security policies restored from the data dir (last known good) until the federation pushes');
  } else if (stored.kind === 'fail-closed') {
    security = failClosed(selfWorkload);
    logger.error({ component: 'registration', reason: stored.reason }, 'security policies cannot be restored: failing closed (every inbound request denied, plaintext refused) until the federation pushes');
  }
  const securityOf = () => ({ authorization: security?.matcher, peerAuthentication: security?.peerAuthentication });
  proxy.setSnapshot(toProxySnapshot(new Map(), '', config.workload.namespace, undefined, securityOf()));
  await proxy.start();
  const metrics = await telemetry.listen(config.admin.metricsListen, config.limits.metrics);
  const { host, address } = await facts.catch(async (err: unknown) => {
    await proxy.close();
    throw err;
  });
  let lastRenewal = Date.now() / 1000;
  let lastSerial = id.serial;
  // A renewal or a new trust bundle: new TLS contexts, then tell the federation (CA rotation progress).
  identity.on('rotated', (next) => {
    if (next.serial !== lastSerial) lastRenewal = Date.now() / 1000;
    lastSerial = next.serial;
    proxy.setIdentity(next);
    session.reportIdentity();
  });
  identity.startRenewal();

  const register = (): Register => ({
    workload: {
      name: config.workload.name,
      namespace: config.workload.namespace,
      serviceAccount: config.workload.serviceAccount,
      address,
      locality: config.workload.locality,
      network: config.workload.network,
      labels: { ...config.workload.labels },
      inboundPort: proxy.inboundAddress().port,
      metricsPort: metrics?.port ?? 0,
    },
    services: config.services.map((s) => ({ name: s.name, namespace: config.workload.namespace, ports: s.ports.map((p) => ({ ...p })) })),
    host,
    subscriptions: subs.all(),
    agentVersion: AGENT_VERSION,
  });
  const subs = new Subscriptions(config.upstreams.map((u) => u.service));
  const probed = config.services.flatMap((s) => (s.health ? [{ service: s.name, check: s.health }] : []));
  // What the last update and revocation list said; either one changing makes a new snapshot.
  let lastServices: ReadonlyMap<string, Service__Output> = new Map();
  let lastVersion = '';
  let revoked: ReadonlySet<string> = new Set();
  // Declared before the session so its first Register can carry the snapshot.
  let checker: HealthChecker | undefined;
  const healthMessage = () => ({ health: { services: (checker?.snapshot() ?? []).map((h) => ({ service: h.service, healthy: h.healthy, detail: h.detail })) } });
  const session = new RegistrationSession({
    onRegistered: () => (probed.length ? [healthMessage()] : []),
    target,
    identity: () => identity.current(),
    register,
    onServices: (services: ReadonlyMap<string, Service__Output>, version: string, removed: readonly string[]) => {
      lastServices = services;
      lastVersion = version;
      proxy.setSnapshot(toProxySnapshot(services, version, config.workload.namespace, revoked, securityOf()));
      session.subscribe([], subs.answered(services, removed));
    },
    onRevocations: (serials) => {
      revoked = serials;
      proxy.setSnapshot(toProxySnapshot(lastServices, lastVersion, config.workload.namespace, revoked, securityOf()));
    },
    onAuthorization: (docs) => {
      security = applyAuthorization(docs, selfWorkload, { fallback: config.proxy.inboundMode });
      proxy.setSnapshot(toProxySnapshot(lastServices, lastVersion, config.workload.namespace, revoked, securityOf()));
      logger.info({ component: 'registration', ...security.counts, rejected: security.rejected.length, peerAuthentication: describeModes(security) }, 'security policies in force');
      // Saved as pushed (the rejected ones too: they are validated again, and rejected again, at a restart).
      const unsaved = savePolicies(config.dataDir, docs);
      if (unsaved) logger.error({ component: 'registration', err: unsaved }, 'security policies are in force but not saved: a restart while the federation is unreachable will fail closed');
      return security.rejected;
    },
    onRateLimits: (docs) => {
      const applied = applyRateLimits(docs);
      rateLimits.set(applied.local, applied.quotas);
      scheduleQuotaReport();
      return applied.rejected;
    },
    onLeases: (m) => {
      rateLimits.quotas.onLeases(
        m.leases.map((l) => ({ quota: l.quota, principal: l.principal, window: Number(l.window), windowRemainingMs: l.windowRemainingMs, grant: Number(l.grant), nextGrant: Number(l.nextGrant) })),
        m.reportIntervalMs,
        Date.now(),
      );
    },
    ...identityHooks(identity),
    logger: logger.child({ component: 'registration' }),
  });
  // Quota demand goes to the federation every report interval while quotas apply here.
  let quotaTimer: NodeJS.Timeout | undefined;
  function scheduleQuotaReport(): void {
    if (quotaTimer || rateLimits.quotas.empty) return;
    quotaTimer = setTimeout(() => {
      quotaTimer = undefined;
      const usage = rateLimits.quotas.report(Date.now());
      if (usage.length > 0 && session.status().connected) session.sendMessage({ quota: { usage } });
      scheduleQuotaReport();
    }, rateLimits.quotas.interval);
    quotaTimer.unref();
  }
  session.start();
  telemetry.reportStats((stats) => session.sendMessage({ stats }), config.telemetry.statsIntervalMs);
  if (probed.length) {
    checker = new HealthChecker({
      targets: probed,
      onChange: (service, healthy, detail) => {
        logger.info({ component: 'health', service, healthy, detail }, healthy ? 'service healthy' : 'service unhealthy');
        session.sendMessage({ health: { services: [{ service, healthy, detail }] } });
      },
      log: logger.child({ component: 'health' }),
    });
    checker.start();
  }

  let dns: DnsServer | undefined;
  if (capture?.dns) {
    const resolv = await readResolvConf();
    for (const w of resolv.warnings) logger.warn({ component: 'dns' }, w);
    const lookup = (key: string): MeshLookup => {
      const services = session.currentServices();
      const state = subs.state(key, services);
      if (state === 'present') {
        const vip = services.get(key)?.vip;
        return vip ? { vip4: vip } : 'unknown-yet';
      }
      return state === 'absent' ? undefined : 'unknown-yet';
    };
    dns = await startDnsServer({
      listen: { host: '127.0.0.1', port: capture.dnsPort },
      tcpIdleTimeoutMs: config.limits.dnsTcp.idleTimeoutMs,
      maxTcpConnections: config.limits.dnsTcp.maxConnections,
      maxTcpConnectionsPerPeer: config.limits.dnsTcp.maxConnectionsPerPeer,
      ownNamespace: config.workload.namespace,
      lookup,
      onLookup: (key) => {
        if (subs.add(key)) session.subscribe([key]);
      },
      upstreams: resolv.nameservers,
      logger: logger.child({ component: 'dns' }),
    }).catch(async (err) => {
      await session.stop();
      identity.stop();
      await proxy.close();
      throw err;
    });
  }

  const admin = await startAdmin(config.admin.listen, {
    limits: config.limits.admin,
    logger,
    identity: () => identity.current(),
    revokedSerials: () => revoked,
    services: () => session.currentServices(),
    session: () => session.status(),
    stats: () => ({ proxy: proxy.stats(), dns: dns?.stats() }),
    balancer: () => proxy.describeBalancers(),
    ready: () => session.status().connects > 0,
  }).catch(async (err) => {
    await session.stop();
    identity.stop();
    await proxy.close();
    throw err;
  });
  telemetry.setSources({
    identity: () => identity.current(),
    lastRenewal: () => lastRenewal,
    session: () => session.status(),
    services: () => session.currentServices().values(),
    balancer: () => proxy.describeBalancers(),
    dns: () => dns?.stats(),
    capture: () => (capture ? { inboundMode: config.proxy.inboundMode, outboundPolicy: config.proxy.outboundPolicy, dns: capture.dns } : undefined),
  });
  logger.info({ spiffeId: id.spiffeId, capture: !!capture, dns: dns ? formatHostPort(dns.udp) : undefined, inbound: formatHostPort(proxy.inboundAddress()), upstreams: proxy.upstreamAddresses().map(formatHostPort), admin: formatHostPort(admin.address), metrics: metrics ? formatHostPort(metrics) : null }, 'agent started');

  let stopping: Promise<void> | undefined;
  return {
    proxy,
    identity,
    session,
    stop: () => {
      stopping ??= (async () => {
        identity.stop();
        await checker?.stop();
        await session.stop().catch((err) => logger.warn({ err: errorMessage(err) }, 'goodbye failed'));
        await Promise.all([proxy.close(), admin.close(), dns?.close(), telemetry.close()]);
        logger.info('agent stopped');
      })();
      return stopping;
    },
  };
}

/** The mTLS modes in force, for log lines: `STRICT` or `STRICT, 9090=PERMISSIVE`, and what set them. */
function describeModes(a: AppliedAuthorization): string {
  const r = a.peerAuthentication;
  const ports = [...r.ports].sort(([x], [y]) => x - y).map(([p, m]) => `${p}=${m}`);
  return `${[r.mode, ...ports].join(', ')} (${r.from.length ? r.from.join(' < ') : 'no PeerAuthentication: the agent\'s inboundMode'})`;
}

/**
 * `kedge agent --mode gateway`: the network's east-west gateway. It holds a
 * mesh certificate only for its federation connection; the data path is SNI
 * passthrough (agent/gateway) and never terminates the traffic's TLS.
 */
async function runGateway(config: AgentConfig, logger: Logger): Promise<RunningAgent> {
  const rootCertPem = readRootCert(config);
  const target: FederationTarget = { addresses: config.federation.addresses, rootCertPem, trustDomain: config.federation.trustDomain };
  if (!config.workload.network) throw new KedgeError('KEDGE_BAD_CONFIG', `${config.file}: workload.network: a gateway needs its network`);
  const facts = startHostFacts(config);
  const identity = new IdentityManager({ dataDir: config.dataDir, tokenFile: config.federation.tokenFile, federation: target, logger: logger.child({ component: 'identity' }) });
  const gwId = await identity.ensure();
  let lastRenewal = Date.now() / 1000;
  identity.on('rotated', () => {
    lastRenewal = Date.now() / 1000;
  });
  identity.startRenewal();
  const telemetry = agentTelemetry(config, gwId.spiffeId, 'gateway', logger);
  let current: ProxySnapshot = { version: '', services: new Map() };
  let gwServices: ReadonlyMap<string, Service__Output> = new Map();
  let gwVersion = '';
  let gwRevoked: ReadonlySet<string> = new Set();
  const gateway = new EastWestGateway({ listen: config.gateway.listen, limits: config.limits.gateway, snapshot: () => current, logger: logger.child({ component: 'gateway' }), records: telemetry.sink });
  await gateway.start();
  const metrics = await telemetry.listen(config.admin.metricsListen, config.limits.metrics);
  const { host, address } = await facts.catch(async (err: unknown) => {
    await gateway.close();
    throw err;
  });
  const port = gateway.address().port;
  const session = new RegistrationSession({
    target,
    identity: () => identity.current(),
    register: () => ({
      workload: {
        name: config.workload.name, namespace: config.workload.namespace, serviceAccount: config.workload.serviceAccount,
        address, locality: config.workload.locality, network: config.workload.network, labels: { ...config.workload.labels },
        inboundPort: port,
        metricsPort: metrics?.port ?? 0,
        gateway: { address: config.gateway.address ?? address, port },
      },
      services: [],
      host,
      subscriptions: [],
      agentVersion: AGENT_VERSION,
    }),
    onServices: (services, version) => {
      gwServices = services;
      gwVersion = version;
      current = toProxySnapshot(services, version, config.workload.namespace, gwRevoked);
    },
    onRevocations: (serials) => {
      gwRevoked = serials;
      current = toProxySnapshot(gwServices, gwVersion, config.workload.namespace, gwRevoked);
    },
    ...identityHooks(identity),
    logger: logger.child({ component: 'registration' }),
  });
  identity.on('rotated', () => session.reportIdentity());
  session.start();
  const admin = await startAdmin(config.admin.listen, {
    limits: config.limits.admin,
    logger,
    identity: () => identity.current(),
    revokedSerials: () => gwRevoked,
    services: () => session.currentServices(),
    session: () => session.status(),
    stats: () => ({ gateway: gateway.stats() }),
    ready: () => session.status().connects > 0,
  });
  telemetry.setSources({ identity: () => identity.current(), lastRenewal: () => lastRenewal, session: () => session.status(), services: () => session.currentServices().values() });
  logger.info({ mode: 'gateway', listen: formatHostPort(gateway.address()), network: config.workload.network, admin: formatHostPort(admin.address), metrics: metrics ? formatHostPort(metrics) : null }, 'agent started');
  let stopping: Promise<void> | undefined;
  return {
    proxy: undefined,
    identity,
    session,
    stop: () => {
      stopping ??= (async () => {
        identity.stop();
        await session.stop().catch(() => undefined);
        await Promise.all([gateway.close(), admin.close(), telemetry.close()]);
      })();
      return stopping;
    },
  };
}

/** The agent's telemetry: its own workload's metadata for the local side of every record. */
function agentTelemetry(config: AgentConfig, spiffeId: string, mode: 'sidecar' | 'gateway', logger: Logger): AgentTelemetry {
  const local = workloadMetadata({ name: config.workload.name, namespace: config.workload.namespace, labels: config.workload.labels, cluster: config.federation.cluster, principal: spiffeId });
  const access = accessLogSink(logger, config.telemetry.accessLog);
  const spans = config.telemetry.tracing.otlpEndpoint ? new SpanSink(local, { endpoint: config.telemetry.tracing.otlpEndpoint }) : undefined;
  return new AgentTelemetry({ local, version: AGENT_VERSION, mode, istioMetrics: config.telemetry.metrics, sinks: [access], accessLog: () => access.stats(), spans, logger });
}

/** The session's side of the agent's identity: pushed bundles, renewal requests and reports. */
function identityHooks(identity: IdentityManager): Pick<SessionOptions, 'onTrustBundle' | 'onRenew' | 'identityReport'> {
  return {
    onTrustBundle: (roots, sequence) => identity.setTrustBundle(roots, sequence),
    onRenew: (withinMs) => identity.renewSoon(withinMs),
    identityReport: () => identity.identityReport(),
  };
}

/**
 * Starts collecting host facts and the workload address (configured, or
 * detected); rejects with KEDGE_NO_ADDRESS when there is none. Started early
 * and awaited late, so it overlaps the join; never an unhandled rejection.
 */
function startHostFacts(config: AgentConfig): Promise<{ host: HostFacts; address: string }> {
  const p = Promise.all([collectHostFacts(), config.workload.address ? Promise.resolve(config.workload.address) : detectWorkloadAddress()]).then(([host, address]) => {
    if (!address) throw new KedgeError('KEDGE_NO_ADDRESS', `${config.file}: workload.address is not set and no address could be detected on this host; set it`);
    return { host, address };
  });
  p.catch(() => undefined);
  return p;
}

function readRootCert(config: AgentConfig): string {
  let pem: string;
  try {
    pem = fs.readFileSync(config.federation.rootCertFile, 'utf8');
  } catch (err) {
    throw new KedgeError('KEDGE_BAD_CONFIG', `${config.file}: federation.rootCert: cannot read ${config.federation.rootCertFile}: ${(err as NodeJS.ErrnoException).code ?? err}; copy the federation's DATA_DIR/root-cert.pem here`, { cause: err });
  }
  if (!pem.includes('BEGIN CERTIFICATE')) {
    throw new KedgeError('KEDGE_BAD_CONFIG', `${config.file}: federation.rootCert: ${config.federation.rootCertFile} holds no PEM certificate`);
  }
  return pem;
}
