// SPDX-License-Identifier: Apache-2.0
// Unit tests for the bench's percentile and median math (bench/stats.ts).
import t from 'tap';
import { median, percentileSorted, summarize } from '../../../bench/stats.ts';

t.test('nearest-rank percentiles over 1..100', async (t) => {
  const v = Array.from({ length: 100 }, (_, i) => i + 1);
  t.equal(percentileSorted(v, 50), 50);
  t.equal(percentileSorted(v, 99), 99);
  t.equal(percentileSorted(v, 99.9), 100);
  t.equal(percentileSorted(v, 100), 100);
  t.equal(percentileSorted(v, 0), 1, 'p0 is the minimum');
  t.equal(percentileSorted(v, 1), 1);
  t.equal(percentileSorted(v, 1.5), 2, 'rank rounds up');
});

t.test('percentiles of small and empty sets', async (t) => {
  t.equal(percentileSorted([7], 50), 7);
  t.equal(percentileSorted([7], 99), 7);
  t.equal(percentileSorted([1, 2], 50), 1, 'nearest rank, no interpolation');
  t.equal(percentileSorted([1, 2], 51), 2);
  t.ok(Number.isNaN(percentileSorted([], 50)));
  t.throws(() => percentileSorted([1], 101), RangeError);
  t.throws(() => percentileSorted([1], -1), RangeError);
  t.throws(() => percentileSorted([1], Number.NaN), RangeError);
});

t.test('summarize sorts numerically, also for Float64Array', async (t) => {
  // Lexicographic sorting would put 100 before 20: the summary must not.
  const plain = summarize([100, 20, 3, 1000, 5]);
  t.equal(plain.p50, 20);
  t.equal(plain.max, 1000);
  t.equal(plain.count, 5);
  const samples = new Float64Array(1000);
  for (let i = 0; i < 1000; i++) samples[i] = 1000 - i; // 1000..1, descending
  const s = summarize(samples);
  t.equal(s.p50, 500);
  t.equal(s.p90, 900);
  t.equal(s.p99, 990);
  t.equal(s.p999, 999);
  t.equal(s.max, 1000);
  const empty = summarize([]);
  t.equal(empty.count, 0);
  t.ok(Number.isNaN(empty.max));
});

t.test('median over rounds', async (t) => {
  t.equal(median([3, 1, 2]), 2);
  t.equal(median([4, 1, 3, 2]), 2.5);
  t.equal(median([10, 9]), 9.5);
  t.equal(median([Number.NaN, 5]), 5, 'NaN rounds are ignored');
  t.ok(Number.isNaN(median([])));
});
