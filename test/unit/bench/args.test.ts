// SPDX-License-Identifier: Apache-2.0
// Unit tests for the bench's command-line parsing (bench/args.ts).
import t from 'tap';
import {
  DEFAULT_DURATION_S,
  DEFAULT_HOLD_CONNECTIONS,
  METRIC_GROUPS,
  parseArgs,
  QUICK_DURATION_S,
  UsageError,
} from '../../../bench/args.ts';

const KNOWN = ['direct', 'stunnel', 'hbone'];

t.test('defaults: every path and metric, 5 s windows, one round', async (t) => {
  const o = parseArgs([], KNOWN);
  t.same(o.paths, KNOWN);
  t.same(o.metrics, METRIC_GROUPS);
  t.equal(o.durationMs, DEFAULT_DURATION_S * 1000);
  t.equal(o.rounds, 1);
  t.equal(o.connections, DEFAULT_HOLD_CONNECTIONS);
  t.equal(o.quick, false);
  t.equal(o.jsonFile, undefined);
  t.equal(o.help, false);
});

t.test('--quick shortens windows; --duration overrides it', async (t) => {
  t.equal(parseArgs(['--quick'], KNOWN).durationMs, QUICK_DURATION_S * 1000);
  t.equal(parseArgs(['--quick', '--duration', '0.5'], KNOWN).durationMs, 500);
  t.ok(parseArgs(['--quick'], KNOWN).warmupMs < parseArgs([], KNOWN).warmupMs);
});

t.test('--json in both spellings', async (t) => {
  t.equal(parseArgs(['--json', 'out.jsonl'], KNOWN).jsonFile, 'out.jsonl');
  t.equal(parseArgs(['--json=out.jsonl'], KNOWN).jsonFile, 'out.jsonl');
  t.throws(() => parseArgs(['--json'], KNOWN), UsageError);
  t.throws(() => parseArgs(['--json', '--quick'], KNOWN), UsageError, 'a flag is not a file name');
});

t.test('--paths keeps order, dedups and always measures direct first', async (t) => {
  t.same(parseArgs(['--paths', 'hbone'], KNOWN).paths, ['direct', 'hbone']);
  t.same(parseArgs(['--paths', 'hbone,direct,stunnel,hbone'], KNOWN).paths, ['direct', 'hbone', 'stunnel']);
  t.same(parseArgs(['--paths=direct'], KNOWN).paths, ['direct']);
  t.throws(() => parseArgs(['--paths', 'nope'], KNOWN), /unknown path "nope"/);
  t.throws(() => parseArgs(['--paths', ','], KNOWN), UsageError);
});

t.test('--metrics selects groups in canonical order; cpu is rps', async (t) => {
  t.same(parseArgs(['--metrics', 'latency,throughput'], KNOWN).metrics, ['throughput', 'latency']);
  t.same(parseArgs(['--metrics', 'cpu'], KNOWN).metrics, ['rps']);
  t.same(parseArgs(['--metrics', 'conns,memory,rps,cpu'], KNOWN).metrics, ['memory', 'rps', 'conns']);
  t.throws(() => parseArgs(['--metrics', 'latency,bogus'], KNOWN), /unknown metric group "bogus"/);
});

t.test('numbers are validated', async (t) => {
  t.equal(parseArgs(['--rounds', '3'], KNOWN).rounds, 3);
  t.equal(parseArgs(['--connections', '200'], KNOWN).connections, 200);
  t.throws(() => parseArgs(['--rounds', '1.5'], KNOWN), UsageError);
  t.throws(() => parseArgs(['--rounds', '0'], KNOWN), UsageError);
  t.throws(() => parseArgs(['--connections', 'many'], KNOWN), UsageError);
  t.throws(() => parseArgs(['--duration', '-1'], KNOWN), UsageError);
});

t.test('unknown arguments and help', async (t) => {
  t.throws(() => parseArgs(['--fast'], KNOWN), /unknown argument "--fast"/);
  t.throws(() => parseArgs(['stray'], KNOWN), UsageError);
  t.equal(parseArgs(['--help'], KNOWN).help, true);
  t.equal(parseArgs(['-h'], KNOWN).help, true);
});
