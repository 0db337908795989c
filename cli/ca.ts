// `kedge ca status` and `kedge ca rotate [--reissue] [--finish]`: the mesh
// CA's roots and a root rotation, through the federation's HTTP API.
import { KedgeError } from '../proto/model/errors';
import { ADMIN_FLAGS, apiRequest, resolveAdminTarget } from './admin-client';
import { parseFlags } from './args';

const USAGE = 'kedge ca status|rotate [--reissue] [--finish] [-o text|json] [--federation https://HOST:PORT] [--admin-token-file FILE]';

/** The CA status document of GET /api/v1/ca. */
export interface CaStatusDoc {
  mode: string;
  sequence: number;
  canSign: boolean;
  unavailable?: string;
  keyProtection: string;
  roots: { fingerprint: string; subject: string; uriSan: string; notBefore: string; notAfter: string; signing: boolean }[];
  rotation?: { phase: string; from: string; to: string; startedAt: string; phaseSince: string; reissue: boolean; agents: number; waitingFor: number; blockers: { agent: string; reason: string }[]; settlingUntil?: string };
}

/** Renders the status for people. */
export function formatCaStatus(s: CaStatusDoc): string {
  const lines = [
    `CA: ${s.mode}, trust bundle sequence ${s.sequence}, key ${s.keyProtection}, ${s.canSign ? 'can sign' : `CANNOT SIGN: ${s.unavailable ?? 'no key'}`}`,
    'roots:',
    ...s.roots.map((r) => `  ${r.signing ? '*' : ' '} ${r.subject}  ${r.fingerprint}  until ${r.notAfter}${r.uriSan ? `  ${r.uriSan}` : ''}`),
  ];
  const r = s.rotation;
  if (!r) lines.push('rotation: none in progress');
  else {
    const phase = r.phase === 'distributing' ? 'distributing the new root to every agent (the old root signs)' : 'the new root signs; waiting for every agent to hold a certificate from it';
    lines.push(`rotation: ${phase}, since ${r.phaseSince}${r.reissue ? ', agents told to renew now' : ''}`);
    lines.push(`  waiting for ${r.waitingFor} of ${r.agents} agents`);
    if (r.settlingUntil) lines.push(`  this replica started recently: no step before ${r.settlingUntil}, while its agents reconnect`);
    for (const b of r.blockers) lines.push(`    ${b.agent}: ${b.reason}`);
    if (r.waitingFor > r.blockers.length) lines.push(`    ... and ${r.waitingFor - r.blockers.length} more`);
  }
  return `${lines.join('\n')}\n`;
}

/** Runs `kedge ca`; returns what goes to stdout. */
export async function runCa(argv: string[]): Promise<string> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, reissue: { type: 'boolean' }, finish: { type: 'boolean' }, output: { type: 'string', short: 'o', default: 'text' } }, USAGE);
  const [sub, ...rest] = positionals;
  if (rest.length > 0 || (sub !== 'status' && sub !== 'rotate')) throw new KedgeError('KEDGE_USAGE', `usage: ${USAGE}`);
  if (values.output !== 'text' && values.output !== 'json') throw new KedgeError('KEDGE_USAGE', `-o ${values.output}: use text or json`);
  if (sub === 'status' && (values.reissue || values.finish)) throw new KedgeError('KEDGE_USAGE', '--reissue and --finish go with "kedge ca rotate"');
  if (values.reissue && values.finish) throw new KedgeError('KEDGE_USAGE', '--reissue and --finish do not go together: --finish retires the old root at once');
  const target = resolveAdminTarget(values);
  if (sub === 'status') {
    const s = await apiRequest<CaStatusDoc>(target, 'GET', '/api/v1/ca');
    return values.output === 'json' ? `${JSON.stringify(s, null, 2)}\n` : formatCaStatus(s);
  }
  const res = await apiRequest<{ action: string; message: string; ca: CaStatusDoc }>(target, 'POST', '/api/v1/ca/rotate', { ...(values.reissue ? { reissue: true } : {}), ...(values.finish ? { finish: true } : {}) });
  return values.output === 'json' ? `${JSON.stringify(res, null, 2)}\n` : `${res.message}\n${formatCaStatus(res.ca)}`;
}
