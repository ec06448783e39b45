// SPDX-License-Identifier: Apache-2.0
// Pure statistics for the benchmark: nearest-rank percentiles over latency samples and the
// median across rounds. Kept free of I/O so test/unit/bench/stats.test.ts can check it.

/**
 * Nearest-rank percentile of an ascending-sorted sample set: the smallest value such that at
 * least p% of the samples are ≤ it (the definition HdrHistogram-based tools such as wrk2 and
 * fortio report). p in [0, 100]; p = 0 gives the minimum. NaN for an empty set.
 */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} is outside [0, 100]`);
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  // p is a decimal such as 99.9 that binary floating point cannot hold exactly (99.9/100 × 1000
  // = 999.0000000000001): drop that representation error before rounding the rank up.
  const exact = (p * n) / 100;
  const rank = Math.max(1, Math.ceil(exact - 1e-9 * Math.max(1, exact)));
  return sorted[Math.min(rank, n) - 1]!;
}

export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/** Summarises samples (any order; the array is sorted in place). */
export function summarize(samples: Float64Array | number[]): LatencySummary {
  const sorted = samples instanceof Float64Array ? samples.sort() : samples.sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: percentileSorted(sorted, 50),
    p90: percentileSorted(sorted, 90),
    p99: percentileSorted(sorted, 99),
    p999: percentileSorted(sorted, 99.9),
    max: sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN,
  };
}

/** Median of a list (mean of the middle two for an even count); NaN for an empty list. */
export function median(values: readonly number[]): number {
  const v = values.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  const n = v.length;
  if (n === 0) return Number.NaN;
  const mid = Math.floor(n / 2);
  return n % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}
