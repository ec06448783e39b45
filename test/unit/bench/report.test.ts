// SPDX-License-Identifier: Apache-2.0
// Unit tests for the bench's output: JSON-lines format, ratios, derived added latency, floors
// and the table (bench/report.ts).
import t from 'tap';
import {
  buildRecords,
  checkFloors,
  formatFloors,
  formatTable,
  jsonLine,
  METRICS,
  type MetricRecord,
  type PathStatus,
  type PathValues,
} from '../../../bench/report.ts';

const PATHS = ['direct', 'stunnel', 'hbone'];

function sample(): { values: Map<string, PathValues>; status: Map<string, PathStatus> } {
  const values = new Map<string, PathValues>([
    [
      'direct',
      {
        throughput_single_stream: 20,
        rps_c32_1k: 100_000,
        rtt_p50_at_1000rps: 60,
        rtt_p99_at_1000rps: 400,
        new_connections_per_s: 10_000,
      },
    ],
    [
      'hbone',
      {
        throughput_single_stream: 1.5, // 0.075× → BELOW the 0.10 floor
        rps_c32_1k: 60_000, // 0.60× → pass
        rtt_p50_at_1000rps: 300, // +240 µs → pass
        rtt_p99_at_1000rps: 1500, // +1100 µs → BELOW
        new_connections_per_s: 1_000, // 0.10× → pass (floor is inclusive)
        idle_rss_client_end: 45,
        idle_rss_server_end: 61,
        rss_per_connection_client_end: 20,
        rss_per_connection_server_end: 25,
        tunnel_cpu_cores_c32: 1.2,
      },
    ],
  ]);
  const status = new Map<string, PathStatus>([
    ['direct', { kind: 'ok' }],
    ['stunnel', { kind: 'missing', reason: 'stunnel not found: apt-get install stunnel4' }],
    ['hbone', { kind: 'ok' }],
  ]);
  return { values, status };
}

function find(records: readonly MetricRecord[], path: string, metric: string): MetricRecord | undefined {
  return records.find((r) => r.path === path && r.metric === metric);
}

t.test('JSON line: exactly the five keys, in order, one line', async (t) => {
  const line = jsonLine({
    metric: 'rps_c32_1k',
    path: 'hbone',
    value: 1234.5,
    unit: 'req/s',
    ratio_to_direct: 0.5,
  });
  t.equal(line, '{"metric":"rps_c32_1k","path":"hbone","value":1234.5,"unit":"req/s","ratio_to_direct":0.5}');
  t.notOk(line.includes('\n'));
  const nullRatio = JSON.parse(
    jsonLine({ metric: 'idle_rss', path: 'hbone', value: 40, unit: 'MB', ratio_to_direct: null }),
  ) as Record<string, unknown>;
  t.same(Object.keys(nullRatio), ['metric', 'path', 'value', 'unit', 'ratio_to_direct']);
  t.equal(nullRatio.ratio_to_direct, null);
});

t.test('metric names are stable snake_case', async (t) => {
  for (const name of Object.keys(METRICS)) t.match(name, /^[a-z][a-z0-9_]*$/);
  for (const name of [
    'throughput_single_stream',
    'rps_c32_1k',
    'rtt_p50_at_1000rps',
    'rtt_p99_at_1000rps',
    'added_rtt_p50_at_1000rps',
    'new_connections_per_s',
    'idle_rss',
    'rss_per_connection',
    'tunnel_cpu_cores_c32',
  ]) {
    t.ok(name in METRICS, name);
  }
});

t.test('records: ratios, derived added RTT, availability', async (t) => {
  const { values, status } = sample();
  const records = buildRecords(PATHS, values, status);
  t.equal(find(records, 'direct', 'rps_c32_1k')?.ratio_to_direct, 1);
  t.equal(find(records, 'hbone', 'rps_c32_1k')?.ratio_to_direct, 0.6);
  t.equal(find(records, 'hbone', 'throughput_single_stream')?.ratio_to_direct, 0.075);
  t.equal(find(records, 'hbone', 'rtt_p50_at_1000rps')?.ratio_to_direct, 5, 'latency ratio is path/direct');
  const added = find(records, 'hbone', 'added_rtt_p50_at_1000rps');
  t.equal(added?.value, 240);
  t.equal(added?.unit, 'us');
  t.equal(added?.ratio_to_direct, null, 'added latency has no ratio');
  t.equal(find(records, 'hbone', 'added_rtt_p99_at_1000rps')?.value, 1100);
  t.equal(find(records, 'direct', 'added_rtt_p50_at_1000rps'), undefined, 'not emitted for direct');
  t.equal(find(records, 'hbone', 'idle_rss_client_end')?.ratio_to_direct, null);
  t.equal(find(records, 'hbone', 'tunnel_cpu_cores_c32')?.ratio_to_direct, null);
  t.equal(find(records, 'stunnel', 'path_available')?.value, 0);
  t.equal(find(records, 'hbone', 'path_available')?.value, 1);
  t.equal(records.filter((r) => r.path === 'stunnel').length, 1, 'a missing path only reports availability');
  // Catalogue order within a path, path order across paths.
  t.same([...new Set(records.map((r) => r.path))], ['direct', 'stunnel', 'hbone']);
});

t.test('ratio is null without a direct value', async (t) => {
  const records = buildRecords(['direct', 'hbone'], new Map([['hbone', { rps_c32_1k: 5 }]]), new Map());
  t.equal(find(records, 'hbone', 'rps_c32_1k')?.ratio_to_direct, null);
});

t.test('floors: pass, BELOW, n/a', async (t) => {
  const { values, status } = sample();
  const records = buildRecords(PATHS, values, status);
  const checks = new Map(checkFloors(records, 'hbone').map((c) => [c.floor.metric, c.status]));
  t.equal(checks.get('throughput_single_stream'), 'BELOW');
  t.equal(checks.get('rps_c32_1k'), 'pass');
  t.equal(checks.get('new_connections_per_s'), 'pass');
  t.equal(checks.get('added_rtt_p50_at_1000rps'), 'pass');
  t.equal(checks.get('added_rtt_p99_at_1000rps'), 'BELOW');
  t.equal(checks.get('idle_rss_client_end'), 'pass');
  t.equal(checks.get('idle_rss_server_end'), 'BELOW');
  t.equal(checks.get('rss_per_connection_server_end'), 'pass');
  const noData = checkFloors(buildRecords(['direct', 'hbone'], new Map(), new Map()), 'hbone');
  t.ok(noData.every((c) => c.status === 'n/a'));
});

t.test('table and floors text', async (t) => {
  const { values, status } = sample();
  const records = buildRecords(PATHS, values, status);
  const table = formatTable(PATHS, records, status);
  const lines = table.split('\n');
  t.match(lines[0], /^metric\s+unit\s+direct\s+stunnel\s+hbone$/);
  t.match(table, /rps_c32_1k\s+req\/s\s+100000\s+missing\s+60000 \(0\.60×\)/);
  t.match(table, /added_rtt_p50_at_1000rps\s+µs\s+–\s+missing\s+240/);
  t.notMatch(table, /path_available/);
  const floors = formatFloors('hbone', records, status.get('hbone'));
  t.match(floors, /throughput ≥ 0\.10× direct\s+0\.075×\s+BELOW/);
  t.match(floors, /requests\/s \(wrk → nginx\) ≥ 0\.50× direct\s+0\.600×\s+pass/);
  t.match(
    formatFloors('stunnel', records, status.get('stunnel')),
    /not checked \(missing: stunnel not found/,
  );
});

t.test('B.1 rows carry the floors; the Node load generator rows are reported without one', async (t) => {
  const values = new Map<string, PathValues>([
    [
      'direct',
      {
        rps_c32_1k: 30_000,
        rps_c32_1k_node_echo: 60_000,
        rtt_p50_at_1000rps: 60,
        rtt_p99_at_1000rps: 400,
        rtt_p50_at_1000rps_node: 90,
        rtt_p99_at_1000rps_node: 500,
        new_connections_per_s: 10_000,
        new_connections_per_s_node: 4_000,
      },
    ],
    [
      'hbone',
      {
        rps_c32_1k: 16_000, // 0.533× → pass
        rps_c32_1k_node_echo: 6_000, // 0.10×: no floor
        rtt_p50_at_1000rps: 200, // +140 µs → pass
        rtt_p99_at_1000rps: 900, // +500 µs → pass
        rtt_p50_at_1000rps_node: 690, // +600 µs: no floor
        rtt_p99_at_1000rps_node: 3500,
        new_connections_per_s: 1_100, // 0.11× → pass
        new_connections_per_s_node: 200, // 0.05×: no floor
        tunnel_cpu_cores_c32: 1.6,
        tunnel_cpu_cores_per_1000rps: 0.1,
        tunnel_cpu_cores_c32_node_echo: 1.2,
        tunnel_cpu_cores_per_1000rps_node_echo: 0.2,
      },
    ],
  ]);
  const status = new Map<string, PathStatus>([
    ['direct', { kind: 'ok' }],
    ['hbone', { kind: 'ok' }],
  ]);
  const records = buildRecords(['direct', 'hbone'], values, status);
  t.equal(find(records, 'hbone', 'added_rtt_p50_at_1000rps')?.value, 140);
  t.equal(find(records, 'hbone', 'added_rtt_p99_at_1000rps')?.value, 500);
  t.equal(find(records, 'hbone', 'added_rtt_p50_at_1000rps_node')?.value, 600);
  t.equal(find(records, 'hbone', 'added_rtt_p99_at_1000rps_node')?.value, 3000);
  t.equal(find(records, 'hbone', 'added_rtt_p50_at_1000rps_node')?.ratio_to_direct, null);
  t.equal(find(records, 'direct', 'added_rtt_p50_at_1000rps_node'), undefined);
  t.equal(find(records, 'hbone', 'rps_c32_1k_node_echo')?.ratio_to_direct, 0.1);
  t.equal(find(records, 'hbone', 'new_connections_per_s_node')?.ratio_to_direct, 0.05);
  t.equal(find(records, 'hbone', 'tunnel_cpu_cores_per_1000rps_node_echo')?.ratio_to_direct, null);

  const checks = checkFloors(records, 'hbone');
  t.ok(
    checks.every((c) => !c.floor.metric.endsWith('_node') && !c.floor.metric.endsWith('_node_echo')),
    'no floor on a _node row',
  );
  const byMetric = new Map(checks.map((c) => [c.floor.metric, c.status]));
  t.equal(byMetric.get('rps_c32_1k'), 'pass');
  t.equal(byMetric.get('new_connections_per_s'), 'pass');
  t.equal(byMetric.get('added_rtt_p50_at_1000rps'), 'pass');
  t.equal(byMetric.get('added_rtt_p99_at_1000rps'), 'pass');

  // Both methods appear in the table, B.1 rows first; the JSON carries every row.
  const table = formatTable(['direct', 'hbone'], records, status);
  const rows = table.split('\n').map((l) => l.split(/\s+/)[0]);
  for (const m of [
    'rps_c32_1k',
    'rps_c32_1k_node_echo',
    'rtt_p50_at_1000rps',
    'rtt_p50_at_1000rps_node',
    'added_rtt_p50_at_1000rps_node',
    'new_connections_per_s',
    'new_connections_per_s_node',
    'tunnel_cpu_cores_per_1000rps_node_echo',
  ]) {
    t.ok(rows.includes(m), `${m} in the table`);
  }
  t.ok(rows.indexOf('rps_c32_1k') < rows.indexOf('rps_c32_1k_node_echo'));
  t.match(table, /rps_c32_1k_node_echo\s+req\/s\s+60000\s+6000 \(0\.10×\)/);
  t.match(table, /added_rtt_p50_at_1000rps_node\s+µs\s+–\s+600/);
  t.match(METRICS.rps_c32_1k.label, /wrk/);
  t.match(METRICS.rtt_p50_at_1000rps.label, /sockperf/);
  t.match(METRICS.new_connections_per_s.label, /wrk/);
});
