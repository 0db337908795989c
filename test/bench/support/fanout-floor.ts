// The baseline of the federation-push benchmark: a bare gRPC server speaking
// the same Federation.Connect protocol over the same mTLS, that sends the
// same ServiceUpdate messages as the federation (built with the federation's
// own merge from the agents' Registers) but does nothing else: no store, no
// watch, no rebuild, no debounce. A HealthReport flips the endpoint's health
// in place and the service is written to its subscribers at once. The
// latency it shows is what gRPC, TLS, the simulator and this machine cost on
// their own, the floor under any federation's number.
//
// Run as a forked process by test/bench/federation-push.ts.
import * as grpc from '@grpc/grpc-js';
import { kedgeProto } from '../../../proto/loader';
import type { AgentMessage__Output, FederationMessage, Register__Output, Service__Output } from '../../../proto/loader';
import { formatSpiffeId } from '../../../proto/model/spiffe';
import { recordFromRegister } from '../../../federation/api/register';
import { buildMeshView } from '../../../federation/mesh/merge';
import { BENCH_NAMESPACE, BENCH_SERVICE_ACCOUNT } from './layout';
import type { FromFloor, ToFloor } from './protocol';

type Stream = grpc.ServerDuplexStream<AgentMessage__Output, FederationMessage>;

interface FloorAgent {
  stream: Stream;
  register: Register__Output;
  nonce: number;
}

function send(msg: FromFloor): void {
  process.send?.(msg);
}

function startFloor(cfg: Extract<ToFloor, { type: 'start' }>): Promise<string> {
  const identity = formatSpiffeId({ trustDomain: cfg.trustDomain, namespace: BENCH_NAMESPACE, serviceAccount: BENCH_SERVICE_ACCOUNT });
  const agents = new Map<string, FloorAgent>();
  const subscribers = new Map<string, FloorAgent[]>();
  let services: Map<string, Service__Output> | undefined;
  let version = 0;

  const write = (a: FloorAgent, svcs: Service__Output[]) => {
    a.nonce += 1;
    a.stream.write({ update: { nonce: String(a.nonce), services: svcs, removed: [] } });
  };
  // Once every agent registered, the full view is built once and each agent
  // gets its subscribed services, as the federation's first push would.
  const buildAndSendInitial = () => {
    const now = new Date();
    const records = [...agents.values()].map((a) => recordFromRegister(a.register, identity, 'floor', now));
    services = new Map(buildMeshView(records).services);
    for (const a of agents.values()) {
      for (const key of a.register.subscriptions) {
        if (!subscribers.has(key)) subscribers.set(key, []);
        subscribers.get(key)!.push(a);
      }
      write(a, a.register.subscriptions.map((k) => services!.get(k)).filter((s): s is Service__Output => s !== undefined));
    }
  };

  const server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  server.addService(kedgeProto().kedge.v1.Federation.service, {
    Sign: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED, details: 'the floor server signs nothing' }),
    Connect: (stream: Stream) => {
      let me: FloorAgent | undefined;
      stream.on('error', () => undefined);
      stream.on('end', () => stream.end());
      stream.on('data', (msg: AgentMessage__Output) => {
        if (msg.msg === 'register' && msg.register?.workload) {
          me = { stream, register: msg.register, nonce: 0 };
          agents.set(msg.register.workload.name, me);
          stream.write({ registered: { agentId: `${BENCH_NAMESPACE}/${msg.register.workload.name}`, replica: 'floor', spiffeId: identity } });
          if (agents.size === cfg.layout.agents) buildAndSendInitial();
        } else if (msg.msg === 'health' && me && services) {
          const workload = `${BENCH_NAMESPACE}/${me.register.workload!.name}`;
          for (const h of msg.health!.services) {
            const key = `${h.service}.${BENCH_NAMESPACE}`;
            const svc = services.get(key);
            const ep = svc?.endpoints.find((e) => e.workload === workload);
            if (!svc || !ep) continue;
            ep.health = h.healthy ? 'HEALTHY' : 'UNHEALTHY';
            svc.version = `floor-${++version}`;
            for (const sub of subscribers.get(key) ?? []) write(sub, [svc]);
          }
        }
        // Acks need no answer.
      });
    },
  });
  const creds = grpc.ServerCredentials.createSsl(Buffer.from(cfg.rootCertPem), [{ cert_chain: Buffer.from(cfg.certChainPem), private_key: Buffer.from(cfg.keyPem) }], true);
  return new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', creds, (err, port) => (err ? reject(err) : resolve(`127.0.0.1:${port}`)));
  });
}

process.on('message', (raw) => {
  const msg = raw as ToFloor | { type: 'stop' };
  if (msg.type === 'start') {
    startFloor(msg).then(
      (address) => send({ type: 'listening', address }),
      (err: unknown) => send({ type: 'failed', message: err instanceof Error ? err.message : String(err) }),
    );
  } else if (msg.type === 'stop') {
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
