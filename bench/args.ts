// SPDX-License-Identifier: Apache-2.0
// Command-line options of `npm run bench` (bench/main.ts). Pure, so the unit test can check it.
import { MeshError } from '../src/shared/errors.ts';
import { FULL_PODS, QUICK_PODS } from './enrolment/shape.ts';
import { describeShape, FULL_SHAPE, QUICK_SHAPE } from './scale/shape.ts';

export class UsageError extends MeshError {
  constructor(message: string) {
    super('BENCH_ERR_USAGE', message);
  }
}

/** Metric groups selectable with --metrics; `cpu` is an alias of `rps` (CPU is taken during it). */
export const METRIC_GROUPS = ['memory', 'throughput', 'rps', 'latency', 'conns'] as const;
export type MetricGroup = (typeof METRIC_GROUPS)[number];
const METRIC_ALIASES: Readonly<Record<string, MetricGroup>> = { cpu: 'rps' };

/** Defaults: 5 s per timed metric (2 s with --quick); every group ~6.5 min (~3.5 min quick). */
export const DEFAULT_DURATION_S = 5;
export const QUICK_DURATION_S = 2;
/** Unmeasured lead-in of every timed metric (connections up, windows open, JIT warm). */
export const DEFAULT_WARMUP_MS = 500;
export const QUICK_WARMUP_MS = 200;
/** Idle connections held for the RSS-per-connection metric (PERFORMANCE.md B.4 used 1,000). */
export const DEFAULT_HOLD_CONNECTIONS = 1000;

/** A group of paths as args.ts sees it: its baseline is always measured with it, first. */
export interface ArgGroup {
  readonly name: string;
  readonly baseline: string;
  /** The group's paths in registry order, baseline included. */
  readonly paths: readonly string[];
}

export interface BenchOptions {
  readonly help: boolean;
  readonly quick: boolean;
  readonly jsonFile: string | undefined;
  /**
   * Paths in run order, group by group; each group's baseline (`direct`, `pod-direct`) comes
   * first in its group because the group's ratios need it.
   */
  readonly paths: readonly string[];
  readonly metrics: readonly MetricGroup[];
  readonly durationMs: number;
  readonly warmupMs: number;
  readonly rounds: number;
  readonly connections: number;
}

export const USAGE = `usage: npm run bench -- [options]
  --quick               smoke run: ${QUICK_DURATION_S} s per timed metric (default ${DEFAULT_DURATION_S} s), the
                        scale group at ${describeShape(QUICK_SHAPE)}, the enrolment group at
                        ${QUICK_PODS} pods per column
  --paths a,b,...       paths or groups to measure (default: all): direct, stunnel, hbone (group
                        loopback); pod-direct, pod-stunnel, pod-node-relay, ztunnel (group netns, needs root);
                        controller (group scale: the controller under simulated ztunnels,
                        ${describeShape(FULL_SHAPE)}); unenrolled, enrolled (group enrolment,
                        needs root: ${FULL_PODS} pods each through a local cluster's CNI chain).
                        A group's baseline (direct, pod-direct, unenrolled) is always added,
                        ratios need it
  --metrics a,b,...     ${METRIC_GROUPS.join(', ')} (cpu = rps; default: all); for the
                        data-path groups: the scale and enrolment groups always report all of
                        their rows
  --json FILE           also write one JSON object per line and metric to FILE
  --duration SECONDS    length of each timed measurement window
  --rounds N            repeat the timed metrics N times, interleaved, and report medians (default 1;
                        the scale and enrolment groups run once)
  --connections N       idle connections held for the memory metric (default ${DEFAULT_HOLD_CONNECTIONS})
  --help                this text`;

function list(value: string, flag: string): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (items.length === 0) throw new UsageError(`${flag} needs a comma-separated list`);
  return items;
}

function positiveNumber(value: string, flag: string, integer: boolean): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new UsageError(
      `${flag} must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

/**
 * Orders the selected paths group by group (registry order of the groups), each group's baseline
 * first, then its selected paths in the order given. A group name selects all its paths.
 */
export function orderPaths(selected: readonly string[], groups: readonly ArgGroup[]): string[] {
  const expanded = selected.flatMap((p) => groups.find((g) => g.name === p)?.paths ?? [p]);
  const out: string[] = [];
  for (const g of groups) {
    const mine = expanded.filter((p) => g.paths.includes(p));
    if (mine.length === 0) continue;
    for (const p of [g.baseline, ...mine]) if (!out.includes(p)) out.push(p);
  }
  return out;
}

/**
 * Parses argv (without the node and script entries). `knownPaths` is the registry's path names,
 * in default run order; `groups` groups them with their baselines (default: one group whose
 * baseline is `direct`). Throws UsageError with a message fit for the terminal.
 */
export function parseArgs(
  argv: readonly string[],
  knownPaths: readonly string[],
  groups: readonly ArgGroup[] = [{ name: 'all', baseline: 'direct', paths: knownPaths }],
): BenchOptions {
  let help = false;
  let quick = false;
  let jsonFile: string | undefined;
  let paths: string[] | undefined;
  let metrics: string[] | undefined;
  let durationS: number | undefined;
  let rounds = 1;
  let connections = DEFAULT_HOLD_CONNECTIONS;

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const flag = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    const inline = arg.startsWith('--') && eq > 0 ? arg.slice(eq + 1) : undefined;
    const value = (): string => {
      if (inline !== undefined) return inline;
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new UsageError(`${flag} needs a value`);
      i++;
      return next;
    };
    switch (flag) {
      case '--help':
      case '-h':
        help = true;
        break;
      case '--quick':
        quick = true;
        break;
      case '--json':
        jsonFile = value();
        break;
      case '--paths':
        paths = list(value(), flag);
        break;
      case '--metrics':
        metrics = list(value(), flag);
        break;
      case '--duration':
        durationS = positiveNumber(value(), flag, false);
        break;
      case '--rounds':
        rounds = positiveNumber(value(), flag, true);
        break;
      case '--connections':
        connections = positiveNumber(value(), flag, true);
        break;
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(arg)}\n${USAGE}`);
    }
  }

  const selectedPaths = paths ?? [...knownPaths];
  for (const p of selectedPaths) {
    if (!knownPaths.includes(p) && !groups.some((g) => g.name === p)) {
      const groupNames = groups.length > 1 ? `; groups: ${groups.map((g) => g.name).join(', ')}` : '';
      throw new UsageError(
        `unknown path ${JSON.stringify(p)} (known: ${knownPaths.join(', ')}${groupNames})`,
      );
    }
  }
  const orderedPaths = orderPaths(selectedPaths, groups);

  let selectedMetrics: MetricGroup[] = [...METRIC_GROUPS];
  if (metrics) {
    const wanted = new Set<MetricGroup>();
    for (const m of metrics) {
      const g = METRIC_ALIASES[m] ?? METRIC_GROUPS.find((x) => x === m);
      if (g === undefined) {
        throw new UsageError(
          `unknown metric group ${JSON.stringify(m)} (known: ${METRIC_GROUPS.join(', ')}, cpu)`,
        );
      }
      wanted.add(g);
    }
    // Keep the canonical order (memory first, while the tunnels are still idle).
    selectedMetrics = METRIC_GROUPS.filter((g) => wanted.has(g));
  }

  return {
    help,
    quick,
    jsonFile,
    paths: orderedPaths,
    metrics: selectedMetrics,
    durationMs: Math.round((durationS ?? (quick ? QUICK_DURATION_S : DEFAULT_DURATION_S)) * 1000),
    warmupMs: quick ? QUICK_WARMUP_MS : DEFAULT_WARMUP_MS,
    rounds,
    connections,
  };
}
