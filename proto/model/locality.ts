import { KedgeError } from './errors';

/** Where an endpoint runs: region/zone/subzone (zone and subzone may be empty). */
export interface LocalityParts {
  region: string;
  zone: string;
  subzone: string;
}

/** Parses `region/zone[/subzone]` (a bare region is allowed; empty means unknown). */
export function parseLocality(s: string | undefined): LocalityParts {
  if (!s) return { region: '', zone: '', subzone: '' };
  const parts = s.split('/');
  if (parts.length > 3 || parts.some((p) => p === '' || /\s/.test(p))) {
    throw new KedgeError('KEDGE_BAD_LOCALITY', `invalid locality "${s}": write region/zone[/subzone], for example us-east1/us-east1-b`);
  }
  return { region: parts[0] ?? '', zone: parts[1] ?? '', subzone: parts[2] ?? '' };
}

export function formatLocality(l: Partial<LocalityParts> | null | undefined): string {
  if (!l) return '';
  return [l.region, l.zone, l.subzone].filter((p) => p).join('/');
}
