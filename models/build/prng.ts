/**
 * Deterministic pseudo-random numbers for weight initialisation and data shuffling.
 *
 * Everything here uses only 32-bit integer operations (`Math.imul`, shifts, xor) and one exact division by 2^32,
 * so the sequence is bit-identical on every JavaScript engine and CPU. We deliberately avoid `Math.random`
 * (unseeded) and transcendental functions such as `Math.log`/`Math.cos` (Box–Muller), whose results the
 * ECMAScript spec leaves implementation-approximated and which could therefore differ between machines and
 * break the byte-for-byte reproducibility of the built models.
 */

/** A seeded generator; each call advances the state. */
export interface Prng {
  /** Next unsigned 32-bit integer. */
  nextUint32(): number;
  /** Next float in [0, 1), a multiple of 2^-32 (exact, no rounding involved). */
  nextFloat(): number;
  /** Next float uniform in [-limit, limit). */
  uniform(limit: number): number;
  /** Next integer uniform in [0, n); used for Fisher–Yates shuffling. */
  nextInt(n: number): number;
}

const TWO_POW_32 = 4294967296;

/**
 * Creates a mulberry32 generator. Mulberry32 is tiny, fast and has a full 2^32 period, which is ample for a few
 * million weights; its statistical quality is more than enough for initialisation (we are not doing cryptography).
 * The seed is mixed once with a splitmix32 step so that nearby seeds (1, 2, 3…) give unrelated streams.
 */
export function createPrng(seed: number): Prng {
  let state = splitmix32(seed >>> 0);
  const nextUint32 = (): number => {
    state = (state + 0x6d2b79f5) | 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const nextFloat = (): number => nextUint32() / TWO_POW_32;
  return {
    nextUint32,
    nextFloat,
    uniform: (limit: number): number => (nextFloat() * 2 - 1) * limit,
    nextInt: (n: number): number => Math.floor(nextFloat() * n),
  };
}

/** One splitmix32 step: a good 32-bit integer hash, used to decorrelate user-chosen seeds. */
export function splitmix32(x: number): number {
  let z = (x + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * Returns a shuffled copy of `items` (Fisher–Yates), driven by `prng` so that the train/holdout split is the same
 * on every machine.
 */
export function shuffled<T>(items: readonly T[], prng: Prng): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = prng.nextInt(i + 1);
    const a = out[i] as T;
    out[i] = out[j] as T;
    out[j] = a;
  }
  return out;
}

/**
 * Fills a Float32Array with values uniform in [-limit, limit), rounded to float32 (`Math.fround` is exactly
 * specified by IEEE 754, so rounding is reproducible too).
 */
export function uniformFloat32(prng: Prng, count: number, limit: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.fround(prng.uniform(limit));
  return out;
}
