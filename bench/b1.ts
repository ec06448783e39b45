// SPDX-License-Identifier: Apache-2.0
// The pure half of the PERFORMANCE.md B.1 tool measurements (bench/b1-run.ts runs them): the
// command lines of wrk and sockperf exactly as B.1 used them, nginx's configuration (1 worker,
// 1 KiB static file, keep-alive) and the parsers of wrk's and sockperf's text output. Pure, so
// test/unit/bench/b1.test.ts checks them against output captured from the real tools.
import { MeshError } from '../src/shared/errors.ts';
import { formatEndpoint } from './child.ts';
import type { Endpoint } from './types.ts';

/** The static file nginx serves: 1 KiB, as in B.1 ("static 1 KiB file"). */
export const HTTP_FILE = '1k';
export const HTTP_FILE_SIZE = 1024;
/** wrk at saturation (B.1: `wrk -t2 -c32 -d5s --latency`). */
export const WRK_RPS = { threads: 2, connections: 32 } as const;
/** wrk with a new connection per request (B.1: `wrk -t2 -c8 -d5s -H 'Connection: close'`). */
export const WRK_CONNS = { threads: 2, connections: 8 } as const;
/** sockperf ping-pong (B.1: `--tcp -m 1024 --mps=1000 --full-rtt -t 5`). */
export const SOCKPERF_MSG_SIZE = 1024;
export const SOCKPERF_MPS = 1000;
/**
 * What sockperf's client adds to its `-t` (measured here with sockperf 3.7: `-t 2` takes 4.1 s):
 * connect, a fixed ~2 s warm-up stage, the statistics. Used for timeouts, not for results.
 */
export const SOCKPERF_OVERHEAD_MS = 2_500;

/** A tool's output did not have the summary the bench reads; the message carries its last lines. */
export class ToolOutputError extends MeshError {
  constructor(tool: string, message: string, output: string) {
    const tail = output.trim().split('\n').slice(-12).join('\n');
    super(
      'BENCH_ERR_TOOL_OUTPUT',
      `${tool}: ${message}${tail ? `\n--- ${tool} output (last lines) ---\n${tail}` : ''}`,
    );
  }
}

/**
 * The tools take whole seconds (wrk's -d and sockperf's -t parse integers): the run's window,
 * rounded, at least 1 s.
 */
export function toolSeconds(durationMs: number): number {
  return Math.max(1, Math.round(durationMs / 1000));
}

export function httpUrl(target: Endpoint): string {
  return `http://${formatEndpoint(target)}/${HTTP_FILE}`;
}

/** wrk's command line for the two B.1 shapes: `rps` (keep-alive, c32) and `conns` (Connection: close, c8). */
export function wrkArgs(shape: 'rps' | 'conns', target: Endpoint, durationS: number): string[] {
  const c = shape === 'rps' ? WRK_RPS : WRK_CONNS;
  return [
    `-t${c.threads}`,
    `-c${c.connections}`,
    `-d${durationS}s`,
    ...(shape === 'rps' ? ['--latency'] : ['-H', 'Connection: close']),
    httpUrl(target),
  ];
}

/** sockperf's client command line (B.1: ping-pong, TCP, 1 KiB, 1000 msg/s, full round trip). */
export function sockperfClientArgs(target: Endpoint, durationS: number): string[] {
  return [
    'ping-pong',
    '--tcp',
    '-i',
    target.host,
    '-p',
    String(target.port),
    '-m',
    String(SOCKPERF_MSG_SIZE),
    `--mps=${SOCKPERF_MPS}`,
    '--full-rtt',
    '-t',
    String(durationS),
  ];
}

/** `sockperf server --tcp` on `listen` (0.0.0.0 inside a pod, 127.0.0.1 on the host). */
export function sockperfServerArgs(listen: Endpoint): string[] {
  return ['server', '--tcp', '-i', listen.host, '-p', String(listen.port)];
}

export interface NginxConfigOptions {
  /** nginx's prefix: its pid file and temp dirs live here; the served file in `<prefix>/html`. */
  readonly prefix: string;
  readonly listen: Endpoint;
}

/**
 * nginx as B.1 ran it: one worker, keep-alive, the 1 KiB static file; run in the foreground
 * (`daemon off`) by the bench, in a single process (`master_process off`: the one process is
 * the worker, stays in the bench's process group and needs no user switch to read the temp
 * dir), no access log, errors to stderr (the bench keeps its tail), and keep-alive connections
 * never closed by a request count (`keepalive_requests`), so wrk -c32 keeps its 32 connections.
 * Every path nginx would write to by default (/var/lib/nginx, /run/nginx.pid) is in `prefix`.
 */
export function nginxConfig(o: NginxConfigOptions): string {
  const p = o.prefix.endsWith('/') ? o.prefix.slice(0, -1) : o.prefix;
  return [
    '# mesh bench nginx, generated (PERFORMANCE.md B.1: 1 worker, static 1 KiB file, keep-alive)',
    'daemon off;',
    'master_process off;',
    'worker_processes 1;',
    `pid ${p}/nginx.pid;`,
    'error_log stderr warn;',
    'events {',
    '  worker_connections 8192;',
    '}',
    'http {',
    '  access_log off;',
    '  default_type application/octet-stream;',
    '  sendfile on;',
    '  tcp_nopush on;',
    '  tcp_nodelay on;',
    '  keepalive_timeout 65s;',
    '  keepalive_requests 100000000;',
    `  client_body_temp_path ${p}/client_body;`,
    `  proxy_temp_path ${p}/proxy;`,
    `  fastcgi_temp_path ${p}/fastcgi;`,
    `  uwsgi_temp_path ${p}/uwsgi;`,
    `  scgi_temp_path ${p}/scgi;`,
    '  server {',
    `    listen ${formatEndpoint(o.listen)} backlog=4096;`,
    `    root ${p}/html;`,
    '    location / { }',
    '  }',
    '}',
    '',
  ].join('\n');
}

const TIME_UNITS_US: Readonly<Record<string, number>> = { us: 1, ms: 1e3, s: 1e6, m: 60e6, h: 3600e6 };

/** wrk's time format (format_time_us: `123.45us`, `1.00ms`, `2.00s`, `1.00m`) → µs. */
export function wrkTimeUs(value: string, unit: string): number {
  const mult = TIME_UNITS_US[unit];
  const n = Number(value);
  if (mult === undefined || !Number.isFinite(n)) throw new Error(`bad wrk time ${value}${unit}`);
  return n * mult;
}

export interface WrkResult {
  readonly threads: number;
  readonly connections: number;
  /** Completed requests over the run. */
  readonly requests: number;
  readonly seconds: number;
  /** wrk's `Requests/sec`. */
  readonly perS: number;
  /** `--latency` distribution (µs), when printed. */
  readonly latencyUs: Readonly<Partial<Record<'p50' | 'p75' | 'p90' | 'p99', number>>>;
  readonly socketErrors: {
    readonly connect: number;
    readonly read: number;
    readonly write: number;
    readonly timeout: number;
  };
  /** `Non-2xx or 3xx responses`: a wrong target, a refusing path. */
  readonly non2xx: number;
}

/**
 * Parses wrk 4.x's report. Throws ToolOutputError (with the output's tail) when the summary
 * is not there (wrk could not connect, was killed, or printed something else).
 */
export function parseWrk(text: string): WrkResult {
  const perS = /^Requests\/sec:\s+([\d.]+)\s*$/m.exec(text);
  const total = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),/m.exec(text);
  if (!perS?.[1] || !total?.[1] || !total[2] || !total[3]) {
    throw new ToolOutputError('wrk', 'no "Requests/sec" summary in its output', text);
  }
  const shape = /(\d+) threads and (\d+) connections/.exec(text);
  const latencyUs: Partial<Record<'p50' | 'p75' | 'p90' | 'p99', number>> = {};
  const dist = /Latency Distribution\n((?:\s+\d+%\s+[\d.]+\w+\n?)+)/.exec(text);
  if (dist?.[1]) {
    for (const m of dist[1].matchAll(/^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$/gm)) {
      latencyUs[`p${m[1]}` as 'p50'] = wrkTimeUs(m[2]!, m[3]!);
    }
  }
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  return {
    threads: Number(shape?.[1] ?? Number.NaN),
    connections: Number(shape?.[2] ?? Number.NaN),
    requests: Number(total[1]),
    seconds: wrkTimeUs(total[2], total[3]) / 1e6,
    perS: Number(perS[1]),
    latencyUs,
    socketErrors: {
      connect: Number(se?.[1] ?? 0),
      read: Number(se?.[2] ?? 0),
      write: Number(se?.[3] ?? 0),
      timeout: Number(se?.[4] ?? 0),
    },
    non2xx: Number(non2xx?.[1] ?? 0),
  };
}

export interface SockperfResult {
  /** `--full-rtt` prints round trips (`avg-rtt`); without it, one-way latency (`avg-latency`). */
  readonly fullRtt: boolean;
  /** Observations in sockperf's valid window (it trims the start and end of the run). */
  readonly observations: number;
  readonly validSeconds: number;
  readonly sent: number;
  readonly received: number;
  readonly dropped: number;
  readonly duplicated: number;
  readonly outOfOrder: number;
  readonly avgUs: number;
  /** Percentiles by sockperf's own label (`50`, `99`, `99.9`, ...), µs. */
  readonly percentilesUs: ReadonlyMap<number, number>;
  readonly p50Us: number;
  readonly p90Us: number | undefined;
  readonly p99Us: number;
  readonly p999Us: number | undefined;
  readonly maxUs: number | undefined;
}

/** sockperf colours some lines with ANSI escapes; they are not part of the numbers. */
export function stripAnsi(text: string): string {
  return text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
}

/**
 * Parses `sockperf ping-pong` (3.x) output. sockperf exits 0 even when it could not connect
 * (`sockperf: ERROR: Can't connect socket`), so the output is the only verdict: an ERROR line,
 * or no p50/p99, or zero observations, throws ToolOutputError.
 */
export function parseSockperf(raw: string): SockperfResult {
  const text = stripAnsi(raw);
  const error = /sockperf: ERROR:?\s*(.*)$/m.exec(text);
  if (error) throw new ToolOutputError('sockperf', `reported an error: ${error[1]?.trim() ?? ''}`, text);
  const percentilesUs = new Map<number, number>();
  for (const m of text.matchAll(/--->\s*percentile\s+([\d.]+)\s*=\s*([\d.]+)/g)) {
    percentilesUs.set(Number(m[1]), Number(m[2]));
  }
  const p50 = percentilesUs.get(50);
  const p99 = percentilesUs.get(99);
  const observations = /Total (\d+) observations/.exec(text);
  if (p50 === undefined || p99 === undefined || !observations?.[1] || Number(observations[1]) === 0) {
    throw new ToolOutputError('sockperf', 'no percentile summary (p50, p99) in its output', text);
  }
  const valid = /\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)/.exec(
    text,
  );
  const drops =
    /# dropped messages = (\d+); # duplicated messages = (\d+); # out-of-order messages = (\d+)/.exec(text);
  // `avg-rtt=` with --full-rtt, `avg-latency=` (one way: half the round trip) without.
  const avg = /avg-(rtt|lat\w*)=([\d.]+)/.exec(text);
  const max = /<MAX> observation\s*=\s*([\d.]+)/.exec(text);
  return {
    fullRtt: avg?.[1] === 'rtt' || /Round trip is/.test(text),
    observations: Number(observations[1]),
    validSeconds: Number(valid?.[1] ?? Number.NaN),
    sent: Number(valid?.[2] ?? Number.NaN),
    received: Number(valid?.[3] ?? Number.NaN),
    dropped: Number(drops?.[1] ?? 0),
    duplicated: Number(drops?.[2] ?? 0),
    outOfOrder: Number(drops?.[3] ?? 0),
    avgUs: Number(avg?.[2] ?? Number.NaN),
    percentilesUs,
    p50Us: p50,
    p90Us: percentilesUs.get(90),
    p99Us: p99,
    p999Us: percentilesUs.get(99.9),
    maxUs: max?.[1] === undefined ? undefined : Number(max[1]),
  };
}
