// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the ZDS tests (test/integration/zds, test/unit/ztunnel/inpod, test/netns/zds):
// a ProxyContext whose certificates come from an in-memory test CA, a socket factory that serves
// pods on loopback (no root needed) while reporting the netns identity of the fd it was given,
// scratch network namespaces made with an unprivileged `unshare` (so a ZDS test never hands the
// host's own netns to code that writes sysctls into it), a logger that keeps its lines, and
// helpers to count this process's open fds and to wait for a condition.
import { AuthorizedConnections } from '../../../ztunnel/src/rbac/authorized-connections.ts';
import { Revocations } from '../../../ztunnel/src/identity/revocation.ts';
import { OverloadGuard } from '../../../ztunnel/src/proxy/overload.ts';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';

import { CertificateAuthority } from '../../../src/shared/identity/ca.ts';
import { CertificateManager } from '../../../src/shared/identity/cert-manager.ts';
import { closeFd, netnsInode, openNetns } from '../../../src/shared/native/index.ts';
import { Logger } from '../../../src/shared/telemetry/logger.ts';
import { DefaultSocketFactory } from '../../../ztunnel/src/inpod/socket-factory.ts';
import type { ManagedSocketFactory, NetnsRef } from '../../../ztunnel/src/inpod/workload-manager.ts';
import type { WorkloadProxyPorts } from '../../../ztunnel/src/inpod/workload-proxy.ts';
import type { ProxyContext } from '../../../ztunnel/src/proxy/context.ts';
import { StateStore } from '../../../ztunnel/src/state/store.ts';
import { newWorkload, type Workload } from '../../../ztunnel/src/state/types.ts';
import { AccessLog } from '../../../ztunnel/src/telemetry/access-log.ts';
import { ZtunnelMetrics } from '../../../ztunnel/src/telemetry/metrics.ts';

/** A logger whose JSON lines are kept in `lines` (parsed) for assertions. */
export function memoryLogger(level = 'debug'): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n'))
        if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: new Logger({ level, destination }), lines };
}

export interface TestProxyContextOptions {
  caDir?: string;
  trustDomain?: string;
  /** Awaited before each signature: a slow CA (resolve later) or a failing one (reject). */
  beforeSign?: (identity: string) => Promise<void>;
  certificateWaitMs?: number;
  /** The memory guard (default: none known, never sheds). */
  overload?: OverloadGuard;
}

/**
 * Everything a WorkloadProxy needs, with certificates signed by a test CA: a fresh in-memory one,
 * or the one persisted in `caDir` (created there if absent), so several processes share it.
 */
export async function testProxyContext(
  logger: Logger,
  opts: TestProxyContextOptions = {},
): Promise<ProxyContext & { readonly ca: CertificateAuthority }> {
  const trustDomain = opts.trustDomain ?? 'cluster.local';
  const ca = await CertificateAuthority.create({
    trustDomain,
    ...(opts.caDir !== undefined && { dir: opts.caDir }),
  });
  const certs = new CertificateManager({
    signer: async (req) => {
      await opts.beforeSign?.(req.identity);
      return (await ca.sign({ csrPem: req.csrPem, identity: req.identity, ttlSeconds: req.ttlSeconds }))
        .certChainPem;
    },
  });
  const store = new StateStore();
  return {
    ca,
    store,
    certs,
    revocations: new Revocations(),
    overload: opts.overload ?? new OverloadGuard({ source: undefined }),
    metrics: new ZtunnelMetrics(),
    accessLog: new AccessLog(logger),
    authorized: new AuthorizedConnections(store),
    logger,
    nodeName: 'node-0',
    trustDomain,
    network: '',
    hbone: {},
    connectTimeoutMs: 2000,
    workloadWaitMs: 0,
    certificateWaitMs: opts.certificateWaitMs ?? 10_000,
  };
}

/** In-pod ports on loopback with kernel-chosen ports, so any number of pods can run at once. */
export const LOOPBACK_PORTS: WorkloadProxyPorts = {
  outbound: 0,
  inboundPlaintext: 0,
  hbone: 0,
  host: '127.0.0.1',
};

/**
 * A ManagedSocketFactory that listens on loopback (DefaultSocketFactory) but reports the inode
 * of the netns it was handed, so the manager's same-netns / new-netns decisions are real.
 */
export function loopbackSocketFactory(netns: NetnsRef): ManagedSocketFactory {
  const inode = 'fd' in netns ? netnsInode(netns.fd) : statSync(netns.path).ino;
  return Object.assign(new DefaultSocketFactory(), {
    netnsInode: () => inode,
    close: () => undefined,
  });
}

export interface ScratchNetns {
  /** /proc/<pid>/ns/net of the process holding it. */
  readonly path: string;
  /** Opens a new fd to it (close it with closeFd). */
  open(): number;
  readonly inode: number;
  destroy(): void;
}

/**
 * A fresh network namespace owned by an unprivileged user namespace (`unshare -rn`), held by a
 * `sleep` that destroy() kills. Needs unprivileged user namespaces (or root).
 */
export async function scratchNetns(): Promise<ScratchNetns> {
  const child = spawn(
    'unshare',
    ['--user', '--map-root-user', '--net', 'sh', '-c', 'echo ready; exec sleep 600'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`unshare exited with ${String(code)}: ${stderr}`)));
    child.stdout.once('data', () => resolve());
  });
  child.removeAllListeners('exit');
  const path = `/proc/${String(child.pid)}/ns/net`;
  const fd = openNetns(path);
  const inode = netnsInode(fd);
  return {
    path,
    inode,
    open: () => openNetns(path),
    destroy: () => {
      child.kill('SIGKILL');
      // The namespace lives on while this fd is open.
      closeFd(fd);
    },
  };
}

/** Open fds of this process (entries of /proc/self/fd, minus the one readdir itself opens). */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length - 1;
}

/**
 * The fd count once it has come back to `expected`, or the last count after `ms`: sockets and
 * handles of this process (tap's own, libuv's) close asynchronously, so one read right after an
 * operation can catch an unrelated fd in flight on a loaded machine.
 */
export async function settledFdCount(expected: number, ms = 2000): Promise<number> {
  const deadline = Date.now() + ms;
  let n = openFdCount();
  while (n !== expected && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
    n = openFdCount();
  }
  return n;
}

/** A scratch directory for socket files; removed by the returned cleanup. */
export function scratchDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'zds-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Resolves when `cond()` holds, checking on every event-loop turn; rejects after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * The destination workload of the in-pod proxy tests: an HBONE pod `server/server` at `host`
 * (where the test's HBONE peer listens), on another node.
 */
export function serverWorkload(host: string, extra: Partial<Workload> = {}): Workload {
  return newWorkload({
    uid: 'Kubernetes//Pod/server/server',
    name: 'server',
    namespace: 'server',
    serviceAccount: 'server',
    node: 'node-1',
    addresses: [host],
    tunnelProtocol: 'HBONE',
    ...extra,
  });
}
