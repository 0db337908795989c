// Federation configuration: command-line flags over an optional YAML file
// (--config), validated once into a frozen object with defaults in one table.
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { KedgeError } from '../proto/model/errors';
import { HostPort, parseHostPort } from '../proto/model/address';
import { parseDuration } from '../proto/model/duration';
import { isValidTrustDomain } from '../proto/model/spiffe';
import { Doc, deepFreeze } from '../proto/model/validate';
import { isValidName } from '../proto/model/spiffe';
import { parseConsulCluster, type ConsulClusterConfig } from './sources/consul/config';
import { parseServiceEntries, STATIC_SOURCE_NAME, type ServiceEntry } from './sources/static';
import { parseCidr4 } from './mesh/vips';
import { REGISTRATION_LIMITS_DEFAULTS, type RegistrationLimits } from './api/limits';
import { LIMITS, parseLimits, type FederationLimits } from '../proto/model/limits';
import { KEK_ENV, type KekSource } from './ca/kek';

/** Defaults for every optional federation setting, in one place. */
export const FEDERATION_DEFAULTS = Object.freeze({
  dataDir: '/var/lib/kedge/federation',
  listenGrpc: '0.0.0.0:15012',
  listenHttp: '0.0.0.0:15014',
  trustDomain: 'cluster.local',
  workloadCertTtl: '24h',
  gracePeriod: '10s',
  pushDebounce: '100ms',
  store: 'embedded',
  vipCidr: '240.240.0.0/16',
  vipRetention: '24h',
  kubernetesStaleAfter: '30s',
  maxTokenTtl: '720h',
  maxTokenUses: '1000000',
  exportedNamespaces: ['*'] as readonly string[],
  readinessSources: 'all',
  packageDir: '/var/lib/kedge/packages',
  insecureHttp: false,
});

/** How the federation reaches a secured etcd: files, read when the store is opened. */
export interface EtcdAccessConfig {
  /** CA of etcd's serving certificate: TLS is on when set. */
  caFile?: string;
  /** Client certificate and key, for an etcd started with --client-cert-auth. */
  certFile?: string;
  keyFile?: string;
  /** etcd user (RBAC) and the file holding its password. */
  username?: string;
  passwordFile?: string;
}

/** Where the federation keeps its state. */
export type StoreConfig = { kind: 'embedded' } | { kind: 'etcd'; endpoints: string[]; access: EtcdAccessConfig };

/** A Kubernetes cluster whose Services and EndpointSlices join the mesh. */
export interface KubernetesClusterConfig {
  kind: 'kubernetes';
  name: string;
  kubeconfig: string;
  network: string;
  staleAfterMs: number;
}

/** A cluster entry of the config: Kubernetes or Consul. */
export type ClusterConfig = KubernetesClusterConfig | (ConsulClusterConfig & { kind: 'consul' });

/** The validated, frozen federation configuration. */
export interface FederationConfig {
  dataDir: string;
  listenGrpc: HostPort;
  listenHttp: HostPort;
  trustDomain: string;
  workloadCertTtlMs: number;
  /** How long a disconnected agent's endpoints stay before removal. */
  gracePeriodMs: number;
  pushDebounceMs: number;
  caCertFile: string | undefined;
  caKeyFile: string | undefined;
  /** Where the key that encrypts the built-in CA's private key in the store comes from; undefined: stored unencrypted. */
  caKek: KekSource | undefined;
  /** Name of this replica in `kedge status` (default: hostname:grpc-port). */
  replica: string;
  store: StoreConfig;
  vipCidr: string;
  /** How long a service with no endpoints and no subscribers keeps its VIP, and how long a freed VIP is held back from others. */
  vipRetentionMs: number;
  clusters: readonly ClusterConfig[];
  serviceEntries: readonly ServiceEntry[];
  /** Caps on what one join token may ask for. */
  tokenLimits: { maxTtlMs: number; maxUses: number };
  /**
   * Namespaces whose services east-west gateways carry to other networks;
   * `*` (the default, written explicitly in the defaults table) is all.
   */
  exportedNamespaces: readonly string[];
  /** What one agent may register and subscribe to (federation/api/limits.ts). */
  registrationLimits: RegistrationLimits;
  /** Connections, idle timeouts, sizes and Sign throttling (proto/model/limits.ts, docs/limits.md). */
  limits: FederationLimits;
  /** Sources that must have synced once before /readyz answers 200. */
  readinessSources: 'all' | 'none' | readonly string[];
  /** Where the packages joining hosts download are (served at /join/packages/). */
  packageDir: string;
  /**
   * Also answer plain HTTP on the HTTP API port, from loopback peers only
   * (development); by default that port speaks HTTPS only.
   */
  insecureHttp: boolean;
}

/** The flag names `kedge federation` accepts, mapped to YAML keys. */
export const FEDERATION_FLAGS = {
  'data-dir': 'dataDir',
  'listen-grpc': 'listenGrpc',
  'listen-http': 'listenHttp',
  'trust-domain': 'trustDomain',
  'workload-cert-ttl': 'workloadCertTtl',
  'grace-period': 'gracePeriod',
  'push-debounce': 'pushDebounce',
  'ca-cert': 'caCert',
  'ca-key': 'caKey',
  'ca-key-encryption-key-file': 'caKeyEncryptionKeyFile',
  'ca-key-command': 'caKeyCommand',
  replica: 'replica',
  store: 'store',
  'etcd-ca': 'etcdCa',
  'etcd-cert': 'etcdCert',
  'etcd-key': 'etcdKey',
  'etcd-user': 'etcdUser',
  'etcd-password-file': 'etcdPasswordFile',
  'vip-cidr': 'vipCidr',
  'vip-retention': 'vipRetention',
  'max-token-ttl': 'maxTokenTtl',
  'max-token-uses': 'maxTokenUses',
  'readiness-sources': 'readinessSources',
  'package-dir': 'packageDir',
  'insecure-http': 'insecureHttp',
} as const;

/** Flags that take no value (`--insecure-http`); the rest take one. */
export const FEDERATION_BOOLEAN_FLAGS: ReadonlySet<string> = new Set(['insecure-http']);

const YAML_KEYS = [...Object.values(FEDERATION_FLAGS), 'clusters', 'serviceEntries', 'exportedNamespaces', 'registrationLimits', 'limits'] as readonly string[];

function parseExported(d: Doc): string[] {
  if (d.isMissing()) return [...FEDERATION_DEFAULTS.exportedNamespaces];
  return d.list().map((n) => {
    const v = n.string();
    if (v !== '*' && !isValidName(v)) n.fail(`"${v}" is not a namespace name (or * for every namespace)`);
    return v;
  });
}

function parseRegistrationLimits(d: Doc): RegistrationLimits {
  if (d.isMissing()) return { ...REGISTRATION_LIMITS_DEFAULTS };
  const keys = Object.keys(REGISTRATION_LIMITS_DEFAULTS) as (keyof RegistrationLimits)[];
  d.object(keys);
  const out = { ...REGISTRATION_LIMITS_DEFAULTS };
  for (const k of keys) out[k] = d.at(k).int(REGISTRATION_LIMITS_DEFAULTS[k], 1, k === 'maxMessageBytes' ? 64 * 1024 * 1024 : 1_000_000);
  return out;
}

/** Parses `embedded` or `etcd://host:port[,host:port...]`. */
export function parseStore(s: string): StoreConfig {
  if (s === 'embedded') return { kind: 'embedded' };
  const m = /^etcd:\/\/(.+)$/.exec(s);
  const endpoints = m ? m[1]!.split(',').map((e) => e.trim()) : [];
  if (!m || endpoints.some((e) => !/^[^:/\s]+:\d{1,5}$/.test(e))) {
    throw new KedgeError('KEDGE_BAD_CONFIG', `invalid store "${s}": use "embedded" or etcd://HOST:PORT[,HOST:PORT...]`);
  }
  return { kind: 'etcd', endpoints, access: {} };
}

function parseClusters(doc: Doc, baseDir: string): ClusterConfig[] {
  const clusters = doc.list().map((c): ClusterConfig => {
    const kind = c.object().at('kind').string();
    if (kind === 'consul') return { ...parseConsulCluster(c, baseDir), kind: 'consul' };
    if (kind !== 'kubernetes') c.at('kind').fail(`unknown cluster kind "${kind}": use kubernetes or consul`);
    c.object(['name', 'kind', 'kubeconfig', 'network', 'staleAfter']);
    const name = c.at('name').string();
    if (!isValidName(name)) c.at('name').fail(`invalid cluster name "${name}"`);
    return {
      kind: 'kubernetes',
      name,
      kubeconfig: path.resolve(baseDir, c.at('kubeconfig').string()),
      network: c.at('network').string(''),
      staleAfterMs: c.at('staleAfter').parse((v) => parseDuration(v, 'staleAfter'), FEDERATION_DEFAULTS.kubernetesStaleAfter),
    };
  });
  const names = new Set<string>();
  clusters.forEach((c, i) => {
    if (names.has(c.name)) doc.at(i).at('name').fail(`cluster "${c.name}" is listed twice`);
    names.add(c.name);
  });
  return clusters;
}

/**
 * Builds the configuration from flags (already parsed, by flag name) and the
 * YAML file they may name with `config`. Flags win over the file.
 */
export function resolveFederationConfig(flags: Readonly<Record<string, string | undefined>>, hostname: string, env: NodeJS.ProcessEnv = process.env): FederationConfig {
  let fileValues: Record<string, unknown> = {};
  let source = 'command line';
  let base = process.cwd();
  const configFile = flags.config;
  if (configFile) {
    source = configFile;
    base = path.dirname(path.resolve(configFile));
    let text: string;
    try {
      text = fs.readFileSync(configFile, 'utf8');
    } catch (err) {
      throw new KedgeError('KEDGE_BAD_CONFIG', `cannot read federation config ${configFile}: ${(err as NodeJS.ErrnoException).code ?? err}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = YAML.parse(text);
    } catch (err) {
      throw new KedgeError('KEDGE_BAD_CONFIG', `${configFile}: not valid YAML: ${(err as Error).message}`, { cause: err });
    }
    fileValues = (new Doc(configFile, parsed ?? {}).object(YAML_KEYS).value as Record<string, unknown>);
  }
  const merged: Record<string, unknown> = { ...fileValues };
  const fromFlag = new Set<string>();
  for (const [flag, key] of Object.entries(FEDERATION_FLAGS)) {
    const v = flags[flag];
    if (v !== undefined) {
      merged[key] = v;
      fromFlag.add(key);
    }
  }
  // Errors name the flag when the value came from one, the file's field otherwise.
  const at = (key: string) => {
    const d = new Doc(source, merged).at(key);
    return fromFlag.has(key) ? new Doc('command line', d.value, `--${flagOf(key)}`) : d;
  };
  // Relative paths resolve against the file that named them, or the working directory for flags.
  const relKey = (key: string, p: string | undefined) => (p === undefined ? undefined : path.resolve(fromFlag.has(key) ? process.cwd() : base, p));

  const trustDomain = at('trustDomain').string(FEDERATION_DEFAULTS.trustDomain);
  if (!isValidTrustDomain(trustDomain)) at('trustDomain').fail(`invalid trust domain "${trustDomain}": use lowercase letters, digits, '-', '.' and '_'`);
  const listenGrpc = at('listenGrpc').parse((s) => parseHostPort(s, 'listenGrpc'), FEDERATION_DEFAULTS.listenGrpc);
  const caCertFile = relKey('caCert', at('caCert').optionalString());
  const caKeyFile = relKey('caKey', at('caKey').optionalString());
  if ((caCertFile === undefined) !== (caKeyFile === undefined)) {
    at(caCertFile === undefined ? 'caCert' : 'caKey').fail('--ca-cert and --ca-key go together: give both files of the plug-in intermediate, or neither');
  }
  const caKek = resolveKek(at, relKey, env, caCertFile !== undefined);
  const store = resolveStore(at, relKey);
  const clusters = parseClusters(new Doc(source, merged).at('clusters'), base);
  const serviceEntries = parseServiceEntries(new Doc(source, merged).at('serviceEntries'));
  const ttl = at('workloadCertTtl').parse((s) => parseDuration(s, 'workload certificate TTL'), FEDERATION_DEFAULTS.workloadCertTtl);
  if (ttl < 10_000) at('workloadCertTtl').fail('must be at least 10s');
  return deepFreeze({
    dataDir: relKey('dataDir', at('dataDir').string(FEDERATION_DEFAULTS.dataDir)) as string,
    listenGrpc,
    listenHttp: at('listenHttp').parse((s) => parseHostPort(s, 'listenHttp'), FEDERATION_DEFAULTS.listenHttp),
    trustDomain,
    workloadCertTtlMs: ttl,
    gracePeriodMs: at('gracePeriod').parse((s) => parseDuration(s, 'grace period'), FEDERATION_DEFAULTS.gracePeriod),
    pushDebounceMs: at('pushDebounce').parse((s) => parseDuration(s, 'push debounce'), FEDERATION_DEFAULTS.pushDebounce),
    caCertFile,
    caKeyFile,
    caKek,
    replica: at('replica').string(`${hostname}:${listenGrpc.port}`),
    store,
    vipCidr: at('vipCidr').parse((v) => (parseCidr4(v), v), FEDERATION_DEFAULTS.vipCidr),
    vipRetentionMs: at('vipRetention').parse((v) => parseDuration(v, 'VIP retention'), FEDERATION_DEFAULTS.vipRetention),
    clusters,
    serviceEntries,
    readinessSources: parseReadinessSources(at('readinessSources'), [...clusters.map((c) => c.name), ...(serviceEntries.length > 0 ? [STATIC_SOURCE_NAME] : [])]),
    tokenLimits: {
      maxTtlMs: at('maxTokenTtl').parse((s) => parseDuration(s, 'maximum token TTL'), FEDERATION_DEFAULTS.maxTokenTtl),
      maxUses: wholeNumber(at('maxTokenUses'), FEDERATION_DEFAULTS.maxTokenUses),
    },
    exportedNamespaces: parseExported(new Doc(source, merged).at('exportedNamespaces')),
    registrationLimits: parseRegistrationLimits(new Doc(source, merged).at('registrationLimits')),
    limits: parseLimits(new Doc(source, merged).at('limits'), LIMITS.federation),
    packageDir: relKey('packageDir', at('packageDir').string(FEDERATION_DEFAULTS.packageDir)) as string,
    insecureHttp: fromFlag.has('insecureHttp') ? merged.insecureHttp === 'true' : at('insecureHttp').bool(FEDERATION_DEFAULTS.insecureHttp),
  });
}

/** The CA key-encryption key's source: at most one of the file, the command and the environment variable. */
function resolveKek(at: (key: string) => Doc, relKey: (key: string, p: string | undefined) => string | undefined, env: NodeJS.ProcessEnv, plugged: boolean): KekSource | undefined {
  const file = relKey('caKeyEncryptionKeyFile', at('caKeyEncryptionKeyFile').optionalString());
  const command = at('caKeyCommand').optionalString();
  const fromEnv = env[KEK_ENV] !== undefined && env[KEK_ENV] !== '';
  const given = [file !== undefined && 'caKeyEncryptionKeyFile', command !== undefined && 'caKeyCommand'].filter((k): k is string => !!k);
  if (given.length === 2) at('caKeyCommand').fail('--ca-key-encryption-key-file and --ca-key-command are two sources of the same key: give one');
  if (given.length === 1 && fromEnv) at(given[0]!).fail(`the environment variable ${KEK_ENV} is set too: give the CA key-encryption key one way`);
  if (plugged && (given.length > 0 || fromEnv)) {
    (given.length > 0 ? at(given[0]!) : at('caCert')).fail(`a CA key-encryption key (${given.length > 0 ? `--${flagOf(given[0]!)}` : KEK_ENV}) protects the built-in CA's key in the store; a plug-in CA's key is read from --ca-key: remove one of them`);
  }
  if (command !== undefined && command.trim() === '') at('caKeyCommand').fail('is empty: give a command whose standard output is the key');
  if (file !== undefined) return { kind: 'file', file };
  if (command !== undefined) return { kind: 'command', command };
  return fromEnv ? { kind: 'env', name: KEK_ENV } : undefined;
}

/** The store, with the etcd access settings checked against it and each other. */
function resolveStore(at: (key: string) => Doc, relKey: (key: string, p: string | undefined) => string | undefined): StoreConfig {
  const store = at('store').parse(parseStore, FEDERATION_DEFAULTS.store);
  const file = (key: string) => relKey(key, at(key).optionalString());
  const access: EtcdAccessConfig = {};
  const set = <K extends keyof EtcdAccessConfig>(k: K, v: EtcdAccessConfig[K] | undefined) => {
    if (v !== undefined) access[k] = v;
  };
  set('caFile', file('etcdCa'));
  set('certFile', file('etcdCert'));
  set('keyFile', file('etcdKey'));
  set('username', at('etcdUser').optionalString());
  set('passwordFile', file('etcdPasswordFile'));
  const given = (['etcdCa', 'etcdCert', 'etcdKey', 'etcdUser', 'etcdPasswordFile'] as const).filter((k) => at(k).value !== undefined);
  if (store.kind === 'embedded') {
    if (given.length > 0) at(given[0]!).fail('applies to an etcd store only: set store to etcd://HOST:PORT[,HOST:PORT...], or remove it');
    return store;
  }
  if ((access.certFile === undefined) !== (access.keyFile === undefined)) {
    at(access.certFile === undefined ? 'etcdKey' : 'etcdCert').fail('--etcd-cert and --etcd-key go together: give the client certificate and its key, or neither');
  }
  if (access.certFile !== undefined && access.caFile === undefined) {
    at('etcdCert').fail('a client certificate needs TLS: also give --etcd-ca, the CA that signed etcd\'s serving certificate');
  }
  if ((access.username === undefined) !== (access.passwordFile === undefined)) {
    at(access.username === undefined ? 'etcdPasswordFile' : 'etcdUser').fail('--etcd-user and --etcd-password-file go together: give the etcd user and the file holding its password, or neither');
  }
  if (access.username !== undefined && !/^[^\s]+$/.test(access.username)) at('etcdUser').fail(`invalid etcd user "${access.username}": use the name given to "etcdctl user add"`);
  return { ...store, access };
}

/** `all`, `none`, or a comma-separated list of configured source names. */
function parseReadinessSources(d: Doc, known: string[]): 'all' | 'none' | string[] {
  const v = d.string(FEDERATION_DEFAULTS.readinessSources);
  if (v === 'all' || v === 'none') return v;
  const names = v.split(',').map((n) => n.trim()).filter(Boolean);
  for (const n of names) if (!known.includes(n)) d.fail(`"${n}" is not a configured source (known: ${known.join(', ') || 'none'}); use all, none, or names of clusters`);
  return names;
}

/** A whole number of at least 1, from a flag (a string) or the file (a number or string). */
function wholeNumber(d: Doc, def: string): number {
  const n = typeof d.value === 'number' ? d.value : Number(d.string(def));
  if (!Number.isSafeInteger(n) || n < 1) d.fail(`must be a whole number of at least 1, got ${JSON.stringify(d.value)}`);
  return n;
}

function flagOf(key: string): string {
  return Object.entries(FEDERATION_FLAGS).find(([, k]) => k === key)?.[0] ?? key;
}
