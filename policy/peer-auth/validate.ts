// Validation of PeerAuthentication documents (security.istio.io/v1),
// following Istio's checks (pkg/config/validation: portLevelMtls needs a
// selector, a port is 1-65535, modes are UNSET, DISABLE, PERMISSIVE or
// STRICT). Unknown fields are refused; every error names the document and
// the path in it.
import { KedgeError } from '../../proto/model/errors';
import { deepFreeze } from '../../proto/model/validate';
import { Checker } from '../checker';
import { documentLabel } from '../routes/documents';
import { securityHeader, selectorOf } from '../authz/validate';
import type { PeerAuthMode, PeerAuthObject } from './model';

/** The outcome of validatePeerAuthentication. */
export type PeerAuthValidation = { ok: true; value: PeerAuthObject } | { ok: false; errors: string[] };

const MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'] as const;

/** Whether a parsed document is a PeerAuthentication (by its `kind`). */
export function isPeerAuthDocument(doc: unknown): boolean {
  return (doc as { kind?: unknown } | null)?.kind === 'PeerAuthentication';
}

/** Validates one parsed PeerAuthentication; every error is prefixed with the document's label. */
export function validatePeerAuthentication(doc: unknown, opts: { fromCluster?: boolean } = {}): PeerAuthValidation {
  const c = new Checker();
  const label = documentLabel(doc);
  const done = (): PeerAuthValidation => ({ ok: false, errors: c.errors.map((e) => `${label}: ${e}`) });
  const head = securityHeader(c, doc, 'PeerAuthentication', opts);
  if (head === undefined) return done();
  const { top, m } = head;
  // An absent spec is a policy that sets nothing (everything UNSET), as in Istio.
  const spec = top.spec === undefined || top.spec === null ? {} : c.object(top.spec, 'spec', ['selector', 'mtls', 'portLevelMtls']);
  if (spec === undefined) return done();
  const selector = selectorOf(c, spec.selector);
  const mode = modeOf(c, spec.mtls, 'spec.mtls');
  const ports: Record<number, PeerAuthMode> = {};
  const levels = c.optionalObject(spec.portLevelMtls, 'spec.portLevelMtls');
  if (levels && Object.keys(levels).length > 0 && (selector === undefined || Object.keys(selector).length === 0)) {
    c.fail('spec.portLevelMtls', 'needs spec.selector.matchLabels: a namespace-wide or mesh-wide policy cannot set port-level mTLS (Istio refuses it too); move the ports into a policy that selects the workload');
  }
  for (const [k, v] of Object.entries(levels ?? {})) {
    const p = `spec.portLevelMtls.${k}`;
    const port = /^[0-9]{1,5}$/.test(k) ? Number(k) : NaN;
    if (!Number.isInteger(port) || port < 1 || port > 65535) c.fail(p, `"${k}" is not a port; keys are the workload's own (target) port numbers, 1 to 65535`);
    else ports[port] = modeOf(c, v, p, true);
  }
  if (c.errors.length > 0) return done();
  return { ok: true, value: deepFreeze({ kind: 'PeerAuthentication', name: m.name, namespace: m.namespace, createdAt: m.createdAt, selector, mode, ports }) };
}

function modeOf(c: Checker, v: unknown, path: string, required = false): PeerAuthMode {
  const o = required ? c.object(v, path, ['mode']) : c.optionalObject(v, path, ['mode']);
  if (o === undefined) return 'UNSET';
  return c.oneOf(o.mode, `${path}.mode`, MODES, 'UNSET');
}

/** validatePeerAuthentication for callers that want an exception: KEDGE_BAD_POLICY listing every error. */
export function parsePeerAuthentication(doc: unknown, opts: { fromCluster?: boolean } = {}): PeerAuthObject {
  const r = validatePeerAuthentication(doc, opts);
  if (r.ok) return r.value;
  throw new KedgeError('KEDGE_BAD_POLICY', r.errors.join('\n'));
}
