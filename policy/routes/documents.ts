// One entry point for route documents, whatever their kind: HTTPRoute,
// GRPCRoute (gateway.networking.k8s.io/v1) or FaultInjection
// (kedge.io/v1alpha1). Errors name the document ("HTTPRoute
// default/reviews") and the path in it, and say what to write instead.
import { KedgeError } from '../../proto/model/errors';
import { deepFreeze } from '../../proto/model/validate';
import { Checker } from '../checker';
import { metadata } from './common';
import { faultSpec } from './fault-injection';
import { GATEWAY_API_VERSION, KEDGE_API_VERSION, ROUTE_KINDS, type RouteDocumentObject, type RouteKind } from './model';
import { routeSpec } from './route';

/** The outcome of validateRouteDocument. */
export type RouteValidation = { ok: true; value: RouteDocumentObject } | { ok: false; errors: string[] };

/** Checks beyond the document itself. */
export interface RouteValidateOptions {
  /** Whether a service (name.namespace) exists; parentRefs, backendRefs and mirrors naming unknown ones are errors when given. */
  serviceExists?: (key: string) => boolean;
  /** A known service's ports; parentRef and backendRef ports (and sectionNames) it lacks are errors when given. */
  servicePorts?: (key: string) => readonly { name: string; port: number }[] | undefined;
  /**
   * The document was read from a Kubernetes cluster: `status` and the
   * server's metadata fields (uid, resourceVersion, managedFields, ...) are
   * expected there and skipped; in a file they are refused.
   */
  fromCluster?: boolean;
}

/** Whether a parsed document is one of the route kinds (by its `kind`). */
export function isRouteDocument(doc: unknown): boolean {
  const kind = (doc as { kind?: unknown } | null)?.kind;
  return typeof kind === 'string' && (ROUTE_KINDS as readonly string[]).includes(kind);
}

/** The label errors start with: `HTTPRoute default/reviews`, as far as the document says. */
export function documentLabel(doc: unknown): string {
  const d = doc as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } } | null;
  const kind = typeof d?.kind === 'string' ? d.kind : 'document';
  const name = typeof d?.metadata?.name === 'string' ? d.metadata.name : '(no name)';
  const ns = typeof d?.metadata?.namespace === 'string' ? d.metadata.namespace : 'default';
  return `${kind} ${ns}/${name}`;
}

const SERVER_METADATA = ['uid', 'resourceVersion', 'generation', 'managedFields', 'selfLink', 'ownerReferences', 'finalizers', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generateName'];

/** Validates one parsed route document; returns every error, each prefixed with the document's label. */
export function validateRouteDocument(doc: unknown, opts: RouteValidateOptions = {}): RouteValidation {
  const c = new Checker();
  const label = documentLabel(doc);
  const top = c.object(doc, '', ['apiVersion', 'kind', 'metadata', 'spec', 'status']);
  if (top === undefined) return { ok: false, errors: c.errors.map((e) => `${label}: ${e}`) };
  const kind = top.kind as RouteKind;
  if (!(ROUTE_KINDS as readonly unknown[]).includes(top.kind)) c.fail('kind', `must be one of ${ROUTE_KINDS.join(', ')}`);
  const apiVersion = kind === 'FaultInjection' ? KEDGE_API_VERSION : GATEWAY_API_VERSION;
  if (top.apiVersion !== apiVersion) {
    c.fail('apiVersion', `${top.apiVersion === undefined ? 'is required' : `is ${JSON.stringify(top.apiVersion)}`}; write apiVersion: ${apiVersion}${kind !== 'FaultInjection' && typeof top.apiVersion === 'string' && top.apiVersion.startsWith('gateway.networking.k8s.io/') ? ' (Kedge reads the v1 API; v1 has the same fields for what Kedge supports)' : ''}`);
  }
  if (top.status !== undefined && !opts.fromCluster) c.fail('status', 'is written by controllers, not by users; remove it');
  let meta = top.metadata;
  if (opts.fromCluster && meta && typeof meta === 'object') {
    meta = Object.fromEntries(Object.entries(meta).filter(([k]) => !SERVER_METADATA.includes(k)));
  }
  const m = metadata(c, meta);
  const spec = c.object(top.spec, 'spec', kind === 'FaultInjection' ? ['delay', 'abort'] : ['parentRefs', 'hostnames', 'rules']);
  if (spec === undefined || !(ROUTE_KINDS as readonly unknown[]).includes(top.kind)) return { ok: false, errors: c.errors.map((e) => `${label}: ${e}`) };
  const value = kind === 'FaultInjection' ? faultSpec(c, spec, m) : routeSpec(c, kind, spec, m);
  if (opts.serviceExists && value.kind !== 'FaultInjection') {
    const exists = opts.serviceExists;
    const unknown = (key: string, path: string, what: string) => {
      if (!exists(key)) c.fail(path, `names ${what} ${key}, which no source of the federation knows; check its name and namespace (or register it first)`);
    };
    const ports = opts.servicePorts;
    const portsText = (list: readonly { name: string; port: number }[]) => list.map((p) => `${p.name} ${p.port}`).join(', ') || 'none';
    value.parents.forEach((p, i) => {
      unknown(p.service, `spec.parentRefs[${i}]`, 'the service');
      const list = exists(p.service) ? ports?.(p.service) : undefined;
      if (!list) return;
      if (p.port !== undefined && !list.some((x) => x.port === p.port)) c.fail(`spec.parentRefs[${i}].port`, `${p.service} has no port ${p.port} (its ports: ${portsText(list)})`);
      if (p.sectionName !== undefined && !list.some((x) => x.name === p.sectionName)) c.fail(`spec.parentRefs[${i}].sectionName`, `${p.service} has no port named ${p.sectionName} (its ports: ${portsText(list)})`);
    });
    value.rules.forEach((r, i) => {
      r.backends.forEach((b, j) => {
        unknown(b.service, `spec.rules[${i}].backendRefs[${j}]`, 'the backend');
        const list = exists(b.service) ? ports?.(b.service) : undefined;
        if (list && !list.some((x) => x.port === b.port)) c.fail(`spec.rules[${i}].backendRefs[${j}].port`, `${b.service} has no port ${b.port} (its ports: ${portsText(list)}); give the service port, not the target port`);
      });
      r.filters.mirrors.forEach((mi, j) => unknown(mi.service, `spec.rules[${i}].filters (RequestMirror ${j + 1})`, 'the mirror backend'));
    });
  }
  if (c.errors.length > 0) return { ok: false, errors: c.errors.map((e) => `${label}: ${e}`) };
  return { ok: true, value: deepFreeze(value) };
}

/** validateRouteDocument for callers that want an exception: KEDGE_BAD_ROUTE listing every error. */
export function parseRouteDocument(doc: unknown, opts: RouteValidateOptions = {}): RouteDocumentObject {
  const r = validateRouteDocument(doc, opts);
  if (r.ok) return r.value;
  throw new KedgeError('KEDGE_BAD_ROUTE', r.errors.join('\n'));
}
