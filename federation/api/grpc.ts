// The agent-facing gRPC service: Sign (CSR -> certificate chain) and Connect
// (registration, subscriptions, pushed updates, acks).
import * as grpc from '@grpc/grpc-js';
import type { PushObserver } from '../metrics';
import { X509Certificate } from 'node:crypto';
import type { AgentMessage__Output, FederationHandlers, FederationMessage, SignRequest__Output, SignResponse } from '../../proto/loader';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { formatSpiffeId } from '../../proto/model/spiffe';
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

/** Largest CSR accepted; a 2048- or 4096-bit RSA CSR is 1–2 KB. */
export const MAX_CSR_BYTES = 16 * 1024;
/** How long a new stream may take to send its Register. */
export const REGISTER_TIMEOUT_MS = 10_000;

/** A connected agent's stream on this replica. */
export interface ConnectedAgent {
  id: string;
  /** The agent's network and role pick the view it receives (gateway substitution). */
  network: string;
  role: 'workload' | 'gateway';
  identity: string;
  connectedAt: string;
  lastContact: string;
  certNotAfter: string;
  push: PushSession;
}

/** Checks a pod's service-account token with a cluster's TokenReview. */
export type PodTokenReviewer = (cluster: string, token: string) => Promise<{ namespace: string; serviceAccount: string }>;

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
  registry: AgentRegistry;
  view: () => MeshView;
  /** The view an agent on `network` with `role` receives; computed once per (network, role) per push. */
  viewFor?: (view: MeshView, network: string, role: 'workload' | 'gateway') => MeshView;
  logger: Logger;
  clock?: () => number;
  /** Metrics hooks: every Sign outcome, and each stream's pushes. */
  metrics?: { signed(credential: 'token' | 'kubernetes' | 'mtls', code: string | undefined): void; push: PushObserver };
}

/** Implements the Federation service; `connected` lists this replica's streams. */
export class FederationService {
  readonly connected = new Map<string, ConnectedAgent>();
  private readonly clock: () => number;

  constructor(private readonly deps: GrpcDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  handlers(): FederationHandlers {
    return {
      Sign: (call, cb) => {
        const credential = call.request.joinToken ? 'token' : call.request.kubernetesToken ? 'kubernetes' : 'mtls';
        this.sign(call.request, call)
          .then((res) => {
            this.deps.metrics?.signed(credential, undefined);
            cb(null, res);
          })
          .catch((err) => {
            this.deps.metrics?.signed(credential, typeof (err as KedgeError).code === 'string' ? (err as KedgeError).code : 'KEDGE_INTERNAL');
            this.deps.logger.warn({ err: errorMessage(err), code: (err as KedgeError).code }, 'Sign refused');
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

  statuses(): (Omit<ConnectedAgent, 'push'> & { push: PushStatus })[] {
    return [...this.connected.values()].map((c) => ({ ...c, push: c.push.status() }));
  }

  private async sign(req: SignRequest__Output, call: grpc.ServerUnaryCall<SignRequest__Output, SignResponse>): Promise<SignResponse> {
    const { deps } = this;
    if (req.csrPem.length > MAX_CSR_BYTES) {
      throw new KedgeError('KEDGE_BAD_CSR', `CSR is ${req.csrPem.length} bytes; the limit is ${MAX_CSR_BYTES}`);
    }
    // Validate the CSR before consuming a token use, so a broken CSR costs nothing.
    inspectCsr(req.csrPem);
    let spiffeId: string;
    let cluster: string | undefined;
    let via: string;
    if (req.joinToken) {
      const binding = await deps.tokens.redeem(req.joinToken);
      spiffeId = formatSpiffeId({ trustDomain: deps.trustDomain, namespace: binding.namespace, serviceAccount: binding.serviceAccount });
      via = 'token';
    } else if (req.kubernetesToken) {
      if (!deps.reviewPodToken) throw new KedgeError('KEDGE_UNAUTHENTICATED', 'this federation has no Kubernetes clusters configured to check service-account tokens');
      const who = await deps.reviewPodToken(req.cluster, req.kubernetesToken);
      spiffeId = formatSpiffeId({ trustDomain: deps.trustDomain, namespace: who.namespace, serviceAccount: who.serviceAccount });
      cluster = req.cluster;
      via = `kubernetes/${req.cluster}`;
    } else {
      const peer = authenticatePeer(call, deps.issuers(), deps.trustDomain, this.clock());
      spiffeId = peer.spiffeId;
      // A renewed pod certificate stays bound to the cluster that admitted the pod.
      cluster = await deps.certClusters?.get(peer.serial);
      via = 'mtls';
    }
    const ca = deps.ca();
    const signed = ca.signCsr(req.csrPem, spiffeId);
    if (cluster) await deps.certClusters?.put(signed.serial, cluster, signed.notAfter.getTime() - this.clock());
    deps.logger.info({ spiffeId, serial: signed.serial, notAfter: signed.notAfter.toISOString(), via }, 'signed workload certificate');
    return { certChainPem: signed.chainPem, trustBundlePem: ca.trustBundle(), spiffeId };
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
    let registration: Registration | undefined;
    let record: AgentRecord | undefined;
    let conn: ConnectedAgent | undefined;
    let ended = false;
    // Status is read by the registry when it writes its batch (every few
    // seconds); an ack or subscribe only marks it changed.
    const statusOf = (): AgentStatus => {
      if (!conn) return { ackedNonce: '', ackedAt: undefined, lastContact: record?.connectedAt ?? '', certNotAfter: certNotAfter.toISOString(), subscriptions: [] };
      const st = conn.push.status();
      return { ackedNonce: st.ackedNonce, ackedAt: st.ackedAt, lastContact: conn.lastContact, certNotAfter: conn.certNotAfter, subscriptions: st.subscriptions };
    };
    const registerTimer = setTimeout(() => fail(new KedgeError('KEDGE_BAD_REQUEST', `no Register within ${REGISTER_TIMEOUT_MS} ms of connecting`)), REGISTER_TIMEOUT_MS);
    registerTimer.unref();

    const cleanup = () => {
      if (ended) return;
      ended = true;
      clearTimeout(registerTimer);
      registration?.abandon();
      if (conn && this.connected.get(conn.id) === conn) this.connected.delete(conn.id);
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
    call.on('error', () => cleanup());
    call.on('end', () => {
      if (!ended) call.end();
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
          record = recordFromRegister(msg.register!, identity, deps.replica, new Date(now));
          const cluster = await deps.certClusters?.get(certSerial);
          if (cluster) record.cluster = cluster;
          registration = await deps.registry.register(record, statusOf);
          if (ended) {
            registration.abandon();
            return;
          }
          const push = new PushSession((u, flushed) => call.write({ update: u }, flushed), this.clock, undefined, this.deps.metrics?.push);
          conn = { id: record.id, network: record.workload.network, role: record.gateway ? 'gateway' : 'workload', identity, connectedAt: record.connectedAt, lastContact: record.connectedAt, certNotAfter: certNotAfter.toISOString(), push };
          this.connected.set(record.id, conn);
          call.write({ registered: { agentId: record.id, replica: deps.replica, spiffeId: identity } });
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
          if (conn.push.subscribe(msg.subscribe!.add, msg.subscribe!.remove)) conn.push.push(this.viewOf(deps.view(), conn));
          registration.statusChanged();
          return;
        case 'ack':
          conn.push.ack(msg.ack!.nonce, msg.ack!.errorDetail);
          registration.statusChanged();
          if (msg.ack!.errorDetail) log.warn({ agent: conn.id, nonce: msg.ack!.nonce, detail: msg.ack!.errorDetail }, 'agent rejected an update (NACK)');
          return;
        case 'health': {
          const health = { ...record.health };
          for (const h of msg.health!.services) health[h.service] = { healthy: h.healthy, detail: h.detail };
          record = { ...record, health };
          await registration.update(record);
          return;
        }
        default:
          throw new KedgeError('KEDGE_BAD_REQUEST', `unknown agent message ${String(msg.msg)}`);
      }
    };
  }
}
