// SPDX-License-Identifier: Apache-2.0
// Unit tests for the bench's path groups: each group measured against its own baseline
// (bench/groups.ts), path selection and ordering by group (bench/args.ts), ratios, added RTT,
// table and floors against pod-direct for the netns group (bench/report.ts).
import t from 'tap';
import { orderPaths, parseArgs, type ArgGroup } from '../../../bench/args.ts';
import { needsRootReason, PATH_GROUPS, pathGroup } from '../../../bench/groups.ts';
import {
  buildRecords,
  checkFloors,
  formatFloors,
  formatTable,
  type MetricRecord,
  type PathStatus,
  type PathValues,
} from '../../../bench/report.ts';

const KNOWN = ['direct', 'stunnel', 'hbone', 'pod-direct', 'pod-stunnel', 'ztunnel'];
const GROUPS: ArgGroup[] = [
  { name: 'loopback', baseline: 'direct', paths: ['direct', 'stunnel', 'hbone'] },
  { name: 'netns', baseline: 'pod-direct', paths: ['pod-direct', 'pod-stunnel', 'ztunnel'] },
];
const baselineOf = (p: string): string => (p.startsWith('pod-') || p === 'ztunnel' ? 'pod-direct' : 'direct');

function find(records: readonly MetricRecord[], path: string, metric: string): MetricRecord | undefined {
  return records.find((r) => r.path === path && r.metric === metric);
}

t.test('the registry groups: loopback against direct, netns against pod-direct (root)', async (t) => {
  t.same(
    PATH_GROUPS.map((g) => [g.name, g.baseline, g.needsRoot]),
    [
      ['loopback', 'direct', false],
      ['netns', 'pod-direct', true],
      ['scale', 'controller', false],
      ['enrolment', 'unenrolled', true],
    ],
  );
  t.equal(pathGroup('netns').baseline, 'pod-direct');
  const reason = needsRootReason(pathGroup('netns'), ['pod-direct', 'ztunnel']);
  t.match(reason, /pod-direct, ztunnel\) not measured: they need root/);
});

t.test('default: both groups, each baseline first', async (t) => {
  t.same(parseArgs([], KNOWN, GROUPS).paths, KNOWN);
});

t.test('a group baseline is added to its group only', async (t) => {
  t.same(parseArgs(['--paths', 'ztunnel'], KNOWN, GROUPS).paths, ['pod-direct', 'ztunnel']);
  t.same(parseArgs(['--paths', 'ztunnel,hbone'], KNOWN, GROUPS).paths, [
    'direct',
    'hbone',
    'pod-direct',
    'ztunnel',
  ]);
  t.same(parseArgs(['--paths', 'pod-stunnel,pod-direct'], KNOWN, GROUPS).paths, [
    'pod-direct',
    'pod-stunnel',
  ]);
});

t.test('group names select all of a group', async (t) => {
  t.same(parseArgs(['--paths', 'netns'], KNOWN, GROUPS).paths, ['pod-direct', 'pod-stunnel', 'ztunnel']);
  t.same(orderPaths(['hbone', 'loopback'], GROUPS), ['direct', 'hbone', 'stunnel']);
  t.throws(
    () => parseArgs(['--paths', 'nope'], KNOWN, GROUPS),
    /unknown path "nope".*groups: loopback, netns/,
  );
});

function sample(): { values: Map<string, PathValues>; status: Map<string, PathStatus> } {
  const values = new Map<string, PathValues>([
    ['direct', { rps_c32_1k: 100_000, rtt_p50_at_1000rps: 60, rtt_p99_at_1000rps: 400 }],
    ['hbone', { rps_c32_1k: 50_000, rtt_p50_at_1000rps: 260, rtt_p99_at_1000rps: 900 }],
    [
      'pod-direct',
      {
        throughput_single_stream: 10,
        rps_c32_1k: 30_000,
        rtt_p50_at_1000rps: 100,
        rtt_p99_at_1000rps: 500,
        new_connections_per_s: 4000,
      },
    ],
    [
      'ztunnel',
      {
        throughput_single_stream: 1.5, // 0.15× pod-direct → pass
        rps_c32_1k: 9_000, // 0.30× → BELOW
        rtt_p50_at_1000rps: 400, // +300 µs → BELOW
        rtt_p99_at_1000rps: 1400, // +900 µs → pass
        new_connections_per_s: 400, // 0.10× → pass
        idle_rss_client_end: 100,
        idle_rss_server_end: 50,
        rss_per_connection_client_end: 25,
        rss_per_connection_server_end: 31,
      },
    ],
  ]);
  const status = new Map<string, PathStatus>(
    ['direct', 'hbone', 'pod-direct', 'ztunnel'].map((p) => [p, { kind: 'ok' }]),
  );
  return { values, status };
}

t.test('netns ratios and added RTT are against pod-direct, loopback ones against direct', async (t) => {
  const { values, status } = sample();
  const paths = ['direct', 'hbone', 'pod-direct', 'ztunnel'];
  const records = buildRecords(paths, values, status, baselineOf);
  t.equal(find(records, 'ztunnel', 'rps_c32_1k')?.ratio_to_direct, 0.3);
  t.equal(find(records, 'ztunnel', 'throughput_single_stream')?.ratio_to_direct, 0.15);
  t.equal(find(records, 'ztunnel', 'added_rtt_p50_at_1000rps')?.value, 300);
  t.equal(find(records, 'ztunnel', 'added_rtt_p99_at_1000rps')?.value, 900);
  t.equal(find(records, 'pod-direct', 'rps_c32_1k')?.ratio_to_direct, 1, 'the baseline is 1× itself');
  t.equal(find(records, 'pod-direct', 'added_rtt_p50_at_1000rps'), undefined, 'no added RTT for a baseline');
  t.equal(find(records, 'hbone', 'rps_c32_1k')?.ratio_to_direct, 0.5);
  t.equal(find(records, 'hbone', 'added_rtt_p50_at_1000rps')?.value, 200);

  const checks = new Map(checkFloors(records, 'ztunnel').map((c) => [c.floor.metric, c.status]));
  t.equal(checks.get('throughput_single_stream'), 'pass');
  t.equal(checks.get('rps_c32_1k'), 'BELOW');
  t.equal(checks.get('new_connections_per_s'), 'pass');
  t.equal(checks.get('added_rtt_p50_at_1000rps'), 'BELOW');
  t.equal(checks.get('added_rtt_p99_at_1000rps'), 'pass');
  t.equal(checks.get('idle_rss_client_end'), 'BELOW');
  t.equal(checks.get('idle_rss_server_end'), 'pass');
  t.equal(checks.get('rss_per_connection_server_end'), 'BELOW');
});

t.test('netns table and floors name pod-direct as the baseline', async (t) => {
  const { values, status } = sample();
  const records = buildRecords(['pod-direct', 'ztunnel'], values, status, baselineOf);
  const table = formatTable(['pod-direct', 'ztunnel'], records, status, 'pod-direct');
  t.match(table.split('\n')[0], /^metric\s+unit\s+pod-direct\s+ztunnel$/);
  t.match(table, /rps_c32_1k\s+req\/s\s+30000\s+9000 \(0\.30×\)/);
  t.match(table, /added_rtt_p50_at_1000rps\s+µs\s+–\s+300/);
  const floors = formatFloors('ztunnel', records, status.get('ztunnel'), 'pod-direct');
  t.match(floors, /ratios × pod-direct, same run/);
  t.match(floors, /throughput ≥ 0\.10× pod-direct\s+0\.150×\s+pass/);
  t.match(floors, /requests\/s \(wrk → nginx\) ≥ 0\.50× pod-direct\s+0\.300×\s+BELOW/);
  t.match(floors, /added p50 \(sockperf\) ≤ 250 µs\s+300 µs\s+BELOW/);
  t.notMatch(floors, /× direct/);
  t.match(
    formatFloors('ztunnel', records, { kind: 'missing', reason: 'needs root' }),
    /not checked \(missing: needs root\)/,
  );
});

t.test('without pod-direct values the netns ratios are null, not against direct', async (t) => {
  const { values, status } = sample();
  values.delete('pod-direct');
  const records = buildRecords(['direct', 'ztunnel'], values, status, baselineOf);
  t.equal(find(records, 'ztunnel', 'rps_c32_1k')?.ratio_to_direct, null);
  t.equal(find(records, 'ztunnel', 'added_rtt_p50_at_1000rps'), undefined);
});
