// Host facts an agent reports with its registration, from systeminformation.
import * as os from 'node:os';
import si from 'systeminformation';
import type { HostFacts } from '../proto/loader';

/** Collects hostname, OS, CPU count, memory and addresses; falls back to node:os when a probe fails. */
export async function collectHostFacts(): Promise<HostFacts> {
  const [osInfo, mem, ifaces] = await Promise.all([
    si.osInfo().catch(() => undefined),
    si.mem().catch(() => undefined),
    si.networkInterfaces().catch(() => undefined),
  ]);
  const list = Array.isArray(ifaces) ? ifaces : ifaces ? [ifaces] : [];
  const addresses = list.flatMap((i) => [i.ip4, i.ip6]).filter((a): a is string => !!a);
  return {
    hostname: osInfo?.hostname || os.hostname(),
    os: osInfo?.distro || os.type(),
    osRelease: osInfo?.release || os.release(),
    kernel: osInfo?.kernel || os.release(),
    arch: osInfo?.arch || os.arch(),
    cpus: os.cpus().length,
    memoryBytes: mem?.total ?? os.totalmem(),
    addresses,
  };
}

/**
 * The address peers should dial when the config names none: the first
 * non-internal IPv4 address of the default interface, else of any interface.
 */
export async function detectWorkloadAddress(): Promise<string | undefined> {
  const def = await si.networkInterfaceDefault().catch(() => '');
  const list = await si.networkInterfaces().catch(() => []);
  const ifaces = Array.isArray(list) ? list : [list];
  const pick = (i: (typeof ifaces)[number]) => (!i.internal && i.ip4 ? i.ip4 : undefined);
  return ifaces.filter((i) => i.iface === def).map(pick).find(Boolean) ?? ifaces.map(pick).find(Boolean);
}
