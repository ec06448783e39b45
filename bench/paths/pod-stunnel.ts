// SPDX-License-Identifier: Apache-2.0
// The `pod-stunnel` path, the C mTLS reference in the netns group: load generator in the client
// pod → stunnel client (127.0.0.1 in the client pod) → mutual TLS across nodes (TLS 1.3,
// TLS_AES_128_GCM_SHA256, ECDSA P-256, like the loopback `stunnel` path) → stunnel server in the
// server pod → backend (127.0.0.1 in the server pod: echo, bulk source, and the B.1 tool servers
// nginx and sockperf when they run). Same unenrolled pods as `pod-direct`.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { serviceList, type ServiceName } from '../services.ts';
import type { Endpoint, PathModule } from '../types.ts';
import { NETNS_START_TIMEOUT_MS, netnsMissing } from './netns-common.ts';
import { inNetns, plainPods, POD_PROXY_LOOPBACK, startPodProxyPair } from './pods.ts';
import { findStunnel, makeCerts, STUNNEL_MISSING, stunnelConfig } from './stunnel.ts';

/** Fixed ports inside the pods (fresh namespaces: nothing else listens there), below the ephemeral range. */
const PORTS: Readonly<Record<ServiceName, number>> = {
  echo: 20001,
  source: 20002,
  http: 20003,
  sockperf: 20004,
};

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
    // One stunnel service per backend service in the server pod (echo, source and, when they
    // run, nginx and the sockperf server), each on its fixed port.
    const services = serviceList(pods.backend);
    const conf = {
      server: stunnelConfig(
        dir,
        'server',
        services.map((s) => ({
          name: s.name,
          accept: ep(pods.server.ip, PORTS[s.name]),
          connect: ep(POD_PROXY_LOOPBACK, s.target.port),
        })),
      ),
      client: stunnelConfig(
        dir,
        'client',
        services.map((s) => ({
          name: s.name,
          accept: ep(POD_PROXY_LOOPBACK, PORTS[s.name]),
          connect: ep(pods.server.ip, PORTS[s.name]),
        })),
      ),
    };
    const instance = await startPodProxyPair(ctx, pods, {
      path: 'pod-stunnel',
      label: 'stunnel',
      ports: PORTS,
      spawn: (end) => {
        const file = join(dir, `stunnel-${end}.conf`);
        writeFileSync(file, conf[end]);
        const pod = end === 'server' ? pods.server : pods.client;
        return ctx.spawn(`pod-stunnel-${end}`, bin, [file], { cwd: dir, prefix: inNetns(pod.netnsName) });
      },
    });
    return { kind: 'ready', instance };
  },
};
