// SPDX-License-Identifier: Apache-2.0
// End-to-end tests of the bench's PERFORMANCE.md B.1 tool measurements (bench/b1-run.ts) on the
// loopback group: wrk → nginx (1 KiB file) for the request rate and the connection rate,
// sockperf ping-pong → sockperf server for the round trip, next to the Node load generator's
// rows of the same shapes. The tools are required, not optional: scripts/bootstrap.sh installs
// wrk, sockperf and nginx-light (CI runs it first), so a machine without them fails here with
// the command to run. Nothing about speed is asserted: the machine is shared.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { METRICS, type MetricName } from '../../../bench/report.ts';
import {
  leftoverToolServers,
  readRecords,
  requireB1Tools,
  runBench,
  toolServerPids,
  type JsonRecord,
} from '../../helpers/run-bench.ts';

/** A quick direct-only run takes ~20 s alone; generous for a loaded 2-core machine. */
const RUN_TIMEOUT_MS = 240_000;

requireB1Tools();

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'bench-b1-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function value(t: Test, records: readonly JsonRecord[], path: string, metric: MetricName): number {
  const r = records.find((x) => x.path === path && x.metric === metric);
  t.ok(r, `${path} ${metric} is reported`);
  t.equal(r?.unit, METRICS[metric].unit, `${path} ${metric} unit`);
  t.ok(
    typeof r?.value === 'number' && Number.isFinite(r.value) && r.value > 0,
    `${path} ${metric} is a positive number`,
  );
  return r?.value ?? Number.NaN;
}

t.test('direct: wrk, sockperf and the Node load generator all measure the baseline', async (t) => {
  const json = join(tmp(t), 'direct.jsonl');
  const out = await runBench(
    ['--paths', 'direct', '--quick', '--metrics', 'rps,latency,conns', '--json', json],
    RUN_TIMEOUT_MS,
  );
  t.equal(out.code, 0, 'the bench measured what it was asked', { stderr: out.stderr.slice(-3000) });
  t.notMatch(out.stdout, /not found|NOT MEASURED/);

  const records = readRecords(json);
  const v = (m: MetricName): number => value(t, records, 'direct', m);
  v('rps_c32_1k');
  v('rps_c32_1k_node_echo');
  t.ok(v('rtt_p50_at_1000rps') <= v('rtt_p99_at_1000rps'), 'sockperf p50 ≤ p99');
  t.ok(v('rtt_p50_at_1000rps_node') <= v('rtt_p99_at_1000rps_node'), 'Node p50 ≤ p99');
  v('new_connections_per_s');
  v('new_connections_per_s_node');
  t.equal(records.find((r) => r.metric === 'rps_c32_1k')?.ratio_to_direct, 1, 'the baseline is 1×');

  // The progress log names the tool servers: nginx and sockperf on 127.0.0.1, both gone now.
  const servers = toolServerPids(out.stderr);
  t.same([...servers.keys()].sort(), ['nginx-host', 'sockperf-server-host']);
  t.same(leftoverToolServers(out.stderr), [], 'no nginx or sockperf server left running');
  t.match(out.stderr, /rps_c32_1k direct \(wrk → nginx\): \d+ req\/s/);
  t.match(out.stderr, /rtt_at_1000rps direct \(sockperf\): p50 [\d.]+ µs/);
  t.match(out.stdout, /wrk -c32 direct: \d+ req\/s, \d+ requests in/);
  t.match(out.stdout, /sockperf direct: p50 [\d.]+ µs .* observations in/);
});

t.test('stunnel and hbone carry the nginx and sockperf targets; floors read the B.1 rows', async (t) => {
  const json = join(tmp(t), 'tunnels.jsonl');
  const out = await runBench(
    ['--paths', 'stunnel,hbone', '--metrics', 'rps,latency', '--duration', '1', '--json', json],
    RUN_TIMEOUT_MS,
  );
  t.equal(out.code, 0, 'the bench measured what it was asked', { stderr: out.stderr.slice(-3000) });
  const records = readRecords(json);
  for (const path of ['stunnel', 'hbone']) {
    value(t, records, path, 'rps_c32_1k');
    value(t, records, path, 'tunnel_cpu_cores_c32');
    value(t, records, path, 'tunnel_cpu_cores_per_1000rps');
    value(t, records, path, 'rtt_p50_at_1000rps');
    value(t, records, path, 'rps_c32_1k_node_echo');
    value(t, records, path, 'tunnel_cpu_cores_c32_node_echo');
    const added = records.find((r) => r.path === path && r.metric === 'added_rtt_p50_at_1000rps');
    t.ok(added !== undefined && Number.isFinite(added.value), `${path} added p50 (sockperf) derived`);
    const ratio = records.find((r) => r.path === path && r.metric === 'rps_c32_1k')?.ratio_to_direct;
    t.ok(typeof ratio === 'number' && ratio > 0, `${path} rps ratio against direct`);
  }
  t.match(out.stdout, /requests\/s \(wrk → nginx\) ≥ 0\.50× direct\s+[\d.]+×\s+(pass|BELOW)/);
  t.match(out.stdout, /added p50 \(sockperf\) ≤ 250 µs\s+-?[\d.]+ µs\s+(pass|BELOW)/);
  t.ok(
    toolServerPids(out.stderr).size > 0,
    'the log named the tool servers (so the check below can see them)',
  );
  t.same(leftoverToolServers(out.stderr), [], 'no nginx or sockperf server left running');
});

t.test('a missing tool is named with its package, its rows are NOT MEASURED, exit 3', async (t) => {
  const json = join(tmp(t), 'missing.jsonl');
  const out = await runBench(
    ['--paths', 'direct', '--quick', '--metrics', 'rps,conns', '--json', json],
    RUN_TIMEOUT_MS,
    { MESH_BENCH_WRK: '/nonexistent/wrk' },
  );
  t.equal(out.code, 3, 'exit 3: something asked for was not measured', { stderr: out.stderr.slice(-3000) });
  t.match(out.stdout, /^wrk not found: apt-get install wrk$/m);
  t.match(
    out.stdout,
    /NOT MEASURED:\n {2}wrk not found: apt-get install wrk — rps_c32_1k, .*new_connections_per_s/,
  );
  const records = readRecords(json);
  t.notOk(records.some((r) => r.metric === 'rps_c32_1k' || r.metric === 'new_connections_per_s'));
  value(t, records, 'direct', 'rps_c32_1k_node_echo');
  value(t, records, 'direct', 'new_connections_per_s_node');
  t.same([...toolServerPids(out.stderr).keys()], [], 'without wrk no nginx is started');
});
