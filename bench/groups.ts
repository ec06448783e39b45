// SPDX-License-Identifier: Apache-2.0
// The bench's path groups: each group is measured against its own no-mesh baseline path in the
// same run (PERFORMANCE.md "Targets": every figure is a ratio against the direct path measured in
// the same run on the same machine). Loopback paths are compared with `direct`, the pod paths in
// network namespaces with `pod-direct`. The scale group is not a data path: its one column,
// `controller`, is the controller under simulated ztunnels (bench/scale/), reported in absolute
// values against the PERFORMANCE.md controller floors. The enrolment group is not a data path
// either: pods created through a local cluster's CNI chain (bench/enrolment/), `enrolled` against
// `unenrolled`. Pure, so the unit tests and args.ts can use it.

export type PathGroupName = 'loopback' | 'netns' | 'scale' | 'enrolment';

export interface PathGroup {
  readonly name: PathGroupName;
  /** One line for the report, above the group's table. */
  readonly title: string;
  /** The group's no-mesh path: ratio_to_direct and added RTT of its paths are taken against it. */
  readonly baseline: string;
  /** Network namespaces, veths and iptables need root; without it the group is not measured. */
  readonly needsRoot: boolean;
}

export const PATH_GROUPS: readonly PathGroup[] = [
  {
    name: 'loopback',
    title: 'loopback group: load generator, tunnel ends and backend on 127.0.0.1',
    baseline: 'direct',
    needsRoot: false,
  },
  {
    name: 'netns',
    title:
      'netns group: client pod on node 0 → server pod on node 1 (network-namespace test bed, DESIGN.md §4)',
    baseline: 'pod-direct',
    needsRoot: true,
  },
  {
    name: 'scale',
    title:
      'scale group: the controller (child process) fed by a Kubernetes API stand-in, serving simulated ztunnels over WDS',
    baseline: 'controller',
    needsRoot: false,
  },
  {
    name: 'enrolment',
    title:
      'enrolment group: pods created one at a time through the CNI chain of a 1-node local cluster (bridge → loopback → ambient-cni → node agent → ztunnel)',
    baseline: 'unenrolled',
    needsRoot: true,
  },
];

export function pathGroup(name: PathGroupName): PathGroup {
  const g = PATH_GROUPS.find((x) => x.name === name);
  if (g === undefined) throw new Error(`unknown path group ${name}`);
  return g;
}

/** What the root check reports when a group needs root and the bench runs without it. */
export function needsRootReason(group: PathGroup, paths: readonly string[]): string {
  return (
    `${group.name} paths (${paths.join(', ')}) not measured: they need root (network namespaces, ` +
    `veth pairs, bridges, iptables); run the bench as root, e.g. sudo npm run bench`
  );
}
