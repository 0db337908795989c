// Locality weights from a `distribute` rule, as Istio's
// localityLbSetting.distribute: the first rule whose `from` matches the
// client decides; each `to` pattern claims the localities it matches that no
// earlier pattern claimed and splits its weight between them in proportion to
// their endpoint weight; localities no pattern claims get no traffic.
import { localityKey, localityMatches } from './locality';
import type { BalancerEndpoint, Locality } from './types';
import type { DistributeRule } from '../../../policy/traffic-policy';

/** One `distribute` rule: the contract lives with TrafficPolicy in policy/. */
export type { DistributeRule };

/** Locality weights for a client, or undefined when no rule's `from` matches it. */
export interface LocalityWeights {
  /** Weight per locality key (localityKey), for localities that take traffic. */
  weights: ReadonlyMap<string, number>;
  /** The `from` pattern that matched. */
  from: string;
}

/**
 * Computes the locality weights a client gets from `rules`. Istio walks the
 * `to` map in Go's random order; Kedge walks it in the order written, so an
 * endpoint matched by two patterns always goes to the first.
 */
export function distributeWeights(client: Locality, endpoints: readonly BalancerEndpoint[], rules: readonly DistributeRule[]): LocalityWeights | undefined {
  const rule = rules.find((r) => localityMatches(r.from, client));
  if (rule === undefined) return undefined;

  // Sum of endpoint weights per locality (Istio's locality weight before distribute).
  const byLocality = new Map<string, { locality: Locality; weight: number }>();
  for (const ep of endpoints) {
    const k = localityKey(ep.locality);
    const entry = byLocality.get(k);
    if (entry) entry.weight += ep.weight;
    else byLocality.set(k, { locality: ep.locality, weight: ep.weight });
  }

  const weights = new Map<string, number>();
  for (const to of rule.to) {
    const claimed = [...byLocality].filter(([k, v]) => !weights.has(k) && localityMatches(to.locality, v.locality));
    const total = claimed.reduce((a, [, v]) => a + v.weight, 0);
    if (total <= 0) continue;
    for (const [k, v] of claimed) weights.set(k, (to.weight * v.weight) / total);
  }
  return { weights, from: rule.from };
}
