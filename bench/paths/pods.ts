// SPDX-License-Identifier: Apache-2.0
// The netns group's shared set-up (DESIGN.md §4 test bed, §5 method): pods in network
// namespaces on two nodes, attached by the real CNI plugins, a backend inside each server pod
// (the Node backend, and nginx and sockperf server for the B.1 tools: bench/b1-run.ts) and the
// load generator (or wrk, sockperf) inside the client pod (`ip netns exec <pod netns>`).
//
// Two test beds with the same layout (2 nodes, client pod on node 0, server pod on node 1):
// - plain pods (never enrolled): `pod-direct`, the group's baseline, and `pod-stunnel`;
// - meshed pods (startMeshBed: in-pod redirection rules, one real ztunnel per node in the node
//   netns): `ztunnel`. A separate bed keeps the baseline measurable when ztunnel cannot start,
//   and a run without the ztunnel path starts no ztunnel.
// Each bed is a group resource (PathContext.shared): created once, destroyed by the harness at
// the end of the group, on errors and on SIGINT/SIGTERM; sweepOwnTestbedsSync is the last resort.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage } from '../../src/shared/errors.ts';
import { startB1Servers, type B1Servers } from '../b1-run.ts';
import type { ProbeMode } from '../net.ts';
import { NODE_BIN } from '../procs.ts';
import { SERVICE_PROBE, serviceList, servicesFrom, type ServiceName } from '../services.ts';
import type {
  BackendServices,
  Endpoint,
  PathContext,
  PathInstance,
  SharedResource,
  SpawnSpec,
  TrackedChild,
} from '../types.ts';
import type { ZtunnelEntry } from '../ztunnel-build.ts';
import { NETNS_READY_MS } from './netns-common.ts';

const NAMESPACE = 'bench';
const BACKEND_READY_MS = 15_000;
const ZTUNNEL_EXEC_MS = 5_000;
/** ztunnel's drain on SIGTERM is irrelevant here (the bed SIGKILLs it), keep it short anyway. */
const ZTUNNEL_GRACE_S = '3';

/**
 * Applied to every bench pod alike (baseline and mesh). The connection-rate metric closes
 * connections from the client side, leaving TIME_WAIT in the client pod; on loopback Linux
 * reuses those ports by default (tcp_tw_reuse=2 means "loopback only"), across a veth it does
 * not, and ~28k ephemeral ports run out within a few seconds at the baseline's rate.
 */
export const POD_SYSCTLS = ['net.ipv4.tcp_tw_reuse=1'] as const;

/** `ip netns exec` execs the command in place, so the spawned pid is the command's own. */
export function inNetns(netnsName: string): string[] {
  return ['ip', 'netns', 'exec', netnsName];
}

export interface PodEnd {
  readonly name: string;
  readonly netnsName: string;
  readonly ip: string;
}

export interface PodPair {
  readonly client: PodEnd;
  readonly server: PodEnd;
  /** The backend inside the server pod, at the server pod's IP. */
  readonly backend: BackendServices;
  /** How to spawn the load generator: inside the client pod's netns. */
  readonly loadgen: SpawnSpec;
}

export interface ZtunnelProcessInfo {
  readonly node: number;
  readonly pid: number;
  /** Soft open-file limit of the ztunnel process. */
  readonly openFiles: number;
  /** Lines of ztunnel's own log at level warn or above so far. */
  problems(): string[];
  /** The same, summarised by summarizeLogProblems. */
  problemSummary(): string[];
}

export interface MeshPods extends PodPair {
  readonly ztunnels: readonly ZtunnelProcessInfo[];
  readonly entry: ZtunnelEntry;
}

interface PodLike {
  readonly name: string;
  readonly netnsName: string;
  readonly ip: string;
  exec(cmd: string, args: readonly string[]): Promise<{ code: number | null; stderr: string }>;
}

function podEnd(p: PodLike): PodEnd {
  return { name: p.name, netnsName: p.netnsName, ip: p.ip };
}

async function tune(pods: readonly PodLike[]): Promise<void> {
  for (const pod of pods) {
    const r = await pod.exec('sysctl', ['-q', '-w', ...POD_SYSCTLS]);
    if (r.code !== 0) throw new Error(`sysctl in pod ${pod.name}: ${r.stderr.trim()}`);
  }
}

function readyPorts(v: unknown): { echo: number; source: number } | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  return o.event === 'ready' && typeof o.echo === 'number' && typeof o.source === 'number'
    ? { echo: o.echo, source: o.source }
    : undefined;
}

/**
 * Fixed ports of the B.1 tool servers inside a server pod (a fresh netns: nothing else listens
 * there; clear of ztunnel's in-pod ports 15001/15006/15008).
 */
export const POD_B1_PORTS = { http: 18080, sockperf: 11111 } as const;

/**
 * Starts bench/backend.ts inside the pod (listening on all of the pod's addresses) and, next to
 * it, the B.1 tool servers the run wants (nginx, sockperf server: bench/b1-run.ts), each checked
 * from inside the pod on 127.0.0.1. `kill` stops all of them.
 */
async function startBackend(
  ctx: PathContext,
  pod: PodLike,
): Promise<{ kill: () => Promise<void>; services: BackendServices }> {
  const child = ctx.spawnNode(`backend-${pod.name}`, 'backend.ts', ['0.0.0.0'], {
    prefix: inNetns(pod.netnsName),
  });
  let servers: B1Servers | undefined;
  const kill = async (): Promise<void> => {
    await Promise.all([child.kill(), servers?.close()]);
  };
  try {
    const ports = await child.waitForLine(readyPorts, BACKEND_READY_MS);
    const inPod: SpawnSpec = { prefix: inNetns(pod.netnsName) };
    servers = await startB1Servers({
      tools: ctx.b1.tools,
      want: ctx.b1.want,
      spawn: ctx.spawn,
      dir: join(ctx.tmpDir, `b1-${pod.name}`),
      label: pod.name,
      bindHost: '0.0.0.0',
      advertiseHost: pod.ip,
      ports: POD_B1_PORTS,
      prefix: inNetns(pod.netnsName),
      probe: (target, mode, timeoutMs) => probeFrom(ctx, inPod, target, mode, timeoutMs),
      freePort: () => Promise.reject(new Error('a pod uses fixed ports')),
    });
    if (servers.children.length > 0) {
      ctx.log(
        `B.1 tool servers in pod ${pod.name}: ${servers.children.map((c) => `${c.label}=${c.pid}`).join(' ')}`,
      );
    }
    return {
      kill,
      services: {
        echo: { host: pod.ip, port: ports.echo },
        source: { host: pod.ip, port: ports.source },
        ...(servers.http && { http: servers.http }),
        ...(servers.sockperf && { sockperf: servers.sockperf }),
      },
    };
  } catch (err) {
    await kill();
    throw err;
  }
}

/** Probes `target` from inside a netns (bench/probe.ts), bounded by `timeoutMs`. */
export async function probeFrom(
  ctx: PathContext,
  spec: SpawnSpec,
  target: Endpoint,
  mode: ProbeMode,
  timeoutMs: number,
): Promise<void> {
  const child = ctx.spawnNode(
    `probe-${mode}`,
    'probe.ts',
    [`${target.host}:${target.port}`, mode, String(timeoutMs)],
    spec,
  );
  try {
    await child.waitForLine(
      (v) =>
        typeof v === 'object' && v !== null && (v as Record<string, unknown>).event === 'ready'
          ? true
          : undefined,
      timeoutMs + 5_000,
    );
  } finally {
    await child.kill();
  }
}

/** The two never-enrolled pods of `pod-direct` and `pod-stunnel`, with the server pod's backend. */
export function plainPods(ctx: PathContext): Promise<PodPair> {
  return ctx.shared('netns-plain-pods', async (): Promise<SharedResource<PodPair>> => {
    const { createTestbed } = await import('../../test/helpers/testbed.ts');
    const tb = await createTestbed({ nodes: 2 });
    let backend: { kill: () => Promise<void> } | undefined;
    try {
      ctx.log(`test bed ${tb.prefix} (plain pods): 2 nodes`);
      const client = await tb.addPod({ node: 0, name: 'plain-client', namespace: NAMESPACE });
      const server = await tb.addPod({ node: 1, name: 'plain-server', namespace: NAMESPACE });
      await tune([client, server]);
      const b = await startBackend(ctx, server);
      backend = b;
      ctx.log(`plain pods: client ${client.ip} (node 0), server ${server.ip} (node 1), backend up`);
      return {
        value: {
          client: podEnd(client),
          server: podEnd(server),
          backend: b.services,
          loadgen: { prefix: inNetns(client.netnsName) },
        },
        destroy: async () => {
          await b.kill();
          await tb.destroy();
        },
      };
    } catch (err) {
      await backend?.kill();
      await tb.destroy().catch((e: unknown) => ctx.log(`test bed teardown: ${errorMessage(e)}`));
      throw err;
    }
  });
}

/** Where a proxy pair's client end listens inside the client pod (and its server end dials the backend). */
export const POD_PROXY_LOOPBACK = '127.0.0.1';

export interface PodProxyPair {
  /** Names the path in errors. */
  readonly path: string;
  /** Process labels are `<label>-client` and `<label>-server`. */
  readonly label: string;
  /** Fixed ports inside the pods, one per backend service (fresh namespaces: nothing else listens). */
  readonly ports: Readonly<Record<ServiceName, number>>;
  /** Starts one end inside its pod: the server end first, then the client end. */
  spawn(end: 'server' | 'client'): TrackedChild;
  /** Resolves once an end is ready to accept (default: the service probes alone decide). */
  ready?(child: TrackedChild): Promise<unknown>;
}

/**
 * A proxy pair between the plain pods (`pod-stunnel`, `pod-node-relay`): the client end on
 * 127.0.0.1 in the client pod, across the nodes to the server end on the server pod's IP, which
 * dials the backend on 127.0.0.1 in the server pod, one port per backend service. Every service is
 * probed through the pair from the load generator's pod before it counts as started; on any failure
 * both ends are stopped and the error carries their stderr.
 */
export async function startPodProxyPair(
  ctx: PathContext,
  pods: PodPair,
  pair: PodProxyPair,
): Promise<PathInstance> {
  const children: TrackedChild[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(children.map((c) => c.kill()));
  };
  try {
    const server = pair.spawn('server');
    children.push(server);
    const client = pair.spawn('client');
    children.push(client);
    const ready = pair.ready?.bind(pair);
    if (ready !== undefined) await Promise.all(children.map((c) => ready(c)));
    const targets = servicesFrom(
      Object.fromEntries(
        serviceList(pods.backend).map((s) => [
          s.name,
          { host: POD_PROXY_LOOPBACK, port: pair.ports[s.name] },
        ]),
      ),
    );
    for (const s of serviceList(targets)) {
      await probeFrom(ctx, pods.loadgen, s.target, SERVICE_PROBE[s.name], NETNS_READY_MS);
    }
    return {
      targets,
      processes: [
        { pid: client.pid, end: 'client', label: `${pair.label}-client` },
        { pid: server.pid, end: 'server', label: `${pair.label}-server` },
      ],
      loadgen: pods.loadgen,
      close,
    };
  } catch (err) {
    const tails = children.map((c) => `${c.label}: ${c.stderrTail()}`).join('\n');
    await close();
    throw new Error(`${pair.path} did not start: ${errorMessage(err)}\n${tails}`, { cause: err });
  }
}

/** Reads one soft limit of another process from /proc/<pid>/limits. */
export function softLimitOf(pid: number, name: string): number {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(name));
  const v = line?.slice(name.length).trim().split(/\s+/)[0];
  if (v === undefined || v === 'unlimited') return Number.POSITIVE_INFINITY;
  const n = Number(v);
  return Number.isFinite(n) ? n : Number.POSITIVE_INFINITY;
}

/**
 * Waits until `pid` is the node binary itself: the test bed spawns ztunnel as
 * `ip netns exec <node netns> node main.js`, and ip execs node in place, so the pid the
 * harness samples for CPU and RSS is the ztunnel process, not a wrapper.
 */
async function verifyNodePid(pid: number, what: string): Promise<void> {
  const node = realpathSync(NODE_BIN);
  const deadline = Date.now() + ZTUNNEL_EXEC_MS;
  let exe = '';
  while (Date.now() < deadline) {
    try {
      exe = readlinkSync(`/proc/${pid}/exe`);
    } catch (err) {
      throw new Error(`${what} (pid ${pid}) is gone: ${errorMessage(err)}`, { cause: err });
    }
    if (exe === node) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${what} pid ${pid} runs ${exe}, not ${node}: CPU/RSS would measure a wrapper`);
}

const LOG_PROBLEM = /"level":"(warn|error|fatal)"/;

/**
 * Summarises ztunnel log lines at warn or above: counts per (level, message, error), most
 * frequent first, e.g. `37× error connection complete: ECONNRESET`.
 */
export function summarizeLogProblems(lines: readonly string[], top = 3): string[] {
  const counts = new Map<string, number>();
  for (const line of lines) {
    if (!LOG_PROBLEM.test(line)) continue;
    let key = line.slice(0, 160);
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      const err =
        typeof o.error === 'string' ? `: ${o.error}` : typeof o.err === 'string' ? `: ${o.err}` : '';
      const dir = typeof o.direction === 'string' ? ` (${o.direction})` : '';
      key = `${String(o.level)} ${String(o.message)}${dir}${err}`;
    } catch {
      /* not JSON: keep the raw prefix */
    }
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, n]) => `${n}× ${k}`);
}

/**
 * The two enrolled pods of the `ztunnel` path (client on node 0, server on node 1), one ztunnel
 * per node running `entry`, and the server pod's backend. Neither pod has policies, so the
 * connection is allowed; the server ztunnel delivers it with the client pod's IP as source.
 */
export function meshPods(ctx: PathContext, entry: ZtunnelEntry): Promise<MeshPods> {
  return ctx.shared('netns-mesh-pods', async (): Promise<SharedResource<MeshPods>> => {
    const { startMeshBed } = await import('../../test/helpers/mesh-bed.ts');
    const workload = (pod: PodLike, sa: string, node: number): Record<string, unknown> => ({
      name: pod.name,
      namespace: NAMESPACE,
      serviceAccount: sa,
      addresses: [pod.ip],
      tunnelProtocol: 'HBONE',
      node: `node-${node}`,
      workloadName: pod.name,
      canonicalName: pod.name,
    });
    const bed = await startMeshBed({
      nodes: 2,
      pods: [
        { name: 'mesh-client', node: 0, namespace: NAMESPACE, serviceAccount: 'client' },
        { name: 'mesh-server', node: 1, namespace: NAMESPACE, serviceAccount: 'server' },
      ],
      config: (p) => ({
        workloads: [workload(p['mesh-client']!, 'client', 0), workload(p['mesh-server']!, 'server', 1)],
        services: [],
        policies: [],
      }),
      env: { TERMINATION_GRACE_PERIOD_SECONDS: ZTUNNEL_GRACE_S },
      ztunnelMain: entry.script,
    });
    let backend: { kill: () => Promise<void> } | undefined;
    try {
      const client = bed.pods['mesh-client']!;
      const server = bed.pods['mesh-server']!;
      ctx.log(
        `test bed ${bed.tb.prefix} (meshed pods): client ${client.ip} (node 0), server ${server.ip} (node 1)`,
      );
      const ztunnels: ZtunnelProcessInfo[] = [];
      for (const zt of bed.ztunnels) {
        const pid = zt.child.pid;
        if (pid === undefined) throw new Error(`ztunnel on node ${zt.node} has no pid`);
        await verifyNodePid(pid, `ztunnel on node ${zt.node}`);
        ztunnels.push({
          node: zt.node,
          pid,
          openFiles: softLimitOf(pid, 'Max open files'),
          problems: () => zt.logs.filter((l) => LOG_PROBLEM.test(l)),
          problemSummary: () => summarizeLogProblems(zt.logs),
        });
      }
      await tune([client, server]);
      const b = await startBackend(ctx, server);
      backend = b;
      return {
        value: {
          client: podEnd(client),
          server: podEnd(server),
          backend: b.services,
          loadgen: { prefix: inNetns(client.netnsName) },
          ztunnels,
          entry,
        },
        destroy: async () => {
          await b.kill();
          await bed.destroy();
        },
      };
    } catch (err) {
      await backend?.kill();
      await bed.destroy().catch((e: unknown) => ctx.log(`mesh bed teardown: ${errorMessage(e)}`));
      throw err;
    }
  });
}

/** The name prefix of every test bed this process creates (test/helpers/testbed.ts uniquePrefix). */
export function ownTestbedPrefix(pid = process.pid): string {
  return `amb${pid.toString(36).padStart(5, '0')}`;
}

/** Namespaces of our own test beds among `names`, pods first, then nodes, then fabrics. */
export function ownNamespaces(names: readonly string[], pid = process.pid): string[] {
  const re = new RegExp(`^${ownTestbedPrefix(pid)}[0-9a-z]+-`);
  const rank = (n: string): number => (/-p-/.test(n) ? 0 : n.endsWith('-fab') ? 2 : 1);
  return names.filter((n) => re.test(n)).sort((a, b) => rank(a) - rank(b));
}

/**
 * Last resort, synchronous (for an 'exit' handler or a second Ctrl-C): kills every process left
 * in a namespace of this process's test beds, deletes those namespaces and their state dirs.
 * Skips CNI DEL: the veths and bridges live inside the namespaces and go with them.
 */
export function sweepOwnTestbedsSync(): string[] {
  const sh = (args: string[]): string => {
    try {
      return execFileSync('ip', args, {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 5_000,
      });
    } catch {
      return '';
    }
  };
  const names = ownNamespaces(
    sh(['netns', 'list'])
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n !== ''),
  );
  for (const n of names) {
    for (const pid of sh(['netns', 'pids', n]).split('\n').map(Number)) {
      if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  for (const n of names) sh(['netns', 'del', n]);
  const stateRoot = '/run/ambient-testbed'; // TESTBED_STATE_ROOT, not imported: loaded lazily
  try {
    for (const d of readdirSync(stateRoot)) {
      if (d.startsWith(ownTestbedPrefix())) rmSync(join(stateRoot, d), { recursive: true, force: true });
    }
  } catch {
    /* no state root */
  }
  return names;
}
