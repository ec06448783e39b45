// SPDX-License-Identifier: Apache-2.0
// The network-namespace test bed (DESIGN.md §4 "Local mode and the network-namespace test bed"):
// fake nodes and pods made of network namespaces on one machine, used by netns tests, the
// local-mode demo and benchmarks.
//
// Layout (node i counts from 0; everything inside 198.18.0.0/15, nothing in the root netns):
//
//   <prefix>-fab   fabric router: bridge `fab0` 198.18.255.254/24; veth `n<i>` per node;
//                  routes 198.18.<i>.0/24 via 198.18.255.<i+1>. No default route, so a packet
//                  nothing captures dies here.
//   <prefix>-n<i>  node i: `eth0` 198.18.255.<i+1>/24 (peer of the fabric's n<i>), routes to the
//                  other nodes' pod CIDRs via the fabric router; bridge `cni0` 198.18.<i>.1 made
//                  by the CNI bridge plugin on the first pod. ztunnel/agent run here later.
//   <prefix>-p-<name>  a pod on node i, attached by executing the real CNI reference plugins
//                  (bridge + host-local + loopback) through a conflist, as a runtime would.
//
// Veth pairs are created directly inside the fabric netns with the peer placed in the node
// netns, so no interface ever exists in the root netns, not even briefly.
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MeshError, errorMessage } from '../shared/errors.ts';
import { cniAdd, cniDel, findCniBinDir, CNI_VERSION } from './cni-runtime.ts';
import type { CniConflist, CniPluginConf, CniResult } from './cni-runtime.ts';
import { isAlive, killAndWait, run, runOk, spawnIn } from './exec.ts';
import type { ExecOptions, ExecResult } from './exec.ts';

export type { ExecOptions, ExecResult } from './exec.ts';

/** Root of per-testbed state (host-local IPAM data); one subdirectory per prefix. */
export const TESTBED_STATE_ROOT = '/run/ambient-testbed';
export const FABRIC_SUBNET_PREFIX = '198.18.255';
export const FABRIC_ROUTER_IP = '198.18.255.254';
/** Max nodes: node i uses 198.18.i.0/24 and fabric address 198.18.255.(i+1). */
export const MAX_NODES = 254;

const PREFIX_RE = /^[a-z][a-z0-9]{2,11}$/;
const POD_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/;

/** Something that runs commands inside one network namespace. */
export interface NetnsHandle {
  netnsName: string;
  netnsPath: string;
  /** Run to completion inside the netns (bounded, default 20 s). */
  exec(cmd: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Start a long-running process inside the netns; the test bed kills it on destroy(). */
  spawn(cmd: string, args: readonly string[], opts?: SpawnOptions): ChildProcess;
}

export interface TestbedNode extends NetnsHandle {
  index: number;
  /** 198.18.255.(index+1): this node's address on the fabric. */
  fabricIp: string;
  /** 198.18.index.0/24. */
  podCidr: string;
  /** 198.18.index.1: cni0's address, the pods' default gateway. */
  gateway: string;
  /** The conflist this node's pods get (extra plugins included); with `nodeCni`, as written at creation. */
  conflist: CniConflist;
  /** With `nodeCni`: the node's CNI config and plugin directories. */
  cni?: NodeCniDirs;
}

export interface Pod extends NetnsHandle {
  name: string;
  namespace: string;
  node: TestbedNode;
  /** The pod's IPv4 address (from host-local). */
  ip: string;
  containerId: string;
  /** The cached result of CNI ADD (used for DEL). */
  cniResult: CniResult;
  /** K8S_POD_UID given to ADD and DEL, when the pod has one. */
  uid?: string | undefined;
}

/** Where a node keeps its CNI configuration and plugin binaries (like /etc/cni/net.d, /opt/cni/bin). */
export interface NodeCniDirs {
  confDir: string;
  binDir: string;
}

export interface TestbedOptions {
  /** Unique name prefix (lower-case alphanumerics, 3–12 chars). Default amb<pid><counter>. */
  prefix?: string;
  nodes: number;
  /**
   * Plugins chained after bridge + loopback in every node's conflist (our CNI plugin, later).
   * Called per node so the config can name the node.
   */
  extraPlugins?: (node: { index: number; netnsName: string }) => CniPluginConf[];
  /** Directories searched for plugin binaries before the reference plugin directory. */
  extraCniPath?: string[];
  /**
   * Give each node real CNI directories, as a kubelet host has: the node's conflist is written to
   * `confDir` at creation and read back from there (the lexicographically first `*.conflist`) on
   * every pod ADD and DEL, and `binDir` is searched first for plugins. Whatever an installer
   * changes there (our node agent chaining its plugin) applies to the next pod, as on a real node.
   */
  nodeCni?: (node: { index: number; netnsName: string }) => NodeCniDirs;
}

export interface AddPodOptions {
  node: number;
  name: string;
  namespace?: string;
  /** Extra CNI_ARGS. */
  cniArgs?: Record<string, string>;
  /** The Kubernetes pod UID, passed as K8S_POD_UID like containerd does. */
  uid?: string;
}

export interface Testbed {
  prefix: string;
  /** State directory (host-local IPAM data). */
  stateDir: string;
  cniBinDir: string;
  fabric: NetnsHandle & { ip: string };
  nodes: TestbedNode[];
  pods: Pod[];
  addPod(opts: AddPodOptions): Promise<Pod>;
  /** CNI DEL + delete the pod netns. */
  removePod(name: string): Promise<void>;
  /** Every namespace name this test bed created (and has not yet deleted). */
  namespaces(): string[];
  /** Tear everything down (processes, CNI DEL, namespaces, state dir). Idempotent. */
  destroy(): Promise<void>;
}

let counter = 0;

/** A fresh prefix, unique across concurrently running test processes. */
export function uniquePrefix(): string {
  // Fixed-width pid (base 36, max pid 4194304 fits in 5 chars) so prefixes never collide.
  const pid = process.pid.toString(36).padStart(5, '0');
  return `amb${pid}${(counter++).toString(36)}`;
}

async function listNetns(): Promise<string[]> {
  const out = await runOk(undefined, 'ip', ['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n !== '');
}

/** Kill every process still inside a netns of ours (they were all started by our tests). */
async function killNetnsPids(name: string): Promise<void> {
  const r = await run(undefined, 'ip', ['netns', 'pids', name]);
  if (r.code !== 0) return;
  for (const pid of r.stdout
    .split('\n')
    .map(Number)
    .filter((p) => Number.isInteger(p) && p > 1)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 3_000;
  for (const pid of r.stdout
    .split('\n')
    .map(Number)
    .filter((p) => Number.isInteger(p) && p > 1)) {
    while (isAlive(pid) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
  }
}

async function deleteNetns(name: string): Promise<string | undefined> {
  await killNetnsPids(name);
  const r = await run(undefined, 'ip', ['netns', 'del', name]);
  if (r.code !== 0 && !/No such file|Cannot remove namespace file/.test(r.stderr)) {
    return `ip netns del ${name}: ${r.stderr.trim()}`;
  }
  return undefined;
}

/**
 * Remove leftovers of a crashed run: every netns named `<prefix>-*` (after killing processes
 * inside it) and the state directory. Returns the namespaces removed.
 */
export async function cleanupStale(prefix: string): Promise<string[]> {
  if (!PREFIX_RE.test(prefix)) {
    throw new MeshError(
      'TESTBED_ERR_PREFIX',
      `refusing to clean up with prefix "${prefix}": expected ${String(PREFIX_RE)}`,
    );
  }
  const stale = (await listNetns()).filter((n) => n.startsWith(`${prefix}-`));
  // Pods first, then nodes, then the fabric: the same order as destroy().
  const rank = (n: string): number => (n.startsWith(`${prefix}-p-`) ? 0 : n === `${prefix}-fab` ? 2 : 1);
  stale.sort((a, b) => rank(a) - rank(b));
  const failures: string[] = [];
  for (const n of stale) {
    const f = await deleteNetns(n);
    if (f !== undefined) failures.push(f);
  }
  rmSync(join(TESTBED_STATE_ROOT, prefix), { recursive: true, force: true });
  if (failures.length > 0) throw new MeshError('TESTBED_ERR_CLEANUP', failures.join('; '));
  return stale;
}

/**
 * Remove every test bed whose creating process has exited without cleaning up (crash, tap
 * timeout): namespaces named `amb<pid>…-*` by {@link uniquePrefix} whose pid is not alive, and
 * their state directories. Not called automatically: processes in another pid namespace would
 * look dead. `only` restricts the sweep to some prefixes. Returns the namespaces removed.
 */
export async function cleanupOrphanedTestbeds(
  opts: { only?: (prefix: string) => boolean } = {},
): Promise<string[]> {
  const orphan = (prefix: string, pid36: string): boolean => {
    const pid = Number.parseInt(pid36, 36);
    return PREFIX_RE.test(prefix) && (opts.only?.(prefix) ?? true) && pid !== process.pid && !isAlive(pid);
  };
  const prefixes = new Set<string>();
  for (const n of await listNetns()) {
    const m = /^(amb([0-9a-z]{5})[0-9a-z]+)-/.exec(n);
    if (m?.[1] !== undefined && m[2] !== undefined && orphan(m[1], m[2])) prefixes.add(m[1]);
  }
  let dirs: string[] = [];
  try {
    dirs = readdirSync(TESTBED_STATE_ROOT);
  } catch {
    dirs = [];
  }
  for (const d of dirs) {
    const m = /^amb([0-9a-z]{5})[0-9a-z]+$/.exec(d);
    if (m?.[1] !== undefined && orphan(d, m[1])) prefixes.add(d);
  }
  const removed: string[] = [];
  for (const p of prefixes) removed.push(...(await cleanupStale(p)));
  return removed;
}

class Handle implements NetnsHandle {
  readonly netnsName: string;
  readonly netnsPath: string;
  readonly #children: Set<ChildProcess>;

  constructor(netnsName: string, children: Set<ChildProcess>) {
    this.netnsName = netnsName;
    this.netnsPath = `/run/netns/${netnsName}`;
    this.#children = children;
  }

  exec(cmd: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
    return run(this.netnsName, cmd, args, opts);
  }

  spawn(cmd: string, args: readonly string[], opts?: SpawnOptions): ChildProcess {
    const child = spawnIn(this.netnsName, cmd, args, opts);
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    // An 'error' (e.g. spawn failure) must never crash the test process.
    child.on('error', () => undefined);
    return child;
  }
}

/** The conflist a runtime would use now: the node's file when it has CNI dirs, else the fixed one. */
function currentConflist(node: TestbedNode): CniConflist {
  if (node.cni === undefined) return node.conflist;
  const files = readdirSync(node.cni.confDir)
    .filter((f) => f.endsWith('.conflist'))
    .sort();
  const first = files[0];
  if (first === undefined) {
    throw new MeshError(
      'TESTBED_ERR_CNI',
      `no *.conflist in ${node.cni.confDir}: the node has no network config`,
    );
  }
  const path = join(node.cni.confDir, first);
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as CniConflist;
  } catch (e) {
    throw new MeshError('TESTBED_ERR_CNI', `${path} is not a readable conflist: ${errorMessage(e)}`, {
      cause: e,
    });
  }
}

function nodeConflist(
  prefix: string,
  index: number,
  netnsName: string,
  stateDir: string,
  extra: TestbedOptions['extraPlugins'],
): CniConflist {
  return {
    cniVersion: CNI_VERSION,
    name: `${prefix}-net${index}`,
    plugins: [
      {
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        ipMasq: false,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: `198.18.${index}.0/24` }]],
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: join(stateDir, 'ipam'),
        },
      },
      { type: 'loopback' },
      ...(extra ? extra({ index, netnsName }) : []),
    ],
  };
}

/**
 * Build a fabric and `nodes` nodes. On any failure, everything created so far is removed before
 * the error is thrown.
 */
export async function createTestbed(opts: TestbedOptions): Promise<Testbed> {
  if (process.getuid?.() !== 0) {
    throw new MeshError(
      'TESTBED_ERR_NOT_ROOT',
      'the netns test bed needs root (network namespaces, veths, bridges)',
    );
  }
  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > MAX_NODES) {
    throw new MeshError(
      'TESTBED_ERR_NODES',
      `nodes must be an integer in 1..${MAX_NODES}, got ${String(opts.nodes)}`,
    );
  }
  const prefix = opts.prefix ?? uniquePrefix();
  if (!PREFIX_RE.test(prefix)) {
    throw new MeshError('TESTBED_ERR_PREFIX', `testbed prefix "${prefix}" must match ${String(PREFIX_RE)}`);
  }
  const cniBinDir = findCniBinDir();
  // A previous process with the same pid may have crashed with this prefix.
  await cleanupStale(prefix);

  const stateDir = join(TESTBED_STATE_ROOT, prefix);
  mkdirSync(join(stateDir, 'ipam'), { recursive: true });
  const children = new Set<ChildProcess>();
  const created: string[] = [];
  const nodes: TestbedNode[] = [];
  const pods: Pod[] = [];
  let destroyed = false;
  const cniPath = [...(opts.extraCniPath ?? []), cniBinDir];

  const addNetns = async (name: string): Promise<void> => {
    await runOk(undefined, 'ip', ['netns', 'add', name]);
    created.push(name);
    await runOk(undefined, 'ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  };
  const sysctl = (ns: string, kv: string[]): Promise<string> => runOk(ns, 'sysctl', ['-q', '-w', ...kv]);

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    const failures: string[] = [];
    await Promise.all([...children].map((c) => killAndWait(c)));
    for (const pod of [...pods].reverse()) {
      try {
        await cniDel(currentConflist(pod.node), podRuntime(pod), pod.cniResult);
      } catch (e) {
        failures.push(e instanceof Error ? e.message : String(e));
      }
    }
    pods.length = 0;
    // Pods, then nodes, then the fabric (reverse creation order).
    for (const name of [...created].reverse()) {
      const f = await deleteNetns(name);
      if (f !== undefined) failures.push(f);
    }
    created.length = 0;
    rmSync(stateDir, { recursive: true, force: true });
    const left = (await listNetns()).filter((n) => n.startsWith(`${prefix}-`));
    if (left.length > 0) failures.push(`namespaces still present after destroy: ${left.join(', ')}`);
    if (failures.length > 0)
      throw new MeshError('TESTBED_ERR_DESTROY', `test bed ${prefix} teardown: ${failures.join('; ')}`);
  };

  const podRuntime = (pod: {
    containerId: string;
    netnsPath: string;
    name: string;
    namespace: string;
    uid?: string | undefined;
    node: TestbedNode;
  }) => ({
    containerId: pod.containerId,
    netnsPath: pod.netnsPath,
    ifName: 'eth0',
    args: {
      K8S_POD_NAMESPACE: pod.namespace,
      K8S_POD_NAME: pod.name,
      K8S_POD_INFRA_CONTAINER_ID: pod.containerId,
      ...(pod.uid !== undefined && { K8S_POD_UID: pod.uid }),
    },
    cniPath: pod.node.cni ? [pod.node.cni.binDir, ...cniPath] : cniPath,
    runInNetns: pod.node.netnsName,
  });

  try {
    const fabName = `${prefix}-fab`;
    await addNetns(fabName);
    await runOk(fabName, 'ip', ['link', 'add', 'fab0', 'type', 'bridge']);
    await runOk(fabName, 'ip', ['addr', 'add', `${FABRIC_ROUTER_IP}/24`, 'dev', 'fab0']);
    await runOk(fabName, 'ip', ['link', 'set', 'fab0', 'up']);
    // The fabric routes between nodes over the one bridge; redirects would teach nodes to skip it.
    await sysctl(fabName, [
      'net.ipv4.ip_forward=1',
      'net.ipv4.conf.all.send_redirects=0',
      'net.ipv4.conf.fab0.send_redirects=0',
    ]);

    for (let i = 0; i < opts.nodes; i++) {
      const name = `${prefix}-n${i}`;
      await addNetns(name);
      const fabricIp = `${FABRIC_SUBNET_PREFIX}.${i + 1}`;
      // Created inside the fabric netns, peer moved straight into the node netns.
      await runOk(fabName, 'ip', [
        'link',
        'add',
        `n${i}`,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'netns',
        name,
      ]);
      await runOk(fabName, 'ip', ['link', 'set', `n${i}`, 'master', 'fab0', 'up']);
      await runOk(name, 'ip', ['addr', 'add', `${fabricIp}/24`, 'dev', 'eth0']);
      await runOk(name, 'ip', ['link', 'set', 'eth0', 'up']);
      await sysctl(name, [
        'net.ipv4.ip_forward=1',
        'net.ipv4.conf.all.accept_redirects=0',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
      ]);
      await runOk(fabName, 'ip', ['route', 'add', `198.18.${i}.0/24`, 'via', fabricIp, 'dev', 'fab0']);
      nodes.push(
        Object.assign(new Handle(name, children), {
          index: i,
          fabricIp,
          podCidr: `198.18.${i}.0/24`,
          gateway: `198.18.${i}.1`,
          conflist: nodeConflist(prefix, i, name, stateDir, opts.extraPlugins),
          ...(opts.nodeCni && { cni: opts.nodeCni({ index: i, netnsName: name }) }),
        }),
      );
      const node = nodes[nodes.length - 1];
      if (node?.cni) {
        mkdirSync(node.cni.confDir, { recursive: true });
        mkdirSync(node.cni.binDir, { recursive: true });
        writeFileSync(
          join(node.cni.confDir, `10-${prefix}.conflist`),
          `${JSON.stringify(node.conflist, null, 2)}\n`,
        );
      }
    }
    for (const node of nodes) {
      for (const other of nodes) {
        if (other === node) continue;
        await runOk(node.netnsName, 'ip', [
          'route',
          'add',
          other.podCidr,
          'via',
          FABRIC_ROUTER_IP,
          'dev',
          'eth0',
        ]);
      }
    }
  } catch (e) {
    await destroy().catch(() => undefined);
    throw e;
  }

  const fabric = Object.assign(new Handle(`${prefix}-fab`, children), { ip: FABRIC_ROUTER_IP });

  const addPod = async (p: AddPodOptions): Promise<Pod> => {
    if (destroyed) throw new MeshError('TESTBED_ERR_DESTROYED', `test bed ${prefix} was destroyed`);
    const node = nodes[p.node];
    if (!node)
      throw new MeshError(
        'TESTBED_ERR_NODE',
        `no node ${String(p.node)} in test bed ${prefix} (has ${nodes.length})`,
      );
    if (!POD_NAME_RE.test(p.name)) {
      throw new MeshError(
        'TESTBED_ERR_POD_NAME',
        `pod name "${p.name}" must be a DNS label of at most 40 characters`,
      );
    }
    if (pods.some((x) => x.name === p.name))
      throw new MeshError('TESTBED_ERR_POD_NAME', `pod "${p.name}" already exists`);
    const netnsName = `${prefix}-p-${p.name}`;
    await addNetns(netnsName);
    const base = {
      name: p.name,
      namespace: p.namespace ?? 'default',
      node,
      containerId: `${prefix}-${p.name}`,
      netnsPath: `/run/netns/${netnsName}`,
      uid: p.uid,
    };
    let result: CniResult;
    try {
      const rt = podRuntime(base);
      result = await cniAdd(currentConflist(node), { ...rt, args: { ...rt.args, ...(p.cniArgs ?? {}) } });
    } catch (e) {
      const f = await deleteNetns(netnsName);
      created.splice(created.indexOf(netnsName), 1);
      if (f !== undefined)
        throw new MeshError('TESTBED_ERR_CNI', `${String(e)}; cleanup also failed: ${f}`, { cause: e });
      throw e;
    }
    const addr = result.ips?.find((x) => x.address.includes('.'))?.address;
    if (addr === undefined)
      throw new MeshError('TESTBED_ERR_CNI', `CNI ADD for pod ${p.name} returned no IPv4 address`);
    const pod: Pod = Object.assign(new Handle(netnsName, children), base, {
      ip: addr.split('/')[0] ?? '',
      cniResult: result,
    });
    pods.push(pod);
    return pod;
  };

  const removePod = async (name: string): Promise<void> => {
    const i = pods.findIndex((p) => p.name === name);
    const pod = pods[i];
    if (!pod) return;
    pods.splice(i, 1);
    let cniFailure: unknown;
    try {
      await cniDel(currentConflist(pod.node), podRuntime(pod), pod.cniResult);
    } catch (e) {
      cniFailure = e;
    }
    const f = await deleteNetns(pod.netnsName);
    const at = created.indexOf(pod.netnsName);
    if (at !== -1) created.splice(at, 1);
    if (cniFailure !== undefined || f !== undefined) {
      const parts = [cniFailure === undefined ? '' : errorMessage(cniFailure), f ?? ''].filter(
        (s) => s !== '',
      );
      throw new MeshError('TESTBED_ERR_POD_DEL', `removing pod ${name}: ${parts.join('; ')}`);
    }
  };

  return {
    prefix,
    stateDir,
    cniBinDir,
    fabric,
    nodes,
    pods,
    addPod,
    removePod,
    namespaces: () => [...created],
    destroy,
  };
}
