// SPDX-License-Identifier: Apache-2.0
// The enrolment group as the harness sees it (bench/main.ts, bench/groups.ts): two columns,
// `unenrolled` (the baseline) and `enrolled`, measured together by one run of the enrolment
// scenario (./scenario.ts) with 40 pods per column, 10 with --quick. Its rows are catalogued in
// bench/report.ts and checked there against the PERFORMANCE.md row "pod enrolment: CNI ADD to
// redirection live, p99 ≤ 200 ms".
//
// Before the scenario: the native addon must load (the probes open sockets inside pod network
// namespaces with it) and the CNI plugin executable is brought up to date by its own build script
// (quick when nothing changed). The local cluster is named after this process's pid, so that
// sweepEnrolmentClusterSync, the harness's last resort on exit and on a second Ctrl-C, removes
// this run's cluster and nobody else's.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_STATE_ROOT } from '../../src/local/cluster.ts';
import { TESTBED_STATE_ROOT } from '../../src/local/testbed.ts';
import { errorMessage } from '../../src/shared/errors.ts';
import { loadNativeAddon } from '../../src/shared/native/index.ts';
import { NODE_BIN, REPO_ROOT } from '../procs.ts';
import type { PathValues } from '../report.ts';
import type { SharedResource, SpawnFn } from '../types.ts';
import { EnrolmentScenarioError, runEnrolmentScenario, type ColumnResult } from './scenario.ts';
import { ENROLLED, FULL_PODS, QUICK_PODS, UNENROLLED } from './shape.ts';

/** A rebuild of the plugin executable (bundle, SEA blob, postject) takes well under a minute. */
const BUILD_TIMEOUT_MS = 180_000;

export interface EnrolmentGroupContext {
  readonly quick: boolean;
  /** A private temp dir, removed by the harness. */
  readonly tmpDir: string;
  readonly spawn: SpawnFn;
  /** The harness's shared resources: destroyed when the group ends, on errors and on signals. */
  readonly shared: <T>(key: string, create: () => Promise<SharedResource<T>>) => Promise<T>;
  readonly log: (msg: string) => void;
  readonly stopping: () => boolean;
}

export interface EnrolmentMeasurement {
  /** Values per column (`unenrolled`, `enrolled`). */
  readonly values: ReadonlyMap<string, PathValues>;
  readonly notes: readonly string[];
}

/** `be` and this process's pid in base 36, fixed width: unique among running benches, ≤ 8 characters. */
export function enrolmentClusterName(pid = process.pid): string {
  return `be${pid.toString(36).padStart(5, '0')}`;
}

/** Runs scripts/build-cni-plugin.ts, which rebuilds build/cni/ambient-cni only when an input changed. */
async function buildPlugin(ctx: EnrolmentGroupContext): Promise<void> {
  const child = ctx.spawn('build-cni', NODE_BIN, [join(REPO_ROOT, 'scripts/build-cni-plugin.ts')]);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), BUILD_TIMEOUT_MS);
  });
  try {
    const r = await Promise.race([child.exited, timedOut]);
    if (r === 'timeout') {
      await child.kill();
      throw new EnrolmentScenarioError(`npm run build:cni did not finish within ${BUILD_TIMEOUT_MS} ms`);
    }
    if (r.code !== 0) {
      throw new EnrolmentScenarioError(
        `npm run build:cni failed (exit ${r.code ?? r.signal ?? 'unknown'}):\n${child.stderrTail()}`,
      );
    }
  } finally {
    clearTimeout(timer);
  }
}

function columnValues(r: ColumnResult, pods: number): PathValues {
  return {
    enrol_pods: pods,
    cni_add_p50_ms: r.cniAddMs.p50,
    cni_add_p99_ms: r.cniAddMs.p99,
    cni_plugin_p50_ms: r.pluginMs.p50,
    cni_plugin_p99_ms: r.pluginMs.p99,
    add_to_live_p50_ms: r.liveMs.p50,
    add_to_live_p99_ms: r.liveMs.p99,
  };
}

export async function measureEnrolment(ctx: EnrolmentGroupContext): Promise<EnrolmentMeasurement> {
  try {
    loadNativeAddon();
  } catch (err) {
    throw new EnrolmentScenarioError(errorMessage(err), { cause: err });
  }
  ctx.log('bringing build/cni/ambient-cni up to date (npm run build:cni)');
  await buildPlugin(ctx);
  const pods = ctx.quick ? QUICK_PODS : FULL_PODS;
  const r = await runEnrolmentScenario({
    pods,
    dir: ctx.tmpDir,
    clusterName: enrolmentClusterName(),
    shared: ctx.shared,
    log: ctx.log,
    stopping: ctx.stopping,
  });
  const base = r.columns.get(UNENROLLED);
  const mesh = r.columns.get(ENROLLED);
  if (base === undefined || mesh === undefined) throw new EnrolmentScenarioError('a column was not measured');
  const notes = [...r.notes];
  if (ctx.quick) {
    notes.push(
      `quick run: ${QUICK_PODS} pods per column (${FULL_PODS} without --quick); p99 is the maximum of either`,
    );
  } else {
    notes.push(`p99 of ${FULL_PODS} samples (nearest rank) is their maximum`);
  }
  return {
    values: new Map([
      [UNENROLLED, columnValues(base, pods)],
      [
        ENROLLED,
        {
          ...columnValues(mesh, pods),
          added_cni_add_p50_ms: mesh.cniAddMs.p50 - base.cniAddMs.p50,
          added_cni_add_p99_ms: mesh.cniAddMs.p99 - base.cniAddMs.p99,
          added_add_to_live_p50_ms: mesh.liveMs.p50 - base.liveMs.p50,
          added_add_to_live_p99_ms: mesh.liveMs.p99 - base.liveMs.p99,
          leaked_after_delete: r.leaked,
        },
      ],
    ]),
    notes,
  };
}

/**
 * Last resort, synchronous (the harness's 'exit' handler, a second Ctrl-C): kills every process
 * left in this run's local-cluster namespaces (controller, agent, ztunnel, pods), deletes the
 * namespaces and the cluster's state. Skips CNI DEL: veths and bridges go with the namespaces.
 * Returns the namespaces removed.
 */
export function sweepEnrolmentClusterSync(): string[] {
  const name = enrolmentClusterName();
  const prefix = `lm${name}`;
  const ip = (args: string[]): string => {
    try {
      return execFileSync('ip', args, {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 5_000,
      });
    } catch {
      return '';
    }
  };
  const namespaces = ip(['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`${prefix}-`));
  for (const n of namespaces) {
    for (const pid of ip(['netns', 'pids', n]).split('\n').map(Number)) {
      if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  for (const n of namespaces) ip(['netns', 'del', n]);
  rmSync(join(DEFAULT_STATE_ROOT, name), { recursive: true, force: true });
  rmSync(join(TESTBED_STATE_ROOT, prefix), { recursive: true, force: true });
  return namespaces;
}
