// Limits on what one agent may send, per identity and per stream. Their
// defaults are in the one limits table (proto/model/limits.ts); every one is
// configurable (`registrationLimits:` in the federation config).
import { LIMITS, type RegistrationLimits } from '../../proto/model/limits';

export type { RegistrationLimits } from '../../proto/model/limits';

export const REGISTRATION_LIMITS_DEFAULTS: RegistrationLimits = LIMITS.registration;

/** Longest string of host facts (hostname, OS names) and most addresses an agent may report. */
export const HOST_FACT_MAX_CHARS = 256;
export const HOST_FACT_MAX_ADDRESSES = 64;
/** Longest agent version string. */
export const AGENT_VERSION_MAX_CHARS = 64;
