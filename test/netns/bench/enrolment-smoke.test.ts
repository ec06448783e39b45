// SPDX-License-Identifier: Apache-2.0
// End-to-end smoke test of the bench's enrolment group (bench/enrolment/): `npm run bench --
// --paths enrolment --quick --json FILE` brings up a 1-node local cluster, creates 10 pods per
// column through the real CNI chain, probes each until a server answers it, deletes them and
// downs the cluster. It must exit 0 with a well-formed record for every enrolment metric, a
// floors section, and nothing of its cluster left on the machine. Nothing about speed is
// asserted: the machine is shared, and the floors are the bench's to report. The orderings
// checked hold for every sample by construction (our plugin runs inside the ADD; a pod is probed
// only once its ADD has returned), so they hold for the percentiles too.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { readRecords, runBench } from '../../helpers/run-bench.ts';
import { enrolmentClusterName } from '../../../bench/enrolment/group.ts';
import { ENROLLED, QUICK_PODS, UNENROLLED } from '../../../bench/enrolment/shape.ts';
import { METRICS, type MetricName } from '../../../bench/report.ts';
import { DEFAULT_STATE_ROOT } from '../../../src/local/cluster.ts';
import { runOk } from '../../../src/local/exec.ts';

/** The quick run takes ~35 s alone; generous for a loaded 2-core machine. */
const RUN_TIMEOUT_MS = 240_000;

if (process.getuid?.() !== 0) throw new Error('this suite needs root (network namespaces); run it as root');

const COLUMN_METRICS: readonly MetricName[] = [
  'enrol_pods',
  'cni_add_p50_ms',
  'cni_add_p99_ms',
  'cni_plugin_p50_ms',
  'cni_plugin_p99_ms',
  'add_to_live_p50_ms',
  'add_to_live_p99_ms',
];
const ENROLLED_ONLY: readonly MetricName[] = [
  'added_cni_add_p50_ms',
  'added_cni_add_p99_ms',
  'added_add_to_live_p50_ms',
  'added_add_to_live_p99_ms',
  'leaked_after_delete',
];

t.test('the quick enrolment run completes, reports both columns and leaves nothing behind', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'enrolment-smoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const jsonFile = join(dir, 'enrolment.jsonl');

  const out = await runBench(['--paths', 'enrolment', '--quick', '--json', jsonFile], RUN_TIMEOUT_MS);
  t.equal(out.code, 0, 'the bench measured what it was asked', { stderr: out.stderr.slice(-3000) });

  const records = readRecords(jsonFile);
  t.same(
    [...new Set(records.map((r) => r.path))].sort(),
    [ENROLLED, UNENROLLED].sort(),
    'an enrolment-only run reports its two columns only',
  );
  const value = (path: string, metric: MetricName): number => {
    const r = records.find((x) => x.path === path && x.metric === metric);
    t.ok(r, `${path} ${metric} is reported`);
    t.equal(r?.unit, METRICS[metric].unit, `${path} ${metric} unit`);
    t.ok(typeof r?.value === 'number' && Number.isFinite(r.value), `${path} ${metric} is a number`);
    const ratio = r?.ratio_to_direct;
    if (!METRICS[metric].ratio) t.equal(ratio, null, `${path} ${metric} has no ratio`);
    else if (path === UNENROLLED) t.equal(ratio, 1, `${path} ${metric} is the baseline`);
    else t.ok(typeof ratio === 'number' && Number.isFinite(ratio), `${path} ${metric} has a ratio`);
    return typeof r?.value === 'number' ? r.value : Number.NaN;
  };
  for (const path of [UNENROLLED, ENROLLED]) {
    t.equal(value(path, 'path_available'), 1, `${path} was measured`);
    const v = Object.fromEntries(COLUMN_METRICS.map((m) => [m, value(path, m)])) as Record<
      MetricName,
      number
    >;
    t.equal(v.enrol_pods, QUICK_PODS, `${path}: the quick run's pod count`);
    for (const m of COLUMN_METRICS) t.ok(v[m] >= 0, `${path} ${m} is not negative`);
    t.ok(v.cni_add_p50_ms <= v.cni_add_p99_ms, `${path}: ADD percentiles are ordered`);
    t.ok(v.cni_plugin_p50_ms <= v.cni_plugin_p99_ms, `${path}: plugin percentiles are ordered`);
    t.ok(v.add_to_live_p50_ms <= v.add_to_live_p99_ms, `${path}: live percentiles are ordered`);
    t.ok(v.cni_plugin_p99_ms <= v.cni_add_p99_ms, `${path}: our plugin runs within the ADD`);
    t.ok(v.cni_add_p50_ms <= v.add_to_live_p50_ms, `${path}: a pod is answered after its ADD`);
  }
  const added = Object.fromEntries(ENROLLED_ONLY.map((m) => [m, value(ENROLLED, m)])) as Record<
    MetricName,
    number
  >;
  t.ok(
    Number.isInteger(added.leaked_after_delete) && added.leaked_after_delete >= 0,
    'the leak count is a count',
  );
  t.equal(
    records.filter((r) => r.path === UNENROLLED && ENROLLED_ONLY.includes(r.metric as MetricName)).length,
    0,
    'the differences and the leak count are reported on the enrolled column only',
  );

  t.match(out.stdout, /enrolment group:/);
  t.match(out.stdout, /floors for enrolled \(PERFORMANCE\.md target table\):/);
  t.match(out.stdout, /CNI ADD → redirection live p99 ≤ 200 ms\s+\S+ ms\s+(pass|BELOW)/);
  t.match(out.stdout, /CNI ADD alone p99 ≤ 200 ms\s+\S+ ms\s+(pass|BELOW)/);

  const name = enrolmentClusterName(out.pid);
  const namespaces = (await runOk(undefined, 'ip', ['netns', 'list']))
    .split('\n')
    .filter((l) => l.startsWith(`lm${name}-`));
  t.same(namespaces, [], "the run's cluster namespaces are gone");
  t.notOk(existsSync(join(DEFAULT_STATE_ROOT, name)), "the run's cluster state is gone");
});
