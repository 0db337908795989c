// Kedge's part of an iptables nat table as plain data, and the one
// iptables-restore payload that moves a table from any Kedge state to any
// other in a single atomic COMMIT. Install, reinstall, remove and rollback
// are all `convergePayload(current, desired)`.

/** The chains Kedge owns; every one of them starts with KEDGE_. */
export const KEDGE_CHAINS = ['KEDGE_INBOUND', 'KEDGE_IN_REDIRECT', 'KEDGE_OUTPUT', 'KEDGE_OUTPUT_DNS', 'KEDGE_REDIRECT'] as const;

const PREFIX = 'KEDGE_';
// iptables-save prints built-in chains in this order, then user chains.
const BUILTIN_ORDER = ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'];

/** Kedge's chains and rules in one nat table: `-A` lines in iptables-save form. */
export interface KedgeTableState {
  chains: readonly string[];
  /** Jumps from built-in chains into Kedge chains, and the rules inside Kedge chains. */
  rules: readonly string[];
}

/** The state with nothing of Kedge in it. */
export const EMPTY_STATE: KedgeTableState = Object.freeze({ chains: Object.freeze([]), rules: Object.freeze([]) });

/** Extracts Kedge's chains and rules from iptables-save (or our own) output; only the *nat section counts. */
export function kedgeStateFromSave(text: string): KedgeTableState {
  const chains: string[] = [];
  const rules: string[] = [];
  let inNat = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) inNat = line === '*nat';
    else if (line === 'COMMIT') inNat = false;
    else if (!inNat || line.startsWith('#')) continue;
    else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0] ?? '';
      if (name.startsWith(PREFIX) && !chains.includes(name)) chains.push(name);
    } else if (line.startsWith('-A ')) {
      const chain = line.split(' ')[1] ?? '';
      if (chain.startsWith(PREFIX) || / -[jg] KEDGE_\S+/.test(line)) rules.push(line);
    }
  }
  return { chains: [...chains].sort(), rules: sortRules(rules) };
}

/** Renders a state in iptables-save form (what `--dry-run` and `show` print); '' when empty. */
export function renderState(s: KedgeTableState): string {
  if (s.chains.length === 0 && s.rules.length === 0) return '';
  return ['*nat', ...s.chains.map((c) => `:${c} - [0:0]`), ...s.rules, 'COMMIT', ''].join('\n');
}

/**
 * The restore payload (for `iptables-restore --noflush`) that turns `current`
 * into `desired`: declaring a chain flushes it if it exists, jumps no longer
 * wanted are deleted by their exact text, stale chains are deleted last.
 * Jumps wanted again stay where they are, so a reinstall does not move
 * Kedge behind rules other software appended since. Empty when there is
 * nothing to do.
 */
export function convergePayload(current: KedgeTableState, desired: KedgeTableState): string {
  if (sameState(current, desired)) return '';
  const all = [...new Set([...current.chains, ...desired.chains])].sort();
  const jumps = (st: KedgeTableState) => st.rules.filter((r) => !isKedgeChainRule(r));
  const removed = minus(jumps(current), jumps(desired));
  const added = minus(jumps(desired), jumps(current));
  return [
    '*nat',
    ...all.map((c) => `:${c} - [0:0]`),
    ...removed.map((r) => `-D ${r.slice(3)}`),
    // Jumps before chain contents: nf_tables then checks each rule against the
    // hooks that reach it and blames the rule itself, not the jump.
    ...added,
    ...desired.rules.filter(isKedgeChainRule),
    ...current.chains.filter((c) => !desired.chains.includes(c)).map((c) => `-X ${c}`),
    'COMMIT',
    '',
  ].join('\n');
}

/** True when two states hold the same chains and the same rules in the same order per chain. */
export function sameState(a: KedgeTableState, b: KedgeTableState): boolean {
  return a.chains.join('\n') === b.chains.join('\n') && a.rules.join('\n') === b.rules.join('\n');
}

// Multiset difference: each line of `b` cancels one equal line of `a`.
function minus(a: readonly string[], b: readonly string[]): string[] {
  const rest = [...a];
  for (const x of b) {
    const i = rest.indexOf(x);
    if (i >= 0) rest.splice(i, 1);
  }
  return rest;
}

function isKedgeChainRule(r: string): boolean {
  return (r.split(' ')[1] ?? '').startsWith(PREFIX);
}

// Rules grouped by chain in iptables-save order, keeping order within a
// chain: nft and legacy backends list user chains differently, and rule order
// only matters inside a chain.
function sortRules(rules: string[]): string[] {
  const rank = (r: string) => {
    const chain = r.split(' ')[1] ?? '';
    const b = BUILTIN_ORDER.indexOf(chain);
    return b >= 0 ? `0${b}` : `1${chain}`;
  };
  return rules
    .map((r, i) => ({ r, i, k: rank(r) }))
    .sort((x, y) => (x.k < y.k ? -1 : x.k > y.k ? 1 : x.i - y.i))
    .map((x) => x.r);
}
