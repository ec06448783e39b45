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
import type { Endpoint, PathModule, TrackedChild } from '../types.ts';
import { SERVICE_PROBE, serviceList, servicesFrom, type ServiceName } from '../services.ts';
import { NETNS_READY_MS, NETNS_START_TIMEOUT_MS, netnsMissing } from './netns-common.ts';
import { inNetns, plainPods, probeFrom } from './pods.ts';

/** Fixed ports inside the pods, clear of pod-stunnel's (both paths share the plain pods). */
const PORTS: Readonly<Record<ServiceName, number>> = {
  echo: 20011,
  source: 20012,
  http: 20013,
  sockperf: 20014,
};
const LOOPBACK = '127.0.0.1';
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
    const relays = (pairs: readonly [Endpoint, Endpoint][]): string[] =>
      pairs.map(([from, to]) => `${formatEndpoint(from)}=${formatEndpoint(to)}`);
    // Run as JavaScript with ztunnel's node flags, as ztunnel runs from dist/ (bench/relay.ts).
    const script = join(ctx.tmpDir, 'relay.mjs');
    writeFileSync(script, stripTypeScriptTypes(readFileSync(join(BENCH_DIR, 'relay.ts'), 'utf8')));
    const children: TrackedChild[] = [];
    const close = async (): Promise<void> => {
      await Promise.all(children.map((c) => c.kill()));
    };
    try {
      const server = ctx.spawn(
        'pod-relay-server',
        NODE_BIN,
        [
          ...ZTUNNEL_NODE_FLAGS,
          script,
          ...relays(services.map((s) => [ep(pods.server.ip, PORTS[s.name]), ep(LOOPBACK, s.target.port)])),
        ],
        { prefix: inNetns(pods.server.netnsName) },
      );
      children.push(server);
      const client = ctx.spawn(
        'pod-relay-client',
        NODE_BIN,
        [
          ...ZTUNNEL_NODE_FLAGS,
          script,
          ...relays(services.map((s) => [ep(LOOPBACK, PORTS[s.name]), ep(pods.server.ip, PORTS[s.name])])),
        ],
        { prefix: inNetns(pods.client.netnsName) },
      );
      children.push(client);
      await Promise.all(children.map((c) => c.waitForLine(isReady, RELAY_READY_MS)));
      const targets = servicesFrom(
        Object.fromEntries(services.map((s) => [s.name, ep(LOOPBACK, PORTS[s.name])])),
      );
      for (const s of serviceList(targets)) {
        await probeFrom(ctx, pods.loadgen, s.target, SERVICE_PROBE[s.name], NETNS_READY_MS);
      }
      return {
        kind: 'ready',
        instance: {
          targets,
          processes: [
            { pid: client.pid, end: 'client', label: 'relay-client' },
            { pid: server.pid, end: 'server', label: 'relay-server' },
          ],
          loadgen: pods.loadgen,
          close,
        },
      };
    } catch (err) {
      const tails = children.map((c) => `${c.label}: ${c.stderrTail()}`).join('\n');
      await close();
      throw new Error(
        `pod-node-relay did not start: ${err instanceof Error ? err.message : String(err)}\n${tails}`,
        { cause: err },
      );
    }
  },
};
