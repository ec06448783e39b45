// SPDX-License-Identifier: Apache-2.0
// Runs one metric against one running path: spawns the load generator (its own child process,
// started through the path's SpawnSpec so a netns path can run it inside a namespace) or one of
// the B.1 tools (wrk, sockperf: bench/b1-run.ts, started the same way), and samples the tunnel
// processes' CPU and RSS from /proc around the measurement window. Method: PERFORMANCE.md B.1–B.4.
import { errorMessage, MeshError } from '../src/shared/errors.ts';
import {
  loadgenEventSchema,
  RELEASE_COMMAND,
  type LoadgenResult,
  type LoadgenTask,
} from './loadgen-protocol.ts';
import { toolSeconds, type SockperfResult, type WrkResult } from './b1.ts';
import { runSockperf, runWrk } from './b1-run.ts';
import { cpuSeconds, openFds, rssKiB, type ProcessRegistry } from './procs.ts';
import type { Endpoint, PathInstance, SpawnSpec, TunnelProcess } from './types.ts';

export class MeasurementError extends MeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BENCH_ERR_MEASUREMENT', message, options);
  }
}

/** Sizes and shapes fixed by the method (PERFORMANCE.md targets table and B.1). */
export const RPS_CONNECTIONS = 32;
export const REQUEST_SIZE = 1024;
export const LATENCY_RATE = 1000;
export const CONN_WORKERS = 8;
/** The "one small echo" each held connection exchanges before it idles (memory metric). */
export const HOLD_ECHO_SIZE = 64;
/** At most this many held connections are being opened at once (bounded bursts for stunnel). */
const HOLD_CONCURRENCY = 32;
/** Let allocators and GC settle before reading RSS (halved by --quick). */
export const RSS_SETTLE_MS = 1000;
/** Slack on top of a task's own duration before the harness gives up on the load generator. */
const LOADGEN_SLACK_MS = 60_000;

export interface Timing {
  readonly warmupMs: number;
  readonly durationMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Hooks {
  onMeasureStart?: () => void;
  onMeasureEnd?: () => void;
  onHolding?: (open: number) => Promise<void>;
}

/** Runs one load-generator task to completion in a child process and returns its result. */
export async function runLoadgen(
  procs: ProcessRegistry,
  spec: SpawnSpec | undefined,
  task: LoadgenTask,
  hooks: Hooks = {},
  timeoutMs = LOADGEN_SLACK_MS + ('durationMs' in task ? task.warmupMs + task.durationMs : 0),
): Promise<LoadgenResult> {
  const child = procs.spawnNode(`loadgen-${task.kind}`, 'loadgen.ts', [JSON.stringify(task)], spec);
  let hookError: unknown;
  let result: LoadgenResult;
  try {
    result = await child.waitForLine((value): LoadgenResult | undefined => {
      const parsed = loadgenEventSchema.safeParse(value);
      if (!parsed.success) return undefined;
      const ev = parsed.data;
      switch (ev.event) {
        case 'measure_start':
          hooks.onMeasureStart?.();
          return undefined;
        case 'measure_end':
          hooks.onMeasureEnd?.();
          return undefined;
        case 'holding':
          void (hooks.onHolding ?? (async () => undefined))(ev.open)
            .catch((err: unknown) => (hookError = err))
            .finally(() => child.send(RELEASE_COMMAND));
          return undefined;
        case 'error':
          throw new MeasurementError(`load generator: ${ev.message}`);
        case 'result':
          return ev.result;
      }
    }, timeoutMs);
  } finally {
    await child.kill();
  }
  if (hookError !== undefined) {
    throw hookError instanceof Error ? hookError : new MeasurementError(errorMessage(hookError));
  }
  return result;
}

function expect<K extends LoadgenResult['kind']>(
  r: LoadgenResult,
  kind: K,
): Extract<LoadgenResult, { kind: K }> {
  if (r.kind !== kind) throw new MeasurementError(`expected a ${kind} result, got ${r.kind}`);
  return r as Extract<LoadgenResult, { kind: K }>;
}

/** Metric 1: one connection, bulk from the backend's source, Gbit/s at the receiver. */
export async function measureThroughput(
  procs: ProcessRegistry,
  path: PathInstance,
  t: Timing,
): Promise<number> {
  const r = await runLoadgen(procs, path.loadgen, { kind: 'throughput', target: path.targets.source, ...t });
  return expect(r, 'throughput').gbitPerS;
}

export interface RpsMeasurement {
  readonly perS: number;
  /** utime+stime of all tunnel processes over the window, in cores; undefined without processes. */
  readonly tunnelCores: number | undefined;
}

function cpuSnapshot(processes: readonly TunnelProcess[]): { wallNs: bigint; cpu: number } {
  return { wallNs: process.hrtime.bigint(), cpu: processes.reduce((sum, p) => sum + cpuSeconds(p.pid), 0) };
}

/**
 * `rps_c32_1k_node_echo` (and its tunnel CPU): the Node load generator's closed loop, 32
 * connections, 1 KiB echo; tunnel CPU over the same window. No floor: measureWrkRps is B.1's.
 */
export async function measureRps(
  procs: ProcessRegistry,
  path: PathInstance,
  t: Timing,
): Promise<RpsMeasurement> {
  let start: { wallNs: bigint; cpu: number } | undefined;
  let end: { wallNs: bigint; cpu: number } | undefined;
  const r = await runLoadgen(
    procs,
    path.loadgen,
    { kind: 'rps', target: path.targets.echo, connections: RPS_CONNECTIONS, size: REQUEST_SIZE, ...t },
    {
      onMeasureStart: () => (start = cpuSnapshot(path.processes)),
      onMeasureEnd: () => (end = cpuSnapshot(path.processes)),
    },
  );
  const perS = expect(r, 'rps').perS;
  if (path.processes.length === 0) return { perS, tunnelCores: undefined };
  if (!start || !end) throw new MeasurementError('load generator did not report its measurement window');
  const wall = Number(end.wallNs - start.wallNs) / 1e9;
  return { perS, tunnelCores: (end.cpu - start.cpu) / wall };
}

export interface LatencyMeasurement {
  readonly p50Us: number;
  readonly p99Us: number;
  readonly lost: number;
  readonly sendLagP50Us: number;
  readonly sendLagP99Us: number;
  /** CPU of each tunnel end over the measurement window, cores; undefined for a baseline path. */
  readonly coresPerEnd: number | undefined;
}

/**
 * `rtt_*_at_1000rps_node`: the Node load generator's open loop, 1000 req/s, 1 KiB ping-pong on
 * one connection, from the scheduled time. No floor: measureSockperfLatency is B.1's.
 */
export async function measureLatency(
  procs: ProcessRegistry,
  path: PathInstance,
  t: Timing,
): Promise<LatencyMeasurement> {
  let start: { wallNs: bigint; cpu: number } | undefined;
  let end: { wallNs: bigint; cpu: number } | undefined;
  const r = expect(
    await runLoadgen(
      procs,
      path.loadgen,
      { kind: 'latency', target: path.targets.echo, rate: LATENCY_RATE, size: REQUEST_SIZE, ...t },
      {
        onMeasureStart: () => (start = cpuSnapshot(path.processes)),
        onMeasureEnd: () => (end = cpuSnapshot(path.processes)),
      },
    ),
    'latency',
  );
  let coresPerEnd: number | undefined;
  if (path.processes.length > 0) {
    if (!start || !end) throw new MeasurementError('load generator did not report its measurement window');
    coresPerEnd = (end.cpu - start.cpu) / (Number(end.wallNs - start.wallNs) / 1e9) / path.processes.length;
  }
  return {
    coresPerEnd,
    p50Us: r.p50Us,
    p99Us: r.p99Us,
    lost: r.lost,
    sendLagP50Us: r.sendLagP50Us,
    sendLagP99Us: r.sendLagP99Us,
  };
}

export interface ConnsMeasurement {
  readonly perS: number;
  readonly errors: number;
}

/**
 * `new_connections_per_s_node`: connect, send 1 KiB, read the echo, close; 8 concurrent Node
 * workers. No floor: measureWrkConns is B.1's.
 */
export async function measureConns(
  procs: ProcessRegistry,
  path: PathInstance,
  t: Timing,
): Promise<ConnsMeasurement> {
  const r = expect(
    await runLoadgen(procs, path.loadgen, {
      kind: 'conns',
      target: path.targets.echo,
      workers: CONN_WORKERS,
      size: REQUEST_SIZE,
      ...t,
    }),
    'conns',
  );
  return { perS: r.perS, errors: r.errors };
}

/** A path's target for a B.1 tool server, or a MeasurementError saying the path lacks it. */
function b1Target(path: PathInstance, service: 'http' | 'sockperf'): Endpoint {
  const target = path.targets[service];
  if (target === undefined) {
    throw new MeasurementError(
      `the path carries no ${service === 'http' ? 'nginx (http)' : 'sockperf'} target: its tool server did not start`,
    );
  }
  return target;
}

export interface WrkRpsMeasurement extends RpsMeasurement {
  readonly wrk: WrkResult;
}

/**
 * Metrics 2 and 6 by the B.1 method: `wrk -t2 -c32 -d<window> --latency` against nginx's 1 KiB
 * file through the path; tunnel CPU over the wrk process's life (spawn → exit: the window plus
 * a few milliseconds of start-up, and, as in B.1, the 32 connections' set-up).
 */
export async function measureWrkRps(
  procs: ProcessRegistry,
  path: PathInstance,
  t: Timing,
  wrk: string,
): Promise<WrkRpsMeasurement> {
  const target = b1Target(path, 'http');
  let start: { wallNs: bigint; cpu: number } | undefined;
  let end: { wallNs: bigint; cpu: number } | undefined;
  const r = await runWrk(procs, wrk, 'rps', target, toolSeconds(t.durationMs), path.loadgen, {
    onStart: () => (start = cpuSnapshot(path.processes)),
    onExit: () => (end = cpuSnapshot(path.processes)),
  });
  checkWrk(r);
  if (path.processes.length === 0) return { perS: r.perS, tunnelCores: undefined, wrk: r };
  if (!start || !end) throw new MeasurementError('wrk window not sampled');
  const wall = Number(end.wallNs - start.wallNs) / 1e9;
  return { perS: r.perS, tunnelCores: (end.cpu - start.cpu) / wall, wrk: r };
}

/** Metric 4 by the B.1 method: `wrk -t2 -c8 -d<window> -H 'Connection: close'` against nginx. */
export async function measureWrkConns(
  procs: ProcessRegistry,
  path: PathInstance,
  t: Timing,
  wrk: string,
): Promise<WrkResult> {
  const r = await runWrk(
    procs,
    wrk,
    'conns',
    b1Target(path, 'http'),
    toolSeconds(t.durationMs),
    path.loadgen,
  );
  checkWrk(r);
  return r;
}

/** A wrk run counts only if requests completed and every answer was a 200 (nginx, a static file). */
function checkWrk(r: WrkResult): void {
  if (r.requests === 0) throw new MeasurementError('wrk completed no request');
  if (r.non2xx > 0) {
    throw new MeasurementError(`wrk got ${r.non2xx} non-2xx/3xx answers of ${r.requests}: wrong target?`);
  }
}

/**
 * Metric 3 by the B.1 method: `sockperf ping-pong --tcp -m 1024 --mps=1000 --full-rtt
 * -t <window>` against `sockperf server` through the path; p50/p99 as sockperf reports them.
 */
export async function measureSockperfLatency(
  procs: ProcessRegistry,
  path: PathInstance,
  t: Timing,
  sockperf: string,
): Promise<SockperfResult> {
  const r = await runSockperf(
    procs,
    sockperf,
    b1Target(path, 'sockperf'),
    toolSeconds(t.durationMs),
    path.loadgen,
  );
  if (!r.fullRtt) throw new MeasurementError('sockperf reported one-way latency, not full round trips');
  return r;
}

/** RSS of each tunnel process in kB (decimal, as the floors are written). */
export function sampleRss(path: PathInstance): number[] {
  return path.processes.map((p) => (rssKiB(p.pid) * 1024) / 1000);
}

/** Metric 5a: idle RSS per tunnel process, kB. */
export async function measureIdleRss(path: PathInstance, settleMs = RSS_SETTLE_MS): Promise<number[]> {
  await sleep(settleMs);
  return sampleRss(path);
}

export interface RssPerConnection {
  /** RSS delta per held connection per tunnel process, kB. */
  readonly perConnectionKb: number[];
  /** Open file descriptors of each tunnel process before and while holding (proof they carry them). */
  readonly fdsBefore: number[];
  readonly fdsHeld: number[];
}

/**
 * Metric 5b: RSS per proxied connection per tunnel process, kB: open `connections` idle
 * connections through the path (one small echo each), RSS delta / connections.
 */
export async function measureRssPerConnection(
  procs: ProcessRegistry,
  path: PathInstance,
  connections: number,
  settleMs = RSS_SETTLE_MS,
): Promise<RssPerConnection> {
  await sleep(settleMs);
  const fds = (): number[] => path.processes.map((p) => openFds(p.pid));
  const fdsBefore = fds();
  const before = sampleRss(path);
  let fdsHeld: number[] = [];
  let after: number[] | undefined;
  let open = 0;
  const r = await runLoadgen(
    procs,
    path.loadgen,
    {
      kind: 'hold',
      target: path.targets.echo,
      connections,
      size: HOLD_ECHO_SIZE,
      concurrency: HOLD_CONCURRENCY,
    },
    {
      onHolding: async (n) => {
        open = n;
        await sleep(settleMs);
        after = sampleRss(path);
        fdsHeld = fds();
      },
    },
  );
  expect(r, 'hold');
  if (!after || open !== connections) {
    throw new MeasurementError(`held ${open} of ${connections} connections`);
  }
  const a = after;
  return { perConnectionKb: before.map((b, i) => (a[i]! - b) / connections), fdsBefore, fdsHeld };
}

export type WarmUpShape = 'rps' | 'conns' | 'throughput';

/**
 * A short burst of the given traffic shapes, so JIT, pools and caches are warm before measuring.
 * The memory metrics get a light one (no bulk transfer): bulk traffic grows a Node tunnel's heap
 * and socket buffers, which V8 keeps for a while (PERFORMANCE.md B.4), and that is not idle RSS.
 */
export async function warmUp(
  procs: ProcessRegistry,
  path: PathInstance,
  durationMs: number,
  shapes: readonly WarmUpShape[],
): Promise<void> {
  const t = { warmupMs: 0, durationMs };
  const target = path.targets.echo;
  for (const shape of shapes) {
    switch (shape) {
      case 'rps':
        await runLoadgen(procs, path.loadgen, {
          kind: 'rps',
          target,
          connections: 8,
          size: REQUEST_SIZE,
          ...t,
        });
        break;
      case 'conns':
        await runLoadgen(procs, path.loadgen, {
          kind: 'conns',
          target,
          workers: 4,
          size: REQUEST_SIZE,
          ...t,
        });
        break;
      case 'throughput':
        await runLoadgen(procs, path.loadgen, { kind: 'throughput', target: path.targets.source, ...t });
        break;
    }
  }
}
