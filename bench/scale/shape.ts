// SPDX-License-Identifier: Apache-2.0
// The sizes of the scale benchmark: PERFORMANCE.md's controller rows (10k pods, 1k services,
// 100 ztunnels) and the scaled-down `--quick` run. Pure, so args.ts can quote them in its usage.

export interface ScaleShape {
  readonly pods: number;
  readonly services: number;
  /** Simulated ztunnel clients; also the number of nodes the pods are spread over. */
  readonly ztunnels: number;
  readonly policies: number;
  /** Sequential pod changes whose push latency is measured. */
  readonly changes: number;
}

/** PERFORMANCE.md's shape for the controller floors. */
export const FULL_SHAPE: ScaleShape = {
  pods: 10_000,
  services: 1_000,
  ztunnels: 100,
  policies: 20,
  changes: 100,
};

/** `--quick`: a smoke run of the same scenario. */
export const QUICK_SHAPE: ScaleShape = { pods: 1_000, services: 100, ztunnels: 20, policies: 6, changes: 20 };

/** `10000 pods, 1000 services, 100 ztunnels`. */
export function describeShape(s: ScaleShape): string {
  return `${s.pods} pods, ${s.services} services, ${s.ztunnels} ztunnels`;
}
