// The agent's Connect stream: registers, keeps subscriptions, applies and
// acks pushed updates, and reconnects with jittered backoff (addresses tried
// in order) whenever the federation goes away. The proxy keeps its last
// snapshot meanwhile, so traffic does not depend on the federation being up.
import type * as grpc from '@grpc/grpc-js';
import type { AgentMessage, FederationMessage__Output, IdentityReport, QuotaLeases__Output, Register, Service__Output } from '../../proto/loader';
import { errorMessage } from '../../proto/model/errors';
import type { Logger } from '../../proto/model/log';
import { formatHostPort } from '../../proto/model/address';
import { fromGrpcError } from '../../proto/model/grpc-errors';
import type { TlsIdentity } from '../proxy/types';
import { FederationTarget, federationClient } from './client';
import { applyUpdate } from './updates';
import { holdDownUntil, holdRemovals, REMOVAL_HOLD_DOWN_MS } from './hold-down';

/** What the session reports to the admin endpoint. */
export interface SessionStatus {
  connected: boolean;
  address: string | undefined;
  replica: string | undefined;
  agentId: string | undefined;
  ackedVersion: string;
  lastError: string | undefined;
  connects: number;
  /** Updates this agent rejected in part (NACKs), since start. */
  nacks: number;
}

/** Options for the Connect session. */
export interface SessionOptions {
  target: FederationTarget;
  identity: () => TlsIdentity;
  register: () => Register;
  /** Messages to send right after each (re)registration, e.g. the full health snapshot. */
  onRegistered?: () => AgentMessage[];
  /** Called with the agent's services after an accepted update, and the keys it said are gone. */
  onServices: (services: ReadonlyMap<string, Service__Output>, version: string, removed: readonly string[]) => void;
  /** Called with the federation's full list of revoked certificate serials whenever it sends one. */
  onRevocations?: (serials: ReadonlySet<string>) => void;
  /**
   * Called with the AuthorizationPolicy documents (JSON) that select this
   * workload, the full set each time; returns the policies rejected (NACKed
   * alone; the others are enforced).
   */
  onAuthorization?: (policies: readonly string[]) => readonly string[];
  /** The federation pushed the mesh's trust bundle (after Registered, and when a CA rotation changes it). */
  onTrustBundle?: (rootsPem: string[], sequence: number) => void;
  /** The federation asked for a renewal now (CA rotation with --reissue). */
  onRenew?: (withinMs: number, reason: string) => void;
  /** The rate-limit documents of a RateLimits message; returns one line per document rejected (the NACK's detail). */
  onRateLimits?: (policies: readonly string[]) => readonly string[];
  /** A QuotaLeases message. */
  onLeases?: (leases: QuotaLeases__Output) => void;
  /** What IdentityReport says: the current leaf and installed bundle sequence. */
  identityReport?: () => IdentityReport;
  logger: Logger;
  random?: () => number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Removals from a replica up for less than this are held this long after it started (see hold-down.ts). */
  removalHoldDownMs?: number;
  clock?: () => number;
}

/** The long-lived registration with the federation. */
export class RegistrationSession {
  private call: grpc.ClientDuplexStream<AgentMessage, FederationMessage__Output> | undefined;
  private client: { close(): void } | undefined;
  /** What the agent uses: `desired`, with removals from a just-started replica held down. */
  private services = new Map<string, Service__Output>();
  /** The federation's state as pushed. */
  private desired = new Map<string, Service__Output>();
  private holdUntil = 0;
  private holdTimer: NodeJS.Timeout | undefined;
  private lastNonce = '';
  /** Keys the current stream has sent with endpoints (see hold-down.ts). */
  private seenOnStream = new Set<string>();
  private stopped = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly state: SessionStatus = { connected: false, address: undefined, replica: undefined, agentId: undefined, ackedVersion: '', lastError: undefined, connects: 0, nacks: 0 };

  constructor(private readonly opts: SessionOptions) {}

  start(): void {
    this.connect(0);
  }

  status(): SessionStatus {
    return { ...this.state };
  }

  /** Current services as last accepted. */
  currentServices(): ReadonlyMap<string, Service__Output> {
    return this.services;
  }

  /** Sends a message on the live stream; dropped while disconnected (onRegistered resends state). */
  sendMessage(msg: AgentMessage): void {
    this.send(msg);
  }

  /** Tells the federation which certificate and bundle the agent uses now (after a renewal or a new bundle). */
  reportIdentity(): void {
    const report = this.opts.identityReport?.();
    if (report) this.send({ identity: report });
  }

  /** Changes subscriptions on the live stream (Register carries the full set on reconnect). */
  subscribe(add: readonly string[], remove: readonly string[] = []): void {
    if (add.length || remove.length) this.send({ subscribe: { add: [...add], remove: [...remove] } });
  }

  /**
   * Graceful stop: says Goodbye so the federation removes this agent's
   * endpoints at once, waits briefly for the stream to close, then stops.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.holdTimer) clearTimeout(this.holdTimer);
    const call = this.call;
    if (call && this.state.connected) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 2_000);
        call.on('status', () => {
          clearTimeout(t);
          resolve();
        });
        call.on('error', () => undefined);
        call.write({ goodbye: { reason: 'agent stopping' } });
        call.end();
      });
    }
    call?.cancel();
    this.client?.close();
  }

  private now(): number {
    return (this.opts.clock ?? Date.now)();
  }

  /** Applies `desired`, holding down removals while a just-started replica's hold lasts. */
  private useServices(removed: readonly string[]): void {
    if (this.now() >= this.holdUntil) {
      this.services = this.desired;
      this.opts.onServices(this.services, this.lastNonce, removed);
      return;
    }
    const { services, held } = holdRemovals(this.services, this.desired, this.seenOnStream);
    this.services = services;
    this.opts.onServices(this.services, this.lastNonce, removed.filter((k) => !held.includes(k)));
    if (held.length === 0 || this.holdTimer) return;
    this.opts.logger.warn({ services: held, replica: this.state.replica, holdMs: this.holdUntil - this.now() }, 'holding down removal of services with live endpoints: the federation replica has just started');
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      if (this.stopped) return;
      const gone = [...this.services.keys()].filter((k) => !this.desired.has(k));
      this.opts.logger.info({ removed: gone }, 'removal hold-down over; applying the federation\'s state');
      this.useServices(gone);
    }, Math.max(0, this.holdUntil - this.now()));
    this.holdTimer.unref();
  }

  private send(msg: AgentMessage): void {
    if (this.call && this.state.connected) this.call.write(msg);
  }

  private connect(index: number): void {
    if (this.stopped) return;
    const { target, logger } = this.opts;
    const address = target.addresses[index % target.addresses.length]!;
    const addr = formatHostPort(address);
    const identity = this.opts.identity();
    const client = federationClient(address, target.rootCertPem, identity, target.trustDomain);
    this.client = client;
    const call = client.Connect();
    this.call = call;
    let registered = false;
    let done = false;

    call.on('data', (msg: FederationMessage__Output) => {
      if (msg.msg === 'registered' && msg.registered) {
        registered = true;
        this.attempt = 0;
        Object.assign(this.state, { connected: true, address: addr, replica: msg.registered.replica, agentId: msg.registered.agentId, lastError: undefined });
        this.seenOnStream = new Set();
        this.holdUntil = holdDownUntil(this.now(), msg.registered.uptimeSeconds ?? 0, this.opts.removalHoldDownMs ?? REMOVAL_HOLD_DOWN_MS);
        this.state.connects += 1;
        logger.info({ federation: addr, replica: msg.registered.replica, agentId: msg.registered.agentId }, 'registered with the federation');
        for (const m of this.opts.onRegistered?.() ?? []) call.write(m);
      } else if (msg.msg === 'update' && msg.update) {
        const applied = applyUpdate(this.desired, msg.update);
        this.desired = applied.services;
        this.lastNonce = msg.update.nonce;
        for (const svc of msg.update.services) if (svc.endpoints.length > 0) this.seenOnStream.add(svc.key);
        this.useServices(msg.update.removed);
        const errorDetail = applied.rejected.join('; ');
        if (errorDetail) {
          this.state.nacks += 1;
          logger.warn({ nonce: msg.update.nonce, rejected: applied.rejected }, 'rejected part of an update (NACK)');
        } else this.state.ackedVersion = msg.update.nonce;
        call.write({ ack: { nonce: msg.update.nonce, errorDetail } });
      } else if (msg.msg === 'revocations' && msg.revocations) {
        const serials = new Set(msg.revocations.serials.map((s) => s.toUpperCase()));
        logger.info({ revoked: serials.size }, 'revoked certificates updated');
        this.opts.onRevocations?.(serials);
      } else if (msg.msg === 'authorization' && msg.authorization) {
        const rejected = this.opts.onAuthorization?.(msg.authorization.policies) ?? [];
        if (rejected.length) {
          this.state.nacks += 1;
          logger.warn({ nonce: msg.authorization.nonce, rejected }, 'rejected AuthorizationPolicies (NACK); the others are enforced');
        } else logger.info({ policies: msg.authorization.policies.length }, 'authorization policies updated');
        call.write({ ack: { nonce: msg.authorization.nonce, errorDetail: rejected.join('\n') } });
      } else if (msg.msg === 'trustBundle' && msg.trustBundle) {
        try {
          this.opts.onTrustBundle?.(msg.trustBundle.rootsPem, Number(msg.trustBundle.sequence));
        } catch (err) {
          logger.error({ err: errorMessage(err), sequence: msg.trustBundle.sequence }, 'cannot install the trust bundle from the federation; keeping the current one');
        }
        this.reportIdentity();
      } else if (msg.msg === 'rateLimits' && msg.rateLimits) {
        const rejected = this.opts.onRateLimits?.(msg.rateLimits.policies) ?? [];
        if (rejected.length) {
          this.state.nacks += 1;
          logger.warn({ nonce: msg.rateLimits.nonce, rejected }, 'rejected rate-limit documents (NACK); the others are enforced');
        } else logger.info({ policies: msg.rateLimits.policies.length }, 'rate limits updated');
        call.write({ ack: { nonce: msg.rateLimits.nonce, errorDetail: rejected.join('\n') } });
      } else if (msg.msg === 'leases' && msg.leases) {
        this.opts.onLeases?.(msg.leases);
      } else if (msg.msg === 'renew' && msg.renew) {
        this.opts.onRenew?.(msg.renew.withinMs, msg.renew.reason);
      }
    });
    const lost = (err: unknown) => {
      if (done) return;
      done = true;
      this.state.connected = false;
      client.close();
      if (this.stopped) return;
      const e = err ? fromGrpcError(err) : undefined;
      this.state.lastError = e?.message ?? 'stream ended';
      // After a working session start again from the first address; after a
      // failed attempt try the next one, backing off once per full round.
      const next = registered ? 0 : index + 1;
      const round = next % target.addresses.length === 0;
      const base = this.opts.minBackoffMs ?? 500;
      const delay = round ? Math.min(this.opts.maxBackoffMs ?? 5_000, base * 2 ** Math.min(this.attempt++, 5)) * (0.5 + (this.opts.random ?? Math.random)()) : 0;
      logger.warn({ federation: addr, err: this.state.lastError, code: e?.code, retryInMs: Math.round(delay) }, registered ? 'lost the federation; reconnecting' : 'cannot reach the federation; retrying');
      this.retryTimer = setTimeout(() => this.connect(next), delay);
    };
    call.on('error', (err) => lost(err));
    call.on('end', () => lost(undefined));
    try {
      call.write({ register: this.opts.register() });
    } catch (err) {
      logger.error({ err: errorMessage(err) }, 'cannot send Register');
      lost(err);
    }
  }
}
