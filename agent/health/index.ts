// Agent health probes: `services[].health` config, the four probes, and the
// checker that turns probe results into health reports for the federation.
export { HEALTH_DEFAULTS, PROBE_KINDS, parseHealthCheck, type HealthCheckConfig, type HealthThresholds, type ProbeConfig, type HttpProbeConfig, type TcpProbeConfig, type GrpcProbeConfig, type ExecProbeConfig } from './config';
export { runProbe, httpProbe, tcpProbe, grpcProbe, execProbe, EXEC_OUTPUT_LIMIT, type ProbeResult, type ProbeRunner } from './probes';
export { HealthChecker, nextHealth, INITIAL_HEALTH, MAX_DETAIL, realTimers, type HealthCheckerOptions, type HealthChangeListener, type HealthState, type HealthStatus, type HealthTarget, type ServiceHealth, type Timers } from './checker';
export { healthClientConstructor, encodeHealthCheckRequest, decodeHealthCheckResponse, HEALTH_CHECK_PATH, type ServingStatus, type HealthCheckRequest, type HealthCheckResponse } from './grpc-health';
