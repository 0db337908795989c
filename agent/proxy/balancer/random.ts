// A seeded pseudo-random source, so simulations and statistical tests of the
// balancer are deterministic. The proxy itself uses Math.random.
import type { Random } from './types';

/** mulberry32: a tiny 32-bit PRNG with a good spread, returning floats in [0, 1). Not for anything secret. */
export function mulberry32(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
