// The agent-facing gRPC service: Sign (CSR -> certificate chain) and Connect
// (registration, subscriptions, pushed updates, acks).
import * as grpc from '@grpc/grpc-js';
import type { PushObserver } from '../metrics';
import type { ReportedError, TrafficStatsStore } from '../stats';
import type { TrafficError__Output } from '../../proto/loader';
import { X509Certificate } from 'node:crypto';
import type { AgentMessage__Output, FederationHandlers, FederationMessage, SignRequest__Output, SignResponse } from '../../proto/loader';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { formatSpiffeId, parseSpiffeId } from '../../proto/model/spiffe';
import { isDnsLabel } from '../../proto/model/service';
import { isValidName } from '../../proto/model/spiffe';
import { type BindingRecord, Bindings, certRefusal } from '../grants/bindings';
import { EMPTY_GRANT, type Grant, RESERVED_NAMESPACE, grantViolations } from '../grants/grant';
import { REGISTRATION_LIMITS_DEFAULTS, type RegistrationLimits } from './limits';
import type { CertificateAuthority } from '../ca';
import { inspectCsr } from '../ca';
import type { TokenService } from '../tokens/tokens';
import type { AgentRegistry, Registration } from '../sources/agents';
import type { MeshView, AgentRecord, AgentStatus } from '../mesh/types';
import { PushSession, PushStatus } from '../push/session';
import { authenticatePeer } from './peer';
import { recordFromRegister } from './register';
import { toGrpcError } from '../../proto/model/grpc-errors';
import type { CertClusters } from './cert-clusters';
import type { QuotaLeaser } from '../quota/leases';
import { SignThrottle, peerSource } from './sign-throttle';
import { BoundedLog } from '../../proto/model/bounded-log';
import { LIMITS, type LogRateLimits, type SignLimits } from '../../proto/model/limits';

/** A Sign failure that counts towards the source's wait: the caller could not prove who it is. */
function isAuthFailure(err: unknown): boolean {
  const code = (err as KedgeError).code;
  return typeof code === 'string' && (code.startsWith('KEDGE_TOKEN_') || code === 'KEDGE_UNAUTHENTICATED' || code.startsWith('KEDGE_K8S_TOKEN_'));
}

/** Aggregates one traffic report may carry (an agent's own cap is 5,000). */
const MAX_STATS_PER_REPORT = 5_000;
/** Failures one aggregate may carry (an agent sends at most 3), and the string sizes kept of each. */
const MAX_ERRORS_PER_STAT = 5;
function boundedError(e: TrafficError__Output): ReportedError {
  return { startMs: e.startMs, responseCode: e.responseCode, grpcStatus: e.grpcStatus, responseFlags: e.responseFlags.slice(0, 64), errorCode: e.errorCode.slice(0, 64), method: e.method.slice(0, 32), path: e.path.slice(0, 256), upstreamHost: e.upstreamHost.slice(0, 300) };
}

/** Largest CSR accepted; a 2048- or 4096-bit RSA CSR is 1–2 KB. */
export const MAX_CSR_BYTES = 16 * 1024;
/** Agents asked to renew spread their renewals over this many milliseconds. */
export const RENEW_SPREAD_MS = 2_000;
/** How long a new stream may take to send its Register. */
export const REGISTER_TIMEOUT_MS = 10_000;

/** A connected agent's stream on this replica. */
export interface ConnectedAgent {
  id: string;
  /** The agent's network and role pick the view it receives (gateway substitution). */
  network: string;
  role: 'workload' | 'gateway';
  identity: string;
  /** Serial of the certificate the stream was opened with. */
  certSerial: string;
  binding: string;
  connectedAt: string;
  lastContact: string;
  certNotAfter: string;
  /** TrustBundle sequence the agent reported installing (IdentityReport). */
  bundleSequence: number | undefined;
  /** Fingerprint of the trusted root the agent's reported leaf chains to. */
  certRoot: string | undefined;
  push: PushSession;
  /** Ends the stream (revocation). */
  close(reason: KedgeError): void;
  /** Sends the full list of revoked serials. */
  sendRevocations(serials: string[]): void;
  /** Namespace and labels, which AuthorizationPolicies select. */
  workload: { namespace: string; labels: Record<string, string> };
  /** Sends the AuthorizationPolicies selecting the workload when they differ from what was sent last. */
  sendAuthorization(): void;
  /** The last Authorization sent and what the agent answered (error: the policies it rejected). */
  authz: { nonce: string; ackedNonce: string; error: string };
  /** The services it registered (name.namespace), which rate-limit documents target. */
  services: string[];
  /** Sends the rate-limit documents targeting its services when they differ from what was sent last. */
  sendRateLimits(): void;
  /** The last RateLimits sent and what the agent answered. */
  rateLimits: { nonce: string; ackedNonce: string; error: string };
}

/** Largest leaf certificate an IdentityReport may carry. */
export const MAX_REPORTED_LEAF_BYTES = 16 * 1024;

/** Checks a pod's service-account token with a cluster's TokenReview. */
export type PodTokenReviewer = (cluster: string, token: string) => Promise<{ namespace: string; serviceAccount: string; podName?: string }>;

/** What the gRPC service needs from the rest of the federation. */
export interface GrpcDeps {
  reviewPodToken?: PodTokenReviewer;
  /** Which Kubernetes cluster admitted the holder of a certificate serial (pod agents only). */
  certClusters?: CertClusters;
  trustDomain: string;
  replica: string;
  ca: () => CertificateAuthority;
  /** Certificates that sign workload certs (peer certs must chain to one). */
  issuers: () => X509Certificate[];
  tokens: TokenService;
  bindings: Bindings;
  /** Serials of revoked certificates (store-wide, watched). */
  revoked: () => ReadonlySet<string>;
  /** The AuthorizationPolicy documents (JSON) selecting a workload; absent: none are pushed. */
  authorizationFor?: (w: { namespace: string; labels: Record<string, string> }) => string[];
  /** The HTTPLocalRateLimitPolicy and MeshQuota documents (JSON) targeting any of the services; absent: none are pushed. */
  rateLimitsFor?: (services: readonly string[]) => string[];
  /** Quota leases for the agents pushed a MeshQuota. */
  quotaLeaser?: QuotaLeaser;
  registry: AgentRegistry;
  limits?: RegistrationLimits;
  view: () => MeshView;
  /** The view an agent on `network` with `role` receives; computed once per (network, role) per push. */
  viewFor?: (view: MeshView, network: string, role: 'workload' | 'gateway') => MeshView;
  /** The trust bundle pushed to agents after Registered and on every change. */
  bundle?: () => { rootsPem: string[]; sequence: number };
  /** Which trusted root a reported leaf chains to (undefined: none, or not the stream's identity). */
  rootOf?: (leafPem: string, spiffeId: string) => string | undefined;
  /** Called after an agent's IdentityReport was recorded. */
  onIdentityReport?: (agent: ConnectedAgent) => void;
  logger: Logger;
  clock?: () => number;
  /** Where agents' traffic summaries go, for `kedge stat`. */
  trafficStats?: TrafficStatsStore;
  /** Sign admission (limits.sign) and how often refusals are logged (limits.log); the limits table's defaults when absent. */
  signLimits?: SignLimits;
  logLimits?: LogRateLimits;
  /** Metrics hooks: every Sign outcome, and each stream's pushes. */
  metrics?: { signed(credential: 'token' | 'kubernetes' | 'mtls', code: string | undefined): void; push: PushObserver };
}

/** Implements the Federation service; `connected` lists this replica's streams. */
export class FederationService {
  readonly connected = new Map<string, ConnectedAgent>();
  /** Registrations refused because they claimed another workload's address, newest last (for kedge get workloads). */
  readonly conflicts: { at: string; victim: string; claimant: string; address: string; identity: string }[] = [];
  private readonly writers = new WeakMap<ConnectedAgent, (msg: FederationMessage) => void>();
  private readonly clock: () => number;
  private readonly limits: RegistrationLimits;
  /** When this replica's service started, for Registered.uptime_seconds. */
  private readonly startedAt: number;
  /** The revocation list last sent to agents, to send only changes. */
  private revocationsSent: string[] = [];
  /** Admission of Sign calls per source address and across the replica. */
  readonly signThrottle: SignThrottle;
  /** 'Sign refused' lines, at a bounded rate with a count of the rest. */
  readonly signRefusedLog: BoundedLog;

  constructor(private readonly deps: GrpcDeps) {
    this.clock = deps.clock ?? Date.now;
    this.signThrottle = new SignThrottle(deps.signLimits ?? LIMITS.federation.sign, this.clock);
    this.signRefusedLog = new BoundedLog(deps.logger, 'Sign refused', deps.logLimits ?? LIMITS.federation.log, 'warn', this.clock);
    this.limits = deps.limits ?? REGISTRATION_LIMITS_DEFAULTS;
    this.startedAt = this.clock();
  }

  /**
   * The revoked serials changed: every stream opened with a revoked
   * certificate is closed, and every agent receives the new list (its
   * proxies refuse those certificates on new handshakes and close open
   * connections from them).
   */
  revocationsChanged(): void {
    const revoked = this.deps.revoked();
    for (const c of [...this.connected.values()]) {
      if (revoked.has(c.certSerial)) c.close(new KedgeError('KEDGE_REVOKED', `certificate ${c.certSerial} of ${c.id} was revoked; join again with a new token`));
    }
    const list = [...revoked].sort();
    if (list.length === this.revocationsSent.length && list.every((s, i) => s === this.revocationsSent[i])) return;
    this.revocationsSent = list;
    for (const c of this.connected.values()) c.sendRevocations(list);
  }

  /** The applied AuthorizationPolicies changed: each agent whose selected set changed is sent its new set. */
  authorizationChanged(): void {
    for (const c of this.connected.values()) c.sendAuthorization();
  }

  /** The applied rate-limit documents changed: each agent whose targeted set changed is sent its new set. */
  rateLimitsChanged(): void {
    for (const c of this.connected.values()) c.sendRateLimits();
  }

  handlers(): FederationHandlers {
    return {
      Sign: (call, cb) => {
        const credential = call.request.joinToken ? 'token' : call.request.kubernetesToken ? 'kubernetes' : 'mtls';
        const source = peerSource(call.getPeer());
        const refusal = this.signThrottle.admit(source);
        if (refusal) {
          // Counted, answered with when to retry, and logged only within the bounded rate.
          this.deps.metrics?.signed(credential, 'KEDGE_SIGN_THROTTLED');
          this.signRefusedLog.log({ err: refusal.message, code: 'KEDGE_SIGN_THROTTLED', peer: source, retryAfterMs: refusal.retryAfterMs });
          cb(toGrpcError(Object.assign(new KedgeError('KEDGE_SIGN_THROTTLED', `${refusal.message}; retry in ${refusal.retryAfterMs} ms`), { retryAfterMs: refusal.retryAfterMs })) as grpc.ServiceError);
          return;
        }
        this.sign(call.request, call)
          .then((res) => {
            this.signThrottle.done(source, 'ok');
            this.deps.metrics?.signed(credential, undefined);
            cb(null, res);
          })
          .catch((err) => {
            this.signThrottle.done(source, isAuthFailure(err) ? 'auth' : 'other');
            this.deps.metrics?.signed(credential, typeof (err as KedgeError).code === 'string' ? (err as KedgeError).code : 'KEDGE_INTERNAL');
            this.signRefusedLog.log({ err: errorMessage(err), code: (err as KedgeError).code, peer: source });
            cb(toGrpcError(err) as grpc.ServiceError);
          });
      },
      Connect: (call) => this.connect(call),
    };
  }

  /** Pushes the current view to every connected agent (after the debounce). */
  pushAll(view: MeshView): void {
    // Role -> network -> view: nested maps, so looking one up allocates no key.
    const views = new Map<string, Map<string, MeshView>>();
    for (const c of this.connected.values()) c.push.push(this.viewOf(view, c, views));
  }

  private viewOf(view: MeshView, c: { network: string; role: 'workload' | 'gateway' }, cache?: Map<string, Map<string, MeshView>>): MeshView {
    if (!this.deps.viewFor) return view;
    let byNetwork = cache?.get(c.role);
    if (cache && !byNetwork) cache.set(c.role, (byNetwork = new Map()));
    let v = byNetwork?.get(c.network);
    if (!v) {
      v = this.deps.viewFor(view, c.network, c.role);
      byNetwork?.set(c.network, v);
    }
    return v;
  }

  /** Pushes the current trust bundle to every agent connected here. */
  broadcastBundle(): void {
    const bundle = this.deps.bundle?.();
    if (!bundle) return;
    for (const c of this.connected.values()) this.writers.get(c)?.({ trustBundle: bundle });
  }

  /** Asks the agents connected here that match `pred` to renew their certificate now; returns how many. */
  requestRenewal(pred: (c: ConnectedAgent) => boolean, reason: string, withinMs = RENEW_SPREAD_MS): number {
    let n = 0;
    for (const c of this.connected.values()) {
      if (!pred(c)) continue;
      this.writers.get(c)?.({ renew: { withinMs, reason } });
      n++;
    }
    return n;
  }

  statuses(): (Omit<ConnectedAgent, 'push'> & { push: PushStatus })[] {
    return [...this.connected.values()].map((c) => ({ ...c, push: c.push.status() }));
  }

  private async sign(req: SignRequest__Output, call: grpc.ServerUnaryCall<SignRequest__Output, SignResponse>): Promise<SignResponse> {
    const { deps } = this;
    if (req.csrPem.length > MAX_CSR_BYTES) {
      throw new KedgeError('KEDGE_BAD_CSR', `CSR is ${req.csrPem.length} bytes; the limit is ${MAX_CSR_BYTES}`);
    }
    // Validate the CSR, and that this replica can sign at all, before
    // consuming a token use, so a broken CSR or a missing CA key costs nothing.
    const csrInfo = inspectCsr(req.csrPem);
    const ca = deps.ca();
    let spiffeId: string;
    let cluster: string | undefined;
    let via: string;
    let binding: BindingRecord;
    let renewedFrom: string | undefined;
    const reserved = (namespace: string) => {
      if (namespace === RESERVED_NAMESPACE) {
        throw new KedgeError('KEDGE_RESERVED_IDENTITY', `identities in namespace ${RESERVED_NAMESPACE} are reserved for the mesh's own components and are never issued to workloads`);
      }
    };
    if (req.joinToken) {
      const tb = await deps.tokens.redeem(req.joinToken, (b) => {
        reserved(b.namespace);
        const id = formatSpiffeId({ trustDomain: deps.trustDomain, namespace: b.namespace, serviceAccount: b.serviceAccount });
        const asked = csrInfo.requestedUris;
        if (asked.length > 1 || (asked.length === 1 && asked[0] !== id)) {
          throw new KedgeError('KEDGE_CSR_IDENTITY_MISMATCH', `the CSR requests ${asked.map((u) => JSON.stringify(u)).join(', ')} but the join token is for "${id}"; request that identity (or none) in the CSR, or use a token for the identity you need (the token was not used)`);
        }
      });
      spiffeId = formatSpiffeId({ trustDomain: deps.trustDomain, namespace: tb.namespace, serviceAccount: tb.serviceAccount });
      via = `token ${req.joinToken.split('.')[1] ?? ''}`;
      binding = await deps.bindings.create({ identity: spiffeId, namespace: tb.namespace, serviceAccount: tb.serviceAccount, grant: tb.grant ?? EMPTY_GRANT, via });
    } else if (req.kubernetesToken) {
      if (!deps.reviewPodToken) throw new KedgeError('KEDGE_UNAUTHENTICATED', 'this federation has no Kubernetes clusters configured to check service-account tokens');
      const who = await deps.reviewPodToken(req.cluster, req.kubernetesToken);
      reserved(who.namespace);
      spiffeId = formatSpiffeId({ trustDomain: deps.trustDomain, namespace: who.namespace, serviceAccount: who.serviceAccount });
      cluster = req.cluster;
      via = `kubernetes ${req.cluster}`;
      binding = await deps.bindings.create({ identity: spiffeId, namespace: who.namespace, serviceAccount: who.serviceAccount, cluster: req.cluster, ...(who.podName ? { podName: who.podName } : {}), via });
    } else {
      const peer = authenticatePeer(call, deps.issuers(), deps.trustDomain, this.clock());
      binding = await this.bindingOf(peer.serial, peer.spiffeId, 'renew');
      spiffeId = peer.spiffeId;
      reserved(parseSpiffeId(spiffeId)?.namespace ?? '');
      // A renewed pod certificate stays bound to the cluster that admitted the pod.
      cluster = binding.cluster ?? (await deps.certClusters?.get(peer.serial));
      via = 'mtls';
      renewedFrom = peer.serial;
    }
    const signed = ca.signCsr(req.csrPem, spiffeId);
    await deps.bindings.addCert(binding.id, { serial: signed.serial.toUpperCase(), notAfter: signed.notAfter.getTime() }, renewedFrom);
    if (cluster) await deps.certClusters?.put(signed.serial, cluster, signed.notAfter.getTime() - this.clock());
    deps.logger.info({ spiffeId, serial: signed.serial, notAfter: signed.notAfter.toISOString(), via, binding: binding.id }, 'signed workload certificate');
    return { certChainPem: signed.chainPem, trustBundlePem: ca.trustBundle(), spiffeId };
  }

  /** The binding of a presented certificate, refusing one that is unbound, revoked or superseded. */
  private async bindingOf(serial: string, spiffeId: string, what: 'renew' | 'connect'): Promise<BindingRecord> {
    const b = await this.deps.bindings.ofSerial(serial);
    if (!b) {
      throw new KedgeError('KEDGE_PERMISSION_DENIED', `certificate ${serial} (${spiffeId}) is not bound to a grant of this federation (issued before grants existed, or its record was removed), so it cannot ${what}; join again with a new token`);
    }
    const why = this.deps.revoked().has(serial) ? 'it was revoked; join again with a new token' : certRefusal(b, serial);
    if (why) throw new KedgeError(b.revoked || this.deps.revoked().has(serial) ? 'KEDGE_REVOKED' : 'KEDGE_PERMISSION_DENIED', `certificate ${serial} (${spiffeId}) cannot ${what}: ${why}`);
    return b;
  }

  /** What a binding may register: its token's grant, or for a pod the services that select it in its cluster. */
  private grantOf(b: BindingRecord, address: string, namespace: string): Grant {
    if (b.grant) return b.grant;
    if (!b.cluster) return EMPTY_GRANT;
    // A pod serves the services whose EndpointSlices list it: Kubernetes
    // computed those from the services' selectors and the pod's labels.
    const services: string[] = [];
    for (const svc of this.deps.view().services.values()) {
      if (svc.namespace !== namespace) continue;
      if (svc.endpoints.some((e) => e.cluster === b.cluster && e.address === address)) services.push(svc.name);
    }
    return { services, workload: b.podName ?? '', labels: ANY_LABELS, gateway: '' };
  }

  private connect(call: grpc.ServerDuplexStream<AgentMessage__Output, FederationMessage>): void {
    const { deps } = this;
    const log = deps.logger;
    let identity: string;
    let certNotAfter: Date;
    let certSerial: string;
    try {
      ({ spiffeId: identity, certNotAfter, serial: certSerial } = authenticatePeer(call, deps.issuers(), deps.trustDomain, this.clock()));
    } catch (err) {
      call.emit('error', toGrpcError(err));
      call.end();
      return;
    }
    // The binding is read when Register arrives (one store read per stream).
    let binding: BindingRecord | undefined;
    let registration: Registration | undefined;
    let record: AgentRecord | undefined;
    let conn: ConnectedAgent | undefined;
    let ended = false;
    // The MeshQuotas pushed to this agent: the only ones its reports may speak of.
    let quotasPushed = new Set<string>();
    // Status is read by the registry when it writes its batch (every few
    // seconds); an ack or subscribe only marks it changed.
    const statusOf = (): AgentStatus => {
      if (!conn) return { ackedNonce: '', ackedAt: undefined, lastContact: record?.connectedAt ?? '', certNotAfter: certNotAfter.toISOString(), subscriptions: [] };
      const st = conn.push.status();
      return { ackedNonce: st.ackedNonce, ackedAt: st.ackedAt, lastContact: conn.lastContact, certNotAfter: conn.certNotAfter, subscriptions: st.subscriptions, bundleSequence: conn.bundleSequence, certRoot: conn.certRoot };
    };
    const registerTimer = setTimeout(() => fail(new KedgeError('KEDGE_BAD_REQUEST', `no Register within ${REGISTER_TIMEOUT_MS} ms of connecting`)), REGISTER_TIMEOUT_MS);
    registerTimer.unref();

    const cleanup = () => {
      if (ended) return;
      ended = true;
      clearTimeout(registerTimer);
      registration?.abandon();
      if (conn && this.connected.get(conn.id) === conn) {
        this.connected.delete(conn.id);
        deps.quotaLeaser?.detach(conn.id);
      }
    };
    const fail = (err: unknown) => {
      if (ended) return;
      log.warn({ identity, err: errorMessage(err) }, 'closing agent stream');
      cleanup();
      call.emit('error', toGrpcError(err));
      call.end();
    };
    call.on('cancelled', () => {
      if (!ended) log.info({ agent: conn?.id, identity }, 'agent stream lost; endpoints kept for the grace period');
      cleanup();
    });
    call.on('error', (err) => {
      if (!ended) log.info({ agent: conn?.id, identity, err: errorMessage(err) }, 'agent stream lost; endpoints kept for the grace period');
      cleanup();
    });
    call.on('end', () => {
      if (!ended) {
        log.info({ agent: conn?.id, identity, via: 'end' }, 'agent stream ended');
        call.end();
      }
      cleanup();
    });

    let queue = Promise.resolve();
    call.on('data', (msg: AgentMessage__Output) => {
      // Messages are handled in order: a Subscribe right after Register must
      // not overtake the registration write.
      queue = queue.then(() => handle(msg)).catch(fail);
    });

    const handle = async (msg: AgentMessage__Output) => {
      if (ended) return;
      const now = this.clock();
      if (conn) conn.lastContact = new Date(now).toISOString();
      switch (msg.msg) {
        case 'register': {
          if (registration) throw new KedgeError('KEDGE_BAD_REQUEST', 'Register sent twice on one stream');
          clearTimeout(registerTimer);
          binding = await this.bindingOf(certSerial, identity, 'connect');
          record = recordFromRegister(msg.register!, identity, deps.replica, new Date(now), this.limits);
          checkSubscriptions(msg.register!.subscriptions, 0, this.limits);
          this.authorize(record, binding);
          const cluster = binding.cluster ?? (await deps.certClusters?.get(certSerial));
          if (cluster) record.cluster = cluster;
          record.binding = binding.id;
          await deps.bindings.claimName(record.workload.namespace, record.workload.name, binding);
          registration = await deps.registry.register(record, statusOf);
          if (ended) {
            registration.abandon();
            return;
          }
          let authzSent: string | undefined;
          let authzSeq = 0;
          let rateLimitsSent: string | undefined;
          let rateLimitsSeq = 0;

          const push = new PushSession((u, flushed) => call.write({ update: u }, flushed), this.clock, undefined, this.deps.metrics?.push);
          conn = {
            id: record.id,
            network: record.workload.network,
            role: record.gateway ? 'gateway' : 'workload',
            identity,
            certSerial,
            binding: binding.id,
            connectedAt: record.connectedAt,
            lastContact: record.connectedAt,
            certNotAfter: certNotAfter.toISOString(),
            bundleSequence: undefined,
            certRoot: undefined,
            push,
            close: (reason) => fail(reason),
            sendRevocations: (serials) => {
              if (!ended) call.write({ revocations: { serials } });
            },
            workload: { namespace: record.workload.namespace, labels: record.workload.labels },
            authz: { nonce: '', ackedNonce: '', error: '' },
            sendAuthorization: () => {
              if (ended || !deps.authorizationFor || !conn) return;
              const policies = deps.authorizationFor(conn.workload);
              const key = policies.join('\n');
              // Always sent once per stream (even empty): an agent back from a
              // disconnection must drop policies deleted meanwhile.
              if (key === authzSent) return;
              authzSent = key;
              conn.authz.nonce = `authz-${++authzSeq}`;
              call.write({ authorization: { nonce: conn.authz.nonce, policies } });
            },
            services: record.services.map((s) => `${s.name}.${record!.workload.namespace}`),
            rateLimits: { nonce: '', ackedNonce: '', error: '' },
            sendRateLimits: () => {
              if (ended || !deps.rateLimitsFor || !conn) return;
              const policies = deps.rateLimitsFor(conn.services);
              const key = policies.join('\n');
              if (key === rateLimitsSent) return;
              rateLimitsSent = key;
              conn.rateLimits.nonce = `rl-${++rateLimitsSeq}`;
              call.write({ rateLimits: { nonce: conn.rateLimits.nonce, policies } });
              quotasPushed = new Set(
                policies.flatMap((j) => {
                  const d = JSON.parse(j) as { kind?: string; metadata?: { name?: string; namespace?: string } };
                  return d.kind === 'MeshQuota' ? [`${d.metadata?.namespace}/${d.metadata?.name}`] : [];
                }),
              );
              const id = conn.id;
              if (quotasPushed.size > 0) deps.quotaLeaser?.attach(id, (m) => !ended && call.write({ leases: m }));
              else deps.quotaLeaser?.detach(id);
            },
          };
          this.connected.set(record.id, conn);
          this.writers.set(conn, (m) => call.write(m));
          call.write({ registered: { agentId: record.id, replica: deps.replica, spiffeId: identity, uptimeSeconds: Math.min(0xffffffff, Math.floor((this.clock() - this.startedAt) / 1000)) } });
          conn.sendRevocations([...deps.revoked()].sort());
          conn.sendAuthorization();
          conn.sendRateLimits();
          // The roots may have changed since the agent's last Sign (a rotation while it was away).
          const bundle = deps.bundle?.();
          if (bundle) call.write({ trustBundle: bundle });
          if (record.gateway) push.subscribeToAll();
          push.subscribe(msg.register!.subscriptions, []);
          push.push(this.viewOf(deps.view(), conn));
          registration.statusChanged();
          log.info({ agent: record.id, identity, address: record.workload.address, services: record.services.map((s) => s.name) }, 'agent registered');
          return;
        }
        case 'goodbye':
          if (registration) await registration.remove();
          log.info({ agent: conn?.id, reason: msg.goodbye?.reason }, 'agent left; endpoints removed');
          registration = undefined;
          cleanup();
          call.end();
          return;
      }
      if (!conn || !record || !registration) throw new KedgeError('KEDGE_BAD_REQUEST', `expected Register first, got ${msg.msg ?? 'an empty message'}`);
      switch (msg.msg) {
        case 'subscribe':
          checkSubscriptions(msg.subscribe!.add, conn.push.subscriptionCount, this.limits);
          if (conn.push.subscribe(msg.subscribe!.add, msg.subscribe!.remove)) conn.push.push(this.viewOf(deps.view(), conn));
          registration.statusChanged();
          return;
        case 'ack':
          if (msg.ack!.nonce.startsWith('rl-')) {
            conn.rateLimits.ackedNonce = msg.ack!.nonce;
            conn.rateLimits.error = msg.ack!.errorDetail;
            if (msg.ack!.errorDetail) log.warn({ agent: conn.id, nonce: msg.ack!.nonce, detail: msg.ack!.errorDetail }, 'agent rejected rate-limit documents (NACK)');
            return;
          }
          if (msg.ack!.nonce.startsWith('authz-')) {
            // The answer to an Authorization: the policies the agent rejected stay out of force there, the others apply.
            conn.authz.ackedNonce = msg.ack!.nonce;
            conn.authz.error = msg.ack!.errorDetail;
            if (msg.ack!.errorDetail) log.warn({ agent: conn.id, nonce: msg.ack!.nonce, detail: msg.ack!.errorDetail }, 'agent rejected AuthorizationPolicies (NACK)');
            return;
          }
          conn.push.ack(msg.ack!.nonce, msg.ack!.errorDetail);
          registration.statusChanged();
          if (msg.ack!.errorDetail) log.warn({ agent: conn.id, nonce: msg.ack!.nonce, detail: msg.ack!.errorDetail }, 'agent rejected an update (NACK)');
          return;
        case 'stats':
          // An agent speaks for its own side of each hop only; anything else is dropped.
          deps.trafficStats?.add(
            msg.stats!.stats
              .slice(0, MAX_STATS_PER_REPORT)
              .filter((st) => (st.reporter === 'destination' ? st.destinationWorkload : st.reporter === 'source' ? st.sourceWorkload : undefined) === conn!.id && st.destinationService.length <= 320 && st.sourceWorkload.length <= 320 && st.destinationWorkload.length <= 320)
              .map((st) => ({ ...st, errors: st.errors.slice(0, MAX_ERRORS_PER_STAT).map(boundedError) })),
          );
          return;
        case 'quota':
          // Counts only for the quotas this agent was pushed; the rest is dropped.
          deps.quotaLeaser?.report(conn.id, msg.quota!.usage.map((u) => ({ ...u, window: Number(u.window), admitted: Number(u.admitted), seen: Number(u.seen) })), (q) => quotasPushed.has(q));
          return;
        case 'identity': {
          const r = msg.identity!;
          conn.bundleSequence = Number(r.bundleSequence);
          conn.certRoot = r.leafCertPem.length <= MAX_REPORTED_LEAF_BYTES ? deps.rootOf?.(r.leafCertPem, identity) : undefined;
          registration.statusChanged();
          deps.onIdentityReport?.(conn);
          return;
        }
        case 'health': {
          const health = { ...record.health };
          for (const h of msg.health!.services) {
            if (!record.services.some((s) => s.name === h.service)) throw new KedgeError('KEDGE_BAD_REQUEST', `health report for service "${h.service.slice(0, 80)}", which this workload did not register`);
            health[h.service] = { healthy: h.healthy, detail: h.detail.slice(0, 512) };
          }
          record = { ...record, health };
          await registration.update(record);
          return;
        }
        default:
          throw new KedgeError('KEDGE_BAD_REQUEST', `unknown agent message ${String(msg.msg)}`);
      }
    };
  }

  /**
   * Refuses a registration that claims more than its certificate was
   * granted, or another identity's address. Each refusal names what is not
   * allowed and the token flag that grants it.
   */
  private authorize(record: AgentRecord, binding: BindingRecord): void {
    const wl = record.workload;
    const grant = this.grantOf(binding, wl.address, wl.namespace);
    const violations = grantViolations(
      grant,
      { name: wl.name, labels: wl.labels, services: record.services.map((s) => s.name), network: wl.network, gateway: record.gateway !== undefined },
      binding.name,
    );
    if (violations.length > 0) {
      throw new KedgeError('KEDGE_PERMISSION_DENIED', `registration of ${record.id} as ${record.identity} refused: ${violations.join('; ')}`);
    }
    for (const other of this.deps.registry.all()) {
      if (other.id === record.id || other.workload.address !== wl.address || other.workload.inboundPort !== wl.inboundPort) continue;
      if (other.binding === binding.id) continue;
      this.conflicts.push({ at: new Date(this.clock()).toISOString(), victim: other.id, claimant: record.id, address: `${wl.address}:${wl.inboundPort}`, identity: record.identity });
      if (this.conflicts.length > 100) this.conflicts.shift();
      throw new KedgeError(
        'KEDGE_ADDRESS_CONFLICT',
        `registration of ${record.id} refused: ${wl.address}:${wl.inboundPort} is already registered by workload ${other.id} (${other.identity}); give this workload its own address (workload.address) or inbound port`,
      );
    }
  }
}

/** Labels a pod may set: its labels are governed by the cluster that admitted it. */
const ANY_LABELS: Record<string, string> = new Proxy({}, { get: (_t, k) => (typeof k === 'string' ? '*' : undefined) });

/** Checks a Subscribe's additions: service keys, within the per-agent limit. */
function checkSubscriptions(add: readonly string[], current: number, limits: RegistrationLimits): void {
  if (current + add.length > limits.subscriptionsPerAgent) {
    throw new KedgeError('KEDGE_LIMIT', `subscribing to ${add.length} more services would exceed ${limits.subscriptionsPerAgent} subscriptions (registrationLimits.subscriptionsPerAgent)`);
  }
  for (const k of add) {
    const dot = k.indexOf('.');
    if (k.length > 317 || dot < 1 || !isDnsLabel(k.slice(0, dot)) || !isValidName(k.slice(dot + 1))) {
      throw new KedgeError('KEDGE_BAD_REQUEST', `subscription "${k.slice(0, 80)}" is not a service key (name.namespace)`);
    }
  }
}
