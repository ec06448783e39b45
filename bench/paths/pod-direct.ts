// SPDX-License-Identifier: Apache-2.0
// The `pod-direct` path, the netns group's baseline: load generator in a client pod on node 0 →
// backend in a server pod on node 1, both pods unenrolled (no mesh). Pod veth → node bridge →
// fabric → other node → pod, as in PERFORMANCE.md B.1's "direct". Every ratio of the netns
// group (pod-stunnel, ztunnel) is taken against it, measured in the same run.
import type { PathModule } from '../types.ts';
import { NETNS_START_TIMEOUT_MS, netnsMissing } from './netns-common.ts';
import { plainPods } from './pods.ts';

export const podDirectPath: PathModule = {
  name: 'pod-direct',
  group: 'netns',
  description: 'client pod (node 0) → echo server in the server pod (node 1), no mesh',
  startTimeoutMs: NETNS_START_TIMEOUT_MS,
  start: async (ctx) => {
    const missing = netnsMissing(false);
    if (missing !== undefined) return { kind: 'missing', reason: missing };
    const pods = await plainPods(ctx);
    return {
      kind: 'ready',
      instance: {
        targets: pods.backend,
        processes: [],
        loadgen: pods.loadgen,
        close: async () => undefined,
      },
    };
  },
};
