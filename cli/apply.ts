// `kedge apply -f FILE`: validates TrafficPolicy documents (YAML, several per
// file with ---) locally, then sends them to the federation, which checks
// them again against the services it knows.
import * as fs from 'node:fs';
import YAML from 'yaml';
import { KedgeError } from '../proto/model/errors';
import { validateTrafficPolicy } from '../policy/traffic-policy';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';

const USAGE = 'kedge apply -f FILE [--federation http://HOST:PORT] [--admin-token-file FILE]';

/** Reads and validates the documents of a policy file; errors name the file, the document and the path in it. */
export function readPolicyFile(file: string): unknown[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new KedgeError('KEDGE_USAGE', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  const docs = YAML.parseAllDocuments(text);
  const errors: string[] = [];
  const values: unknown[] = [];
  docs.forEach((d, i) => {
    const where = docs.length > 1 ? `${file} (document ${i + 1})` : file;
    if (d.errors.length) {
      errors.push(`${where}: not valid YAML: ${d.errors[0]!.message}`);
      return;
    }
    const value: unknown = d.toJS();
    if (value === null || value === undefined) return;
    const r = validateTrafficPolicy(value);
    if (!r.ok) errors.push(...r.errors.map((e) => `${where}: ${e}`));
    values.push(value);
  });
  if (errors.length) throw new KedgeError('KEDGE_BAD_POLICY', errors.join('\n'));
  if (values.length === 0) throw new KedgeError('KEDGE_BAD_POLICY', `${file} holds no document`);
  return values;
}

/** Runs `kedge apply`; returns what to print. */
export async function runApply(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, filename: { type: 'string', short: 'f' } }, USAGE);
  if (!values.filename || positionals.length) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  const docs = readPolicyFile(values.filename);
  const rows = await apiRequest<{ name: string; service: string }[]>(resolveAdminTarget(values), 'POST', '/api/v1/policies', docs);
  return rows.map((r) => `trafficpolicy/${r.name} (${r.service}) applied\n`).join('');
}
