// SPDX-License-Identifier: Apache-2.0
// The bench's output: the metric catalogue (stable snake_case names and units), the JSON-lines
// record format, ratios against each path's baseline (`direct` on loopback, `pod-direct` in the
// netns group, `unenrolled` in the enrolment group: the JSON field keeps the name
// ratio_to_direct; the scale group's `controller` has no baseline and no ratios), the
// PERFORMANCE.md floor check and the text table. Pure, so test/unit/bench/report.test.ts can
// check it.

/** Maps a path to its baseline path (the no-mesh path of its group). */
export type BaselineOf = (path: string) => string;
const DIRECT: BaselineOf = () => 'direct';

/**
 * Every metric the bench emits. `ratio: true` means ratio_to_direct = path / baseline (same run;
 * the baseline is `direct`, `pod-direct` for the netns group, `unenrolled` for the enrolment group);
 * `ratio: false` means ratio_to_direct is null because a ratio makes no sense there: the added
 * round trip (and the enrolment group's added_*) is already a difference against the baseline (whose own would be 0), a baseline
 * has no tunnel processes to take memory or CPU of, and availability is a flag.
 */
export const METRICS = {
  path_available: { unit: 'bool', ratio: false, label: 'path available (1) or missing/failed (0)' },
  throughput_single_stream: { unit: 'Gbit/s', ratio: true, label: 'single-stream throughput' },
  // The floor-bearing rows, by the PERFORMANCE.md B.1 method the floors were calibrated with
  // (wrk → nginx, sockperf ping-pong → sockperf server), then the same shapes by the bench's
  // own Node load generator and echo backend (`_node…`: reported, no floor).
  rps_c32_1k: { unit: 'req/s', ratio: true, label: 'requests/s, wrk -t2 -c32 → nginx, 1 KiB file (B.1)' },
  rps_c32_1k_node_echo: {
    unit: 'req/s',
    ratio: true,
    label: 'requests/s, 32 conns, 1 KiB echo (Node load generator → Node echo)',
  },
  rtt_p50_at_1000rps: {
    unit: 'us',
    ratio: true,
    label: 'RTT p50, sockperf ping-pong 1 KiB at 1000 msg/s (B.1)',
  },
  rtt_p99_at_1000rps: {
    unit: 'us',
    ratio: true,
    label: 'RTT p99, sockperf ping-pong 1 KiB at 1000 msg/s (B.1)',
  },
  added_rtt_p50_at_1000rps: { unit: 'us', ratio: false, label: 'added RTT p50, sockperf (path − baseline)' },
  added_rtt_p99_at_1000rps: { unit: 'us', ratio: false, label: 'added RTT p99, sockperf (path − baseline)' },
  rtt_p50_at_1000rps_node: { unit: 'us', ratio: true, label: 'RTT p50 at 1000 req/s (Node load generator)' },
  rtt_p99_at_1000rps_node: { unit: 'us', ratio: true, label: 'RTT p99 at 1000 req/s (Node load generator)' },
  added_rtt_p50_at_1000rps_node: {
    unit: 'us',
    ratio: false,
    label: 'added RTT p50, Node load generator (path − baseline)',
  },
  added_rtt_p99_at_1000rps_node: {
    unit: 'us',
    ratio: false,
    label: 'added RTT p99, Node load generator (path − baseline)',
  },
  new_connections_per_s: {
    unit: 'conn/s',
    ratio: true,
    label: "new connections/s, wrk -t2 -c8 -H 'Connection: close' → nginx (B.1)",
  },
  new_connections_per_s_node: {
    unit: 'conn/s',
    ratio: true,
    label: 'new connections/s, 8 workers: connect, 1 KiB echo, close (Node load generator)',
  },
  idle_rss: { unit: 'MB', ratio: false, label: 'idle RSS, all tunnel processes' },
  idle_rss_client_end: { unit: 'MB', ratio: false, label: 'idle RSS, client end' },
  idle_rss_server_end: { unit: 'MB', ratio: false, label: 'idle RSS, server end' },
  rss_per_connection: { unit: 'kB', ratio: false, label: 'RSS per connection, both ends' },
  rss_per_connection_client_end: { unit: 'kB', ratio: false, label: 'RSS per connection, client end' },
  rss_per_connection_server_end: { unit: 'kB', ratio: false, label: 'RSS per connection, server end' },
  tunnel_cpu_cores_c32: { unit: 'cores', ratio: false, label: 'tunnel CPU during rps_c32_1k (wrk)' },
  tunnel_cpu_cores_per_1000rps: {
    unit: 'cores',
    ratio: false,
    label: 'tunnel CPU per 1000 req/s during rps_c32_1k (wrk)',
  },
  cpu_cores_per_end_at_1000rps: {
    unit: 'cores',
    ratio: false,
    label: 'CPU of one tunnel end (mean of the ends) carrying 1000 req/s, 1 KiB (Node load generator)',
  },
  tunnel_cpu_cores_c32_node_echo: {
    unit: 'cores',
    ratio: false,
    label: 'tunnel CPU during rps_c32_1k_node_echo',
  },
  tunnel_cpu_cores_per_1000rps_node_echo: {
    unit: 'cores',
    ratio: false,
    label: 'tunnel CPU per 1000 req/s during rps_c32_1k_node_echo',
  },
  // The scale group (bench/scale/): one column, `controller`; nothing to take a ratio against.
  scale_pods: { unit: 'count', ratio: false, label: 'pods in the cluster' },
  scale_services: { unit: 'count', ratio: false, label: 'services in the cluster' },
  scale_ztunnels: { unit: 'count', ratio: false, label: 'simulated ztunnels (one per node)' },
  wds_resources_per_ztunnel: { unit: 'count', ratio: false, label: 'WDS resources each ztunnel holds' },
  controller_ready_ms: {
    unit: 'ms',
    ratio: false,
    label: 'controller spawn → serving (listed, model built)',
  },
  initial_sync_ms: { unit: 'ms', ratio: false, label: 'every ztunnel connected → all hold the full state' },
  push_latency_p50_ms: { unit: 'ms', ratio: false, label: 'pod change → every ztunnel, p50' },
  push_latency_p99_ms: { unit: 'ms', ratio: false, label: 'pod change → every ztunnel, p99' },
  push_latency_max_ms: { unit: 'ms', ratio: false, label: 'pod change → every ztunnel, max' },
  controller_rss_ready: { unit: 'MB', ratio: false, label: 'controller RSS serving, before any ztunnel' },
  controller_rss_synced: { unit: 'MB', ratio: false, label: 'controller RSS after the initial sync' },
  controller_rss_end: { unit: 'MB', ratio: false, label: 'controller RSS after the pod changes' },
  controller_rss_peak: { unit: 'MB', ratio: false, label: 'controller peak RSS (VmHWM)' },
  // The enrolment group (bench/enrolment/): pods created one at a time through a local cluster's
  // CNI chain, `enrolled` (ambient namespace) against `unenrolled` (outside the mesh).
  enrol_pods: { unit: 'count', ratio: false, label: 'pods created and measured, one at a time' },
  cni_add_p50_ms: { unit: 'ms', ratio: true, label: 'CNI ADD of the whole chain, p50' },
  cni_add_p99_ms: { unit: 'ms', ratio: true, label: 'CNI ADD of the whole chain, p99' },
  cni_plugin_p50_ms: { unit: 'ms', ratio: true, label: 'our plugin (ambient-cni) within the ADD, p50' },
  cni_plugin_p99_ms: { unit: 'ms', ratio: true, label: 'our plugin (ambient-cni) within the ADD, p99' },
  add_to_live_p50_ms: { unit: 'ms', ratio: true, label: 'ADD start → first connection answered, p50' },
  add_to_live_p99_ms: { unit: 'ms', ratio: true, label: 'ADD start → first connection answered, p99' },
  added_cni_add_p50_ms: { unit: 'ms', ratio: false, label: 'added CNI ADD p50 (enrolled − unenrolled)' },
  added_cni_add_p99_ms: { unit: 'ms', ratio: false, label: 'added CNI ADD p99 (enrolled − unenrolled)' },
  added_add_to_live_p50_ms: {
    unit: 'ms',
    ratio: false,
    label: 'added ADD → answered p50 (enrolled − unenrolled)',
  },
  added_add_to_live_p99_ms: {
    unit: 'ms',
    ratio: false,
    label: 'added ADD → answered p99 (enrolled − unenrolled)',
  },
  leaked_after_delete: {
    unit: 'count',
    ratio: false,
    label: 'namespaces, veths, IP leases, ztunnel proxies left after deleting every pod',
  },
} as const satisfies Record<string, { unit: string; ratio: boolean; label: string }>;

export type MetricName = keyof typeof METRICS;
export const METRIC_NAMES = Object.keys(METRICS) as MetricName[];

/** One line of `--json` output. Keys in this order; nothing else. */
export interface MetricRecord {
  readonly metric: MetricName;
  readonly path: string;
  readonly value: number;
  readonly unit: string;
  readonly ratio_to_direct: number | null;
}

export function jsonLine(r: MetricRecord): string {
  return JSON.stringify({
    metric: r.metric,
    path: r.path,
    value: r.value,
    unit: r.unit,
    ratio_to_direct: r.ratio_to_direct,
  });
}

/** Measured values of one path (medians over rounds); absent = not measured. */
export type PathValues = Partial<Record<MetricName, number>>;

export type PathStatus =
  { readonly kind: 'ok' } | { readonly kind: 'missing' | 'failed'; readonly reason: string };

/** The derived added round trips (path − baseline) and the round trips they come from. */
const ADDED_RTT: readonly (readonly [MetricName, MetricName])[] = [
  ['added_rtt_p50_at_1000rps', 'rtt_p50_at_1000rps'],
  ['added_rtt_p99_at_1000rps', 'rtt_p99_at_1000rps'],
  ['added_rtt_p50_at_1000rps_node', 'rtt_p50_at_1000rps_node'],
  ['added_rtt_p99_at_1000rps_node', 'rtt_p99_at_1000rps_node'],
];

/** path / direct when both are finite and direct is non-zero, else null. */
export function ratio(value: number, direct: number | undefined): number | null {
  if (direct === undefined || !Number.isFinite(value) || !Number.isFinite(direct) || direct === 0)
    return null;
  return value / direct;
}

/**
 * Turns per-path values into records: derives added_rtt_* (path − baseline, non-baseline paths
 * only) and ratio_to_direct (path / baseline), and adds a path_available record per path. Order:
 * path order, then catalogue order.
 */
export function buildRecords(
  paths: readonly string[],
  values: ReadonlyMap<string, PathValues>,
  status: ReadonlyMap<string, PathStatus>,
  baselineOf: BaselineOf = DIRECT,
): MetricRecord[] {
  const out: MetricRecord[] = [];
  for (const path of paths) {
    const base = baselineOf(path);
    const baseValues = values.get(base) ?? {};
    const ok = (status.get(path)?.kind ?? 'ok') === 'ok';
    const v: PathValues = { ...(values.get(path) ?? {}) };
    if (path !== base) {
      for (const [added, rtt] of ADDED_RTT) {
        const a = v[rtt];
        const b = baseValues[rtt];
        if (a !== undefined && b !== undefined) v[added] = a - b;
      }
    }
    v.path_available = ok ? 1 : 0;
    for (const metric of METRIC_NAMES) {
      const value = v[metric];
      if (value === undefined || Number.isNaN(value)) continue;
      const def = METRICS[metric];
      out.push({
        metric,
        path,
        value,
        unit: def.unit,
        ratio_to_direct: def.ratio ? ratio(value, baseValues[metric]) : null,
      });
    }
  }
  return out;
}

/** A floor from the PERFORMANCE.md target table ("an issue is not done below it"). */
export interface Floor {
  readonly metric: MetricName;
  /** Compare the ratio to the baseline or the value itself. */
  readonly on: 'ratio' | 'value';
  readonly op: '>=' | '<=';
  readonly threshold: number;
  /** `{baseline}` stands for the baseline path's name. */
  readonly text: string;
}

/**
 * The data-path floors, checked on the mesh paths `hbone` and `ztunnel`. The request rate, the
 * added round trips and the connection rate are the B.1-method rows (wrk → nginx, sockperf),
 * the method the PERFORMANCE.md floors were calibrated with; the `_node…` rows have no floor.
 */
export const FLOORS: readonly Floor[] = [
  {
    metric: 'throughput_single_stream',
    on: 'ratio',
    op: '>=',
    threshold: 0.1,
    text: 'throughput ≥ 0.10× {baseline}',
  },
  {
    metric: 'rps_c32_1k',
    on: 'ratio',
    op: '>=',
    threshold: 0.5,
    text: 'requests/s (wrk → nginx) ≥ 0.50× {baseline}',
  },
  {
    metric: 'new_connections_per_s',
    on: 'ratio',
    op: '>=',
    threshold: 0.1,
    text: 'new conns/s (wrk, Connection: close) ≥ 0.10× {baseline}',
  },
  {
    metric: 'added_rtt_p50_at_1000rps',
    on: 'value',
    op: '<=',
    threshold: 250,
    text: 'added p50 (sockperf) ≤ 250 µs',
  },
  {
    metric: 'added_rtt_p99_at_1000rps',
    on: 'value',
    op: '<=',
    threshold: 1000,
    text: 'added p99 (sockperf) ≤ 1 ms',
  },
  {
    metric: 'cpu_cores_per_end_at_1000rps',
    on: 'value',
    op: '<=',
    threshold: 0.15,
    text: 'CPU per ztunnel at 1000 req/s ≤ 0.15 cores',
  },
  {
    metric: 'rss_per_connection_client_end',
    on: 'value',
    op: '<=',
    threshold: 30,
    text: 'RSS/conn client end ≤ 30 kB',
  },
  {
    metric: 'rss_per_connection_server_end',
    on: 'value',
    op: '<=',
    threshold: 30,
    text: 'RSS/conn server end ≤ 30 kB',
  },
  {
    metric: 'idle_rss_client_end',
    on: 'value',
    op: '<=',
    threshold: 60,
    text: 'idle RSS client end ≤ 60 MB',
  },
  {
    metric: 'idle_rss_server_end',
    on: 'value',
    op: '<=',
    threshold: 60,
    text: 'idle RSS server end ≤ 60 MB',
  },
];

/** The controller rows of the PERFORMANCE.md target table, checked on the scale group's `controller`. */
export const CONTROLLER_FLOORS: readonly Floor[] = [
  {
    metric: 'push_latency_p99_ms',
    on: 'value',
    op: '<=',
    threshold: 1000,
    text: 'pod change → every ztunnel p99 ≤ 1 s',
  },
  {
    metric: 'controller_rss_synced',
    on: 'value',
    op: '<=',
    threshold: 500,
    text: 'controller RSS after sync ≤ 500 MB',
  },
  {
    metric: 'controller_rss_end',
    on: 'value',
    op: '<=',
    threshold: 500,
    text: 'controller RSS at the end ≤ 500 MB',
  },
];

/**
 * The pod enrolment row, checked on the enrolment group's `enrolled` column: on the time to
 * redirection live, and on the ADD alone, which a runtime waits for before the pod's containers
 * start (the agent answers our plugin only once ztunnel has the pod).
 */
export const ENROLMENT_FLOORS: readonly Floor[] = [
  {
    metric: 'add_to_live_p99_ms',
    on: 'value',
    op: '<=',
    threshold: 200,
    text: 'CNI ADD → redirection live p99 ≤ 200 ms',
  },
  { metric: 'cni_add_p99_ms', on: 'value', op: '<=', threshold: 200, text: 'CNI ADD alone p99 ≤ 200 ms' },
];

/** The floors of each path they apply to: the mesh's own paths and the controller, not the references. */
const FLOORS_BY_PATH: Readonly<Record<string, readonly Floor[]>> = {
  hbone: FLOORS,
  ztunnel: FLOORS,
  controller: CONTROLLER_FLOORS,
  enrolled: ENROLMENT_FLOORS,
};

/** Paths the floors apply to. */
export const FLOOR_PATHS: readonly string[] = Object.keys(FLOORS_BY_PATH);

export interface FloorCheck {
  readonly floor: Floor;
  readonly actual: number | null;
  readonly status: 'pass' | 'BELOW' | 'n/a';
}

export function checkFloors(records: readonly MetricRecord[], path: string): FloorCheck[] {
  return (FLOORS_BY_PATH[path] ?? []).map((floor) => {
    const r = records.find((x) => x.path === path && x.metric === floor.metric);
    const actual = r === undefined ? null : floor.on === 'ratio' ? r.ratio_to_direct : r.value;
    if (actual === null) return { floor, actual, status: 'n/a' };
    const ok = floor.op === '>=' ? actual >= floor.threshold : actual <= floor.threshold;
    return { floor, actual, status: ok ? 'pass' : 'BELOW' };
  });
}

/** Three significant digits, no exponent, for the table. */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 100) return Math.round(v).toString();
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

const TABLE_UNITS: Readonly<Record<string, string>> = { us: 'µs' };

/** Display width in code points (the table has only BMP symbols such as µ, ×, –, ≥). */
function width(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function pad(s: string, n: number): string {
  return s + ' '.repeat(Math.max(0, n - width(s)));
}

/** A floor's text for a path measured against `baseline`. */
export function floorText(floor: Floor, baseline: string): string {
  return floor.text.replace('{baseline}', baseline);
}

/**
 * The stdout table: one row per metric, one column per path, "value (ratio×)" cells, the ratio
 * being against `baseline` (whose own cells show the bare value).
 */
export function formatTable(
  paths: readonly string[],
  records: readonly MetricRecord[],
  status: ReadonlyMap<string, PathStatus>,
  baseline = 'direct',
): string {
  const header = ['metric', 'unit', ...paths];
  const rows: string[][] = [];
  for (const metric of METRIC_NAMES) {
    if (metric === 'path_available') continue;
    const cells = paths.map((path) => {
      const st = status.get(path);
      if (st && st.kind !== 'ok') return st.kind;
      const r = records.find((x) => x.path === path && x.metric === metric);
      if (!r) return '–';
      if (METRICS[metric].unit === 'count') return String(Math.round(r.value));
      return r.ratio_to_direct === null || path === baseline
        ? formatNumber(r.value)
        : `${formatNumber(r.value)} (${r.ratio_to_direct.toFixed(2)}×)`;
    });
    if (cells.every((c) => c === '–' || c === 'missing' || c === 'failed')) continue;
    const unit: string = METRICS[metric].unit;
    rows.push([metric, TABLE_UNITS[unit] ?? unit, ...cells]);
  }
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i]!))) + 2);
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => pad(c, widths[i]!))
      .join('')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w - 2))), ...rows.map(line)].join('\n');
}

/** The floors section for one path, or a line saying why it was not checked. */
export function formatFloors(
  path: string,
  records: readonly MetricRecord[],
  status: PathStatus | undefined,
  baseline = 'direct',
): string {
  if (status && status.kind !== 'ok')
    return `floors for ${path}: not checked (${status.kind}: ${status.reason})`;
  const checks = checkFloors(records, path);
  const ratios = checks.some((c) => c.floor.on === 'ratio') ? `; ratios × ${baseline}, same run` : '';
  const lines = [`floors for ${path} (PERFORMANCE.md target table${ratios}):`];
  const w = Math.max(...checks.map((c) => width(floorText(c.floor, baseline)))) + 2;
  for (const c of checks) {
    const actual =
      c.actual === null
        ? 'not measured'
        : c.floor.on === 'ratio'
          ? `${c.actual.toFixed(3)}×`
          : `${formatNumber(c.actual)} ${TABLE_UNITS[METRICS[c.floor.metric].unit] ?? METRICS[c.floor.metric].unit}`;
    lines.push(`  ${pad(floorText(c.floor, baseline), w)}${pad(actual, 16)}${c.status}`);
  }
  return lines.join('\n');
}
