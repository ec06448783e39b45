// SPDX-License-Identifier: Apache-2.0
// `npm run bench`: measures every path (direct, stunnel, hbone, …) on loopback in one run and
// reports absolute values, ratios to the direct path measured in the same run, and the
// PERFORMANCE.md floors for the mesh path. Method: PERFORMANCE.md B.1–B.4, DESIGN.md §5.
//
// Metrics are interleaved (for each metric: direct, then each path) so drift on this shared
// 2-core machine hits every path alike. Every child runs in its own process group and is killed
// on exit, SIGINT/SIGTERM and errors. Exit codes: 0 = measured (floors may be BELOW; missing
// tools are reported, not failures), 1 = the harness crashed, 2 = usage, 3 = some path or
// metric could not be measured (printed).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errorMessage } from '../src/shared/errors.ts';
import { parseArgs, USAGE, UsageError, type BenchOptions, type MetricGroup } from './args.ts';
import {
  measureConns,
  measureIdleRss,
  measureLatency,
  measureRps,
  measureRssPerConnection,
  measureThroughput,
  RSS_SETTLE_MS,
  warmUp,
  type Timing,
  type WarmUpShape,
} from './measure.ts';
import { PATHS } from './paths/index.ts';
import { ProcessRegistry, softLimit } from './procs.ts';
import {
  buildRecords,
  FLOOR_PATHS,
  formatFloors,
  formatNumber,
  formatTable,
  jsonLine,
  type MetricName,
  type PathStatus,
  type PathValues,
} from './report.ts';
import { median } from './stats.ts';
import type { BackendServices, PathInstance, TunnelEnd } from './types.ts';

const BACKEND_READY_MS = 10_000;
/** A path's start (certificates, handshakes, readiness probes) must finish within this. */
const PATH_START_TIMEOUT_MS = 60_000;

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
  if (!opts.metrics.includes('memory')) return undefined;
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

async function run(opts: BenchOptions, procs: ProcessRegistry, tmp: string): Promise<number> {
  const timing: Timing = { warmupMs: opts.warmupMs, durationMs: opts.durationMs };
  log(
    `paths ${opts.paths.join(', ')}; metrics ${opts.metrics.join(', ')}; ` +
      `${opts.durationMs / 1000} s per timed metric, ${opts.rounds} round(s)`,
  );

  const backendChild = procs.spawnNode('backend', 'backend.ts', ['127.0.0.1']);
  const backend = await backendChild.waitForLine((v): BackendServices | undefined => {
    if (typeof v !== 'object' || v === null) return undefined;
    const o = v as Record<string, unknown>;
    if (o.event !== 'ready' || typeof o.echo !== 'number' || typeof o.source !== 'number') return undefined;
    return { echo: { host: '127.0.0.1', port: o.echo }, source: { host: '127.0.0.1', port: o.source } };
  }, BACKEND_READY_MS);

  const status = new Map<string, PathStatus>();
  const running: Running[] = [];
  const problems: string[] = [];
  const fail = (path: string, what: string, err: unknown): void => {
    const msg = `${path}: ${what} failed: ${errorMessage(err)}`;
    problems.push(msg);
    log(msg);
  };

  for (const name of opts.paths) {
    const mod = PATHS.find((p) => p.name === name)!;
    const dir = join(tmp, name);
    mkdirSync(dir, { recursive: true });
    log(`starting ${name}: ${mod.description}`);
    try {
      const r = await withTimeout(
        mod.start({
          backend,
          tmpDir: dir,
          spawn: (label, command, args, spec) => procs.spawn(label, command, args, spec),
          spawnNode: (label, script, args, spec) => procs.spawnNode(label, script, args, spec),
          log: (msg) => log(`${name}: ${msg}`),
        }),
        PATH_START_TIMEOUT_MS,
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

  const collector = new Collector();
  const notes: string[] = [];
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

  const each = async (group: string, fn: (r: Running) => Promise<void>): Promise<void> => {
    for (const r of live()) {
      try {
        await fn(r);
      } catch (err) {
        fail(r.name, group, err);
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
        const per = await measureRssPerConnection(procs, r.instance, opts.connections, settleMs);
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
        log(`rss_per_connection ${r.name} (${opts.connections} conns): ${perProc.join(', ')}`);
        notes.push(`RSS per connection ${r.name} (${opts.connections} held): ${perProc.join(', ')}`);
      } catch (err) {
        fail(r.name, 'rss_per_connection', err);
      }
    }
  }

  // Full warm-up, bulk included, before the timed metrics.
  await warmAll(opts.quick ? 200 : 1000, ['rps', 'conns', 'throughput']);

  const timed: Record<Exclude<MetricGroup, 'memory'>, (r: Running) => Promise<void>> = {
    throughput: async (r) => {
      const g = await measureThroughput(procs, r.instance, timing);
      collector.add(r.name, 'throughput_single_stream', g);
      log(`throughput_single_stream ${r.name}: ${formatNumber(g)} Gbit/s`);
    },
    rps: async (r) => {
      const m = await measureRps(procs, r.instance, timing);
      collector.add(r.name, 'rps_c32_1k', m.perS);
      let cpu = '';
      if (m.tunnelCores !== undefined) {
        collector.add(r.name, 'tunnel_cpu_cores_c32', m.tunnelCores);
        collector.add(r.name, 'tunnel_cpu_cores_per_1000rps', m.tunnelCores / (m.perS / 1000));
        cpu = `, tunnel CPU ${formatNumber(m.tunnelCores)} cores`;
      }
      log(`rps_c32_1k ${r.name}: ${formatNumber(m.perS)} req/s${cpu}`);
    },
    latency: async (r) => {
      const m = await measureLatency(procs, r.instance, timing);
      collector.add(r.name, 'rtt_p50_at_1000rps', m.p50Us);
      collector.add(r.name, 'rtt_p99_at_1000rps', m.p99Us);
      log(
        `rtt_at_1000rps ${r.name}: p50 ${formatNumber(m.p50Us)} µs, p99 ${formatNumber(m.p99Us)} µs ` +
          `(send lag p50 ${formatNumber(m.sendLagP50Us)} µs, p99 ${formatNumber(m.sendLagP99Us)} µs, lost ${m.lost})`,
      );
      notes.push(
        `latency ${r.name}: timer send lag p50 ${formatNumber(m.sendLagP50Us)} µs / p99 ` +
          `${formatNumber(m.sendLagP99Us)} µs (included: RTT is measured from the schedule), ${m.lost} lost`,
      );
    },
    conns: async (r) => {
      const m = await measureConns(procs, r.instance, timing);
      collector.add(r.name, 'new_connections_per_s', m.perS);
      log(`new_connections_per_s ${r.name}: ${formatNumber(m.perS)} conn/s (${m.errors} errors)`);
      if (m.errors > 0)
        notes.push(`new connections ${r.name}: ${m.errors} failed connections during the window`);
    },
  };
  for (let round = 1; round <= opts.rounds; round++) {
    if (opts.rounds > 1) log(`round ${round}/${opts.rounds}`);
    for (const group of opts.metrics) {
      if (group === 'memory') continue;
      await each(group, timed[group]);
    }
  }

  for (const r of running) await r.instance.close();
  await backendChild.kill();

  const records = buildRecords(opts.paths, collector.values(), status);
  const out: string[] = ['', formatTable(opts.paths, records, status), ''];
  for (const path of opts.paths.filter((p) => FLOOR_PATHS.includes(p))) {
    out.push(formatFloors(path, records, status.get(path)), '');
  }
  if (notes.length > 0) out.push('notes:', ...notes.map((n) => `  ${n}`), '');
  if (problems.length > 0) out.push('NOT MEASURED:', ...problems.map((p) => `  ${p}`), '');
  process.stdout.write(out.join('\n'));
  if (opts.jsonFile !== undefined) {
    writeFileSync(opts.jsonFile, records.map((r) => jsonLine(r) + '\n').join(''));
    log(`wrote ${records.length} records to ${opts.jsonFile}`);
  }
  return problems.length > 0 ? 3 : 0;
}

async function main(): Promise<number> {
  let opts: BenchOptions;
  try {
    opts = parseArgs(
      process.argv.slice(2),
      PATHS.map((p) => p.name),
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
  const tmp = mkdtempSync(join(tmpdir(), 'mesh-bench-'));
  const cleanupSync = (): void => {
    procs.killAllSync();
    rmSync(tmp, { recursive: true, force: true });
  };
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      log(`${sig}: stopping every child`);
      cleanupSync();
      process.exit(130);
    });
  }
  try {
    return await run(opts, procs, tmp);
  } finally {
    cleanupSync();
  }
}

main().then(
  (code) => {
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
