import { KedgeError } from './errors';
import { isValidName } from './spiffe';

/** The default DNS domain services live under. */
export const DEFAULT_DOMAIN = 'cluster.local';

/** A service's identity in the mesh: name + namespace (namespace sameness). */
export interface ServiceRef {
  name: string;
  namespace: string;
}

/** `name.namespace`: the key a service is stored, subscribed and pushed under. */
export function serviceKey(ref: ServiceRef): string {
  return `${ref.name}.${ref.namespace}`;
}

/** `name.namespace.svc.<domain>`. */
export function serviceHostname(ref: ServiceRef, domain = DEFAULT_DOMAIN): string {
  return `${ref.name}.${ref.namespace}.svc.${domain}`;
}

/**
 * Parses `name.namespace` or `name.namespace.svc.<domain>`. Service names
 * carry no dots (they are DNS labels), so the first two labels are the name
 * and the namespace.
 */
export function parseServiceKey(s: string, domain = DEFAULT_DOMAIN): ServiceRef {
  let rest = s;
  const suffix = `.svc.${domain}`;
  if (rest.endsWith(suffix)) rest = rest.slice(0, -suffix.length);
  const parts = rest.split('.');
  const [name, namespace] = parts;
  if (parts.length !== 2 || !name || !namespace || !isDnsLabel(name) || !isValidName(namespace)) {
    throw new KedgeError('KEDGE_BAD_SERVICE', `invalid service "${s}": write it as name.namespace (for example reviews.default)`);
  }
  return { name, namespace };
}

const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** RFC 1123 label: what a service name must be. */
export function isDnsLabel(s: string): boolean {
  return LABEL.test(s);
}

// Kubernetes label syntax: an optional DNS-subdomain prefix and a name of up
// to 63 characters; values up to 63 characters, possibly empty.
const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/** A Kubernetes-style label key. */
export function isLabelKey(s: string): boolean {
  return LABEL_KEY.test(s);
}

/** A Kubernetes-style label value. */
export function isLabelValue(s: string): boolean {
  return LABEL_VALUE.test(s);
}
