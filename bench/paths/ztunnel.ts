// SPDX-License-Identifier: Apache-2.0
// The `ztunnel` path, the mesh's own data path (PERFORMANCE.md targets): load generator in an
// enrolled client pod on node 0 dials the server pod's IP and port → in-pod redirection to the
// client-side ztunnel's 15001 → HBONE (HTTP/2 CONNECT over mTLS) to the server pod's 15008 →
// the server-side ztunnel delivers it to the backend with the client pod's IP as source. One
// real ztunnel process per node, in the node netns, built by test/helpers/mesh-bed.ts; by
// default the tsc output dist/ztunnel/src/main.js (bench/ztunnel-build.ts).
import { SERVICE_PROBE, serviceList } from '../services.ts';
import type { PathModule } from '../types.ts';
import { ztunnelEntry } from '../ztunnel-build.ts';
import { NETNS_READY_MS, NETNS_START_TIMEOUT_MS, netnsMissing } from './netns-common.ts';
import { meshPods, probeFrom } from './pods.ts';

export const ztunnelPath: PathModule = {
  name: 'ztunnel',
  group: 'netns',
  description:
    'client pod → ztunnel (node 0, 15001) → HBONE → ztunnel (node 1, 15008) → echo server in the server pod',
  startTimeoutMs: NETNS_START_TIMEOUT_MS,
  start: async (ctx) => {
    const missing = netnsMissing(true);
    if (missing !== undefined) return { kind: 'missing', reason: missing };
    const entry = await ztunnelEntry(ctx.log);
    ctx.log(entry.note);
    const pods = await meshPods(ctx, entry);
    // Through the mesh, from inside the client pod: redirection, HBONE and delivery all work.
    // Transparent: the same pod IP and ports as pod-direct, every service (B.1 servers included).
    for (const s of serviceList(pods.backend)) {
      await probeFrom(ctx, pods.loadgen, s.target, SERVICE_PROBE[s.name], NETNS_READY_MS);
    }
    const [client, server] = [0, 1].map((n) => pods.ztunnels.find((z) => z.node === n));
    if (client === undefined || server === undefined) throw new Error('expected a ztunnel on nodes 0 and 1');
    return {
      kind: 'ready',
      instance: {
        targets: pods.backend,
        processes: [
          { pid: client.pid, end: 'client', label: 'ztunnel-node0' },
          { pid: server.pid, end: 'server', label: 'ztunnel-node1' },
        ],
        loadgen: pods.loadgen,
        notes: () => [
          `${entry.note}; pids ${client.pid} (node 0) and ${server.pid} (node 1) are the node processes ` +
            `(ip netns exec execs node; checked via /proc/<pid>/exe); open-file limit ` +
            `${client.openFiles} / ${server.openFiles}`,
          ...pods.ztunnels.map((z) => {
            const n = z.problems().length;
            const top = z.problemSummary();
            return `ztunnel node ${z.node}: ${n} warn/error log line(s)${n > 0 ? `, most frequent: ${top.join('; ')}` : ''}`;
          }),
        ],
        // The pods, the ztunnels and the backend belong to the group's test bed, which the
        // harness destroys at the end of the group.
        close: async () => undefined,
      },
    };
  },
};
