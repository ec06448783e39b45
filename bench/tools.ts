// SPDX-License-Identifier: Apache-2.0
// The external tools of PERFORMANCE.md B.1 the bench drives: wrk (requests/s at 32 connections,
// new connections/s) against nginx serving a 1 KiB static file, and sockperf (ping-pong latency
// at 1000 msg/s) against `sockperf server`. Finding them on PATH (or where MESH_BENCH_<TOOL>
// says), and what to print when one is missing: the package that brings it, as for stunnel.
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/** First executable among `names` (absolute paths, or names looked up on PATH and the usual bins). */
export function findExecutable(names: readonly string[]): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/sbin', '/usr/local/bin'];
  for (const name of names) {
    if (isAbsolute(name)) {
      try {
        accessSync(name, constants.X_OK);
        return name;
      } catch {
        continue;
      }
    }
    for (const dir of dirs) {
      if (!dir) continue;
      const p = join(dir, name);
      try {
        accessSync(p, constants.X_OK);
        return p;
      } catch {
        /* next */
      }
    }
  }
  return undefined;
}

export type B1ToolName = 'wrk' | 'sockperf' | 'nginx';

export interface B1ToolSpec {
  /** Executable names tried in order. */
  readonly names: readonly string[];
  /** The Debian package that installs it (scripts/bootstrap.sh installs them all). */
  readonly debPackage: string;
  /** Environment variable naming the binary explicitly. */
  readonly env: string;
  /** The metrics that cannot be taken without it. */
  readonly metrics: readonly string[];
}

const HTTP_METRICS = ['rps_c32_1k', 'tunnel_cpu_cores_*', 'new_connections_per_s'] as const;

export const B1_TOOLS: Readonly<Record<B1ToolName, B1ToolSpec>> = {
  wrk: { names: ['wrk'], debPackage: 'wrk', env: 'MESH_BENCH_WRK', metrics: HTTP_METRICS },
  nginx: { names: ['nginx'], debPackage: 'nginx-light', env: 'MESH_BENCH_NGINX', metrics: HTTP_METRICS },
  sockperf: {
    names: ['sockperf'],
    debPackage: 'sockperf',
    env: 'MESH_BENCH_SOCKPERF',
    metrics: ['rtt_p50_at_1000rps', 'rtt_p99_at_1000rps', 'added_rtt_*'],
  },
};

/** The B.1 tools found on this machine (absolute paths); absent = not installed. */
export interface B1Tools {
  readonly wrk?: string;
  readonly sockperf?: string;
  readonly nginx?: string;
  /** `setpriv` (util-linux), used to give the tool servers a parent-death signal; absent = none. */
  readonly setpriv?: string;
}

/** Looks every B.1 tool up (MESH_BENCH_<TOOL> overrides the search). */
export function findB1Tools(env: NodeJS.ProcessEnv = process.env): B1Tools {
  const find = (tool: B1ToolName): string | undefined => {
    const spec = B1_TOOLS[tool];
    const override = env[spec.env];
    return override !== undefined && override !== ''
      ? findExecutable([override])
      : findExecutable(spec.names);
  };
  const out: { -readonly [K in keyof B1Tools]: B1Tools[K] } = {};
  for (const tool of Object.keys(B1_TOOLS) as B1ToolName[]) {
    const bin = find(tool);
    if (bin !== undefined) out[tool] = bin;
  }
  const setpriv = findExecutable(['setpriv']);
  if (setpriv !== undefined) out.setpriv = setpriv;
  return out;
}

/** `wrk not found: apt-get install wrk`, the line printed when a tool is absent. */
export function toolMissingMessage(tool: B1ToolName): string {
  return `${tool} not found: apt-get install ${B1_TOOLS[tool].debPackage}`;
}

/** The two kinds of B.1 measurement: over HTTP (wrk → nginx) and ping-pong latency (sockperf). */
export interface B1Needs {
  /** wrk and nginx: rps_c32_1k, tunnel CPU, new_connections_per_s. */
  readonly http: boolean;
  /** sockperf: rtt_*_at_1000rps. */
  readonly latency: boolean;
}

/** What the harness hands the paths: the tools found, and which tool servers the run wants. */
export interface B1Setup {
  readonly tools: B1Tools;
  readonly want: B1Needs;
}

/** Which B.1 measurements these tools allow. */
export function b1Available(tools: B1Tools): B1Needs {
  return {
    http: tools.wrk !== undefined && tools.nginx !== undefined,
    latency: tools.sockperf !== undefined,
  };
}

/** The tools the selected measurements need and this machine lacks, in a fixed order. */
export function missingTools(tools: B1Tools, needs: B1Needs): B1ToolName[] {
  const wanted: B1ToolName[] = [
    ...(needs.http ? (['wrk', 'nginx'] as const) : []),
    ...(needs.latency ? (['sockperf'] as const) : []),
  ];
  return wanted.filter((tool) => tools[tool] === undefined);
}

/**
 * The NOT MEASURED line for a missing tool, e.g. `wrk not found: apt-get install wrk —
 * rps_c32_1k, tunnel_cpu_cores_*, new_connections_per_s (PERFORMANCE.md B.1 method, the
 * floor-bearing rows) not measured; scripts/bootstrap.sh installs it`.
 */
export function missingToolProblem(tool: B1ToolName): string {
  return (
    `${toolMissingMessage(tool)} — ${B1_TOOLS[tool].metrics.join(', ')} (PERFORMANCE.md B.1 method, ` +
    `the floor-bearing rows) not measured; scripts/bootstrap.sh installs it`
  );
}

/**
 * The command prefix that gives a tool server SIGKILL when the bench process dies, so a
 * SIGKILLed bench leaves no nginx or sockperf server behind (PR_SET_PDEATHSIG survives exec).
 */
export function deathSignalPrefix(tools: B1Tools): string[] {
  return tools.setpriv === undefined ? [] : [tools.setpriv, '--pdeathsig', 'KILL', '--'];
}
