// The federation's per-change work in one process, without sockets: one
// agent record replaced (as the registry's watch replaces it on a health
// report), buildMeshView over every record, the per-network view, and every
// push session's delta, encoded as the gRPC Connect stream would encode it.
// It isolates what the federation-push benchmark's paced phase costs the
// federation itself: CPU per change, and bytes that land in V8's old space per
// change (promoted or pretenured), which is what grows the heap between full
// GCs and so sets the federation's peak RSS.
//
// Usage: node --expose-gc dist/test/bench/mesh-rebuild.js [--agents=1000] [--services=1000] [--changes=300]
//   [--encoder=generated]
import { getHeapSpaceStatistics } from 'node:v8';
import { recordFromRegister } from '../../federation/api/register';
import { buildMeshView } from '../../federation/mesh/merge';
import { viewForNetwork } from '../../federation/mesh/gateways';
import type { AgentRecord, MeshView } from '../../federation/mesh/types';
import { PushSession } from '../../federation/push/session';
import * as path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { kedgeProto, LOADER_OPTIONS } from '../../proto/loader';
import type { FederationMessage, Register__Output } from '../../proto/loader';
import { formatSpiffeId } from '../../proto/model/spiffe';
import { BENCH_NAMESPACE, BENCH_SERVICE_ACCOUNT, BENCH_TRUST_DOMAIN, changeTarget, checkLayout, registerMessage, serviceName, type Layout } from './support/layout';

function intFlag(name: string, fallback: number): number {
  const raw = process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  return raw === undefined ? fallback : Number(raw);
}

// The Connect method as proto-loader generates it, without update-encoding's cache.
function generatedConnect(): unknown {
  const root = path.resolve(__dirname, '..', '..', '..', 'proto');
  const def = protoLoader.loadSync(path.join(root, 'kedge', 'v1', 'federation.proto'), { ...LOADER_OPTIONS, includeDirs: [root] });
  return (def['kedge.v1.Federation'] as protoLoader.ServiceDefinition).Connect;
}

const oldUsed = (): number => getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')!.space_used_size;
const gc = (globalThis as { gc?: () => void }).gc;

function main(): void {
  const layout: Layout = { agents: intFlag('agents', 1000), services: intFlag('services', 1000), servesPerAgent: 20, subscriptionsPerAgent: 20 };
  checkLayout(layout);
  const changes = intFlag('changes', 300);
  const identity = formatSpiffeId({ trustDomain: BENCH_TRUST_DOMAIN, namespace: BENCH_NAMESPACE, serviceAccount: BENCH_SERVICE_ACCOUNT });
  const now = new Date();
  // As the registry holds them: parsed back from the JSON the store keeps.
  const records: AgentRecord[] = [];
  for (let i = 0; i < layout.agents; i++) {
    records.push(JSON.parse(JSON.stringify(recordFromRegister(registerMessage(layout, i) as unknown as Register__Output, identity, 'r1', now))) as AgentRecord);
  }
  // The Connect stream's own serializer, so encoding costs what it costs on
  // the wire; --encoder=generated uses proto-loader's, without the cache.
  const connect = (process.argv.includes('--encoder=generated') ? generatedConnect() : kedgeProto().kedge.v1.Federation.service.Connect) as unknown as { responseSerialize: (m: FederationMessage) => Buffer };
  const serialize = connect.responseSerialize;
  let bytesSent = 0;
  const sessions = records.map((_r, i) => {
    const s = new PushSession((u, flushed) => {
      bytesSent += serialize({ update: u }).length;
      flushed();
    });
    s.subscribe(registerMessage(layout, i).subscriptions ?? [], []);
    return s;
  });
  const pushAll = (view: MeshView) => {
    const v = viewForNetwork(view, '', []);
    for (const s of sessions) s.push(v);
  };
  const i0 = performance.now();
  const first = buildMeshView(records);
  const i1 = performance.now();
  pushAll(first);
  const initialBuildMs = i1 - i0;
  const initialMs = performance.now() - i1;
  const initialKb = Math.round(bytesSent / 1024);
  bytesSent = 0; // the initial state is not a change

  gc?.();
  let promoted = 0;
  let rebuildMs = 0;
  let pushMs = 0;
  let before = oldUsed();
  const t0 = process.cpuUsage();
  for (let c = 0; c < changes; c++) {
    const { agent, service } = changeTarget(layout, c);
    const rec = records[agent]!;
    records[agent] = JSON.parse(JSON.stringify({ ...rec, health: { ...rec.health, [serviceName(service)]: { healthy: false, detail: 'bench' } } })) as AgentRecord;
    const a = performance.now();
    const view = buildMeshView(records);
    const b = performance.now();
    pushAll(view);
    rebuildMs += b - a;
    pushMs += performance.now() - b;
    const after = oldUsed();
    // A drop is a full GC; growth between them is what the change left in old space.
    if (after > before) promoted += after - before;
    before = after;
  }
  const cpu = process.cpuUsage(t0);
  const out = {
    bench: 'mesh-rebuild',
    layout,
    changes,
    encoder: process.argv.includes('--encoder=generated') ? 'generated' : 'cached',
    initialBuildMs: Number(initialBuildMs.toFixed(1)),
    initialPushMs: Number(initialMs.toFixed(1)),
    initialStateKb: initialKb,
    rebuildMsPerChange: Number((rebuildMs / changes).toFixed(2)),
    pushMsPerChange: Number((pushMs / changes).toFixed(2)),
    cpuMsPerChange: Number(((cpu.user + cpu.system) / 1000 / changes).toFixed(2)),
    oldSpaceKbPerChange: Math.round(promoted / 1024 / changes),
    encodedKbPerChange: Math.round(bytesSent / 1024 / changes),
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main();
