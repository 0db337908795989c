// The explicit upstream listener: a local plaintext port bound to one
// service port (`127.0.0.1:19080` forwards to cart.shop:8080), no iptables
// needed. Each accepted connection gets its record and goes to the
// forwarding engine (engine.ts), which picks the stack by the port's
// protocol.
import * as net from 'node:net';
import { KedgeError } from '../../proto/model/errors';
import { ConnectionTrace, destinationService } from './connection-record';
import { type MeshDeps, forwardToService, refuseOutbound } from './engine';
import { UNKNOWN_PEER } from './record';
import type { ProxySnapshot, UpstreamSpec } from './types';

export type { ClientTls } from './dial';
export { MAX_ATTEMPTS } from './attempts';

/** What an upstream listener reads at accept time; getters, so it always sees the current snapshot and identity. */
export interface UpstreamDeps extends Omit<MeshDeps, 'track'> {
  snapshot: () => ProxySnapshot;
}

/** The record of an outbound connection as accepted: source is this proxy, the rest learned as it goes. */
export function outboundTrace(deps: Pick<UpstreamDeps, 'sink' | 'self'>, service = destinationService('', '', 0)): ConnectionTrace {
  return new ConnectionTrace(deps.sink, { reporter: 'source', source: deps.self(), destination: UNKNOWN_PEER, service, connectionSecurityPolicy: 'unknown', stack: 'opaque' });
}

/** An explicit upstream listener: a local plaintext port carried to one service port. */
export class UpstreamListener {
  readonly server: net.Server;
  /** Client and mesh sockets, for drain on close. */
  readonly sockets = new Set<net.Socket>();
  private readonly mesh: MeshDeps;

  constructor(
    readonly spec: UpstreamSpec,
    private readonly deps: UpstreamDeps,
  ) {
    this.mesh = { ...deps, track: (s) => this.track(s) };
    // pauseOnConnect: what the client sends waits in the kernel buffer until
    // an endpoint is connected and verified, so a retry loses nothing.
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => void this.onConnection(client));
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private async onConnection(client: net.Socket): Promise<void> {
    this.track(client);
    // The client is paused, but an error may still arrive before splice
    // installs its handler; an unhandled 'error' would crash the agent.
    client.on('error', () => undefined);
    const fields = { service: this.spec.service, port: this.spec.port };
    const trace = outboundTrace(this.deps);
    const service = this.deps.snapshot().services.get(this.spec.service);
    if (service === undefined) {
      return refuseOutbound(client, trace, new KedgeError('KEDGE_UNKNOWN_SERVICE', `service ${this.spec.service} is not in the mesh view; check its name.namespace and that the federation knows it`), this.deps.logger, fields);
    }
    if (!service.ports.some((p) => p.port === this.spec.port)) {
      return refuseOutbound(client, trace, new KedgeError('KEDGE_UNKNOWN_SERVICE_PORT', `service ${this.spec.service} has no port ${this.spec.port}; it has ${service.ports.map((p) => p.port).join(', ') || 'none'}`), this.deps.logger, fields);
    }
    await forwardToService(client, { service, port: this.spec.port }, trace, this.mesh);
  }
}
