// `kedge join JOIN_STRING`: configures this host from a join string (join.sh
// runs it after installing the package). Checks the string, then the
// federation's root against the string's pin, and only then writes the
// token anywhere: /etc/kedge/agent.yaml, /etc/kedge/root-cert.pem and
// /var/lib/kedge/agent/join-token (0600; the agent removes it once its
// identity is issued).
//
// `kedge vm leave`: stops the agent (its graceful stop deregisters the host
// at once), then removes its identity and configuration.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { KedgeError, errorMessage } from '../proto/model/errors';
import { decodeJoinString, encodeJoinString, rootFingerprint, type JoinSpec } from '../proto/model/join';
import { isValidName } from '../proto/model/spiffe';
import { loadAgentConfig } from '../agent/config';
import { parseFlags } from './args';

const USAGE = 'kedge join [--root DIR] [--root-cert FILE] [--name NAME] [--address IP] [--no-capture] JOIN_STRING';
const LEAVE_USAGE = 'kedge vm leave [--root DIR]';

/** The paths a joined host uses, all under `root`. */
export function hostPaths(root = '/') {
  const p = (...parts: string[]) => path.join(root, ...parts);
  return {
    etc: p('etc', 'kedge'),
    agentConfig: p('etc', 'kedge', 'agent.yaml'),
    rootCert: p('etc', 'kedge', 'root-cert.pem'),
    dataDir: p('var', 'lib', 'kedge', 'agent'),
    token: p('var', 'lib', 'kedge', 'agent', 'join-token'),
    dropIn: p('etc', 'systemd', 'system', 'kedge-agent.service.d', 'no-capture.conf'),
  };
}

/** The agent config a join spec yields, with the host's real (root-relative) paths. */
export function agentConfigFor(spec: JoinSpec, host: { name: string; address?: string | undefined }): Record<string, unknown> {
  const abs = hostPaths('/');
  const workload: Record<string, unknown> = { name: spec.workload ?? host.name, namespace: spec.namespace, serviceAccount: spec.serviceAccount };
  if (host.address) workload.address = host.address;
  if (spec.locality) workload.locality = spec.locality;
  if (spec.network) workload.network = spec.network;
  if (spec.labels && Object.keys(spec.labels).length) workload.labels = spec.labels;
  return {
    federation: { address: spec.grpc, rootCert: abs.rootCert, tokenFile: abs.token },
    workload,
    services: servicesFromSpecs(spec.services ?? []),
    dataDir: abs.dataDir,
  };
}

/** The form of one served service: NAME:PORT[:TARGET[:PROTO]] (join strings, --serve, the kedge.io/services annotation). */
export const SERVE_SPEC = /^[a-z0-9.-]+:\d{1,5}(:\d{1,5}(:[a-z0-9]+)?)?$/;

/**
 * Agent config services from NAME:PORT[:TARGET[:PROTO]] entries; entries
 * of one name are one service with several ports (named by protocol, or
 * protocol-port when there are several).
 */
export function servicesFromSpecs(specs: readonly string[]): { name: string; ports: { name: string; port: number; targetPort: number; protocol: string }[] }[] {
  const byName = new Map<string, { port: number; targetPort: number; protocol: string }[]>();
  for (const s of specs) {
    const [name, port, target, protocol] = s.split(':') as [string, string, string?, string?];
    const ports = byName.get(name) ?? [];
    ports.push({ port: Number(port), targetPort: Number(target ?? port), protocol: protocol ?? 'tcp' });
    byName.set(name, ports);
  }
  return [...byName].map(([name, ports]) => ({ name, ports: ports.map((p) => ({ name: ports.length === 1 ? p.protocol : `${p.protocol}-${p.port}`, ...p })) }));
}

/** A host name usable as a workload name (DNS-1123): lower-cased, other characters dashed. */
export function workloadNameOf(hostname: string): string {
  const n = hostname.split('.')[0]!.toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 63);
  return n || 'vm';
}

/** Fetches root-cert.pem from the federation without trusting anything yet (the pin decides). */
export function fetchRoot(httpHostPort: string, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(`https://${httpHostPort}/join/root-cert.pem`, { rejectUnauthorized: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new KedgeError('KEDGE_NOT_A_FEDERATION', `https://${httpHostPort}/join/root-cert.pem answered ${res.statusCode}: is this a Kedge federation's HTTP port (15014)?`));
        else resolve(Buffer.concat(chunks).toString('utf8'));
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) => reject(new KedgeError('KEDGE_FEDERATION_UNREACHABLE', `cannot reach the federation at https://${httpHostPort} (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)})`, { cause: err })));
  });
}

function ownerOf(root: string, user: string): { uid: number; gid: number } | undefined {
  try {
    const line = fs.readFileSync(path.join(root, 'etc', 'passwd'), 'utf8').split('\n').find((l) => l.startsWith(`${user}:`));
    if (!line) return undefined;
    const [, , uid, gid] = line.split(':');
    return { uid: Number(uid), gid: Number(gid) };
  } catch {
    return undefined;
  }
}

/** Runs `kedge join`; returns what to print. */
export async function runJoin(argv: string[], version: string): Promise<string> {
  const { values, positionals } = parseFlags(argv, {
    root: { type: 'string', default: '/' },
    'root-cert': { type: 'string' },
    name: { type: 'string' },
    address: { type: 'string' },
    'no-capture': { type: 'boolean', default: false },
  }, USAGE);
  if (positionals.length !== 1) throw new KedgeError('KEDGE_USAGE', `give exactly one join string\n\nusage: ${USAGE}`);
  // 1. The string itself: checksum, shape, expiry; nothing contacted yet.
  const spec = decodeJoinString(positionals[0]!);
  if (spec.version && spec.version !== version) {
    throw new KedgeError('KEDGE_VERSION_MISMATCH', `the federation runs kedge ${spec.version}, this host has kedge ${version}: install the package the federation serves (re-run join.sh), then join again`);
  }
  const name = values.name ?? spec.workload ?? workloadNameOf(os.hostname());
  if (!isValidName(name)) throw new KedgeError('KEDGE_USAGE', `--name ${name}: use lowercase letters, digits, '-' and '.'`);
  // 2. The root, against the pin, before the token is written anywhere.
  const rootPem = values['root-cert'] ? fs.readFileSync(values['root-cert'], 'utf8') : await fetchRoot(spec.http);
  const got = rootFingerprint(rootPem);
  if (got !== spec.rootSha256) {
    throw new KedgeError('KEDGE_ROOT_MISMATCH', `the federation at ${spec.http} is not the one this join string was made for: its root's SHA-256 is ${got}, the string pins ${spec.rootSha256}. Nothing was written and the token was not sent. (After a CA rotation, create a new join string.)`);
  }
  // 3. Write: config checked first, token last, each atomically.
  const paths = hostPaths(values.root);
  const config = agentConfigFor(spec, { name, address: values.address });
  const staged = YAML.stringify(config).replaceAll('/etc/kedge', paths.etc).replaceAll('/var/lib/kedge/agent', paths.dataDir);
  fs.mkdirSync(paths.etc, { recursive: true });
  fs.mkdirSync(paths.dataDir, { recursive: true, mode: 0o700 });
  const check = path.join(paths.etc, '.agent.check.yaml');
  fs.writeFileSync(check, staged);
  try {
    loadAgentConfig(check);
  } finally {
    fs.rmSync(check, { force: true });
  }
  writeAtomic(paths.rootCert, rootPem, 0o644);
  writeAtomic(paths.agentConfig, `# Written by kedge join for ${spec.namespace}/${name}.\n${YAML.stringify(config)}`, 0o644);
  writeAtomic(paths.token, `${spec.token}\n`, 0o600);
  const owner = ownerOf(values.root, 'kedge');
  if (owner) {
    for (const p of [path.dirname(paths.dataDir), paths.dataDir, paths.token]) fs.chownSync(p, owner.uid, owner.gid);
  }
  if (values['no-capture']) {
    fs.mkdirSync(path.dirname(paths.dropIn), { recursive: true });
    writeAtomic(paths.dropIn, '# Written by kedge join --no-capture: this host uses explicit upstreams only.\n[Service]\nExecStartPre=\nExecStopPost=\n', 0o644);
  }
  return `joined ${spec.namespace}/${name} (service account ${spec.serviceAccount}) to the federation at ${spec.grpc.join(', ')}; config ${paths.agentConfig}\n`;
}

function writeAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text, { mode });
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
}

/** Runs `kedge vm leave`; returns what to print. */
export async function runVm(argv: string[]): Promise<string> {
  const [sub, ...rest] = argv;
  if (sub !== 'leave') throw new KedgeError('KEDGE_USAGE', `usage: ${LEAVE_USAGE}`);
  const { values, positionals } = parseFlags(rest, { root: { type: 'string', default: '/' } }, LEAVE_USAGE);
  if (positionals.length) throw new KedgeError('KEDGE_USAGE', `usage: ${LEAVE_USAGE}`);
  const paths = hostPaths(values.root);
  let stopped = 'no systemd here: stop the agent process yourself (SIGTERM deregisters it)';
  if (values.root === '/' && fs.existsSync('/run/systemd/system')) {
    // A graceful stop sends Goodbye: the federation drops the endpoints at once.
    execFileSync('systemctl', ['disable', '--now', 'kedge-agent.service'], { stdio: 'inherit' });
    stopped = 'kedge-agent stopped and disabled (deregistered)';
  }
  for (const p of [paths.dataDir, paths.agentConfig, paths.rootCert, paths.dropIn]) fs.rmSync(p, { recursive: true, force: true });
  return `${stopped}; identity and config removed. To revoke its certificate too: kedge delete workload NAME on the federation.\n`;
}

/** What `kedge token create --join` adds to a token to make the join command. */
export interface JoinCommandInput {
  token: string;
  expiresAt?: string | undefined;
  /** The federation's HTTP API as the operator reaches it (the --federation URL). */
  federationUrl: string;
  /** Host (or host:port) joining hosts use instead of the --federation URL's host. */
  advertise?: string | undefined;
  namespace: string;
  serviceAccount: string;
  workload?: string | undefined;
  labels?: Record<string, string> | undefined;
  locality?: string | undefined;
  network?: string | undefined;
  services?: string[] | undefined;
}

/** Builds the join string and the one command a bare host runs, from the federation's /join/info. */
export async function joinCommand(input: JoinCommandInput, fetchInfo: (url: string) => Promise<{ version: string; grpcPort: number; rootSha256: string; packages: string[] }>): Promise<{ joinString: string; command: string }> {
  const url = new URL(input.federationUrl);
  const info = await fetchInfo(`${input.federationUrl}/join/info`);
  let host = url.hostname;
  let httpPort = url.port || (url.protocol === 'https:' ? '443' : '80');
  if (input.advertise) {
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(input.advertise);
    if (!m) throw new KedgeError('KEDGE_USAGE', `--advertise ${input.advertise}: give HOST or HOST:HTTP_PORT, the address joining hosts reach the federation at`);
    host = m[1]!;
    if (m[2]) httpPort = m[2];
  }
  if (host === '127.0.0.1' || host === 'localhost' || host === '[::1]') {
    process.stderr.write(`kedge: note: the join command names ${host}; pass --advertise HOST with the address the joining host reaches the federation at\n`);
  }
  if (!info.packages.some((p) => p.includes(`_${info.version}_`))) {
    process.stderr.write(`kedge: note: the federation serves no package of version ${info.version} yet; copy kedge_${info.version}_amd64.deb and the .tar.gz into its packageDir before running the join command\n`);
  }
  const http = `${host}:${httpPort}`;
  const spec: JoinSpec = { token: input.token, http, grpc: [`${host}:${info.grpcPort}`], rootSha256: info.rootSha256, namespace: input.namespace, serviceAccount: input.serviceAccount, version: info.version };
  if (input.expiresAt) spec.expiresAt = input.expiresAt;
  if (input.workload) spec.workload = input.workload;
  if (input.labels && Object.keys(input.labels).length) spec.labels = input.labels;
  if (input.locality) spec.locality = input.locality;
  if (input.network) spec.network = input.network;
  if (input.services?.length) spec.services = input.services;
  const joinString = encodeJoinString(spec);
  const base = `https://${http}`;
  // The root is fetched without trust, then trusted only if its SHA-256 is
  // the pin; join.sh itself arrives over TLS verified by that root.
  const command = `f=$(mktemp) && curl -fsSk ${base}/join/root-cert.pem -o "$f" && echo "${info.rootSha256}  $f" | sha256sum -c --status && curl -fsS --cacert "$f" ${base}/join.sh | sudo sh -s -- --federation ${base} --root-sha256 ${info.rootSha256} '${joinString}'`;
  return { joinString, command };
}
