// Paging and filtering shared by every list view: a mesh of 1,000 services
// and 5,000 workloads renders one page at a time.

/** One page of a list, with what the pager shows. */
export interface Page<T> {
  items: T[];
  /** 0-based page shown (clamped into range). */
  page: number;
  pages: number;
  total: number;
  /** "41–60 of 5000", or "none" for an empty list. */
  label: string;
}

/** Rows per page unless a view asks otherwise. */
export const PAGE_SIZE = 50;

/** Cuts `items` into pages of `size` and returns page `page` (clamped). */
export function paginate<T>(items: readonly T[], page: number, size = PAGE_SIZE): Page<T> {
  const pages = Math.max(1, Math.ceil(items.length / size));
  const p = Math.min(Math.max(0, Math.floor(page)), pages - 1);
  const slice = items.slice(p * size, p * size + size);
  const label = items.length === 0 ? 'none' : `${p * size + 1}–${p * size + slice.length} of ${items.length}`;
  return { items: slice, page: p, pages, total: items.length, label };
}

/**
 * True when every word of `query` occurs (case-insensitively) in one of
 * `fields`: "orders eu-west" finds the orders endpoints in eu-west.
 */
export function matchesQuery(query: string, fields: readonly (string | undefined)[]): boolean {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) return true;
  const hay = fields.map((f) => (f ?? '').toLowerCase());
  return words.every((w) => hay.some((h) => h.includes(w)));
}

/** A count with its word, singular or plural: "1 endpoint", "3 endpoints". */
export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
