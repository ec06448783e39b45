// SPDX-License-Identifier: Apache-2.0
// The `direct` path: load generator → backend, no tunnel. Every ratio in the report is taken
// against it, measured in the same run (PERFORMANCE.md, "Targets").
import type { PathModule } from '../types.ts';

export const directPath: PathModule = {
  name: 'direct',
  group: 'loopback',
  description: 'load generator → echo server (no mesh)',
  start: async (ctx) => ({
    kind: 'ready',
    instance: { targets: ctx.backend, processes: [], close: async () => undefined },
  }),
};
