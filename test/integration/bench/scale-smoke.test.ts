// SPDX-License-Identifier: Apache-2.0
// End-to-end smoke test of the bench's scale group (bench/scale/): `npm run bench -- --paths
// scale --quick --json FILE` runs the scaled-down scenario (1k pods, 100 services, 20 simulated
// ztunnels, the controller as a child process fed by the Kubernetes API stand-in) and must exit
// 0 with a well-formed record for every scale metric and a floors section. Nothing about speed or
// memory is asserted: the machine is shared, and the floors are the bench's to report.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { readRecords, runBench } from '../../helpers/run-bench.ts';
import { METRICS, type MetricName } from '../../../bench/report.ts';
import { QUICK_SHAPE } from '../../../bench/scale/shape.ts';

/** The quick run takes ~15 s alone; generous for a loaded 2-core machine. */
const RUN_TIMEOUT_MS = 240_000;

const SCALE_METRICS: readonly MetricName[] = [
  'scale_pods',
  'scale_services',
  'scale_ztunnels',
  'wds_resources_per_ztunnel',
  'controller_ready_ms',
  'initial_sync_ms',
  'push_latency_p50_ms',
  'push_latency_p99_ms',
  'push_latency_max_ms',
  'controller_rss_ready',
  'controller_rss_synced',
  'controller_rss_end',
  'controller_rss_peak',
];

t.test('the quick scale run completes and reports every scale metric', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'scale-smoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const jsonFile = join(dir, 'scale.jsonl');

  const out = await runBench(['--paths', 'scale', '--quick', '--json', jsonFile], RUN_TIMEOUT_MS);
  t.equal(out.code, 0, 'the bench measured what it was asked', { stderr: out.stderr.slice(-3000) });

  const records = readRecords(jsonFile);
  t.ok(
    records.every((r) => r.path === 'controller'),
    'a scale-only run reports the controller column only',
  );
  t.same(records.find((r) => r.metric === 'path_available')?.value, 1);
  const value = (metric: MetricName): number => {
    const r = records.find((x) => x.metric === metric);
    t.ok(r, `${metric} is reported`);
    t.equal(r?.unit, METRICS[metric].unit, `${metric} unit`);
    t.equal(r?.ratio_to_direct, null, `${metric} has no ratio`);
    t.ok(typeof r?.value === 'number' && Number.isFinite(r.value) && r.value >= 0, `${metric} is a number`);
    return typeof r?.value === 'number' ? r.value : Number.NaN;
  };
  const v = Object.fromEntries(SCALE_METRICS.map((m) => [m, value(m)])) as Record<MetricName, number>;

  t.equal(v.scale_pods, QUICK_SHAPE.pods);
  t.equal(v.scale_services, QUICK_SHAPE.services);
  t.equal(v.scale_ztunnels, QUICK_SHAPE.ztunnels);
  t.equal(
    v.wds_resources_per_ztunnel,
    QUICK_SHAPE.pods + QUICK_SHAPE.services + QUICK_SHAPE.policies,
    'each ztunnel holds every workload, service and authorization',
  );
  t.ok(
    v.push_latency_p50_ms <= v.push_latency_p99_ms && v.push_latency_p99_ms <= v.push_latency_max_ms,
    'percentiles are ordered',
  );
  t.ok(v.controller_rss_peak >= v.controller_rss_ready, 'the peak RSS is at least the RSS once serving');

  t.match(out.stdout, /scale group:/);
  t.match(out.stdout, /floors for controller \(PERFORMANCE\.md target table\):/);
  t.match(out.stdout, /pod change → every ztunnel p99 ≤ 1 s\s+\S+ ms\s+(pass|BELOW)/);
  t.match(out.stdout, /controller RSS after sync ≤ 500 MB\s+\S+ MB\s+(pass|BELOW)/);
});
