// Transparent capture: options, the pure rule builder, and the edge that
// applies rules with iptables-restore. See docs/capture.md.
export { CAPTURE_DEFAULTS, CAPTURE_KEYS, KEDGE_PORTS, CaptureOptions, captureOptions, captureOptionsFromDoc } from './options';
export { CaptureRules, buildCaptureRules, captureState } from './rules';
export { KEDGE_CHAINS, KedgeTableState, convergePayload, kedgeStateFromSave, renderState } from './table';
export { CommandResult, CommandRunner, systemRunner } from './runner';
export {
  CaptureEnv,
  CaptureState,
  IptablesTools,
  hostHasIpv6,
  installCapture,
  installCaptureRules,
  iptablesTools,
  parseRestoreError,
  readCaptureState,
  removeCapture,
  resolveIpv6,
  showCapture,
} from './apply';
export { CAPTURE_USAGE, parseCaptureArgs } from './flags';
export { CaptureCommandDeps, formatRules, runCaptureCommand } from './cli';
export { UserDb, staticUserDb, systemUserDb } from './users';
