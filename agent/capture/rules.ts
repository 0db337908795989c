// The capture rules as data: a pure function from options to the nat-table
// text iptables-restore takes. Modelled on istio-iptables, with one chain per
// decision so `iptables-save` reads like the design:
//
//   PREROUTING -> KEDGE_INBOUND  -> KEDGE_IN_REDIRECT (REDIRECT to the inbound port)
//   OUTPUT     -> KEDGE_OUTPUT   -> KEDGE_OUTPUT_DNS  (REDIRECT port 53 to the DNS port)
//                                -> KEDGE_REDIRECT    (REDIRECT to the outbound port)
//
// Rules are written in the exact form iptables-save prints them (`-m tcp`,
// match order), so what we install is what we read back.
import { CaptureOptions } from './options';
import { KEDGE_CHAINS, KedgeTableState, kedgeStateFromSave, renderState } from './table';

/** iptables-restore input for the nat table: `v4` always, `v6` when IPv6 is on. */
export interface CaptureRules {
  v4: string;
  v6?: string;
}

/** Builds the rules for `opts`; `opts.ipv6` must already be decided (anything but true means IPv4 only). */
export function buildCaptureRules(opts: CaptureOptions): CaptureRules {
  const v4 = renderState(captureState(opts, 4));
  return opts.ipv6 === true ? { v4, v6: renderState(captureState(opts, 6)) } : { v4 };
}

/** The same rules as a table state, for one address family. */
export function captureState(opts: CaptureOptions, family: 4 | 6): KedgeTableState {
  // All of 127/8: the proxy never means to reach its own inbound listener through a loopback address.
  const loopback = family === 4 ? '127.0.0.0/8' : '::1/128';
  const tcpPort = (p: number) => `-p tcp -m tcp --dport ${p}`;
  const owners = [`--uid-owner ${opts.proxyUid}`, ...(opts.proxyGid === undefined ? [] : [`--gid-owner ${opts.proxyGid}`])];
  const inbound = opts.inboundPorts === '*' || opts.inboundPorts.length > 0;
  const ofFamily = (cidrs: readonly string[]) => cidrs.filter((c) => c.includes(':') === (family === 6));
  const r: string[] = [];
  const add = (chain: string, spec: string) => r.push(`-A ${chain} ${spec}`);

  if (inbound) add('PREROUTING', '-p tcp -j KEDGE_INBOUND');
  // Without DNS capture only TCP needs to enter the chain.
  add('OUTPUT', opts.dns ? '-j KEDGE_OUTPUT' : '-p tcp -j KEDGE_OUTPUT');

  if (opts.inboundPorts === '*') {
    for (const p of opts.excludeInboundPorts) add('KEDGE_INBOUND', `${tcpPort(p)} -j RETURN`);
    add('KEDGE_INBOUND', '-p tcp -j KEDGE_IN_REDIRECT');
  } else {
    for (const p of opts.inboundPorts) add('KEDGE_INBOUND', `${tcpPort(p)} -j KEDGE_IN_REDIRECT`);
  }
  add('KEDGE_IN_REDIRECT', `-p tcp -j REDIRECT --to-ports ${opts.inboundPort}`);

  // The proxy reaching this host's own (non-loopback) address travels over
  // lo and never passes PREROUTING, so inbound capture would miss it; send it
  // through the same port selection as inbound traffic (istio does the same).
  // Port 53 stays out so the agent's own upstream DNS is never redirected.
  if (inbound) {
    for (const o of owners) add('KEDGE_OUTPUT', `! -d ${loopback} -o lo -p tcp -m tcp ! --dport 53 -m owner ${o} -j KEDGE_INBOUND`);
  }
  // The proxy's own traffic is never captured: that is what prevents loops.
  for (const o of owners) add('KEDGE_OUTPUT', `-m owner ${o} -j RETURN`);
  // Everything below is from ordinary users. DNS comes before the loopback
  // exemption because local resolvers (127.0.0.53) are reached over lo.
  if (opts.dns) add('KEDGE_OUTPUT', '-j KEDGE_OUTPUT_DNS');
  add('KEDGE_OUTPUT', '-o lo -j RETURN');
  for (const p of opts.excludeOutboundPorts) add('KEDGE_OUTPUT', `${tcpPort(p)} -j RETURN`);
  for (const c of ofFamily(opts.excludeOutboundCidrs)) add('KEDGE_OUTPUT', `-d ${c} -j RETURN`);
  if (opts.includeOutboundCidrs === '*') add('KEDGE_OUTPUT', '-j KEDGE_REDIRECT');
  else for (const c of ofFamily(opts.includeOutboundCidrs)) add('KEDGE_OUTPUT', `-d ${c} -j KEDGE_REDIRECT`);

  if (opts.dns) {
    add('KEDGE_OUTPUT_DNS', `-p udp -m udp --dport 53 -j REDIRECT --to-ports ${opts.dnsPort}`);
    add('KEDGE_OUTPUT_DNS', `-p tcp -m tcp --dport 53 -j REDIRECT --to-ports ${opts.dnsPort}`);
  }
  add('KEDGE_REDIRECT', `-p tcp -j REDIRECT --to-ports ${opts.outboundPort}`);

  // All five chains always exist, so `show` and `remove` see one shape.
  return kedgeStateFromSave(renderState({ chains: [...KEDGE_CHAINS], rules: r }));
}
