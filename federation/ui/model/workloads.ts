// The workloads view: each agent's host facts, identity, certificate
// expiry, config version and contact, as badges with words.
import type { DashboardState, WorkloadRow } from './state';
import { ago, type Badge, formatDuration } from './health';
import { matchesQuery, paginate, type Page } from './lists';

/** A certificate this close to expiry is shown as a warning (agents renew at 50–70% of a 24 h lifetime). */
export const CERT_WARN_MS = 6 * 60 * 60 * 1000;

/** One line of the workloads list. */
export interface WorkloadLine {
  id: string;
  row: WorkloadRow;
  contact: Badge;
  cert: Badge;
  config: Badge;
  host: string;
  memory: string;
  mode: string;
}

/** The certificate badge: expired, expiring within CERT_WARN_MS, or fine. */
export function certBadge(notAfter: string, nowMs: number): Badge {
  if (!notAfter) return { level: 'warn', text: 'expiry unknown' };
  const left = Date.parse(notAfter) - nowMs;
  if (Number.isNaN(left)) return { level: 'warn', text: 'expiry unknown' };
  if (left <= 0) return { level: 'bad', text: `expired ${formatDuration(-left)} ago` };
  if (left < CERT_WARN_MS) return { level: 'warn', text: `expires in ${formatDuration(left)} (soon)` };
  return { level: 'ok', text: `expires in ${formatDuration(left)}` };
}

/** The config badge: the version the agent acked against the latest sent to it. */
export function configBadge(w: Pick<WorkloadRow, 'ackedVersion' | 'latestVersion' | 'lastNack'>): Badge {
  if (w.lastNack) return { level: 'bad', text: `rejected: ${w.lastNack}` };
  if (!w.latestVersion) return { level: w.ackedVersion ? 'ok' : 'warn', text: w.ackedVersion ? `acked ${w.ackedVersion}` : 'no config acked yet' };
  if (w.ackedVersion === w.latestVersion) return { level: 'ok', text: `in sync (${w.ackedVersion})` };
  return { level: 'warn', text: `behind: acked ${w.ackedVersion || 'none'}, latest ${w.latestVersion}` };
}

/** The contact badge: connected (with the last message's age) or lost. */
export function contactBadge(w: Pick<WorkloadRow, 'connected' | 'lastContact'>, nowMs: number): Badge {
  const last = ago(w.lastContact, nowMs);
  return w.connected ? { level: 'ok', text: `connected${last ? `, last contact ${last}` : ''}` } : { level: 'bad', text: `disconnected${last ? `, last contact ${last}` : ''}` };
}

/** Bytes as "7.6 GiB". */
export function formatBytes(n: number | string): string {
  const v = Number(n);
  if (!Number.isFinite(v) || v <= 0) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = v;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Builds one line. */
export function workloadLine(w: WorkloadRow, nowMs: number): WorkloadLine {
  const h = w.host;
  return {
    id: w.id,
    row: w,
    contact: contactBadge(w, nowMs),
    cert: certBadge(w.certNotAfter, nowMs),
    config: configBadge(w),
    host: h ? [h.hostname, [h.os, h.osRelease].filter(Boolean).join(' '), h.arch, h.cpus ? `${h.cpus} CPUs` : ''].filter(Boolean).join(' · ') : 'no host facts reported',
    memory: h ? formatBytes(h.memoryBytes) : '',
    mode: w.gateway ? `gateway (${w.gateway})` : 'sidecar',
  };
}

/** Which workloads the list shows. */
export type WorkloadFilter = 'all' | 'attention';

/**
 * The list: workloads matching `query` (and, with 'attention', only those
 * disconnected, behind on config or near certificate expiry), problems first.
 */
export function workloadList(state: Pick<DashboardState, 'workloads'>, nowMs: number, query: string, filter: WorkloadFilter, page: number, size?: number): Page<WorkloadLine> {
  const rank = { bad: 0, warn: 1, ok: 2 } as const;
  const worst = (l: WorkloadLine) => Math.min(rank[l.contact.level], rank[l.cert.level], rank[l.config.level]);
  const lines = state.workloads
    .filter((w) => matchesQuery(query, [w.id, w.address, w.network, w.locality, w.identity, w.host?.hostname, ...w.services]))
    .map((w) => workloadLine(w, nowMs))
    .filter((l) => filter === 'all' || worst(l) < 2)
    .sort((a, b) => worst(a) - worst(b) || a.id.localeCompare(b.id));
  return paginate(lines, page, size);
}
