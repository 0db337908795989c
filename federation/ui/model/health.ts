// Health as the page shows it: a level for the colour and a word for the
// text, so nothing relies on colour alone.

/** The three levels every badge uses. */
export type Level = 'ok' | 'warn' | 'bad';

/** A badge: its level (colour) and its text (what a screen reader and a colour-blind reader get). */
export interface Badge {
  level: Level;
  text: string;
}

/** The badge of a set of endpoints: all healthy, some unhealthy, none healthy (or none at all). */
export function countBadge(healthy: number, total: number): Badge {
  if (total === 0) return { level: 'bad', text: 'no endpoints' };
  if (healthy === total) return { level: 'ok', text: `${healthy}/${total} healthy` };
  if (healthy === 0) return { level: 'bad', text: `0/${total} healthy` };
  return { level: 'warn', text: `${healthy}/${total} healthy` };
}

/** "3h 5m", "2d 4h", "45s": the largest two units of a duration. */
export function formatDuration(ms: number): string {
  const s = Math.round(Math.abs(ms) / 1000);
  const units: [string, number][] = [['d', 86_400], ['h', 3_600], ['m', 60], ['s', 1]];
  const parts: string[] = [];
  let rest = s;
  for (const [name, size] of units) {
    if (parts.length === 2) break;
    const n = Math.floor(rest / size);
    if (n > 0 || (parts.length === 0 && size === 1)) {
      parts.push(`${n}${name}`);
      rest -= n * size;
    } else if (parts.length > 0) break;
  }
  return parts.join(' ');
}

/** "5s ago" from an ISO time; '' for none. */
export function ago(iso: string | undefined, nowMs: number): string {
  if (!iso) return '';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  return `${formatDuration(Math.max(0, nowMs - t))} ago`;
}
