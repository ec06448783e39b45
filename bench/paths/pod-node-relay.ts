// SPDX-License-Identifier: Apache-2.0
// The `pod-node-relay` path, the netns group's Node calibration: load generator in the client
// pod → plain Node TCP relay (127.0.0.1 in the client pod) → across nodes → plain Node TCP relay
// in the server pod → backend (127.0.0.1 in the server pod). The same two proxy positions and the
// same unenrolled pods as `pod-stunnel`, but no TLS, no HTTP/2 and no redirection: what two Node
// processes pay only to carry the bytes (bench/relay.ts). Its ratios to `pod-direct` bound what
// any Node data plane, ztunnel included, can reach on this machine.
import { readFileSync, writeFileSync } from 'node:fs';
import { stripTypeScriptTypes } from 'node:module';
import { join } from 'node:path';
import { ZTUNNEL_NODE_FLAGS } from '../../test/helpers/mesh-bed.ts';
import { formatEndpoint } from '../child.ts';
import { BENCH_DIR, NODE_BIN } from '../procs.ts';
import { serviceList, type ServiceName } from '../services.ts';
import type { Endpoint, PathModule } from '../types.ts';
import { NETNS_START_TIMEOUT_MS, netnsMissing } from './netns-common.ts';
import { inNetns, plainPods, POD_PROXY_LOOPBACK, startPodProxyPair } from './pods.ts';

/** Fixed ports inside the pods, clear of pod-stunnel's (both paths share the plain pods). */
const PORTS: Readonly<Record<ServiceName, number>> = {
  echo: 20011,
  source: 20012,
  http: 20013,
  sockperf: 20014,
};
const RELAY_READY_MS = 15_000;

const isReady = (v: unknown): true | undefined =>
  typeof v === 'object' && v !== null && (v as Record<string, unknown>).event === 'ready' ? true : undefined;

export const podNodeRelayPath: PathModule = {
  name: 'pod-node-relay',
  group: 'netns',
  description:
    'client pod → Node TCP relay → across nodes → Node TCP relay in the server pod → echo server (no TLS, no mesh)',
  startTimeoutMs: NETNS_START_TIMEOUT_MS,
  start: async (ctx) => {
    const missing = netnsMissing(false);
    if (missing !== undefined) return { kind: 'missing', reason: missing };
    const pods = await plainPods(ctx);
    const ep = (host: string, port: number): Endpoint => ({ host, port });
    const services = serviceList(pods.backend);
    // LISTEN=CONNECT per backend service: the server end on the server pod's IP to the backend on
    // its loopback, the client end on the client pod's loopback to the server end.
    const relays = {
      server: services.map(
        (s) => [ep(pods.server.ip, PORTS[s.name]), ep(POD_PROXY_LOOPBACK, s.target.port)] as const,
      ),
      client: services.map(
        (s) => [ep(POD_PROXY_LOOPBACK, PORTS[s.name]), ep(pods.server.ip, PORTS[s.name])] as const,
      ),
    };
    // Run as JavaScript with ztunnel's node flags, as ztunnel runs from dist/ (bench/relay.ts).
    const script = join(ctx.tmpDir, 'relay.mjs');
    writeFileSync(script, stripTypeScriptTypes(readFileSync(join(BENCH_DIR, 'relay.ts'), 'utf8')));
    const instance = await startPodProxyPair(ctx, pods, {
      path: 'pod-node-relay',
      label: 'relay',
      ports: PORTS,
      spawn: (end) => {
        const pod = end === 'server' ? pods.server : pods.client;
        const args = relays[end].map(([from, to]) => `${formatEndpoint(from)}=${formatEndpoint(to)}`);
        return ctx.spawn(`pod-relay-${end}`, NODE_BIN, [...ZTUNNEL_NODE_FLAGS, script, ...args], {
          prefix: inNetns(pod.netnsName),
        });
      },
      ready: (child) => child.waitForLine(isReady, RELAY_READY_MS),
    });
    return { kind: 'ready', instance };
  },
};
