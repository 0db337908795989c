// Limits on what one agent may send, per identity and per stream, with the
// defaults in one table. The numbers are far above what a large real
// deployment uses (a VM serving a handful of services, subscribed to a few
// hundred) and far below what would let one agent exhaust the federation.
// Every one is configurable (`registrationLimits:` in the federation config).

/** What one agent may register and subscribe to. */
export interface RegistrationLimits {
  /** Services in one Register. */
  servicesPerWorkload: number;
  /** Ports of one service. */
  portsPerService: number;
  /** Service keys one stream may be subscribed to at once. */
  subscriptionsPerAgent: number;
  /** Labels on one workload. */
  labelsPerWorkload: number;
  /** Bytes of one gRPC message from an agent (Register, Subscribe, health). */
  maxMessageBytes: number;
}

export const REGISTRATION_LIMITS_DEFAULTS: RegistrationLimits = Object.freeze({
  servicesPerWorkload: 64,
  portsPerService: 64,
  subscriptionsPerAgent: 5_000,
  labelsPerWorkload: 64,
  maxMessageBytes: 1024 * 1024,
});

/** Longest string of host facts (hostname, OS names) and most addresses an agent may report. */
export const HOST_FACT_MAX_CHARS = 256;
export const HOST_FACT_MAX_ADDRESSES = 64;
/** Longest agent version string. */
export const AGENT_VERSION_MAX_CHARS = 64;
