// The agent simulator of the federation-push benchmark, run as its own
// process (forked by test/bench/federation-push.ts). It opens one Connect
// stream per simulated agent, several streams per gRPC channel, registers,
// acks every update like the real agent, and times endpoint changes: a change
// is one agent's HealthReport marking one of its services unhealthy; it is
// received when the last subscriber of that service got an update in which
// that agent's endpoint is UNHEALTHY. Send and receipt are both read from
// this process's performance.now(), so no clocks are compared.
//
// A stream that fails is reopened with the real agent's backoff and counted,
// so an overloaded federation shows up as failures and a slow start rather
// than as a crashed benchmark. Agents start all at once (a fleet restart) or
// at a fixed rate. The simulator keeps only an endpoint count per subscribed
// service, not the services themselves, so that it stays small next to the
// federation it measures.
import type * as grpc from '@grpc/grpc-js';
import { federationClient } from '../../../agent/registration/client';
import type { AgentMessage, FederationClient, FederationMessage__Output, ServiceUpdate__Output } from '../../../proto/loader';
import { parseHostPort } from '../../../proto/model/address';
import { agentWorkloadId, changeTarget, registerMessage, servedBy, serviceKeyOf, serviceName, subscribedServices, subscribersOf } from './layout';
import type { ChangeResult, FromSim, SimConfig, ToSim } from './protocol';

interface SimAgent {
  index: number;
  client: FederationClient;
  call: grpc.ClientDuplexStream<AgentMessage, FederationMessage__Output> | undefined;
  /** Reconnects since the last Registered, for the backoff. */
  attempt: number;
  /** Registered at least once. */
  registered: boolean;
  /** Endpoint count per subscribed service key. */
  seen: Map<string, number>;
  /** Subscribed services whose endpoint count is not yet the full one. */
  missing: number;
}

interface PendingChange {
  result: ChangeResult;
  workload: string;
  sentAt: number;
  waiting: Set<number>;
}

function send(msg: FromSim): void {
  process.send?.(msg);
}

class Simulator {
  private readonly agents: SimAgent[] = [];
  private readonly clients: FederationClient[] = [];
  private readonly expectedEndpoints = new Map<string, number>();
  private readonly subscribers: number[][];
  private readonly pending = new Map<string, PendingChange[]>();
  private registered = 0;
  private complete = 0;
  private updates = 0;
  /** Services received in all updates (each is one service's full state). */
  private servicesReceived = 0;
  private streamFailures = 0;
  private lastFailure: string | undefined;
  private stopping = false;
  private readonly started = performance.now();
  private registeredAt: number | undefined;
  private onProgress: (() => void) | undefined;
  private stopProgress: (() => void) | undefined;

  constructor(private readonly config: SimConfig) {
    const counts = servedBy(config.layout);
    counts.forEach((agents, s) => this.expectedEndpoints.set(serviceKeyOf(s), agents.length));
    this.subscribers = subscribersOf(config.layout);
  }

  /** Opens every stream and resolves when all agents hold their full initial state. */
  async connect(): Promise<void> {
    const { layout, addresses, agentsPerChannel, credentials } = this.config;
    const identity = { certChainPem: credentials.certChainPem, keyPem: credentials.keyPem };
    // Agents of one address share channels in groups of agentsPerChannel.
    const perAddress = addresses.map(() => [] as number[]);
    for (let i = 0; i < layout.agents; i++) perAddress[i % addresses.length]!.push(i);
    const clientOf: FederationClient[] = [];
    perAddress.forEach((indices, a) => {
      for (let g = 0; g < indices.length; g += agentsPerChannel) {
        const client = federationClient(parseHostPort(addresses[a]!, 'federation address'), credentials.rootCertPem, identity, credentials.trustDomain);
        this.clients.push(client);
        for (const i of indices.slice(g, g + agentsPerChannel)) clientOf[i] = client;
      }
    });
    // All at once (a restart of the whole fleet), or agent i at i / connectRate seconds.
    const rate = this.config.connectRate;
    for (let i = 0; i < layout.agents; i++) {
      if (rate > 0) {
        const wait = this.started + (i * 1000) / rate - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      this.agents[i] = this.openAgent(clientOf[i]!, i);
    }
    const deadline = Date.now() + this.config.connectTimeoutMs;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (this.complete === layout.agents) return resolve();
        if (Date.now() > deadline) {
          reject(new Error(`after ${this.config.connectTimeoutMs} ms ${this.registered} of ${layout.agents} agents registered and ${this.complete} hold their full initial state; ${this.streamFailures} streams failed and were reopened${this.lastFailure ? `, the last with: ${this.lastFailure}` : ''}`));
        }
      };
      this.onProgress = check;
      const t = setInterval(check, 250);
      t.unref();
      // Progress on stderr every 10 s, so a slow or stuck start shows where it stands.
      const progress = setInterval(() => {
        const s = Math.round((performance.now() - this.started) / 1000);
        process.stderr.write(`[sim-agents] ${s} s: ${this.registered} registered, ${this.complete} with full initial state, ${this.streamFailures} stream failures\n`);
      }, 10_000);
      progress.unref();
      check();
      this.stopProgress = () => {
        clearInterval(t);
        clearInterval(progress);
      };
    }).finally(() => {
      this.onProgress = undefined;
      this.stopProgress?.();
    });
  }

  connectedMessage(): FromSim {
    const now = performance.now();
    return {
      type: 'connected',
      registeredMs: Math.round((this.registeredAt ?? now) - this.started),
      initialStateMs: Math.round(now - this.started),
      channels: this.clients.length,
      updatesReceived: this.updates,
      servicesReceived: this.servicesReceived,
      ...this.failures(),
    };
  }

  /** Streams that failed (and were reopened) so far, with the last error. */
  failures(): { streamFailures: number; lastFailure: string | undefined } {
    return { streamFailures: this.streamFailures, lastFailure: this.lastFailure };
  }

  /** Sends changes from..from+count-1 paced by intervalMs; resolves when all arrived everywhere or timed out. */
  async changes(from: number, count: number, intervalMs: number, timeoutMs: number): Promise<ChangeResult[]> {
    const { layout } = this.config;
    const all: PendingChange[] = [];
    const start = performance.now();
    for (let c = from; c < from + count; c++) {
      if (intervalMs > 0) {
        // Paced against the schedule, not the previous send, so delays do not accumulate.
        const wait = start + (c - from) * intervalMs - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      const { agent, service } = changeTarget(layout, c);
      const key = serviceKeyOf(service);
      const subs = this.subscribers[service]!;
      const p: PendingChange = {
        result: { change: c, agent, service, expected: subs.length, received: 0, firstMs: null, lastMs: null },
        workload: agentWorkloadId(agent),
        sentAt: performance.now(),
        waiting: new Set(subs),
      };
      all.push(p);
      if (!this.pending.has(key)) this.pending.set(key, []);
      this.pending.get(key)!.push(p);
      this.agents[agent]!.call?.write({ health: { services: [{ service: serviceName(service), healthy: false, detail: 'federation-push bench' }] } });
    }
    const deadline = performance.now() + timeoutMs;
    while (all.some((p) => p.waiting.size > 0) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const list of this.pending.values()) list.length = 0;
    this.pending.clear();
    return all.map((p) => p.result);
  }

  stop(): void {
    this.stopping = true;
    for (const a of this.agents) a?.call?.cancel();
    for (const c of this.clients) c.close();
  }

  private openAgent(client: FederationClient, index: number): SimAgent {
    const subs = subscribedServices(this.config.layout, index).map(serviceKeyOf);
    const agent: SimAgent = { index, client, call: undefined, attempt: 0, registered: false, seen: new Map(subs.map((k) => [k, 0])), missing: subs.length };
    this.attach(agent);
    return agent;
  }

  /** Opens the agent's stream and registers; a failed stream reconnects with the real agent's backoff. */
  private attach(agent: SimAgent): void {
    const call = agent.client.Connect();
    agent.call = call;
    let done = false;
    call.on('data', (msg: FederationMessage__Output) => {
      if (msg.msg === 'registered') {
        agent.attempt = 0;
        if (!agent.registered) {
          agent.registered = true;
          if (++this.registered === this.config.layout.agents) this.registeredAt = performance.now();
        }
        this.onProgress?.();
      } else if (msg.msg === 'update' && msg.update) {
        this.updates++;
        this.servicesReceived += msg.update.services.length;
        this.onUpdate(agent, msg.update);
        call.write({ ack: { nonce: msg.update.nonce, errorDetail: '' } });
      }
    });
    const lost = (err: Error | undefined) => {
      if (done || this.stopping) return;
      done = true;
      this.streamFailures++;
      this.lastFailure = err?.message ?? 'stream ended';
      // As agent/registration/session.ts: 0.5 s doubling to 5 s, jittered.
      const delay = Math.min(5_000, 500 * 2 ** Math.min(agent.attempt++, 5)) * (0.5 + Math.random());
      setTimeout(() => {
        if (!this.stopping) this.attach(agent);
      }, delay);
    };
    call.on('error', (err: Error) => lost(err));
    call.on('end', () => lost(undefined));
    call.write({ register: registerMessage(this.config.layout, agent.index) });
  }

  private onUpdate(agent: SimAgent, update: ServiceUpdate__Output): void {
    const now = performance.now();
    for (const svc of update.services) {
      this.track(agent, svc.key, svc.endpoints.length);
      const list = this.pending.get(svc.key);
      if (!list) continue;
      for (const p of list) {
        if (!p.waiting.has(agent.index)) continue;
        const ep = svc.endpoints.find((e) => e.workload === p.workload);
        if (ep?.health !== 'UNHEALTHY') continue;
        p.waiting.delete(agent.index);
        const ms = Number((now - p.sentAt).toFixed(2));
        p.result.received++;
        p.result.firstMs ??= ms;
        if (p.waiting.size === 0) p.result.lastMs = ms;
      }
    }
    for (const key of update.removed) this.track(agent, key, 0);
  }

  private track(agent: SimAgent, key: string, endpoints: number): void {
    const before = agent.seen.get(key);
    if (before === undefined) return;
    const want = this.expectedEndpoints.get(key);
    const wasFull = before === want;
    agent.seen.set(key, endpoints);
    const isFull = endpoints === want;
    if (wasFull === isFull) return;
    agent.missing += isFull ? -1 : 1;
    if (agent.missing === 0 && isFull) this.complete++;
    else if (agent.missing === 1 && !isFull) this.complete--;
    this.onProgress?.();
  }
}

let sim: Simulator | undefined;
process.on('message', (raw) => {
  const msg = raw as ToSim;
  const fail = (err: unknown) => send({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
  switch (msg.type) {
    case 'start':
      sim = new Simulator(msg.config);
      sim.connect().then(() => send(sim!.connectedMessage()), fail);
      return;
    case 'changes':
      if (!sim) return fail(new Error('changes before start'));
      sim.changes(msg.from, msg.count, msg.intervalMs, msg.timeoutMs).then((results) => send({ type: 'changes-done', results, ...sim!.failures() }), fail);
      return;
    case 'stop':
      sim?.stop();
      // Let the cancels reach the wire, then leave.
      setTimeout(() => process.exit(0), 200);
      return;
  }
});
process.on('disconnect', () => process.exit(0));
