// How long each fuzz target runs: KEDGE_FUZZ_SECONDS (npm run fuzz sets 60)
// or one second inside npm test. A run is stopped by time, never failed by
// it; each input must still finish, and what a target returns is bounded by
// its input. Inputs that once failed are kept in each target's `examples`
// and run first, every time.
import fc from 'fast-check';
import { KedgeError } from '../../proto/model/errors';

export const FUZZ_SECONDS = Number(process.env.KEDGE_FUZZ_SECONDS ?? '1');

/** fast-check parameters for one target: the time budget, and the regression inputs first. */
export function budget<Ts extends unknown[]>(examples: Ts[] = []): fc.Parameters<Ts> {
  return {
    numRuns: 1_000_000,
    interruptAfterTimeLimit: FUZZ_SECONDS * 1_000,
    markInterruptAsFailure: false,
    examples,
    ...(process.env.KEDGE_FUZZ_SEED ? { seed: Number(process.env.KEDGE_FUZZ_SEED) } : {}),
  };
}

/** A test timeout that leaves room for the budget of `targets` targets. */
export const fuzzTimeout = (targets = 1): { timeout: number } => ({ timeout: (FUZZ_SECONDS * targets + 60) * 1_000 });

/** Runs `fn`; an error other than a KedgeError with one of `codes` fails the property (returns it, for the message). */
export function onlyKedgeErrors(fn: () => unknown, codes: readonly string[]): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof KedgeError && codes.includes(err.code)) return;
    throw new Error(`threw ${err instanceof KedgeError ? `${err.code}` : (err as Error)?.constructor?.name ?? typeof err} (expected only ${codes.join(', ')}): ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

/** Async form of onlyKedgeErrors. */
export async function onlyKedgeErrorsAsync(fn: () => Promise<unknown>, codes: readonly string[]): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof KedgeError && codes.includes(err.code)) return;
    throw new Error(`threw ${err instanceof KedgeError ? err.code : (err as Error)?.constructor?.name ?? typeof err} (expected only ${codes.join(', ')}): ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

/** Bytes that start like `valid` and then go wrong: flipped bytes, a cut, or inserted garbage. */
export function mutated(valid: Buffer): fc.Arbitrary<Buffer> {
  return fc.oneof(
    fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }).map((flips) => {
      const b = Buffer.from(valid);
      for (const [i, x] of flips) b[i] = b[i]! ^ x;
      return b;
    }),
    fc.nat(valid.length).map((n) => valid.subarray(0, n)),
    fc.tuple(fc.nat(valid.length), fc.uint8Array({ maxLength: 64 })).map(([at, junk]) => Buffer.concat([valid.subarray(0, at), Buffer.from(junk), valid.subarray(at)])),
  );
}

/** Any JSON-like document, for validators and config loaders. */
export const anyDoc = fc.jsonValue({ maxDepth: 5 });
