// SPDX-License-Identifier: Apache-2.0
// Types shared by the benchmark harness (bench/main.ts), its child processes (load generator,
// backend) and the pluggable paths in bench/paths/. See bench/README.md for the method.
import type { PathGroupName } from './groups.ts';
import type { B1Setup } from './tools.ts';

/** A TCP address the load generator dials or a server listens on. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

/**
 * How to start a child process: an optional command prefix such as
 * `['ip', 'netns', 'exec', 'client-pod']` so a later path can run the load generator (or a
 * backend) inside a network namespace. The prefix must exec the command in place (as
 * `ip netns exec` does) so the pid the harness records is the child's own.
 */
export interface SpawnSpec {
  readonly prefix?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * The backend's services: the Node backend's echo server and bulk source (writes until the peer
 * goes), and the PERFORMANCE.md B.1 tool servers next to it (bench/b1-run.ts): nginx serving
 * the 1 KiB file and `sockperf server`. A tool server is absent when its tool is not installed
 * (the run then reports the measurement as not measured); a path that carries traffic must carry
 * every service it is given.
 */
export interface BackendServices {
  readonly echo: Endpoint;
  readonly source: Endpoint;
  /** nginx, 1 KiB static file at `/1k` (wrk: rps_c32_1k, new_connections_per_s). */
  readonly http?: Endpoint;
  /** `sockperf server --tcp` (sockperf ping-pong: rtt_*_at_1000rps). */
  readonly sockperf?: Endpoint;
}

/** Which side of the tunnel a process sits on; memory is also reported per end. */
export type TunnelEnd = 'client' | 'server';

/** One process that makes up a tunnel: its CPU and RSS are what the resource metrics measure. */
export interface TunnelProcess {
  readonly pid: number;
  readonly end: TunnelEnd;
  /** Short human label for the table, e.g. `stunnel-client`. */
  readonly label: string;
}

/** A running path: where the load generator dials, and the processes that carry the traffic. */
export interface PathInstance {
  /** Addresses the load generator dials; they need not be on 127.0.0.1 (netns paths). */
  readonly targets: BackendServices;
  /** Tunnel processes (empty for direct). */
  readonly processes: readonly TunnelProcess[];
  /** How to spawn the load generator for this path (default: plainly, on the host). */
  readonly loadgen?: SpawnSpec;
  /** Lines for the report's notes (what exactly was measured, e.g. which ztunnel build). */
  notes?(): readonly string[];
  /** Stops the tunnel processes; must be safe to call twice. */
  close(): Promise<void>;
}

export type PathStartResult =
  | { readonly kind: 'ready'; readonly instance: PathInstance }
  /** A prerequisite is not installed or not written yet: reported, not a harness failure. */
  | { readonly kind: 'missing'; readonly reason: string };

/**
 * Something several paths of one group share (a network-namespace test bed with its pods and
 * backends). Created once by the first path that asks for it, destroyed by the harness when the
 * group ends, on errors and on SIGINT/SIGTERM.
 */
export interface SharedResource<T> {
  readonly value: T;
  /** Removes everything the resource made; must be safe to call twice. */
  destroy(): Promise<void>;
}

/** What the harness hands a path's start(). */
export interface PathContext {
  /** The shared backend on the host's loopback (with the B.1 tool servers, when installed). */
  readonly backend: BackendServices;
  /**
   * The B.1 tools found on this machine and the tool servers the run wants (by the selected
   * metrics); a test bed starts its own nginx and sockperf server with them.
   */
  readonly b1: B1Setup;
  /**
   * The group's shared resource under `key`: created with `create` by the first caller, the
   * same value for every later one (a failed creation is remembered and rethrown).
   */
  shared<T>(key: string, create: () => Promise<SharedResource<T>>): Promise<T>;
  /** A private temp dir for configs, keys and certificates; removed at exit. */
  readonly tmpDir: string;
  /** Spawns and tracks a child process (killed, with its process group, when the bench exits). */
  readonly spawn: SpawnFn;
  /** Spawns a Node 24 child running a .ts script from bench/ (type stripping). */
  readonly spawnNode: SpawnNodeFn;
  readonly log: (msg: string) => void;
}

export interface TrackedChild {
  readonly pid: number;
  readonly label: string;
  /** Resolves with the first stdout line that parses as JSON and satisfies `accept`. */
  waitForLine<T>(accept: (value: unknown) => T | undefined, timeoutMs: number): Promise<T>;
  /** Called for every JSON line on stdout. */
  onLine(listener: (value: unknown) => void): void;
  /** Called for every stdout line as text, JSON or not (external tools such as wrk). */
  onText(listener: (line: string) => void): void;
  /** Writes one line to the child's stdin. */
  send(line: string): void;
  /** Resolves when the child has exited, with its code or signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when the child's stdout has closed and every line of it was delivered. */
  readonly stdoutClosed: Promise<void>;
  /** Last lines of stderr, for error messages. */
  stderrTail(): string;
  /** SIGTERM to the process group, SIGKILL after a grace period; resolves when gone. */
  kill(): Promise<void>;
}

export type SpawnFn = (
  label: string,
  command: string,
  args: readonly string[],
  spec?: SpawnSpec & { readonly cwd?: string },
) => TrackedChild;

export type SpawnNodeFn = (
  label: string,
  script: string,
  args: readonly string[],
  spec?: SpawnSpec,
) => TrackedChild;

/** A pluggable path module (bench/paths/<name>.ts). */
export interface PathModule {
  readonly name: string;
  /** The group it is measured in; its ratios are against that group's baseline (bench/groups.ts). */
  readonly group: PathGroupName;
  readonly description: string;
  /** Bound on start() (default 60 s); netns paths build a test bed and maybe dist/ first. */
  readonly startTimeoutMs?: number;
  start(ctx: PathContext): Promise<PathStartResult>;
}
