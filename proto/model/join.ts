// The join string: everything a bare host needs to join a mesh, in one
// copy-pasteable word that `kedge token create --join` prints and
// `kedge join` (run by join.sh) reads.
//
//   kedge1.<payload>.<check>
//
// payload is base64url(JSON), check the first 8 hex digits of
// SHA-256("kedge1." + payload): a truncated or mistyped string is refused
// before anything is contacted. The payload pins the federation's root
// (rootSha256: SHA-256 of the root-cert.pem the federation serves at
// /join/root-cert.pem), as `kubeadm join --discovery-token-ca-cert-hash`
// pins the cluster CA: the joining host fetches the root, compares, and
// only then sends the token anywhere.
import { createHash } from 'node:crypto';
import { KedgeError } from './errors';
import { isValidName } from './spiffe';

/** What a join string carries. */
export interface JoinSpec {
  token: string;
  /** The federation's HTTPS API (join.sh, the package, the root): host:port. */
  http: string;
  /** The federation's gRPC addresses (Sign, Connect): host:port each. */
  grpc: string[];
  /** Hex SHA-256 of the federation's root-cert.pem. */
  rootSha256: string;
  namespace: string;
  serviceAccount: string;
  /** Workload name; the host's name when absent. */
  workload?: string;
  labels?: Record<string, string>;
  locality?: string;
  network?: string;
  /** Services the host serves: name:port[:targetPort[:protocol]]. */
  services?: string[];
  /** The federation's version, so a host refuses a package of another. */
  version?: string;
  /** When the token expires (ISO 8601). */
  expiresAt?: string;
}

const PREFIX = 'kedge1';

function check(payload: string): string {
  return createHash('sha256').update(`${PREFIX}.${payload}`).digest('hex').slice(0, 8);
}

/** Encodes a join string; the spec is validated first. */
export function encodeJoinString(spec: JoinSpec): string {
  validateJoinSpec(spec);
  const payload = Buffer.from(JSON.stringify(spec)).toString('base64url');
  return `${PREFIX}.${payload}.${check(payload)}`;
}

const bad = (what: string) => new KedgeError('KEDGE_BAD_JOIN_STRING', `${what}; copy the whole join string again (it starts with "${PREFIX}.") or create a new one with "kedge token create ... --join"`);

/** Decodes and checks a join string; every failure is KEDGE_BAD_JOIN_STRING naming what is wrong. */
export function decodeJoinString(text: string, now = Date.now()): JoinSpec {
  const s = text.trim();
  if (!s.startsWith(`${PREFIX}.`)) {
    throw bad(/^kedge\d+\./.test(s) ? `this join string is format "${s.split('.')[0]}", this kedge reads "${PREFIX}"` : 'this is not a Kedge join string');
  }
  const parts = s.split('.');
  if (parts.length !== 3 || !parts[1] || !parts[2]) throw bad('the join string is incomplete (truncated?)');
  const [, payload, sum] = parts as [string, string, string];
  if (!/^[A-Za-z0-9_-]+$/.test(payload) || check(payload) !== sum) throw bad('the join string is damaged (its checksum does not match: truncated or altered?)');
  let spec: unknown;
  try {
    spec = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    throw bad('the join string does not decode');
  }
  const j = validateJoinSpec(spec);
  if (j.expiresAt && Date.parse(j.expiresAt) <= now) {
    throw new KedgeError('KEDGE_JOIN_EXPIRED', `this join string's token expired at ${j.expiresAt}; create a new one with "kedge token create ... --join"`);
  }
  return j;
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

/** Checks the shape of a join spec; returns it typed. */
export function validateJoinSpec(v: unknown): JoinSpec {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('the join string holds no object');
  const o = v as Record<string, unknown>;
  const str = (k: string, ok: (s: string) => boolean = () => true) => {
    const x = o[k];
    if (typeof x !== 'string' || !x || !ok(x)) throw bad(`the join string's ${k} is missing or invalid`);
    return x;
  };
  const opt = (k: string, ok: (s: string) => boolean = () => true) => (o[k] === undefined ? undefined : str(k, ok));
  str('token');
  str('http', (s) => HOST_PORT.test(s));
  if (!Array.isArray(o.grpc) || o.grpc.length === 0 || !o.grpc.every((a) => typeof a === 'string' && HOST_PORT.test(a))) throw bad("the join string's grpc addresses are missing or invalid");
  str('rootSha256', (s) => /^[0-9a-f]{64}$/.test(s));
  str('namespace', isValidName);
  str('serviceAccount', isValidName);
  opt('workload', isValidName);
  opt('locality');
  opt('network');
  opt('version');
  opt('expiresAt', (s) => !Number.isNaN(Date.parse(s)));
  if (o.labels !== undefined && (typeof o.labels !== 'object' || o.labels === null || Object.values(o.labels).some((x) => typeof x !== 'string'))) throw bad("the join string's labels are invalid");
  if (o.services !== undefined && (!Array.isArray(o.services) || o.services.some((x) => typeof x !== 'string' || !/^[a-z0-9.-]+:\d{1,5}(:\d{1,5}(:[a-z0-9]+)?)?$/.test(x)))) {
    throw bad("the join string's services are invalid (name:port[:targetPort[:protocol]])");
  }
  return o as unknown as JoinSpec;
}

/** The pin of a root: hex SHA-256 of the PEM bytes as the federation serves them. */
export function rootFingerprint(pem: string | Buffer): string {
  return createHash('sha256').update(pem).digest('hex');
}
