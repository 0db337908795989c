// The kedge CLI entry: dispatches subcommands, nothing else.
import { KedgeError, errorMessage } from '../proto/model/errors';

const HELP = `kedge — a service mesh for VMs, bare-metal hosts and Kubernetes clusters

commands:
  kedge federation [--config FILE] [--data-dir DIR] [--listen-grpc H:P] [--listen-http H:P] ...
  kedge agent --config FILE
  kedge token create --namespace NS --service-account SA [--service NAME]... [--workload NAME|GLOB]
                     [--labels k=v,...] [--gateway NETWORK] [--ttl 1h] [--uses 1] [--join ...]
  kedge get services|workloads|endpoints|clusters|tokens [NAME] [-o table|json]
  kedge delete workload NAMESPACE/NAME     # revokes its certificates
  kedge delete token ID
  kedge ca status|rotate [--reissue] [--finish]
  kedge status [-o table|json]
  kedge stat services|workloads [NAME] [--from NS/WORKLOAD] [--window 1m] [-o table|json]
  kedge apply -f FILE             (TrafficPolicy, HTTPRoute, GRPCRoute, FaultInjection, AuthorizationPolicy)
  kedge delete -f FILE | kedge delete KIND [NAMESPACE/]NAME
  kedge get policies|routes|authorizationpolicies [-o table|json]
  kedge authz check --from NS/WORKLOAD --to SERVICE[.NS][:PORT] [--method M] [--path P] [--header k=v]
  kedge capture install|remove|show [--dry-run] [--config FILE]
  kedge join JOIN_STRING [--root DIR] [--no-capture]   (join.sh runs it; see kedge token create --join)
  kedge vm leave [--root DIR]
  kedge kube-inject -f FILE [--image IMAGE] [--root-sha256 HEX] ...   (adds the Kedge sidecar to workloads)
  kedge completion bash|zsh     (source <(kedge completion bash))
  kedge demo [--base-dir DIR]
  kedge version

admin commands take --federation https://HOST:PORT and --admin-token-file FILE (and --root-cert FILE when the
root-cert.pem is not beside the token file).
`;

type Command = (argv: string[]) => Promise<number>;

const print = (f: (argv: string[]) => Promise<string>): Command => async (argv) => {
  process.stdout.write(await f(argv));
  return 0;
};

const COMMANDS: Record<string, () => Command> = {
  federation: () => require('../cli/federation').runFederationCommand,
  agent: () => require('../cli/agent').runAgentCommand,
  token: () => print(require('../cli/token').runToken),
  ca: () => print(require('../cli/ca').runCa),
  get: () => print(require('../cli/get').runGet),
  delete: () => print(require('../cli/delete').runDelete),
  status: () => print(require('../cli/status').runStatus),
  stat: () => print(require('../cli/stat').runStat),
  apply: () => print(require('../cli/apply').runApply),
  authz: () => print(require('../cli/authz').runAuthz),
  capture: () => require('../cli/capture').runCapture,
  join: () => print((argv) => require('../cli/join').runJoin(argv, require('../../package.json').version)),
  vm: () => print(require('../cli/join').runVm),
  'kube-inject': () => print((argv) => require('../cli/kube-inject').runKubeInject(argv, require('../../package.json').version)),
  completion: () => print(async (argv) =>
    (require('../cli/completion') as typeof import('../cli/completion')).runCompletion(argv, {
      commands: Object.keys(COMMANDS),
      kinds: Object.keys((require('../cli/get') as typeof import('../cli/get')).TABLES),
      subcommands: { token: ['create'], capture: ['install', 'remove', 'show'], vm: ['leave'], completion: ['bash', 'zsh'], federation: ['backup', 'restore'], authz: ['check'] },
    })),
  demo: () => require('../cli/demo').runDemo,
  version: () => async (argv) => {
    // `kedge version`: this CLI, and the federation's when one is named (or the default answers).
    const mine = (require('../../package.json') as { version: string }).version;
    process.stdout.write(`kedge ${mine}\n`);
    if (name === '--version') return 0;
    const admin = require('../cli/admin-client') as typeof import('../cli/admin-client');
    const { values } = (require('../cli/args') as typeof import('../cli/args')).parseFlags(argv, admin.ADMIN_FLAGS, 'kedge version [--federation https://HOST:PORT] [--root-cert FILE] [--admin-token-file FILE]');
    let url = values.federation ?? process.env.KEDGE_FEDERATION ?? admin.DEFAULT_FEDERATION_URL;
    try {
      url = admin.resolveBaseUrl(values);
      const tokenFile = values['admin-token-file'] ?? admin.defaultTokenFiles().find((f) => require('node:fs').existsSync(f));
      const v = await admin.federationVersion({ baseUrl: url, ca: admin.resolveRootCert(values, tokenFile), rootSha256: values['root-sha256'] });
      process.stdout.write(`federation ${v} (${url})\n`);
    } catch (err) {
      if (values.federation) throw err;
      process.stdout.write(`federation: not reachable at ${url} (${errorMessage(err)})\n`);
    }
    return 0;
  },
  help: () => async () => {
    process.stdout.write(HELP);
    return 0;
  },
};

let name: string | undefined;

/** Edit distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  name = first;
  const command = name === undefined || name === '--help' || name === '-h' ? COMMANDS.help : name === '--version' ? COMMANDS.version : COMMANDS[name];
  if (!command) {
    const near = Object.keys(COMMANDS).map((c) => [c, editDistance(name!, c)] as const).sort((x, y) => x[1] - y[1])[0];
    const hint = near && near[1] <= Math.max(1, Math.floor(name!.length / 3)) ? `did you mean "${near[0]}"? ` : '';
    process.stderr.write(`kedge: unknown command "${name}"; ${hint}run "kedge help" for the list\n`);
    return 2;
  }
  return command()(rest);
}

main(process.argv.slice(2)).then(
  // Exit explicitly: a stopped daemon may still hold idle handles (gRPC
  // channels, timers) that would otherwise keep the process alive.
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof KedgeError && err.code === 'KEDGE_HELP') {
      process.stdout.write(`${err.message}\n`);
      process.exit(0);
    }
    const code = err instanceof KedgeError ? err.code : 'KEDGE_INTERNAL';
    process.stderr.write(`kedge: ${errorMessage(err)} [${code}]\n`);
    process.exit(code === 'KEDGE_USAGE' ? 2 : 1);
  },
);
