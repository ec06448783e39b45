// SPDX-License-Identifier: Apache-2.0
// The `pod-stunnel` path, the C mTLS reference in the netns group: load generator in the client
// pod → stunnel client (127.0.0.1 in the client pod) → mutual TLS across nodes (TLS 1.3,
// TLS_AES_128_GCM_SHA256, ECDSA P-256, like the loopback `stunnel` path) → stunnel server in the
// server pod → backend (127.0.0.1 in the server pod: echo, bulk source, and the B.1 tool servers
// nginx and sockperf when they run). Same unenrolled pods as `pod-direct`.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SERVICE_PROBE, serviceList, servicesFrom, type ServiceName } from '../services.ts';
import type { Endpoint, PathModule, TrackedChild } from '../types.ts';
import { NETNS_READY_MS, NETNS_START_TIMEOUT_MS, netnsMissing } from './netns-common.ts';
import { inNetns, plainPods, probeFrom } from './pods.ts';
import { findStunnel, makeCerts, STUNNEL_MISSING, stunnelConfig } from './stunnel.ts';

/** Fixed ports inside the pods (fresh namespaces: nothing else listens there), below the ephemeral range. */
const PORTS: Readonly<Record<ServiceName, number>> = {
  echo: 20001,
  source: 20002,
  http: 20003,
  sockperf: 20004,
};
const LOOPBACK = '127.0.0.1';

export const podStunnelPath: PathModule = {
  name: 'pod-stunnel',
  group: 'netns',
  description:
    'client pod → stunnel client → mTLS across nodes → stunnel server in the server pod → echo server',
  startTimeoutMs: NETNS_START_TIMEOUT_MS,
  start: async (ctx) => {
    const missing = netnsMissing(false);
    if (missing !== undefined) return { kind: 'missing', reason: missing };
    const bin = findStunnel();
    if (bin === undefined) return { kind: 'missing', reason: STUNNEL_MISSING };
    const pods = await plainPods(ctx);
    const dir = ctx.tmpDir;
    await makeCerts(dir, [pods.server.ip]);
    const ep = (host: string, port: number): Endpoint => ({ host, port });
    const serverConf = join(dir, 'stunnel-server.conf');
    const clientConf = join(dir, 'stunnel-client.conf');
    // One stunnel service per backend service in the server pod (echo, source and, when they
    // run, nginx and the sockperf server), each on its fixed port.
    const services = serviceList(pods.backend);
    writeFileSync(
      serverConf,
      stunnelConfig(
        dir,
        'server',
        services.map((s) => ({
          name: s.name,
          accept: ep(pods.server.ip, PORTS[s.name]),
          connect: ep(LOOPBACK, s.target.port),
        })),
      ),
    );
    writeFileSync(
      clientConf,
      stunnelConfig(
        dir,
        'client',
        services.map((s) => ({
          name: s.name,
          accept: ep(LOOPBACK, PORTS[s.name]),
          connect: ep(pods.server.ip, PORTS[s.name]),
        })),
      ),
    );
    const children: TrackedChild[] = [];
    const close = async (): Promise<void> => {
      await Promise.all(children.map((c) => c.kill()));
    };
    try {
      const server = ctx.spawn('pod-stunnel-server', bin, [serverConf], {
        cwd: dir,
        prefix: inNetns(pods.server.netnsName),
      });
      children.push(server);
      const client = ctx.spawn('pod-stunnel-client', bin, [clientConf], {
        cwd: dir,
        prefix: inNetns(pods.client.netnsName),
      });
      children.push(client);
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
            { pid: client.pid, end: 'client', label: 'stunnel-client' },
            { pid: server.pid, end: 'server', label: 'stunnel-server' },
          ],
          loadgen: pods.loadgen,
          close,
        },
      };
    } catch (err) {
      const tails = children.map((c) => `${c.label}: ${c.stderrTail()}`).join('\n');
      await close();
      throw new Error(
        `pod-stunnel did not start: ${err instanceof Error ? err.message : String(err)}\n${tails}`,
        {
          cause: err,
        },
      );
    }
  },
};
