// SPDX-License-Identifier: Apache-2.0
// Local mode (DESIGN.md §4): a whole mesh on one Linux machine, built from a directory of
// Kubernetes YAML. Nodes and pods are network namespaces wired by the real CNI reference plugins;
// every pod goes through the node's real CNI chain, our plugin included, which the node agent
// installed into that node's conflist; the controller reads the same YAML through its file
// source and serves WDS and certificates to one ztunnel per node.
//
// What plays the API server's part: the user's directory (desired objects) overlaid by the
// runtime's directory of live Pods (`<state>/live/pods/<ns>.<name>.yaml`: the user's Pod plus
// metadata.uid, spec.nodeName, status.podIP(s) and the agent's redirection annotation). The
// controller and every agent read both, later overriding earlier by key. Pods are therefore
// created from the user's files once, at `up`; label a running pod by editing its live file
// (`mesh label`), policies, services and namespaces by editing the user's files.
//
// Layout of the state directory (default /run/ambient-mesh/<name>):
//   cluster.json           what `down` needs: prefix, processes, pods
//   ca/                    the controller's CA (trust-bundle.pem is what ztunnels verify it with;
//                          ca-crl.pem, from `controller ca-revoke`, is every ztunnel's CRL_PATH)
//   node-tokens.yaml       node → token, read by the controller; nodes/<node>/token for each ztunnel
//   live/pods/             live Pod objects
//   nodes/<node>/net.d     the node's CNI config (bridge + loopback, then ours once the agent installs it)
//   nodes/<node>/bin       plugins the agent installed (ours); the reference plugins come from Debian
//   nodes/<node>/run       the agent's sockets (pluginevent.sock, ztunnel.sock) and pod registry
//   logs/                  one log per process
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { V1Pod, V1Service } from '@kubernetes/client-node';
import { writeNodeTokenFile } from '../controller/auth/node-token.ts';
import { runCaRevoke } from '../controller/ca/revoke-cli.ts';
import { CA_FILES } from '../shared/identity/ca.ts';
import { MeshError, errorMessage } from '../shared/errors.ts';
import { manifestKey, readManifests, type ManifestObject } from '../shared/kube/manifests.ts';
import { updateObjectFile, writeObjectFile } from '../shared/kube/object-file.ts';
import { RESOURCE_TYPES } from '../shared/kube/resources.ts';
import { livePodFile, patchLivePod } from '../shared/kube/live-objects.ts';
import { isAlive, run, spawnIn } from './exec.ts';
import { httpGetInNetns } from './netns-net.ts';
import { FABRIC_ROUTER_IP, cleanupStale, createTestbed, type Pod, type Testbed } from './testbed.ts';

const ROOT = resolve(import.meta.dirname, '../..');
export const NODE_BIN = join(ROOT, 'node_modules/.bin/node');
export const CNI_PLUGIN_BINARY = join(ROOT, 'build/cni/ambient-cni');
export const DEFAULT_STATE_ROOT = '/run/ambient-mesh';
const CONTROLLER_PORT = 15012;
/** Service VIPs in local mode (DESIGN.md §4). */
const VIP_RANGE = { prefix: '198.19.', text: '198.19.0.0/16' };
const NAME_RE = /^[a-z][a-z0-9]{0,7}$/;

export class LocalModeError extends MeshError {}

function fail(message: string): never {
  throw new LocalModeError('LOCAL_ERR', message);
}

export type ProcessRole = 'controller' | 'agent' | 'ztunnel' | 'pod';

export interface ProcessRecord {
  readonly role: ProcessRole;
  /** Node name for agent/ztunnel, `ns/name` for pods. */
  readonly owner: string;
  readonly pid: number;
  readonly netns: string;
  readonly log: string;
}

export interface LocalPod {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly node: string;
  readonly ip: string;
  readonly netnsName: string;
  readonly netnsPath: string;
}

export interface LocalNode {
  readonly name: string;
  readonly index: number;
  readonly netnsName: string;
  readonly netnsPath: string;
  readonly fabricIp: string;
  readonly runDir: string;
  readonly confDir: string;
  readonly binDir: string;
}

/** Everything `down` (possibly another process) needs, persisted as cluster.json. */
export interface ClusterRecord {
  readonly name: string;
  readonly prefix: string;
  readonly stateDir: string;
  readonly manifests: string;
  readonly controllerAddress: string;
  readonly nodes: LocalNode[];
  pods: LocalPod[];
  processes: ProcessRecord[];
}

export interface UpOptions {
  /** The user's manifest directory. */
  readonly manifests: string;
  readonly nodes?: number;
  /** Cluster name: lower-case letters and digits, ≤ 8 (default `local`). */
  readonly name?: string;
  readonly stateRoot?: string;
  readonly backend?: 'iptables' | 'nftables';
  /** Progress lines. */
  readonly log?: (line: string) => void;
  readonly logLevel?: string;
}

export interface LocalCluster {
  readonly record: ClusterRecord;
  readonly testbed: Testbed;
  pod(ref: string): LocalPod;
  node(name: string): LocalNode;
  /** Stops a node's ztunnel or agent (SIGTERM, or SIGKILL with `kill`) and waits for it to exit. */
  stop(role: 'ztunnel' | 'agent', node: string, how?: 'term' | 'kill'): Promise<void>;
  /** Starts a node's ztunnel or agent again. Resolves when it is ready. */
  start(role: 'ztunnel' | 'agent', node: string): Promise<void>;
  stopController(): Promise<void>;
  startController(): Promise<void>;
  /** Merges labels into a running pod's live object (null removes a label). */
  labelPod(ref: string, labels: Readonly<Record<string, string | null>>): Promise<void>;
  /**
   * Runs one more pod on node index `node` (its uid from metadata.uid, else a new one); `ip` asks
   * the node's IPAM for that address (host-local's CNI_ARGS IP), e.g. to reuse a deleted pod's.
   */
  createPod(pod: V1Pod, node: number, opts?: { ip?: string }): Promise<LocalPod>;
  /** Deletes a pod: its processes, its live object, its sandbox (CNI DEL). */
  deletePod(ref: string): Promise<void>;
  /** Everything down: processes, namespaces, state directory. */
  down(): Promise<void>;
}

function livePodPath(stateDir: string, ns: string, name: string): string {
  return livePodFile(join(stateDir, 'live'), ns, name);
}

/** Validates what local mode can run; the messages say what to change in the YAML. */
function planPods(
  objects: ReadonlyMap<string, ManifestObject>,
  nodes: number,
): { pod: V1Pod; node: number }[] {
  const out: { pod: V1Pod; node: number }[] = [];
  let next = 0;
  for (const o of objects.values()) {
    if (o.kind === 'Service') {
      const svc = o as V1Service;
      const ip = svc.spec?.clusterIP;
      if (ip === undefined || !ip.startsWith(VIP_RANGE.prefix)) {
        fail(
          `Service ${o.metadata.namespace ?? 'default'}/${o.metadata.name}: local mode needs spec.clusterIP in ${VIP_RANGE.text} (got ${String(ip)})`,
        );
      }
    }
    if (o.kind !== 'Pod') continue;
    const pod = o as V1Pod;
    const ref = `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
    const containers = pod.spec?.containers ?? [];
    if (containers.length === 0 || containers.some((c) => (c.command ?? []).length === 0)) {
      fail(`Pod ${ref}: every container needs a command (local mode runs it in the pod's network namespace)`);
    }
    if (`${pod.metadata?.namespace ?? 'default'}-${pod.metadata?.name ?? ''}`.length > 40) {
      fail(`Pod ${ref}: namespace-name must be at most 40 characters in local mode`);
    }
    let node: number;
    const wanted = pod.spec?.nodeName;
    if (wanted !== undefined && wanted !== '') {
      const m = /^node-(\d+)$/.exec(wanted);
      if (!m || Number(m[1]) >= nodes) {
        fail(`Pod ${ref}: spec.nodeName ${wanted} is not one of node-0..node-${nodes - 1}`);
      }
      node = Number(m[1]);
    } else node = next++ % nodes;
    out.push({ pod, node });
  }
  return out;
}

/** Starts a detached process inside a netns with its output in a log file. */
function daemon(
  netns: string,
  cmd: string,
  args: readonly string[],
  env: Record<string, string>,
  logFile: string,
): number {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawnIn(netns, cmd, args, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
    });
    child.on('error', () => undefined);
    child.unref();
    if (child.pid === undefined) fail(`could not start ${cmd} in ${netns}`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

function logTail(file: string, lines = 15): string {
  if (!existsSync(file)) return '';
  return `; last log lines (${file}):\n${readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')}`;
}

async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  logFile?: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) {
      fail(
        `timed out after ${timeoutMs} ms waiting for ${what}${logFile === undefined ? '' : logTail(logFile)}`,
      );
    }
    await delay(50);
  }
}

async function terminate(pid: number, how: 'term' | 'kill', timeoutMs = 8000): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, how === 'kill' ? 'SIGKILL' : 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid) && Date.now() < deadline) await delay(20);
  if (!isAlive(pid)) return;
  process.kill(pid, 'SIGKILL');
  const hard = Date.now() + 5000;
  while (isAlive(pid) && Date.now() < hard) await delay(20);
  if (isAlive(pid)) fail(`process ${pid} did not exit after SIGKILL (stuck in the kernel?)`);
}

/** Brings a local cluster up from `opts.manifests`. On failure everything created is removed. */
export async function upLocalCluster(opts: UpOptions): Promise<LocalCluster> {
  if (process.getuid?.() !== 0) fail('local mode needs root (network namespaces, iptables); run it as root');
  const name = opts.name ?? 'local';
  if (!NAME_RE.test(name))
    fail(`cluster name ${name} must be 1–8 lower-case letters and digits, starting with a letter`);
  const nodesCount = opts.nodes ?? 2;
  if (!Number.isInteger(nodesCount) || nodesCount < 1 || nodesCount > 16) fail('nodes must be 1..16');
  const say = opts.log ?? (() => undefined);
  const manifests = resolve(opts.manifests);
  if (!existsSync(CNI_PLUGIN_BINARY))
    fail(`the CNI plugin is not built: run npm run build:cni (expected ${CNI_PLUGIN_BINARY})`);
  const stateDir = join(opts.stateRoot ?? DEFAULT_STATE_ROOT, name);
  if (existsSync(join(stateDir, 'cluster.json'))) {
    fail(
      `a local cluster "${name}" is already up (${stateDir}); run \`./mesh down${name === 'local' ? '' : ` ${name}`}\` first`,
    );
  }
  const set = await readManifests([manifests], Object.values(RESOURCE_TYPES));
  const plan = planPods(set.objects, nodesCount);
  const prefix = `lm${name}`;
  await cleanupStale(prefix);
  rmSync(stateDir, { recursive: true, force: true });
  for (const d of ['ca', 'live/pods', 'logs']) mkdirSync(join(stateDir, d), { recursive: true, mode: 0o700 });

  const nodes: LocalNode[] = [];
  for (let i = 0; i < nodesCount; i++) {
    const nd = join(stateDir, 'nodes', `node-${i}`);
    nodes.push({
      name: `node-${i}`,
      index: i,
      netnsName: `${prefix}-n${i}`,
      netnsPath: `/run/netns/${prefix}-n${i}`,
      fabricIp: `198.18.255.${i + 1}`,
      runDir: join(nd, 'run'),
      confDir: join(nd, 'net.d'),
      binDir: join(nd, 'bin'),
    });
  }
  const record: ClusterRecord = {
    name,
    prefix,
    stateDir,
    manifests,
    controllerAddress: `${FABRIC_ROUTER_IP}:${CONTROLLER_PORT}`,
    nodes,
    pods: [],
    processes: [],
  };
  const save = (): void =>
    writeFileSync(join(stateDir, 'cluster.json'), `${JSON.stringify(record, null, 2)}\n`);
  say(`creating ${nodesCount} nodes in network namespaces (prefix ${prefix})`);
  const testbed = await createTestbed({
    prefix,
    nodes: nodesCount,
    nodeCni: ({ index }) => ({ confDir: nodes[index]?.confDir ?? '', binDir: nodes[index]?.binDir ?? '' }),
  });
  save();
  const logLevel = opts.logLevel ?? 'info';
  const tokens = writeNodeTokenFile(
    join(stateDir, 'node-tokens.yaml'),
    nodes.map((n) => n.name),
  );
  for (const n of nodes) {
    mkdirSync(join(stateDir, 'nodes', n.name), { recursive: true });
    writeFileSync(join(stateDir, 'nodes', n.name, 'token'), `${tokens[n.name] ?? ''}\n`, { mode: 0o600 });
  }

  const logOf = (file: string): string => join(stateDir, 'logs', file);
  const track = (p: ProcessRecord): void => {
    record.processes = [...record.processes.filter((x) => !(x.role === p.role && x.owner === p.owner)), p];
    save();
  };

  const startController = async (): Promise<void> => {
    const log = logOf('controller.log');
    // split().length counts lines + 1, and daemon() creates the file: 1 means none yet. (0 here
    // made the wait return at once, before the controller had even created its CA.)
    const beforeStart = existsSync(log)
      ? readFileSync(log, 'utf8').split('serving WDS and the CA').length
      : 1;
    const pid = daemon(
      testbed.fabric.netnsName,
      NODE_BIN,
      [
        join(ROOT, 'src/controller/main.ts'),
        '--manifests',
        manifests,
        '--manifests',
        join(stateDir, 'live'),
        '--listen',
        record.controllerAddress,
        '--ca-dir',
        join(stateDir, 'ca'),
        '--node-tokens',
        join(stateDir, 'node-tokens.yaml'),
        '--log-level',
        logLevel,
      ],
      {},
      log,
    );
    track({ role: 'controller', owner: 'controller', pid, netns: testbed.fabric.netnsName, log });
    // The log is appended to across restarts: wait for one more "serving" line than before.
    const served = (): number => readFileSync(log, 'utf8').split('serving WDS and the CA').length;
    await waitFor('the controller to serve', () => !isAlive(pid) || served() > beforeStart, 60_000, log);
    if (!isAlive(pid)) fail(`the controller exited${logTail(log)}`);
  };

  const startAgent = async (n: LocalNode): Promise<void> => {
    const log = logOf(`agent-${n.name}.log`);
    const mark = existsSync(log) ? readFileSync(log, 'utf8').split('node agent ready').length : 1;
    const pid = daemon(
      n.netnsName,
      NODE_BIN,
      [join(ROOT, 'cni-plugin/src/agent/main.ts')],
      {
        NODE_NAME: n.name,
        AGENT_RUN_DIR: n.runDir,
        ZTUNNEL_UDS: join(n.runDir, 'ztunnel.sock'),
        LOCAL_MANIFEST_DIRS: `${manifests}:${join(stateDir, 'live')}`,
        LOCAL_LIVE_DIR: join(stateDir, 'live'),
        CNI_BIN_DIR: n.binDir,
        CNI_CONF_DIR: n.confDir,
        CNI_PLUGIN_BINARY,
        REDIRECT_BACKEND: opts.backend ?? 'iptables',
        LOG_LEVEL: logLevel,
      },
      log,
    );
    track({ role: 'agent', owner: n.name, pid, netns: n.netnsName, log });

    await waitFor(
      `the node agent on ${n.name}`,
      () => !isAlive(pid) || readFileSync(log, 'utf8').split('node agent ready').length > mark,
      60_000,
      log,
    );
    if (!isAlive(pid)) fail(`the node agent on ${n.name} exited${logTail(log)}`);
  };

  const startZtunnel = async (n: LocalNode): Promise<void> => {
    const log = logOf(`ztunnel-${n.name}.log`);
    // The CA's revocation lists, as `controller ca-revoke` keeps them: every ztunnel enforces
    // them (CRL_PATH), so the file must exist before the first one starts.
    const crlPath = join(stateDir, 'ca', CA_FILES.crl);
    if (!existsSync(crlPath)) {
      let err = '';
      const status = await runCaRevoke(['--ca-dir', join(stateDir, 'ca')], {
        out: () => undefined,
        err: (s) => (err += s),
        env: {},
      });
      if (status !== 0) fail(`cannot write the CA's revocation lists: ${err.trim()}`);
    }
    const pid = daemon(
      n.netnsName,
      NODE_BIN,
      ['--max-semi-space-size=1', join(ROOT, 'ztunnel/src/main.ts')],
      {
        NODE_NAME: n.name,
        XDS_ADDRESS: record.controllerAddress,
        // Every root the CA trusts, so the control-plane channel keeps working through a rotation.
        XDS_ROOT_CA: join(stateDir, 'ca', CA_FILES.trustBundle),
        CRL_PATH: crlPath,
        AUTH_TOKEN: join(stateDir, 'nodes', n.name, 'token'),
        INSTANCE_IP: n.fabricIp,
        POD_NAME: `ztunnel-${n.name}`,
        POD_NAMESPACE: 'istio-system',
        INPOD_UDS: join(n.runDir, 'ztunnel.sock'),
        LOG_LEVEL: logLevel,
      },
      log,
    );
    track({ role: 'ztunnel', owner: n.name, pid, netns: n.netnsName, log });
    await waitFor(
      `ztunnel on ${n.name} to be ready`,
      async () => {
        if (!isAlive(pid)) return true;
        try {
          return (
            (await httpGetInNetns(n.netnsPath, 15021, '/healthz/ready', { timeoutMs: 1000 })).status === 200
          );
        } catch {
          return false;
        }
      },
      60_000,
      log,
    );
    if (!isAlive(pid)) fail(`ztunnel on ${n.name} exited${logTail(log)}`);
  };

  const nodeByName = (nodeName: string): LocalNode =>
    nodes.find((n) => n.name === nodeName) ?? fail(`no node ${nodeName}`);
  const processOf = (role: ProcessRole, owner: string): ProcessRecord | undefined =>
    record.processes.find((p) => p.role === role && p.owner === owner);

  /**
   * Kubelet's part for one pod: the live object (scheduled), the sandbox through the node's CNI
   * chain (our plugin included: the ADD fails if the pod cannot be enrolled), the live object's
   * status, then the containers' commands inside the pod's netns.
   */
  const runPod = async (pod: V1Pod, node: number, uid: string, ip?: string): Promise<LocalPod> => {
    const n = nodes[node] ?? fail(`no node ${node}`);
    const ns = pod.metadata?.namespace ?? 'default';
    const podName = pod.metadata?.name ?? '';
    const livePath = livePodPath(stateDir, ns, podName);
    await writeObjectFile(livePath, {
      ...pod,
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { ...pod.metadata, uid },
      spec: { containers: [], ...pod.spec, nodeName: n.name },
      status: { phase: 'Pending' },
    } as V1Pod);
    let sandbox: Pod;
    try {
      sandbox = await testbed.addPod({
        node,
        name: `${ns}-${podName}`,
        namespace: ns,
        uid,
        cniArgs: { K8S_POD_NAME: podName, ...(ip !== undefined && { IP: ip }) },
      });
    } catch (e) {
      rmSync(livePath, { force: true });
      throw new LocalModeError(
        'LOCAL_ERR_POD',
        `pod ${ns}/${podName} could not be created on ${n.name}: ${errorMessage(e)}`,
        { cause: e },
      );
    }
    await updateObjectFile<V1Pod>(livePath, (cur) => ({
      ...cur,
      // Ready as soon as it runs: local mode has no probes.
      status: {
        phase: 'Running',
        hostIP: n.fabricIp,
        podIP: sandbox.ip,
        podIPs: [{ ip: sandbox.ip }],
        conditions: [{ type: 'Ready', status: 'True' }],
      },
    }));
    const local: LocalPod = {
      namespace: ns,
      name: podName,
      uid,
      node: n.name,
      ip: sandbox.ip,
      netnsName: sandbox.netnsName,
      netnsPath: sandbox.netnsPath,
    };
    record.pods.push(local);
    for (const [ci, c] of (pod.spec?.containers ?? []).entries()) {
      const [cmd = '', ...args] = [...(c.command ?? []), ...(c.args ?? [])];
      const log = logOf(`pod-${ns}-${podName}-${c.name}.log`);
      const pid = daemon(
        sandbox.netnsName,
        cmd,
        args,
        {
          PATH: `${join(ROOT, 'src/local/bin')}:${process.env.PATH ?? '/usr/bin:/bin'}`,
          POD_NAME: podName,
          POD_NAMESPACE: ns,
          ...Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? ''])),
        },
        log,
      );
      track({
        role: 'pod',
        owner: `${ns}/${podName}${ci > 0 ? `/${c.name}` : ''}`,
        pid,
        netns: sandbox.netnsName,
        log,
      });
    }
    save();
    say(`pod ${ns}/${podName} on ${n.name}: ${sandbox.ip}`);
    return local;
  };

  const cluster: LocalCluster = {
    record,
    testbed,
    pod: (ref) => record.pods.find((p) => `${p.namespace}/${p.name}` === ref) ?? fail(`no pod ${ref}`),
    node: nodeByName,
    stop: async (role, nodeName, how = 'term') => {
      const p = processOf(role, nodeName);
      if (p !== undefined) await terminate(p.pid, how);
    },
    start: async (role, nodeName) => {
      const n = nodeByName(nodeName);
      await (role === 'agent' ? startAgent(n) : startZtunnel(n));
    },
    stopController: async () => {
      const p = processOf('controller', 'controller');
      if (p !== undefined) await terminate(p.pid, 'term');
    },
    startController,
    labelPod: async (ref, labels) => {
      const [ns = '', podName = ''] = ref.split('/');
      await patchLivePod(join(stateDir, 'live'), ns, podName, 'labels', labels);
    },
    createPod: async (pod, node, opts = {}) => {
      const ns = pod.metadata?.namespace ?? 'default';
      const podName = pod.metadata?.name ?? '';
      if (record.pods.some((p) => p.namespace === ns && p.name === podName))
        fail(`pod ${ns}/${podName} exists`);
      const uid = pod.metadata?.uid ?? randomUUID();
      return runPod(pod, node, uid, opts.ip);
    },
    deletePod: async (ref) => {
      const p = cluster.pod(ref);
      for (const proc of record.processes.filter(
        (x) => x.role === 'pod' && (x.owner === ref || x.owner.startsWith(`${ref}/`)),
      )) {
        await terminate(proc.pid, 'kill');
      }
      record.processes = record.processes.filter(
        (x) => !(x.role === 'pod' && (x.owner === ref || x.owner.startsWith(`${ref}/`))),
      );
      // The pod's object goes first, as with the API server; then the sandbox.
      rmSync(livePodPath(stateDir, p.namespace, p.name), { force: true });
      await testbed.removePod(`${p.namespace}-${p.name}`);
      record.pods = record.pods.filter((x) => x !== p);
      save();
    },
    down: () => downLocalCluster(name, opts.stateRoot),
  };

  try {
    say('starting the controller (file source, WDS and CA on 198.18.255.254:15012)');
    await startController();
    for (const n of nodes) {
      say(`starting the node agent and ztunnel on ${n.name}`);
      await startAgent(n);
      await startZtunnel(n);
    }
    for (const { pod, node } of plan) {
      const ns = pod.metadata?.namespace ?? 'default';
      const uid = (set.objects.get(manifestKey('Pod', ns, pod.metadata?.name ?? '')) as ManifestObject)
        .metadata.uid;
      await runPod(pod, node, uid);
    }
    save();
  } catch (e) {
    await downLocalCluster(name, opts.stateRoot).catch(() => undefined);
    throw e;
  }
  return cluster;
}

/** Reads a cluster's record (for `down`, `exec`, `status`). */
export function readClusterRecord(name = 'local', stateRoot = DEFAULT_STATE_ROOT): ClusterRecord {
  const file = join(stateRoot, name, 'cluster.json');
  if (!existsSync(file)) fail(`no local cluster "${name}" is up (${file} does not exist)`);
  return JSON.parse(readFileSync(file, 'utf8')) as ClusterRecord;
}

/** Removes a local cluster: processes (SIGTERM, then SIGKILL), namespaces, state. Idempotent. */
export async function downLocalCluster(name = 'local', stateRoot = DEFAULT_STATE_ROOT): Promise<void> {
  if (!NAME_RE.test(name)) fail(`cluster name ${name} must be 1–8 lower-case letters and digits`);
  const stateDir = join(stateRoot, name);
  const file = join(stateDir, 'cluster.json');
  if (existsSync(file)) {
    const record = JSON.parse(readFileSync(file, 'utf8')) as ClusterRecord;
    // Pods first, then ztunnels and agents, then the controller: nobody sees its peer vanish first.
    const order: ProcessRole[] = ['pod', 'ztunnel', 'agent', 'controller'];
    for (const role of order) {
      await Promise.all(
        record.processes
          .filter((p) => p.role === role)
          .map(async (p) => {
            // Only a process still inside the namespace we started it in is ours to signal.
            const inNs = await run(undefined, 'ip', ['netns', 'identify', String(p.pid)]);
            if (inNs.code === 0 && inNs.stdout.trim() === p.netns) await terminate(p.pid, 'term', 3000);
          }),
      );
    }
  }
  await cleanupStale(`lm${name}`);
  rmSync(stateDir, { recursive: true, force: true });
}
