// SPDX-License-Identifier: Apache-2.0
// `npm run bench`: measures every path in one run, group by group (bench/groups.ts): the
// loopback group (direct, stunnel, hbone), as root the network-namespace group (pod-direct,
// pod-stunnel, pod-node-relay, ztunnel: pods on two nodes of the test bed), the scale group (the
// controller with 10k pods, 1k services and 100 simulated ztunnels: bench/scale/) and, as root, the
// enrolment group (pods through a local cluster's CNI chain, enrolled against unenrolled:
// bench/enrolment/). Reports absolute values, ratios to the group's baseline (direct,
// pod-direct, unenrolled) measured in the same run, and the PERFORMANCE.md floors for the mesh
// paths, the controller and pod enrolment. Method: PERFORMANCE.md B.1–B.4, DESIGN.md §5.
//
// The request-rate, latency and connection-rate floors are checked on PERFORMANCE.md B.1's own
// tools (wrk → nginx, sockperf ping-pong → sockperf server: bench/b1-run.ts), the method they
// were calibrated with; the Node load generator measures the same shapes beside them (`_node…`
// rows, no floor). A missing tool is named with its package and its rows are NOT MEASURED.
//
// Within a group metrics are interleaved (for each metric: the baseline, then each path) so drift
// on this shared 2-core machine hits every path alike. Every child runs in its own process group
// and is killed on exit, SIGINT/SIGTERM and errors; a group's test beds (namespaces, ztunnels)
// are destroyed when the group ends, on errors and on signals. Exit codes: 0 = measured (floors
// may be BELOW; a missing stunnel is reported, not a failure), 1 = the harness crashed, 2 = usage,
// 3 = some path or metric could not be measured (printed; includes the netns group without root
// and a missing B.1 tool).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errorMessage } from '../src/shared/errors.ts';
import { parseArgs, USAGE, UsageError, type BenchOptions, type MetricGroup } from './args.ts';
import { startB1Servers, type B1Servers } from './b1-run.ts';
import {
  measureConns,
  measureIdleRss,
  measureLatency,
  measureRps,
  measureRssPerConnection,
  measureSockperfLatency,
  measureThroughput,
  measureWrkConns,
  measureWrkRps,
  RSS_SETTLE_MS,
  warmUp,
  type Timing,
  type WarmUpShape,
} from './measure.ts';
import { freePort, waitForService } from './net.ts';
import { measureEnrolment, sweepEnrolmentClusterSync } from './enrolment/group.ts';
import { ENROLMENT_COLUMNS } from './enrolment/shape.ts';
import { needsRootReason, PATH_GROUPS, type PathGroup } from './groups.ts';
import { PATHS } from './paths/index.ts';
import { sweepOwnTestbedsSync } from './paths/pods.ts';
import { ProcessRegistry, softLimit } from './procs.ts';
import {
  buildRecords,
  FLOOR_PATHS,
  formatFloors,
  formatNumber,
  formatTable,
  jsonLine,
  METRIC_NAMES,
  type MetricName,
  type PathStatus,
  type PathValues,
} from './report.ts';
import { measureScale, SCALE_PATH } from './scale/group.ts';
import { median } from './stats.ts';
import {
  b1Available,
  findB1Tools,
  missingToolProblem,
  missingTools,
  toolMissingMessage,
  type B1Needs,
  type B1Setup,
} from './tools.ts';
import type { BackendServices, PathInstance, PathModule, SharedResource, TunnelEnd } from './types.ts';

const BACKEND_READY_MS = 10_000;
/** A path's start (certificates, handshakes, readiness probes) must finish within this, unless the path says otherwise. */
const PATH_START_TIMEOUT_MS = 60_000;
/** Bound on tearing down the test beds after a signal; then the synchronous sweep runs. */
const SIGNAL_TEARDOWN_MS = 60_000;

const started = performance.now();
const log = (msg: string): void => {
  const s = ((performance.now() - started) / 1000).toFixed(1);
  process.stderr.write(`[bench +${s}s] ${msg}\n`);
};

/**
 * Holding N connections through a tunnel needs ~3 fds per connection per hop in the busiest
 * process (accepted socket, upstream socket, plus the load generator's own), and stunnel runs a
 * thread per connection at each end. Checked up front so the run fails clearly, not midway.
 */
function checkLimits(opts: BenchOptions): string | undefined {
  if (!opts.metrics.includes('memory') || !opts.paths.some((p) => PATHS.some((m) => m.name === p))) {
    return undefined;
  }
  const fdsNeeded = 3 * opts.connections + 512;
  const fds = softLimit('Max open files');
  if (fds < fdsNeeded) {
    return (
      `open-file limit (ulimit -n) is ${fds}, but holding ${opts.connections} connections needs ` +
      `about ${fdsNeeded} per process: run 'ulimit -n ${fdsNeeded}' first or pass --connections`
    );
  }
  const procsNeeded = 2 * opts.connections + 512;
  const nproc = softLimit('Max processes');
  if (nproc < procsNeeded) {
    return `process/thread limit (ulimit -u) is ${nproc}; stunnel needs a thread per connection per end: run 'ulimit -u ${procsNeeded}'`;
  }
  return undefined;
}

interface Running {
  readonly name: string;
  readonly instance: PathInstance;
}

class Collector {
  readonly #samples = new Map<string, Map<MetricName, number[]>>();

  add(path: string, metric: MetricName, value: number): void {
    let m = this.#samples.get(path);
    if (!m) this.#samples.set(path, (m = new Map<MetricName, number[]>()));
    let list = m.get(metric);
    if (!list) m.set(metric, (list = []));
    list.push(value);
  }

  /** Medians over rounds. */
  values(): Map<string, PathValues> {
    const out = new Map<string, PathValues>();
    for (const [path, m] of this.#samples) {
      const v: PathValues = {};
      for (const [metric, list] of m) v[metric] = median(list);
      out.set(path, v);
    }
    return out;
  }
}

/**
 * The group resources paths share (PathContext.shared): created once per key, destroyed in
 * reverse order by destroyAll (end of group, errors, signals). Concurrent destroyAll calls chain,
 * so every caller returns only when the teardown is over.
 */
class SharedResources {
  readonly #entries: { key: string; created: Promise<SharedResource<unknown>> }[] = [];
  #tail: Promise<void> = Promise.resolve();
  #used = false;
  #closed = false;

  /** No new resources from now on (the bench is stopping). */
  close(): void {
    this.#closed = true;
  }

  /** Whether any resource was ever created (the exit handler then sweeps namespaces). */
  get used(): boolean {
    return this.#used;
  }

  get<T>(key: string, create: () => Promise<SharedResource<T>>): Promise<T> {
    let e = this.#entries.find((x) => x.key === key);
    if (e === undefined) {
      if (this.#closed) return Promise.reject(new Error(`${key}: not created, the bench is stopping`));
      this.#used = true;
      e = { key, created: create() };
      // A failed creation cleans up after itself; the rejection reaches the caller below.
      e.created.catch(() => undefined);
      this.#entries.push(e);
    }
    return e.created.then((r) => r.value as T);
  }

  destroyAll(log: (msg: string) => void): Promise<void> {
    const entries = this.#entries.splice(0).reverse();
    this.#tail = this.#tail.then(async () => {
      for (const e of entries) {
        let r: SharedResource<unknown>;
        try {
          r = await e.created;
        } catch {
          continue;
        }
        try {
          await r.destroy();
          log(`${e.key}: removed`);
        } catch (err) {
          log(`${e.key}: teardown failed: ${errorMessage(err)}`);
        }
      }
    });
    return this.#tail;
  }
}

function perEnd(path: PathInstance, perProcess: readonly number[], end: TunnelEnd): number | undefined {
  const idx = path.processes.flatMap((p, i) => (p.end === end ? [i] : []));
  if (idx.length === 0) return undefined;
  return idx.reduce((s, i) => s + perProcess[i]!, 0);
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

interface RunState {
  readonly opts: BenchOptions;
  readonly procs: ProcessRegistry;
  readonly tmp: string;
  readonly resources: SharedResources;
  readonly backend: BackendServices;
  /** The B.1 tools and the tool servers the run wants (PathContext.b1). */
  readonly b1: B1Setup;
  readonly status: Map<string, PathStatus>;
  readonly problems: string[];
  readonly notes: string[];
  readonly collector: Collector;
  readonly stopping: () => boolean;
}

function moduleOf(name: string): PathModule {
  const mod = PATHS.find((p) => p.name === name);
  if (mod === undefined) throw new Error(`no path module ${name}`);
  return mod;
}

/** The paths of a group: the registered path modules, or the columns of the scale and enrolment groups. */
const groupPaths = (group: PathGroup): string[] =>
  group.name === 'scale'
    ? [SCALE_PATH]
    : group.name === 'enrolment'
      ? [...ENROLMENT_COLUMNS]
      : PATHS.filter((p) => p.group === group.name).map((p) => p.name);

const baselineOf = (path: string): string => {
  const group = PATH_GROUPS.find((g) => groupPaths(g).includes(path));
  if (group === undefined) throw new Error(`path ${path} is in no group`);
  return group.baseline;
};

const fmtUs = (us: number | undefined): string => (us === undefined ? '–' : `${formatNumber(us)} µs`);

/** `, socket errors: read 3` (only the non-zero counts), or '' when there were none. */
function socketErrors(e: { connect: number; read: number; write: number; timeout: number }): string {
  const parts = Object.entries(e).filter(([, n]) => n > 0);
  return parts.length === 0 ? '' : `, socket errors: ${parts.map(([k, n]) => `${k} ${n}`).join(', ')}`;
}

/** Starts, warms and measures one group's paths (interleaved per metric), then closes them. */
async function runGroup(
  st: RunState,
  group: PathGroup,
  paths: readonly string[],
  b1: B1Needs,
): Promise<void> {
  const { opts, procs, status, collector, notes } = st;
  const timing: Timing = { warmupMs: opts.warmupMs, durationMs: opts.durationMs };
  log(`${group.name} group: ${paths.join(', ')} (ratios against ${group.baseline})`);
  const running: Running[] = [];
  const fail = (path: string, what: string, err: unknown): void => {
    const msg = `${path}: ${what} failed: ${errorMessage(err)}`;
    st.problems.push(msg);
    log(msg);
  };
  /** The tunnel CPU of a requests/s row, total and per 1000 req/s; returns its text for the log. */
  const recordTunnelCpu = (
    path: string,
    m: { readonly perS: number; readonly tunnelCores: number | undefined },
    total: MetricName,
    per1000: MetricName,
  ): string => {
    if (m.tunnelCores === undefined) return '';
    collector.add(path, total, m.tunnelCores);
    collector.add(path, per1000, m.tunnelCores / (m.perS / 1000));
    return `, tunnel CPU ${formatNumber(m.tunnelCores)} cores`;
  };

  for (const name of paths) {
    if (st.stopping()) break;
    const mod = moduleOf(name);
    const dir = join(st.tmp, name);
    mkdirSync(dir, { recursive: true });
    log(`starting ${name}: ${mod.description}`);
    try {
      const r = await withTimeout(
        mod.start({
          backend: st.backend,
          b1: st.b1,
          tmpDir: dir,
          spawn: (label, command, args, spec) => procs.spawn(label, command, args, spec),
          spawnNode: (label, script, args, spec) => procs.spawnNode(label, script, args, spec),
          shared: (key, create) => st.resources.get(key, create),
          log: (msg) => log(`${name}: ${msg}`),
        }),
        mod.startTimeoutMs ?? PATH_START_TIMEOUT_MS,
        `${name} start`,
      );
      if (r.kind === 'missing') {
        process.stdout.write(`${r.reason}\n`);
        log(`${name}: missing (${r.reason})`);
        status.set(name, { kind: 'missing', reason: r.reason });
        continue;
      }
      const pids = r.instance.processes.map((p) => `${p.label}=${p.pid}`).join(' ');
      log(`${name} ready${pids ? ` (${pids})` : ''}`);
      running.push({ name, instance: r.instance });
      status.set(name, { kind: 'ok' });
    } catch (err) {
      fail(name, 'start', err);
      status.set(name, { kind: 'failed', reason: errorMessage(err) });
    }
  }

  const live = (): Running[] => running.filter((r) => status.get(r.name)?.kind === 'ok');

  const warmAll = async (durationMs: number, shapes: readonly WarmUpShape[]): Promise<void> => {
    for (const r of live()) {
      try {
        await warmUp(procs, r.instance, durationMs, shapes);
      } catch (err) {
        fail(r.name, 'warm-up', err);
        status.set(r.name, { kind: 'failed', reason: `warm-up: ${errorMessage(err)}` });
      }
    }
  };
  // Light warm-up (connections and small requests: pools, handshakes, JIT) for the memory metrics.
  await warmAll(opts.quick ? 200 : 300, ['conns', 'rps']);
  const settleMs = opts.quick ? RSS_SETTLE_MS / 2 : RSS_SETTLE_MS;

  const each = async (metric: string, fn: (r: Running) => Promise<void>): Promise<void> => {
    for (const r of live()) {
      try {
        await fn(r);
      } catch (err) {
        fail(r.name, metric, err);
      }
    }
  };
  const withProcesses = (): Running[] => live().filter((r) => r.instance.processes.length > 0);

  if (opts.metrics.includes('memory')) {
    // First, while the tunnels have seen only the warm-up: V8 keeps a grown heap (B.4).
    for (const r of withProcesses()) {
      try {
        const rss = await measureIdleRss(r.instance, settleMs);
        const mb = (kb: number | undefined): number | undefined => (kb === undefined ? undefined : kb / 1000);
        collector.add(r.name, 'idle_rss', rss.reduce((a, b) => a + b, 0) / 1000);
        const c = mb(perEnd(r.instance, rss, 'client'));
        const s = mb(perEnd(r.instance, rss, 'server'));
        if (c !== undefined) collector.add(r.name, 'idle_rss_client_end', c);
        if (s !== undefined) collector.add(r.name, 'idle_rss_server_end', s);
        const perProc = r.instance.processes.map((p, i) => `${p.label} ${formatNumber(rss[i]! / 1000)} MB`);
        log(`idle_rss ${r.name}: ${perProc.join(', ')}`);
        notes.push(`idle RSS ${r.name}: ${perProc.join(', ')}`);
      } catch (err) {
        fail(r.name, 'idle_rss', err);
      }
    }
    for (const r of withProcesses()) {
      try {
        const held = await measureRssPerConnection(procs, r.instance, opts.connections, settleMs);
        const per = held.perConnectionKb;
        collector.add(
          r.name,
          'rss_per_connection',
          per.reduce((a, b) => a + b, 0),
        );
        const c = perEnd(r.instance, per, 'client');
        const s = perEnd(r.instance, per, 'server');
        if (c !== undefined) collector.add(r.name, 'rss_per_connection_client_end', c);
        if (s !== undefined) collector.add(r.name, 'rss_per_connection_server_end', s);
        const perProc = r.instance.processes.map((p, i) => `${p.label} ${formatNumber(per[i]!)} kB`);
        const fds = r.instance.processes.map(
          (p, i) => `${p.label} ${held.fdsBefore[i]} → ${held.fdsHeld[i]}`,
        );
        log(`rss_per_connection ${r.name} (${opts.connections} conns): ${perProc.join(', ')}`);
        notes.push(
          `RSS per connection ${r.name} (${opts.connections} held): ${perProc.join(', ')}; ` +
            `open fds idle → holding: ${fds.join(', ')}`,
        );
      } catch (err) {
        fail(r.name, 'rss_per_connection', err);
      }
    }
  }

  // Full warm-up, bulk included, before the timed metrics.
  await warmAll(opts.quick ? 200 : 1000, ['rps', 'conns', 'throughput']);

  const { wrk, sockperf } = st.b1.tools;
  const timed: {
    readonly group: Exclude<MetricGroup, 'memory'>;
    readonly name: string;
    readonly run: (r: Running) => Promise<void>;
  }[] = [
    {
      group: 'throughput',
      name: 'throughput_single_stream',
      run: async (r) => {
        const g = await measureThroughput(procs, r.instance, timing);
        collector.add(r.name, 'throughput_single_stream', g);
        log(`throughput_single_stream ${r.name}: ${formatNumber(g)} Gbit/s`);
      },
    },
    // B.1 method (the floor-bearing rows), then the Node load generator's measurement of the
    // same shape; each interleaved over the paths (baseline first).
    ...(b1.http && wrk !== undefined
      ? [
          {
            group: 'rps' as const,
            name: 'rps_c32_1k (wrk → nginx)',
            run: async (r: Running) => {
              const m = await measureWrkRps(procs, r.instance, timing, wrk);
              collector.add(r.name, 'rps_c32_1k', m.perS);
              const cpu = recordTunnelCpu(r.name, m, 'tunnel_cpu_cores_c32', 'tunnel_cpu_cores_per_1000rps');
              const lat = m.wrk.latencyUs;
              const errors = socketErrors(m.wrk.socketErrors);
              log(`rps_c32_1k ${r.name} (wrk → nginx): ${formatNumber(m.perS)} req/s${cpu}${errors}`);
              notes.push(
                `wrk -c32 ${r.name}: ${formatNumber(m.perS)} req/s, ${m.wrk.requests} requests in ` +
                  `${formatNumber(m.wrk.seconds)} s, latency p50 ${fmtUs(lat.p50)} / p99 ${fmtUs(lat.p99)}${errors}`,
              );
            },
          },
        ]
      : []),
    {
      group: 'rps',
      name: 'rps_c32_1k_node_echo',
      run: async (r) => {
        const m = await measureRps(procs, r.instance, timing);
        collector.add(r.name, 'rps_c32_1k_node_echo', m.perS);
        const cpu = recordTunnelCpu(
          r.name,
          m,
          'tunnel_cpu_cores_c32_node_echo',
          'tunnel_cpu_cores_per_1000rps_node_echo',
        );
        log(`rps_c32_1k_node_echo ${r.name}: ${formatNumber(m.perS)} req/s${cpu}`);
      },
    },
    ...(b1.latency && sockperf !== undefined
      ? [
          {
            group: 'latency' as const,
            name: 'rtt_at_1000rps (sockperf)',
            run: async (r: Running) => {
              const m = await measureSockperfLatency(procs, r.instance, timing, sockperf);
              collector.add(r.name, 'rtt_p50_at_1000rps', m.p50Us);
              collector.add(r.name, 'rtt_p99_at_1000rps', m.p99Us);
              log(
                `rtt_at_1000rps ${r.name} (sockperf): p50 ${formatNumber(m.p50Us)} µs, p99 ${formatNumber(m.p99Us)} µs`,
              );
              const lost = m.dropped + m.duplicated + m.outOfOrder;
              notes.push(
                `sockperf ${r.name}: p50 ${fmtUs(m.p50Us)} / p90 ${fmtUs(m.p90Us)} / p99 ${fmtUs(m.p99Us)} / ` +
                  `p99.9 ${fmtUs(m.p999Us)} / max ${fmtUs(m.maxUs)}, ${m.observations} observations in ` +
                  `${formatNumber(m.validSeconds)} s${lost > 0 ? `, ${m.dropped} dropped, ${m.duplicated} duplicated, ${m.outOfOrder} out of order` : ''}`,
              );
            },
          },
        ]
      : []),
    {
      group: 'latency',
      name: 'rtt_at_1000rps_node',
      run: async (r) => {
        const m = await measureLatency(procs, r.instance, timing);
        collector.add(r.name, 'rtt_p50_at_1000rps_node', m.p50Us);
        collector.add(r.name, 'rtt_p99_at_1000rps_node', m.p99Us);
        if (m.coresPerEnd !== undefined) collector.add(r.name, 'cpu_cores_per_end_at_1000rps', m.coresPerEnd);
        log(
          `rtt_at_1000rps_node ${r.name}: p50 ${formatNumber(m.p50Us)} µs, p99 ${formatNumber(m.p99Us)} µs ` +
            `(send lag p50 ${formatNumber(m.sendLagP50Us)} µs, p99 ${formatNumber(m.sendLagP99Us)} µs, lost ${m.lost})`,
        );
        notes.push(
          `latency (Node load generator) ${r.name}: timer send lag p50 ${formatNumber(m.sendLagP50Us)} µs / p99 ` +
            `${formatNumber(m.sendLagP99Us)} µs (included: RTT is measured from the schedule), ${m.lost} lost`,
        );
      },
    },
    ...(b1.http && wrk !== undefined
      ? [
          {
            group: 'conns' as const,
            name: 'new_connections_per_s (wrk, Connection: close)',
            run: async (r: Running) => {
              const m = await measureWrkConns(procs, r.instance, timing, wrk);
              collector.add(r.name, 'new_connections_per_s', m.perS);
              const errors = socketErrors(m.socketErrors);
              log(
                `new_connections_per_s ${r.name} (wrk, Connection: close): ${formatNumber(m.perS)} conn/s${errors}`,
              );
              if (errors !== '') notes.push(`wrk -c8 Connection: close ${r.name}${errors}`);
            },
          },
        ]
      : []),
    {
      group: 'conns',
      name: 'new_connections_per_s_node',
      run: async (r) => {
        const m = await measureConns(procs, r.instance, timing);
        collector.add(r.name, 'new_connections_per_s_node', m.perS);
        log(`new_connections_per_s_node ${r.name}: ${formatNumber(m.perS)} conn/s (${m.errors} errors)`);
        if (m.errors > 0)
          notes.push(
            `new connections (Node load generator) ${r.name}: ${m.errors} failed connections during the window`,
          );
      },
    },
  ];
  for (let round = 1; round <= opts.rounds; round++) {
    if (opts.rounds > 1) log(`${group.name} round ${round}/${opts.rounds}`);
    for (const step of timed) {
      if (opts.metrics.includes(step.group)) await each(step.name, step.run);
    }
  }

  for (const r of running) {
    try {
      notes.push(...(r.instance.notes?.() ?? []).map((n) => `${r.name}: ${n}`));
    } catch (err) {
      log(`${r.name}: notes: ${errorMessage(err)}`);
    }
    await r.instance.close();
  }
}

/** The scale group: one run of the controller scale scenario (bench/scale/), no ratios. */
async function runScale(st: RunState): Promise<void> {
  const dir = join(st.tmp, SCALE_PATH);
  mkdirSync(dir, { recursive: true });
  log(`scale group: ${SCALE_PATH} under simulated ztunnels${st.opts.quick ? ' (quick: scaled down)' : ''}`);
  try {
    const m = await measureScale({
      quick: st.opts.quick,
      tmpDir: dir,
      spawn: (label, command, args, spec) => st.procs.spawn(label, command, args, spec),
      log: (msg) => log(`${SCALE_PATH}: ${msg}`),
      stopping: st.stopping,
    });
    for (const metric of METRIC_NAMES) {
      const v = m.values[metric];
      if (v !== undefined) st.collector.add(SCALE_PATH, metric, v);
    }
    st.notes.push(...m.notes.map((n) => `${SCALE_PATH}: ${n}`));
    st.status.set(SCALE_PATH, { kind: 'ok' });
  } catch (err) {
    const msg = `${SCALE_PATH}: scale run failed: ${errorMessage(err)}`;
    st.problems.push(msg);
    log(msg);
    st.status.set(SCALE_PATH, { kind: 'failed', reason: errorMessage(err) });
  }
}

/** The enrolment group: one run of the enrolment scenario (bench/enrolment/), both columns at once. */
async function runEnrolment(st: RunState, paths: readonly string[]): Promise<void> {
  const dir = join(st.tmp, 'enrolment');
  mkdirSync(dir, { recursive: true });
  log(`enrolment group: ${paths.join(', ')}${st.opts.quick ? ' (quick: fewer pods)' : ''}`);
  try {
    const m = await measureEnrolment({
      quick: st.opts.quick,
      tmpDir: dir,
      spawn: (label, command, args, spec) => st.procs.spawn(label, command, args, spec),
      shared: (key, create) => st.resources.get(key, create),
      log: (msg) => log(`enrolment: ${msg}`),
      stopping: st.stopping,
    });
    for (const [path, values] of m.values) {
      for (const metric of METRIC_NAMES) {
        const v = values[metric];
        if (v !== undefined) st.collector.add(path, metric, v);
      }
      st.status.set(path, { kind: 'ok' });
    }
    st.notes.push(...m.notes.map((n) => `enrolment: ${n}`));
  } catch (err) {
    const msg = `enrolment: run failed: ${errorMessage(err)}`;
    st.problems.push(msg);
    log(msg);
    for (const p of paths) st.status.set(p, { kind: 'failed', reason: errorMessage(err) });
  }
}

async function run(
  opts: BenchOptions,
  procs: ProcessRegistry,
  tmp: string,
  resources: SharedResources,
  stopping: () => boolean,
): Promise<number> {
  log(
    `paths ${opts.paths.join(', ')}; metrics ${opts.metrics.join(', ')}; ` +
      `${opts.durationMs / 1000} s per timed metric, ${opts.rounds} round(s)`,
  );

  const backendChild = procs.spawnNode('backend', 'backend.ts', ['127.0.0.1']);
  const nodeBackend = await backendChild.waitForLine((v): BackendServices | undefined => {
    if (typeof v !== 'object' || v === null) return undefined;
    const o = v as Record<string, unknown>;
    if (o.event !== 'ready' || typeof o.echo !== 'number' || typeof o.source !== 'number') return undefined;
    return { echo: { host: '127.0.0.1', port: o.echo }, source: { host: '127.0.0.1', port: o.source } };
  }, BACKEND_READY_MS);

  // The PERFORMANCE.md B.1 tools (wrk, nginx, sockperf): the floor-bearing rows of the data-path
  // groups. A missing tool is said once, precisely (what to install), and its rows are listed
  // under NOT MEASURED; everything else is still measured.
  const problems: string[] = [];
  const tools = findB1Tools();
  const isRoot = process.getuid?.() === 0;
  const dataPathGroups = PATH_GROUPS.filter(
    (g) =>
      (g.name === 'loopback' || g.name === 'netns') &&
      (!g.needsRoot || isRoot) &&
      opts.paths.some((p) => groupPaths(g).includes(p)),
  );
  const needs: B1Needs = {
    http: dataPathGroups.length > 0 && (opts.metrics.includes('rps') || opts.metrics.includes('conns')),
    latency: dataPathGroups.length > 0 && opts.metrics.includes('latency'),
  };
  const available = b1Available(tools);
  const want: B1Needs = { http: needs.http && available.http, latency: needs.latency && available.latency };
  for (const tool of missingTools(tools, needs)) {
    process.stdout.write(`${toolMissingMessage(tool)}\n`);
    problems.push(missingToolProblem(tool));
    log(missingToolProblem(tool));
  }

  // nginx and sockperf server next to the Node backend on 127.0.0.1 (loopback group).
  let hostServers: B1Servers | undefined;
  let hostB1 = want;
  if ((want.http || want.latency) && dataPathGroups.some((g) => g.name === 'loopback')) {
    try {
      hostServers = await startB1Servers({
        tools,
        want,
        spawn: (label, command, args, spec) => procs.spawn(label, command, args, spec),
        dir: join(tmp, 'b1-host'),
        label: 'host',
        bindHost: '127.0.0.1',
        advertiseHost: '127.0.0.1',
        probe: (target, mode, timeoutMs) => waitForService(target, mode, timeoutMs),
        freePort: () => freePort('127.0.0.1'),
      });
      log(
        `B.1 tool servers on 127.0.0.1: ${hostServers.children.map((c) => `${c.label}=${c.pid}`).join(' ')}` +
          ` (nginx ${hostServers.http?.port ?? '–'}, sockperf ${hostServers.sockperf?.port ?? '–'})`,
      );
    } catch (err) {
      const msg = `B.1 tool servers on 127.0.0.1 did not start, loopback group measured without wrk/sockperf: ${errorMessage(err)}`;
      problems.push(msg);
      log(msg);
      hostB1 = { http: false, latency: false };
    }
  }
  const backend: BackendServices = {
    ...nodeBackend,
    ...(hostServers?.http && { http: hostServers.http }),
    ...(hostServers?.sockperf && { sockperf: hostServers.sockperf }),
  };

  const st: RunState = {
    opts,
    procs,
    tmp,
    resources,
    backend,
    b1: { tools, want },
    status: new Map<string, PathStatus>(),
    problems,
    notes: [],
    collector: new Collector(),
    stopping,
  };
  const groups: { group: PathGroup; paths: string[]; skipped?: string }[] = [];
  for (const group of PATH_GROUPS) {
    const paths = opts.paths.filter((p) => groupPaths(group).includes(p));
    if (paths.length === 0 || stopping()) continue;
    if (group.needsRoot && process.getuid?.() !== 0) {
      const reason = needsRootReason(group, paths);
      for (const p of paths) st.status.set(p, { kind: 'missing', reason: 'needs root' });
      st.problems.push(reason);
      log(reason);
      groups.push({ group, paths, skipped: reason });
      continue;
    }
    groups.push({ group, paths });
    try {
      if (group.name === 'scale') await runScale(st);
      else if (group.name === 'enrolment') await runEnrolment(st, paths);
      else await runGroup(st, group, paths, group.name === 'loopback' ? hostB1 : want);
    } finally {
      // The group's test beds (namespaces, pods, ztunnels, backends in pods).
      await resources.destroyAll(log);
    }
  }
  await Promise.all([backendChild.kill(), hostServers?.close()]);
  if (stopping()) return 130;

  const records = buildRecords(opts.paths, st.collector.values(), st.status, baselineOf);
  const out: string[] = [''];
  for (const { group, paths, skipped } of groups) {
    out.push(group.title);
    if (skipped !== undefined) {
      out.push(`  NOT MEASURED: ${skipped}`, '');
      continue;
    }
    if (group.name !== 'scale') {
      const added = group.name === 'enrolment' ? 'added_*' : 'added_rtt_*';
      out.push(
        `ratios (×) are path / ${group.baseline} measured in this run; ${added} = path − ${group.baseline}`,
      );
    }
    out.push('', formatTable(paths, records, st.status, group.baseline), '');
    for (const path of paths.filter((p) => FLOOR_PATHS.includes(p))) {
      out.push(formatFloors(path, records, st.status.get(path), group.baseline), '');
    }
  }
  if (st.notes.length > 0) out.push('notes:', ...st.notes.map((n) => `  ${n}`), '');
  if (st.problems.length > 0) out.push('NOT MEASURED:', ...st.problems.map((p) => `  ${p}`), '');
  process.stdout.write(out.join('\n'));
  if (opts.jsonFile !== undefined) {
    writeFileSync(opts.jsonFile, records.map((r) => jsonLine(r) + '\n').join(''));
    log(`wrote ${records.length} records to ${opts.jsonFile}`);
  }
  return st.problems.length > 0 ? 3 : 0;
}

async function main(): Promise<number> {
  let opts: BenchOptions;
  try {
    opts = parseArgs(
      process.argv.slice(2),
      PATH_GROUPS.flatMap(groupPaths),
      PATH_GROUPS.map((g) => ({ name: g.name, baseline: g.baseline, paths: groupPaths(g) })),
    );
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) {
    process.stderr.write(
      `bench needs Node 24 (found ${process.version}): run node_modules/.bin/node bench/main.ts\n`,
    );
    return 1;
  }
  const limitProblem = checkLimits(opts);
  if (limitProblem !== undefined) {
    process.stderr.write(`${limitProblem}\n`);
    return 1;
  }

  const procs = new ProcessRegistry();
  const resources = new SharedResources();
  const tmp = mkdtempSync(join(tmpdir(), 'mesh-bench-'));
  const cleanupSync = (): void => {
    procs.killAllSync();
    rmSync(tmp, { recursive: true, force: true });
    // Last resort for the test beds (normally already destroyed): our own namespaces only.
    if (resources.used) {
      const left = [...sweepOwnTestbedsSync(), ...sweepEnrolmentClusterSync()];
      if (left.length > 0) log(`removed leftover namespaces: ${left.join(', ')}`);
    }
  };
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (stopping) {
        log(`${sig} again: removing everything now`);
        cleanupSync();
        process.exit(130);
      }
      stopping = true;
      log(`${sig}: stopping every child and removing the test beds`);
      resources.close();
      procs.killAllSync();
      withTimeout(resources.destroyAll(log), SIGNAL_TEARDOWN_MS, 'test bed teardown')
        .catch((err: unknown) => log(errorMessage(err)))
        .finally(() => {
          cleanupSync();
          process.exit(130);
        });
    });
  }
  try {
    return await run(opts, procs, tmp, resources, () => stopping);
  } finally {
    await resources.destroyAll(log);
    if (!stopping) cleanupSync();
  }
}

/** Set by the first SIGINT/SIGTERM/SIGHUP; the signal handler then owns the exit. */
let stopping = false;

main().then(
  (code) => {
    // The signal handler exits once the test beds are gone.
    if (stopping) return;
    // Exit explicitly: a misbehaving child pipe must not keep the harness alive.
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(
      `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exitCode = 1;
  },
);
