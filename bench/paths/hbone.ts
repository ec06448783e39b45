// SPDX-License-Identifier: Apache-2.0
// The `hbone` path: load generator → HBONE client proxy (a TCP listener per backend service; per
// connection an HTTP/2 CONNECT over mutual TLS through a pooled HboneClient) → HBONE server
// proxy (HboneServer whose onConnect dials the :authority) → backend (echo, bulk source, and the
// B.1 tool servers nginx and sockperf when they run). Two child processes, one per tunnel end,
// like the two ztunnels of client pod → ztunnel → HBONE → ztunnel → server pod (PERFORMANCE.md
// targets).
// Certificates come from the test CA (test/helpers/pki.ts) and reach the children as files.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatEndpoint } from '../child.ts';
import { waitForService } from '../net.ts';
import { REPO_ROOT } from '../procs.ts';
import { SERVICE_PROBE, serviceList, servicesFrom } from '../services.ts';
import type { PathModule, TrackedChild } from '../types.ts';
import type { ClientProxyConfig } from './hbone-client-proxy.ts';
import { writeCertFile } from './hbone-certs.ts';
import type { ServerProxyConfig } from './hbone-server-proxy.ts';

const HOST = '127.0.0.1';
const TRUST_DOMAIN = 'cluster.local';
const CLIENT_ID = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/client`;
const SERVER_ID = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/server`;
const READY_TIMEOUT_MS = 15_000;

/** What the path needs from other parts of the tree; absent → the path is reported missing. */
const REQUIRED_FILES = [
  'src/shared/hbone/client.ts',
  'src/shared/hbone/server.ts',
  'src/shared/hbone/relay.ts',
  'test/helpers/pki.ts',
];

function readyPort(v: unknown): number | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  return o.event === 'ready' && typeof o.port === 'number' ? o.port : undefined;
}

function readyPorts(v: unknown): Record<string, number> | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (o.event !== 'ready' || typeof o.ports !== 'object' || o.ports === null) return undefined;
  const out: Record<string, number> = {};
  for (const [name, port] of Object.entries(o.ports as Record<string, unknown>)) {
    if (typeof port !== 'number') return undefined;
    out[name] = port;
  }
  return out;
}

export const hbonePath: PathModule = {
  name: 'hbone',
  group: 'loopback',
  description: 'HBONE client proxy → HTTP/2 CONNECT over mTLS → HBONE server proxy → echo server',
  start: async (ctx) => {
    const missing = REQUIRED_FILES.filter((f) => !existsSync(join(REPO_ROOT, f)));
    if (missing.length > 0) {
      return { kind: 'missing', reason: `HBONE library not available yet (missing ${missing.join(', ')})` };
    }
    // Loaded here, not at the top, so the other paths run even while the identity library is
    // being changed under us.
    const { newTestCa, issueWorkloadCert } = await import('../../test/helpers/pki.ts');
    const ca = await newTestCa({ trustDomain: TRUST_DOMAIN });
    const serverCertFile = join(ctx.tmpDir, 'server-cert.json');
    const clientCertFile = join(ctx.tmpDir, 'client-cert.json');
    writeCertFile(serverCertFile, await issueWorkloadCert(ca, SERVER_ID));
    writeCertFile(clientCertFile, await issueWorkloadCert(ca, CLIENT_ID));

    const services = serviceList(ctx.backend);
    const children: TrackedChild[] = [];
    const close = async (): Promise<void> => {
      await Promise.all(children.map((c) => c.kill()));
    };
    try {
      const serverConfig: ServerProxyConfig = {
        certFile: serverCertFile,
        trustDomain: TRUST_DOMAIN,
        host: HOST,
      };
      const serverConfigFile = join(ctx.tmpDir, 'server-proxy.json');
      writeFileSync(serverConfigFile, JSON.stringify(serverConfig));
      const server = ctx.spawnNode('hbone-server-proxy', 'paths/hbone-server-proxy.ts', [serverConfigFile]);
      children.push(server);
      const hbonePort = await server.waitForLine(readyPort, READY_TIMEOUT_MS);

      const clientConfig: ClientProxyConfig = {
        certFile: clientCertFile,
        peer: { host: HOST, port: hbonePort },
        expectedIdentity: SERVER_ID,
        host: HOST,
        // One route per backend service: echo, source and, when they run, nginx and sockperf.
        routes: services.map((s) => ({ name: s.name, authority: formatEndpoint(s.target) })),
      };
      const clientConfigFile = join(ctx.tmpDir, 'client-proxy.json');
      writeFileSync(clientConfigFile, JSON.stringify(clientConfig));
      const client = ctx.spawnNode('hbone-client-proxy', 'paths/hbone-client-proxy.ts', [clientConfigFile]);
      children.push(client);
      const ports = await client.waitForLine(readyPorts, READY_TIMEOUT_MS);

      const targets = servicesFrom(
        Object.fromEntries(
          services.map((s) => {
            const port = ports[s.name];
            if (port === undefined) throw new Error(`client proxy reported no port for ${s.name}`);
            return [s.name, { host: HOST, port }];
          }),
        ),
      );
      let alive = true;
      for (const c of children) void c.exited.then(() => (alive = false));
      for (const s of serviceList(targets)) {
        await waitForService(s.target, SERVICE_PROBE[s.name], READY_TIMEOUT_MS, () => alive);
      }
      return {
        kind: 'ready',
        instance: {
          targets,
          processes: [
            { pid: client.pid, end: 'client', label: 'hbone-client-proxy' },
            { pid: server.pid, end: 'server', label: 'hbone-server-proxy' },
          ],
          close,
        },
      };
    } catch (err) {
      const tails = children.map((c) => `${c.label}: ${c.stderrTail()}`).join('\n');
      await close();
      throw new Error(
        `hbone path did not start: ${err instanceof Error ? err.message : String(err)}\n${tails}`,
        {
          cause: err,
        },
      );
    }
  },
};
