// Small pieces every view uses: badges (a colour and a word), the pager
// and the filter box.
import { html } from 'htm/preact';
import type { Badge as BadgeModel } from '../model/health';
import type { Page } from '../model/lists';

/** A status badge: the text says what the colour means. */
export function Badge({ badge }: { badge: BadgeModel }) {
  const icon = badge.level === 'ok' ? '✓' : badge.level === 'warn' ? '!' : '✗';
  return html`<span class=${`badge ${badge.level}`}><span aria-hidden="true">${icon} </span>${badge.text}</span>`;
}

/** Previous/next buttons and where the page is in the list. */
export function Pager({ page, onPage, what }: { page: Page<unknown>; onPage: (p: number) => void; what: string }) {
  return html`<nav class="pager" aria-label=${`${what} pages`}>
    <button type="button" disabled=${page.page === 0} onClick=${() => onPage(page.page - 1)}>‹ Previous</button>
    <span aria-live="polite">${what} ${page.label}${page.pages > 1 ? ` (page ${page.page + 1} of ${page.pages})` : ''}</span>
    <button type="button" disabled=${page.page >= page.pages - 1} onClick=${() => onPage(page.page + 1)}>Next ›</button>
  </nav>`;
}

/** A labelled filter box. */
export function Filter({ value, onInput, label, placeholder }: { value: string; onInput: (v: string) => void; label: string; placeholder: string }) {
  return html`<label class="filter">${label} <input type="search" value=${value} placeholder=${placeholder} onInput=${(e: Event) => onInput((e.target as HTMLInputElement).value)} /></label>`;
}
