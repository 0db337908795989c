// The CA's part of the HTTP API: status and rotation for `kedge ca`
// (admin token), and the trust bundle for anyone (it holds public
// certificates only): PEM, and the SPIFFE bundle format for federation with
// other SPIFFE systems.
import { X509Certificate } from 'node:crypto';
import { KedgeError } from '../../proto/model/errors';
import { spiffeBundle, type AgentCaView, type CaManager, type RotateRequest } from '../ca';

/** Where the SPIFFE bundle (JWK Set) is served, without authentication. */
export const SPIFFE_BUNDLE_PATH = '/.well-known/spiffe-bundle';
/** Where the trusted roots are served as PEM, without authentication. */
export const PEM_BUNDLE_PATH = '/.well-known/kedge/roots.pem';
/** Blocking agents listed in the status (the count is always complete). */
const MAX_LISTED_BLOCKERS = 20;

/** What the CA routes read. */
export interface CaApiDeps {
  manager: CaManager;
  /** Every agent of the mesh with what it last reported about its certificate and bundle. */
  agents: () => Promise<AgentCaView[]>;
  /** Before this time (ms since the epoch) this replica takes no rotation step: its agents may still be reconnecting. */
  settleUntil?: number;
}

/** `GET /api/v1/ca`: roots, who signs, key protection, rotation progress. */
export async function caStatus(deps: CaApiDeps) {
  const v = deps.manager.current();
  const state = v.state;
  const roots = v.roots.map((pem) => {
    const c = new X509Certificate(pem);
    const fp = c.fingerprint256;
    return {
      fingerprint: fp,
      subject: (c.subject ?? '').replace(/\n/g, ', '),
      uriSan: c.subjectAltName ?? '',
      notBefore: new Date(c.validFrom).toISOString(),
      notAfter: new Date(c.validTo).toISOString(),
      signing: state ? state.signing === fp : true,
    };
  });
  const r = state?.rotation;
  let rotation;
  if (r) {
    const agents = await deps.agents();
    const blockers = deps.manager.blockers(agents);
    const settling = deps.settleUntil !== undefined && deps.settleUntil > Date.now() ? { settlingUntil: new Date(deps.settleUntil).toISOString() } : {};
    rotation = { ...r, agents: agents.length, waitingFor: blockers.length, blockers: blockers.slice(0, MAX_LISTED_BLOCKERS), ...settling };
  }
  const keys = state ? state.roots.map((x) => ('wrapped' in x.key ? 'encrypted' : 'plaintext')) : [];
  return {
    mode: deps.manager.isPlugged() ? 'plug-in' : 'built-in',
    sequence: v.sequence,
    canSign: v.authority !== undefined,
    ...(v.unavailable ? { unavailable: v.unavailable } : {}),
    keyProtection: !state ? 'plug-in key file' : keys.every((k) => k === 'encrypted') ? 'encrypted' : 'plaintext',
    roots,
    ...(rotation ? { rotation } : {}),
  };
}

/** `POST /api/v1/ca/rotate` {reissue?, finish?}. */
export async function caRotate(deps: CaApiDeps, body: unknown) {
  const b = (body ?? {}) as Record<string, unknown>;
  const req: RotateRequest = {};
  for (const k of Object.keys(b)) {
    if (k !== 'reissue' && k !== 'finish') throw new KedgeError('KEDGE_BAD_REQUEST', `unknown field "${k}" (expected reissue, finish)`);
    if (typeof b[k] !== 'boolean') throw new KedgeError('KEDGE_BAD_REQUEST', `${k} must be true or false`);
  }
  if (b.reissue === true) req.reissue = true;
  if (b.finish === true) req.finish = true;
  if (req.reissue && req.finish) throw new KedgeError('KEDGE_BAD_REQUEST', '--reissue and --finish do not go together: --finish retires the old root at once');
  const result = await deps.manager.rotate(req);
  return { ...result, ca: await caStatus(deps) };
}

/** The SPIFFE bundle document. */
export function caSpiffeBundle(deps: CaApiDeps) {
  const v = deps.manager.current();
  return spiffeBundle(v.roots, v.sequence);
}

/** The trusted roots, PEM. */
export function caPemBundle(deps: CaApiDeps): string {
  return deps.manager.current().roots.join('');
}
