// The outbound capture listener (15001): iptables REDIRECTs the host's
// outbound TCP here; the original destination (SO_ORIGINAL_DST) is looked up
// in the current snapshot's destination index and the connection goes to
// the forwarding engine like an explicit upstream's (mTLS to meshed
// endpoints, plain TCP to plaintext ones, the stack chosen by the port's
// protocol), straight to a destination outside the mesh (allow-any), or
// nowhere (registry-only).
import * as net from 'node:net';
import { type HostPort, formatHostPort } from '../../proto/model/address';
import { KedgeError, errorMessage } from '../../proto/model/errors';
import type { OriginalDst } from '../native';
import { type DestinationIndex, type OutboundPolicy, decideOutbound } from './destinations';
import { type MeshDeps, forwardToService, refuseOutbound } from './engine';
import { forwardDirect } from './passthrough';
import { failureCode } from './stats';
import { type UpstreamDeps, outboundTrace } from './upstream';

/** Reads where a captured connection was headed; the native addon's originalDst, or a stand-in in tests. */
export type OriginalDstReader = (socket: net.Socket) => OriginalDst;

/** What the outbound listener reads at accept time. */
export interface OutboundDeps extends Omit<UpstreamDeps, 'snapshot'> {
  /** The index of the snapshot current now (built once per snapshot). */
  destinations: () => DestinationIndex;
  policy: OutboundPolicy;
  originalDst: OriginalDstReader;
}

/** The outbound capture listener; see the file comment. One server per listen address (IPv4 and IPv6 loopback). */
export class OutboundListener {
  readonly servers: net.Server[];
  /** Client, mesh and passthrough sockets, for drain on close. */
  readonly sockets = new Set<net.Socket>();
  private readonly mesh: MeshDeps;

  constructor(
    readonly listen: readonly HostPort[],
    private readonly deps: OutboundDeps,
  ) {
    this.mesh = { ...deps, track: (s) => this.track(s) };
    // pauseOnConnect: the client's bytes stay in the kernel until the route
    // is decided and connected, so a retry loses nothing.
    this.servers = listen.map(() => net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => void this.onConnection(client)));
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private async onConnection(client: net.Socket): Promise<void> {
    this.track(client);
    client.on('error', () => undefined);
    const { logger } = this.deps;
    const trace = outboundTrace(this.deps);
    const source = formatHostPort({ host: client.remoteAddress ?? '?', port: client.remotePort ?? 0 });

    let dst: OriginalDst;
    try {
      dst = this.deps.originalDst(client);
    } catch (err) {
      const e = err instanceof KedgeError ? err : new KedgeError(failureCode(err, 'KEDGE_ORIGINAL_DST_UNAVAILABLE'), errorMessage(err), { cause: err });
      return refuseOutbound(client, trace, e, logger, { capture: 'outbound', source }, true);
    }
    const originalDst = formatHostPort({ host: dst.address, port: dst.port });
    const self = { address: client.localAddress ?? '', port: client.localPort ?? 0 };
    const decision = decideOutbound(dst, self, this.deps.destinations(), this.deps.policy);
    switch (decision.action) {
      case 'refuse':
        return refuseOutbound(client, trace, new KedgeError(decision.code, decision.reason), logger, { capture: 'outbound', source, originalDst, policy: this.deps.policy }, true);
      case 'passthrough':
        trace.update({ service: { hostname: '', name: '', namespace: '', port: dst.port } });
        return forwardDirect(client, { host: dst.address, port: dst.port }, trace, { ...this.mesh }, {
          msg: 'outbound',
          fields: { capture: 'outbound', route: 'passthrough', source, originalDst },
          failCode: 'KEDGE_PASSTHROUGH_CONNECT_FAILED',
        });
      case 'mesh': {
        const { service, port, endpoint } = decision.destination;
        const log = { capture: 'outbound', route: decision.via, source, originalDst };
        return forwardToService(client, { service, port, log, ...(endpoint ? { preferred: endpoint } : {}) }, trace, this.mesh);
      }
    }
  }
}
