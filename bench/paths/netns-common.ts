// SPDX-License-Identifier: Apache-2.0
// Small pieces the netns group's path modules share: their start bound and the check for the
// files they need from the rest of the tree.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../procs.ts';

/** A test bed (namespaces, CNI ADDs), maybe a tsc build and ztunnel readiness: allow for all. */
export const NETNS_START_TIMEOUT_MS = 150_000;
/** Probing a freshly started netns path from inside the client pod. */
export const NETNS_READY_MS = 15_000;

const BED_FILES = ['test/helpers/testbed.ts', 'test/helpers/cni-runtime.ts'];
const MESH_FILES = [
  'ztunnel/src/main.ts',
  'test/helpers/mesh-bed.ts',
  'cni-plugin/src/redirect/apply.ts',
  'build/native/mesh_native.node',
];

/** Why the path cannot run (a missing piece of the tree), or undefined. */
export function netnsMissing(mesh: boolean): string | undefined {
  const missing = [...BED_FILES, ...(mesh ? MESH_FILES : [])].filter((f) => !existsSync(join(REPO_ROOT, f)));
  if (missing.length === 0) return undefined;
  const native = missing.includes('build/native/mesh_native.node')
    ? ' (native addon: npm run build:native)'
    : '';
  return `netns test bed pieces missing: ${missing.join(', ')}${native}`;
}
