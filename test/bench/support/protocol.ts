// Messages between the federation-push orchestrator and its child processes
// (the agent simulator and the fan-out floor server), over Node's IPC channel.
import type { Layout } from './layout';

/** TLS material the simulated agents share: one certificate for all of them. */
export interface AgentCredentials {
  rootCertPem: string;
  certChainPem: string;
  keyPem: string;
  trustDomain: string;
}

/** What the simulator needs to connect its agents. */
export interface SimConfig {
  layout: Layout;
  /** Federation gRPC addresses (host:port); agent i uses addresses[i % length]. */
  addresses: string[];
  /** Agents whose streams share one gRPC channel (one HTTP/2 connection). */
  agentsPerChannel: number;
  credentials: AgentCredentials;
  /** Agents started per second; 0 starts them all at once. */
  connectRate: number;
  /** How long registration plus initial state may take before the run fails. */
  connectTimeoutMs: number;
}

/** One measured change: times are ms after the HealthReport was written, on the simulator's clock. */
export interface ChangeResult {
  change: number;
  agent: number;
  service: number;
  /** Subscribers that must see the change, and how many did within the timeout. */
  expected: number;
  received: number;
  firstMs: number | null;
  /** Time to the last subscriber's receipt; null when some subscriber never saw it. */
  lastMs: number | null;
}

/** Streams that failed and were reopened since the simulator started, and the last error. */
export interface StreamFailures {
  streamFailures: number;
  lastFailure: string | undefined;
}

/** Orchestrator -> simulator. */
export type ToSim =
  | { type: 'start'; config: SimConfig }
  /** Sends changes from..from+count-1, one every intervalMs (0: all in one tick). */
  | { type: 'changes'; from: number; count: number; intervalMs: number; timeoutMs: number }
  | { type: 'stop' };

/** Simulator -> orchestrator. */
export type FromSim =
  | ({ type: 'connected'; registeredMs: number; initialStateMs: number; channels: number; updatesReceived: number; servicesReceived: number } & StreamFailures)
  | ({ type: 'changes-done'; results: ChangeResult[] } & StreamFailures)
  | { type: 'failed'; message: string };

/** Orchestrator -> floor server. */
export type ToFloor = { type: 'start'; layout: Layout; rootCertPem: string; certChainPem: string; keyPem: string; trustDomain: string };

/** Floor server -> orchestrator. */
export type FromFloor = { type: 'listening'; address: string } | { type: 'failed'; message: string };
