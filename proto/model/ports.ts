// Well-known ports both the agent and the federation need (ARCHITECTURE.md's
// port table). Every address stays configurable; these are the defaults.

/** The east-west gateway's well-known port: the federation advertises gateways at it unless told otherwise. */
export const GATEWAY_PORT = 15443;
