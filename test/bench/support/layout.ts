// The simulated mesh of the federation-push benchmark, as pure functions of
// four numbers, so the orchestrator, the agent simulator and the fan-out
// floor server agree on it without exchanging more than the numbers.
//
// Agent i serves the `servesPerAgent` services that start at
// (i * servesPerAgent) mod services, so with the numbers (1,000
// agents, 1,000 services, 20 each) service s is served by the 20 agents with
// i mod 50 == floor(s / 20): 20 endpoints per service, 20,000 in all.
// Agent i subscribes to services (37 i + j * floor(services / subs)) mod
// services for j < subs; 37 is prime to 1,000, so every service gets the same
// number of subscribers (20), spread over the agents rather than clustered.
import type { Register } from '../../../proto/loader';

/** The four numbers that define the simulated mesh. */
export interface Layout {
  agents: number;
  services: number;
  servesPerAgent: number;
  subscriptionsPerAgent: number;
}

/** Namespace and service account of every simulated agent (one certificate for all). */
export const BENCH_NAMESPACE = 'bench';
export const BENCH_SERVICE_ACCOUNT = 'sim';
export const BENCH_TRUST_DOMAIN = 'bench.local';
const SUBSCRIPTION_STRIDE_SEED = 37;
// Prime, so change c walks the agents in an order that alternates replicas.
const CHANGE_AGENT_STRIDE = 7919;

/** Throws when the numbers do not give a mesh in which every service exists. */
export function checkLayout(l: Layout): void {
  for (const [k, v] of Object.entries(l)) if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer, got ${v}`);
  if (l.servesPerAgent > l.services) throw new Error(`each agent serves ${l.servesPerAgent} services but there are only ${l.services}`);
  if (l.subscriptionsPerAgent > l.services) throw new Error(`each agent subscribes to ${l.subscriptionsPerAgent} services but there are only ${l.services}`);
  if (l.agents * l.servesPerAgent < l.services) throw new Error(`${l.agents} agents x ${l.servesPerAgent} services leave some of the ${l.services} services without endpoints`);
  if (l.agents % CHANGE_AGENT_STRIDE === 0) throw new Error(`--agents must not be a multiple of ${CHANGE_AGENT_STRIDE}`);
}

export function serviceName(s: number): string {
  return `svc-${String(s).padStart(4, '0')}`;
}

export function serviceKeyOf(s: number): string {
  return `${serviceName(s)}.${BENCH_NAMESPACE}`;
}

export function agentName(i: number): string {
  return `sim-${String(i).padStart(5, '0')}`;
}

/** The workload id the federation gives agent i's endpoints (namespace/name). */
export function agentWorkloadId(i: number): string {
  return `${BENCH_NAMESPACE}/${agentName(i)}`;
}

/** A 10.x.y.z address, data only: nothing ever dials it. */
export function agentAddress(i: number): string {
  return `10.${1 + (i >>> 16)}.${(i >>> 8) & 255}.${i & 255}`;
}

export function servedServices(l: Layout, i: number): number[] {
  const start = (i * l.servesPerAgent) % l.services;
  return Array.from({ length: l.servesPerAgent }, (_, j) => (start + j) % l.services);
}

export function subscribedServices(l: Layout, i: number): number[] {
  const step = Math.max(1, Math.floor(l.services / l.subscriptionsPerAgent));
  const start = (i * SUBSCRIPTION_STRIDE_SEED) % l.services;
  return Array.from({ length: l.subscriptionsPerAgent }, (_, j) => (start + j * step) % l.services);
}

/** For each service, the agents that serve it (its endpoints). */
export function servedBy(l: Layout): number[][] {
  const out: number[][] = Array.from({ length: l.services }, () => []);
  for (let i = 0; i < l.agents; i++) for (const s of servedServices(l, i)) out[s]!.push(i);
  return out;
}

/** For each service, the agents subscribed to it. */
export function subscribersOf(l: Layout): number[][] {
  const out: number[][] = Array.from({ length: l.services }, () => []);
  for (let i = 0; i < l.agents; i++) for (const s of subscribedServices(l, i)) out[s]!.push(i);
  return out;
}

/**
 * Change c marks one (agent, service) pair unhealthy. Pairs are distinct for
 * c < agents * servesPerAgent, so every change is a new endpoint state and
 * its arrival is unambiguous; consecutive changes come from agents of
 * alternating parity (and so, with two replicas, from both).
 */
export function changeTarget(l: Layout, c: number): { agent: number; service: number } {
  const round = Math.floor(c / l.agents);
  const agent = ((c % l.agents) * CHANGE_AGENT_STRIDE) % l.agents;
  const slot = ((c % l.agents) + round) % l.servesPerAgent;
  return { agent, service: servedServices(l, agent)[slot]! };
}

/** The Register agent i sends: its workload, served services and subscriptions. */
export function registerMessage(l: Layout, i: number): Register {
  const name = agentName(i);
  return {
    workload: {
      name,
      namespace: BENCH_NAMESPACE,
      serviceAccount: BENCH_SERVICE_ACCOUNT,
      address: agentAddress(i),
      locality: { region: 'bench', zone: `zone-${i % 3}`, subzone: '' },
      network: '',
      labels: { app: name },
      inboundPort: 15006,
    },
    services: servedServices(l, i).map((s) => ({
      name: serviceName(s),
      namespace: BENCH_NAMESPACE,
      ports: [{ name: 'http', port: 8080, targetPort: 8080, protocol: 'http' }],
    })),
    host: { hostname: name, os: 'linux', osRelease: 'bench', kernel: 'bench', arch: 'x64', cpus: 2, memoryBytes: 4 * 1024 ** 3, addresses: [agentAddress(i)] },
    subscriptions: subscribedServices(l, i).map(serviceKeyOf),
    agentVersion: 'bench-sim',
  };
}
