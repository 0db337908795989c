// In-process server proxies for the L7 tests: a Proxy serving `targets` on
// an ephemeral mTLS port, and the endpoint view a client proxy's snapshot
// names it by.
import { Proxy } from '../../agent/proxy/proxy';
import type { TrafficRecord } from '../../agent/proxy/record';
import type { EndpointView, LocalTarget } from '../../agent/proxy/types';
import { logCapture } from './logs';
import { type TestCa, makeLeaf, toTlsIdentity } from './pki';

/** A started server proxy for `spiffeId` and its endpoint view. */
export async function startServerProxy(ca: TestCa, spiffeId: string, workload: string, targets: LocalTarget[], records?: TrafficRecord[]): Promise<{ proxy: Proxy; view: EndpointView }> {
  const leaf = makeLeaf(ca, spiffeId);
  const proxy = new Proxy({
    inboundListen: { host: '127.0.0.1', port: 0 },
    targets,
    upstreams: [],
    identity: toTlsIdentity(leaf),
    logger: logCapture().logger,
    ...(records !== undefined ? { records: { open: () => undefined, finish: (r: TrafficRecord) => records.push(r) } } : {}),
  });
  await proxy.start();
  const at = proxy.inboundAddress();
  return { proxy, view: { address: at.host, mtlsPort: at.port, identity: leaf.spiffeId, workload, healthy: true, ports: [] } };
}

/** TCP connections established to any of `ports` on this host now, counted with `ss` (the client side of each: its peer port is one of them). */
export async function establishedTo(ports: readonly number[]): Promise<number> {
  const { execFile } = await import('node:child_process');
  const filter = ports.map((p) => `dport = :${p}`).join(' or ');
  const out = await new Promise<string>((resolve, reject) => execFile('ss', ['-Htn', 'state', 'established', `( ${filter} )`], (err, stdout) => (err ? reject(new Error(`ss failed (is iproute2 installed?): ${err.message}`)) : resolve(stdout))));
  return out.split('\n').filter((l) => l.trim() !== '').length;
}
