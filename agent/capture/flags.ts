// Command-line flags for `kedge capture`. Flags become the same keys as the
// `capture:` block of agent.yaml, so one validator checks both and a flag
// overrides the file key by key.
import { KedgeError } from '../../proto/model/errors';

/** A parsed `kedge capture ...` command line. */
export interface CaptureArgs {
  command: 'install' | 'remove' | 'show' | 'help';
  dryRun: boolean;
  config?: string;
  /** capture-block keys set by flags, in YAML shape (ports as numbers, lists as arrays). */
  overrides: Record<string, unknown>;
  /** Which flag set each override key, for error messages. */
  flagOf: Record<string, string>;
}

type Kind = 'id' | 'port' | 'list' | 'bool';

// flag -> [capture key, kind]
const FLAGS: Record<string, [string, Kind]> = {
  'proxy-user': ['proxyUser', 'id'],
  'proxy-group': ['proxyGroup', 'id'],
  'outbound-port': ['outboundPort', 'port'],
  'inbound-port': ['inboundPort', 'port'],
  'dns-port': ['dnsPort', 'port'],
  'inbound-ports': ['inboundPorts', 'list'],
  'exclude-inbound-ports': ['excludeInboundPorts', 'list'],
  'exclude-outbound-ports': ['excludeOutboundPorts', 'list'],
  'include-outbound-cidrs': ['includeOutboundCidrs', 'list'],
  'exclude-outbound-cidrs': ['excludeOutboundCidrs', 'list'],
  dns: ['dns', 'bool'],
  ipv6: ['ipv6', 'bool'],
};

/** The usage text of `kedge capture`. */
export const CAPTURE_USAGE = `usage: kedge capture install|remove|show [--dry-run] [--config agent.yaml] [options]

  install   redirect this host's traffic into the Kedge proxy (needs root)
  remove    delete every Kedge chain and jump; other rules stay untouched
  show      print the Kedge rules currently installed
  --dry-run print the rules (install) or the change (remove) without applying

options (override the capture: block of --config):
  --proxy-user NAME|UID           the proxy's user; its traffic is never captured (default kedge)
  --proxy-group NAME|GID          the proxy's group, also never captured
  --outbound-port N               outbound listener (default 15001)
  --inbound-port N                inbound listener (default 15006)
  --dns-port N                    DNS listener (default 15053)
  --inbound-ports P,P|'*'         inbound TCP ports to capture (default none)
  --exclude-inbound-ports P,P     with '*': ports left alone (default 22 and Kedge's ports)
  --exclude-outbound-ports P,P    outbound ports left alone (default 22,15012,15014)
  --include-outbound-cidrs C,C|'*'  outbound destinations captured (default '*')
  --exclude-outbound-cidrs C,C    outbound destinations left alone
  --dns | --no-dns                redirect port 53 to the DNS listener (default on)
  --ipv6 | --no-ipv6 | --ipv6=auto  mirror into ip6tables (default auto)
`;

/** Parses the arguments after `kedge capture`; a mistake is KEDGE_USAGE. */
export function parseCaptureArgs(argv: readonly string[]): CaptureArgs {
  const out: CaptureArgs = { command: 'help', dryRun: false, overrides: {}, flagOf: {} };
  let command: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--')) {
      if (command !== undefined) usage(`unexpected argument "${arg}"`);
      command = arg;
      continue;
    }
    const eq = arg.indexOf('=');
    let name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    let value: string | undefined = eq < 0 ? undefined : arg.slice(eq + 1);
    const takeValue = () => {
      if (value !== undefined) return value;
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) usage(`--${name} needs a value`);
      i++;
      return next;
    };
    if (name === 'dry-run' || name === 'help') {
      if (value !== undefined) usage(`--${name} takes no value`);
      if (name === 'dry-run') out.dryRun = true;
      else command = 'help';
      continue;
    }
    if (name === 'config') {
      out.config = takeValue();
      continue;
    }
    let negated = false;
    if (name.startsWith('no-') && FLAGS[name.slice(3)]?.[1] === 'bool') {
      negated = true;
      name = name.slice(3);
    }
    const spec = FLAGS[name];
    if (!spec) usage(`unknown flag --${name}`);
    const [key, kind] = spec;
    out.flagOf[key] = `--${negated ? 'no-' : ''}${name}`;
    if (kind === 'bool') {
      if (negated && value !== undefined) usage(`--no-${name} takes no value`);
      out.overrides[key] = negated ? false : value === undefined || value === 'true' ? true : value === 'false' ? false : value;
      continue;
    }
    value = takeValue();
    out.overrides[key] = kind === 'list' ? listValue(value) : numberish(value);
  }
  if (command === undefined) return out;
  if (command !== 'install' && command !== 'remove' && command !== 'show' && command !== 'help') usage(`unknown command "${command}"`);
  out.command = command;
  return out;
}

// '*' stays a string; "22,80" becomes [22, 80]; anything else stays text for the validator to name.
function listValue(v: string): unknown {
  if (v === '*') return v;
  return v.split(',').map((s) => s.trim()).filter(Boolean).map(numberish);
}

function numberish(v: string): string | number {
  return /^\d+$/.test(v) ? Number(v) : v;
}

function usage(msg: string): never {
  throw new KedgeError('KEDGE_USAGE', `kedge capture: ${msg}\n\n${CAPTURE_USAGE}`);
}
