// SPDX-License-Identifier: Apache-2.0
// The scale group as the harness sees it (bench/main.ts, bench/groups.ts): one column,
// `controller`, measured by one run of the scale scenario (bench/scale/scenario.ts) at
// PERFORMANCE.md's shape, or scaled down with --quick. Its rows are catalogued in
// bench/report.ts and checked against the controller floors there.
import type { PathValues } from '../report.ts';
import type { SpawnFn } from '../types.ts';
import { runScaleScenario } from './scenario.ts';
import { FULL_SHAPE, QUICK_SHAPE } from './shape.ts';

/** The scale group's only column (and so its own baseline: it has no ratios). */
export const SCALE_PATH = 'controller';

export interface ScaleGroupContext {
  readonly quick: boolean;
  /** A private temp dir, removed by the harness. */
  readonly tmpDir: string;
  readonly spawn: SpawnFn;
  readonly log: (msg: string) => void;
  readonly stopping: () => boolean;
}

export interface ScaleMeasurement {
  readonly values: PathValues;
  readonly notes: readonly string[];
}

export async function measureScale(ctx: ScaleGroupContext): Promise<ScaleMeasurement> {
  const shape = ctx.quick ? QUICK_SHAPE : FULL_SHAPE;
  const r = await runScaleScenario({
    shape,
    dir: ctx.tmpDir,
    spawn: ctx.spawn,
    log: ctx.log,
    stopping: ctx.stopping,
  });
  const notes = [...r.notes];
  if (ctx.quick) {
    notes.push(
      `quick run: the controller floors are defined at ${FULL_SHAPE.pods} pods, ${FULL_SHAPE.services} ` +
        `services and ${FULL_SHAPE.ztunnels} ztunnels; this run is smaller`,
    );
  }
  return {
    values: {
      scale_pods: shape.pods,
      scale_services: shape.services,
      scale_ztunnels: shape.ztunnels,
      wds_resources_per_ztunnel: r.resourcesPerZtunnel,
      controller_ready_ms: r.controllerReadyMs,
      initial_sync_ms: r.initialSyncMs,
      push_latency_p50_ms: r.pushLatencyMs.p50,
      push_latency_p99_ms: r.pushLatencyMs.p99,
      push_latency_max_ms: r.pushLatencyMs.max,
      controller_rss_ready: r.controllerRssMb.ready,
      controller_rss_synced: r.controllerRssMb.synced,
      controller_rss_end: r.controllerRssMb.end,
      controller_rss_peak: r.controllerRssMb.peak,
    },
    notes,
  };
}
