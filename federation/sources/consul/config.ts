// Parses one `kind: consul` entry of the federation config's `clusters`
// list, so the federation's config loader can delegate to it and errors
// name the field ("federation.yaml: clusters[1].address: ...").
import * as path from 'node:path';
import { parseDuration } from '../../../proto/model/duration';
import { isDnsLabel } from '../../../proto/model/service';
import { isValidName } from '../../../proto/model/spiffe';
import type { Doc } from '../../../proto/model/validate';
import { parseConsulAddress } from './client';
import { CONSUL_SOURCE_DEFAULTS, type ConsulSourceOptions } from './source';

/** Fields a `kind: consul` cluster entry may have. */
export const CONSUL_CLUSTER_FIELDS = ['name', 'kind', 'address', 'datacenter', 'tokenFile', 'network', 'namespace', 'staleAfter'] as const;

/** A validated consul cluster entry: ConsulSourceOptions without the logger. */
export type ConsulClusterConfig = Omit<ConsulSourceOptions, 'logger' | 'token' | 'now' | 'backoff' | 'waitMs' | 'requestTimeoutMs'>;

/**
 * Validates one cluster entry (`doc` is e.g. clusters[1]); relative token
 * files resolve against `baseDir` (the config file's folder). Throws
 * KEDGE_BAD_CONFIG naming the field.
 */
export function parseConsulCluster(doc: Doc, baseDir: string): ConsulClusterConfig {
  doc.object(CONSUL_CLUSTER_FIELDS);
  const name = doc.at('name').string();
  if (!isValidName(name)) doc.at('name').fail(`invalid cluster name "${name}": use lowercase letters, digits, '-' and '.'`);
  const kind = doc.at('kind').string();
  if (kind !== 'consul') doc.at('kind').fail(`expected "consul", got "${kind}"`);
  const address = doc.at('address').string('http://127.0.0.1:8500');
  doc.at('address').parse(parseConsulAddress, address);
  const namespace = doc.at('namespace').string(CONSUL_SOURCE_DEFAULTS.namespace);
  if (!isDnsLabel(namespace)) doc.at('namespace').fail(`invalid namespace "${namespace}": use a DNS label (lowercase letters, digits and '-')`);
  const tokenFile = doc.at('tokenFile').optionalString();
  return {
    name,
    address,
    datacenter: doc.at('datacenter').string('dc1'),
    tokenFile: tokenFile === undefined ? undefined : path.resolve(baseDir, tokenFile),
    network: doc.at('network').string(''),
    namespace,
    staleAfterMs: doc.at('staleAfter').parse((s) => parseDuration(s, 'staleAfter'), `${CONSUL_SOURCE_DEFAULTS.staleAfterMs}ms`),
  };
}
