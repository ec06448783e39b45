// SPDX-License-Identifier: Apache-2.0
// The PERFORMANCE.md B.1 tools as the bench runs them. Servers: nginx (1 worker, the 1 KiB
// static file, keep-alive; its own prefix and config in the run's temp dir, in the foreground)
// and `sockperf server --tcp`, started next to the Node backend: on 127.0.0.1 for the loopback
// group, inside the server pod for the netns group. Clients: wrk and sockperf ping-pong, run
// where the path's load generator runs (inside the client pod for the netns group), their text
// output parsed by bench/b1.ts. Every process is a tracked child in its own process group (the
// harness kills it on exit and signals), and the servers also get SIGKILL from the kernel if
// the bench dies (setpriv --pdeathsig), so a SIGKILLed bench leaves no nginx behind.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage, MeshError } from '../src/shared/errors.ts';
import {
  HTTP_FILE,
  HTTP_FILE_SIZE,
  nginxConfig,
  parseSockperf,
  parseWrk,
  SOCKPERF_OVERHEAD_MS,
  sockperfClientArgs,
  sockperfServerArgs,
  ToolOutputError,
  wrkArgs,
  type SockperfResult,
  type WrkResult,
} from './b1.ts';
import type { ProbeMode } from './net.ts';
import type { ProcessRegistry } from './procs.ts';
import { deathSignalPrefix, type B1Needs, type B1Tools } from './tools.ts';
import type { Endpoint, SpawnFn, SpawnSpec, TrackedChild } from './types.ts';

/** A server must answer its readiness probe within this. */
const SERVER_READY_MS = 10_000;
/** Slack on top of a client tool's own run time before the bench gives up on it. */
const CLIENT_SLACK_MS = 30_000;
/** After a client tool exits, how long its stdout may take to deliver its last lines. */
const STDOUT_DRAIN_MS = 2_000;
/** Host ports are picked free and then bound by the tool, which can race: retry this often. */
const HOST_START_ATTEMPTS = 3;

export class ToolRunError extends MeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BENCH_ERR_TOOL', message, options);
  }
}

export interface B1Servers {
  readonly http?: Endpoint;
  readonly sockperf?: Endpoint;
  /** The server processes (nginx, sockperf), for notes and teardown. */
  readonly children: readonly TrackedChild[];
  close(): Promise<void>;
}

export interface StartB1ServersOptions {
  readonly tools: B1Tools;
  /** Which servers to start (the selected metrics decide): nginx for `http`, sockperf for `latency`. */
  readonly want: B1Needs;
  readonly spawn: SpawnFn;
  /** A private directory: nginx's prefix (config, pid file, temp dirs, the 1 KiB file). */
  readonly dir: string;
  /** Label suffix for the children, e.g. `host` or the pod's name. */
  readonly label: string;
  /** Address the servers bind: 127.0.0.1 on the host, 0.0.0.0 in a pod. */
  readonly bindHost: string;
  /** Address the servers are reached at from the load generator's side (127.0.0.1, the pod IP). */
  readonly advertiseHost: string;
  /** Fixed ports (a fresh pod netns: nothing else listens there); default: free host ports. */
  readonly ports?: { readonly http: number; readonly sockperf: number };
  /** Command prefix, e.g. `ip netns exec <server pod>`; it must exec in place. */
  readonly prefix?: readonly string[];
  /** Probes a server at `target` (reached from where the servers run, e.g. 127.0.0.1 in the pod). */
  readonly probe: (target: Endpoint, mode: ProbeMode, timeoutMs: number) => Promise<void>;
  readonly freePort: () => Promise<number>;
}

/** The last lines a server printed on stdout and stderr (sockperf reports a bind failure on stdout). */
function outputTail(child: TrackedChild): () => string {
  const lines: string[] = [];
  child.onText((line) => {
    lines.push(line);
    if (lines.length > 10) lines.shift();
  });
  return () => [...lines, child.stderrTail()].filter((l) => l !== '').join('\n');
}

/**
 * The child once `probe` succeeds; when the probe fails or the child exits first, the child is
 * killed and the error says why, with its last output.
 */
async function whenReady(child: TrackedChild, probe: Promise<void>): Promise<TrackedChild> {
  const tail = outputTail(child);
  const failure = await Promise.race([
    probe.then(
      () => undefined,
      (err: unknown) =>
        new ToolRunError(`${child.label} not ready: ${errorMessage(err)}\n${tail()}`, {
          cause: err,
        }),
    ),
    child.exited.then(
      ({ code, signal }) =>
        new ToolRunError(
          `${child.label} exited (code ${code ?? 'none'}, signal ${signal ?? 'none'}) before it was ` +
            `ready\n${tail()}`,
        ),
    ),
  ]);
  if (failure === undefined) return child;
  await child.kill();
  throw failure;
}

async function startNginx(o: StartB1ServersOptions, nginx: string, port: number): Promise<TrackedChild> {
  const prefix = join(o.dir, 'nginx');
  mkdirSync(join(prefix, 'html'), { recursive: true });
  writeFileSync(join(prefix, 'html', HTTP_FILE), Buffer.alloc(HTTP_FILE_SIZE, 0x61));
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(conf, nginxConfig({ prefix, listen: { host: o.bindHost, port } }));
  const child = o.spawn(
    `nginx-${o.label}`,
    nginx,
    // -e: the error log before the config is read (default /var/log/nginx/error.log).
    ['-p', `${prefix}/`, '-c', conf, '-e', 'stderr'],
    { prefix: [...(o.prefix ?? []), ...deathSignalPrefix(o.tools)], cwd: prefix },
  );
  return whenReady(child, o.probe({ host: loopbackOf(o.bindHost), port }, 'http', SERVER_READY_MS));
}

async function startSockperf(
  o: StartB1ServersOptions,
  sockperf: string,
  port: number,
): Promise<TrackedChild> {
  const child = o.spawn(
    `sockperf-server-${o.label}`,
    sockperf,
    sockperfServerArgs({ host: o.bindHost, port }),
    {
      prefix: [...(o.prefix ?? []), ...deathSignalPrefix(o.tools)],
    },
  );
  return whenReady(child, o.probe({ host: loopbackOf(o.bindHost), port }, 'open', SERVER_READY_MS));
}

/** Where to probe a server bound to `bindHost` from its own netns. */
function loopbackOf(bindHost: string): string {
  return bindHost === '0.0.0.0' ? '127.0.0.1' : bindHost;
}

/**
 * Starts nginx and/or `sockperf server` as `want` says and the tools allow (a missing tool is
 * reported once by the harness, not here: its server is just not started).
 */
export async function startB1Servers(o: StartB1ServersOptions): Promise<B1Servers> {
  const children: TrackedChild[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(children.map((c) => c.kill()));
  };
  const attempts = o.ports === undefined ? HOST_START_ATTEMPTS : 1;
  const start = async (
    fn: (port: number) => Promise<TrackedChild>,
    fixed: number | undefined,
  ): Promise<number> => {
    let last: unknown;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const port = fixed ?? (await o.freePort());
      try {
        children.push(await fn(port));
        return port;
      } catch (err) {
        last = err;
      }
    }
    throw last;
  };
  try {
    let http: Endpoint | undefined;
    let sockperf: Endpoint | undefined;
    if (o.want.http && o.tools.nginx !== undefined && o.tools.wrk !== undefined) {
      const bin = o.tools.nginx;
      const port = await start((p) => startNginx(o, bin, p), o.ports?.http);
      http = { host: o.advertiseHost, port };
    }
    if (o.want.latency && o.tools.sockperf !== undefined) {
      const bin = o.tools.sockperf;
      const port = await start((p) => startSockperf(o, bin, p), o.ports?.sockperf);
      sockperf = { host: o.advertiseHost, port };
    }
    return { ...(http && { http }), ...(sockperf && { sockperf }), children, close };
  } catch (err) {
    await close();
    throw err;
  }
}

interface ToolRun {
  /** stdout and stderr, as lines in arrival order per stream (stdout first). */
  readonly output: string;
  readonly code: number | null;
}

interface ToolHooks {
  /** Right after the spawn (the tool's window opens within milliseconds). */
  readonly onStart?: () => void;
  /** When the tool has exited (its window has closed). */
  readonly onExit?: () => void;
}

/** Runs a client tool to completion where the path's load generator runs; bounded by `timeoutMs`. */
async function runTool(
  procs: ProcessRegistry,
  label: string,
  bin: string,
  args: readonly string[],
  spec: SpawnSpec | undefined,
  timeoutMs: number,
  hooks: ToolHooks = {},
): Promise<ToolRun> {
  const child = procs.spawn(label, bin, args, spec);
  hooks.onStart?.();
  const lines: string[] = [];
  child.onText((line) => lines.push(line));
  let timer: NodeJS.Timeout | undefined;
  try {
    const outcome = await Promise.race([
      child.exited,
      new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      }),
    ]);
    if (outcome === 'timeout') {
      throw new ToolRunError(
        `${label} did not finish within ${timeoutMs} ms\n${[...lines, child.stderrTail()].join('\n')}`,
      );
    }
    hooks.onExit?.();
    // The exit can come before the last stdout lines are read: wait for the pipe (bounded).
    await Promise.race([child.stdoutClosed, new Promise((r) => setTimeout(r, STDOUT_DRAIN_MS))]);
    const output = [...lines, child.stderrTail()].join('\n');
    if (outcome.signal !== null) throw new ToolRunError(`${label} killed by ${outcome.signal}\n${output}`);
    return { output, code: outcome.code };
  } finally {
    clearTimeout(timer);
    await child.kill();
  }
}

/** wrk against a path's nginx target: `rps` (B.1 c32 keep-alive) or `conns` (c8, Connection: close). */
export async function runWrk(
  procs: ProcessRegistry,
  wrk: string,
  shape: 'rps' | 'conns',
  target: Endpoint,
  durationS: number,
  spec: SpawnSpec | undefined,
  hooks: ToolHooks = {},
): Promise<WrkResult> {
  const run = await runTool(
    procs,
    `wrk-${shape}`,
    wrk,
    wrkArgs(shape, target, durationS),
    spec,
    durationS * 1000 + CLIENT_SLACK_MS,
    hooks,
  );
  if (run.code !== 0) throw new ToolOutputError('wrk', `exited with code ${run.code ?? 'none'}`, run.output);
  return parseWrk(run.output);
}

/** sockperf ping-pong against a path's sockperf target (B.1: TCP, 1 KiB, 1000 msg/s, full RTT). */
export async function runSockperf(
  procs: ProcessRegistry,
  sockperf: string,
  target: Endpoint,
  durationS: number,
  spec: SpawnSpec | undefined,
): Promise<SockperfResult> {
  const run = await runTool(
    procs,
    'sockperf-ping-pong',
    sockperf,
    sockperfClientArgs(target, durationS),
    spec,
    durationS * 1000 + SOCKPERF_OVERHEAD_MS + CLIENT_SLACK_MS,
  );
  // sockperf exits 0 even when it could not connect: the parser judges the output.
  const r = parseSockperf(run.output);
  if (run.code !== 0)
    throw new ToolOutputError('sockperf', `exited with code ${run.code ?? 'none'}`, run.output);
  return r;
}
