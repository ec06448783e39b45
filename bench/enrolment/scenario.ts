// SPDX-License-Identifier: Apache-2.0
// The enrolment scenario (issue 4 §6; PERFORMANCE.md "pod enrolment: CNI ADD to redirection live,
// p99 ≤ 200 ms"): pods created one at a time through the real CNI chain of a 1-node local
// cluster (src/local/cluster.ts), each timed three ways:
//
//   cni_add     the whole ADD as the runtime waits for it: the first plugin's spawn to the last
//               plugin's exit (bridge → loopback → ambient-cni; ./cni-observer.ts).
//   cni_plugin  our plugin's execution alone, inside that ADD: its process start, the question to
//               the node agent and, for a mesh pod, the agent's work before it answers (in-pod
//               rules, then the ZDS hand-off to ztunnel and its ack).
//   add_to_live the start of the ADD to the first connection from inside the new pod answered by
//               a server pod (./probe.ts). For an enrolled pod the server only answers connections
//               that arrived over HBONE, so this is "redirection live": captured by the pod's
//               ztunnel and carried over HBONE. ztunnel does not wait for the pod's own workload
//               from WDS (local mode writes the pod IP into the live Pod object after the ADD; the
//               controller picks it up and pushes) to reach a mesh workload WDS already knows.
//
// Manifests (written to a temp dir): namespace `mesh` (ambient) with a STRICT PeerAuthentication
// and the pod `server`; namespace `plain` (outside the mesh) with its own `server`. Both servers
// run for the whole scenario, so the node's bridge, agent and ztunnel are warm. Then one
// unmeasured warm-up pod per column (it also fetches the certificate of the client service
// account every measured pod shares), then N pods per column, the columns alternating pod by pod
// (which goes first alternates too) so drift on the shared machine hits both alike. Probing
// starts when the ADD has returned: redirection cannot be live earlier (the agent answers our
// plugin only after ztunnel has taken the pod), and polling during the ADD would compete with it
// for the two cores. Every pod is then deleted, and the cluster's footprint (namespaces, node
// veths, host-local IP leases, ztunnel's in-pod proxies) must return to what it was before the
// first pod; what is left is reported as leaked.
//
// Every step is bounded; on any failure the error propagates and the harness downs the cluster
// (it is a shared resource of the group, so signals down it too).
import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { DEFAULT_PLUGIN_TYPE } from '../../cni-plugin/src/install/install.ts';
import { upLocalCluster, type LocalCluster } from '../../src/local/cluster.ts';
import { runOk } from '../../src/local/exec.ts';
import { httpGetInNetns } from '../../src/local/netns-net.ts';
import type { Pod, TestbedNode } from '../../src/local/testbed.ts';
import { MeshError, errorMessage } from '../../src/shared/errors.ts';
import { summarize, type LatencySummary } from '../stats.ts';
import type { SharedResource } from '../types.ts';
import { CniExecObserver, readChain, type AddTiming } from './cni-observer.ts';
import { firstAnswer, type ProbeTarget } from './probe.ts';
import { ENROLLED, UNENROLLED } from './shape.ts';

/** A pod not answered within this is a failure of the run, not a sample. */
const LIVE_DEADLINE_MS = 15_000;
/** After the deletions, how long the footprint may take to return (ztunnel drains a removed pod). */
const SETTLE_DEADLINE_MS = 5_000;
const SETTLE_POLL_MS = 100;
const SERVER_PORT = 8080;
const CLIENT_SERVICE_ACCOUNT = 'client';

export class EnrolmentScenarioError extends MeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BENCH_ERR_ENROLMENT', message, options);
  }
}

export interface EnrolmentOptions {
  /** Measured pods per column. */
  readonly pods: number;
  /** A private temp dir for the manifests; the caller removes it. */
  readonly dir: string;
  /** The local cluster's name (lower-case letters and digits, ≤ 8). */
  readonly clusterName: string;
  /** The group's shared resources: the cluster is one, downed by the harness at the end and on signals. */
  readonly shared: <T>(key: string, create: () => Promise<SharedResource<T>>) => Promise<T>;
  readonly log: (msg: string) => void;
  readonly stopping: () => boolean;
}

export interface ColumnResult {
  readonly cniAddMs: LatencySummary;
  readonly pluginMs: LatencySummary;
  readonly liveMs: LatencySummary;
}

export interface EnrolmentResult {
  readonly columns: ReadonlyMap<string, ColumnResult>;
  /** Namespaces, veths, IP leases and ztunnel proxies left after every pod was deleted. */
  readonly leaked: number;
  readonly notes: readonly string[];
}

/** What the cluster holds that a pod adds and its deletion must take away. */
interface Footprint {
  readonly namespaces: number;
  readonly veths: number;
  readonly ipLeases: number;
  readonly ztunnelProxies: number;
}

interface Column {
  readonly name: string;
  readonly namespace: string;
  readonly target: ProbeTarget;
  readonly samples: { cniAdd: number[]; plugin: number[]; live: number[]; afterAdd: number[] };
  /** Per plugin type, its span in each ADD. */
  readonly perPlugin: Map<string, number[]>;
  readonly failedAttempts: Map<string, number>;
  /** Pod IPs of the measured pods, for the access-log check. */
  readonly ips: string[];
}

const MANIFESTS = `# The enrolment bench's cluster (bench/enrolment/scenario.ts).
apiVersion: v1
kind: Namespace
metadata:
  name: mesh
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Namespace
metadata:
  name: plain
---
# Only connections that arrived over HBONE reach mesh/server: the proof a new pod is captured.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: mesh
spec:
  mtls:
    mode: STRICT
---
apiVersion: v1
kind: Pod
metadata:
  name: server
  namespace: mesh
spec:
  serviceAccountName: server
  containers:
    - name: app
      command: [mesh-app, serve, '${SERVER_PORT}']
---
apiVersion: v1
kind: Pod
metadata:
  name: server
  namespace: plain
spec:
  containers:
    - name: app
      command: [mesh-app, serve, '${SERVER_PORT}']
`;

function podObject(namespace: string, name: string, uid: string): V1Pod {
  return {
    metadata: { name, namespace, uid },
    spec: {
      serviceAccountName: CLIENT_SERVICE_ACCOUNT,
      containers: [{ name: 'app', command: ['sleep', 'infinity'] }],
    },
  };
}

const ms = (v: number): string => `${Math.round(v)} ms`;

export async function runEnrolmentScenario(opts: EnrolmentOptions): Promise<EnrolmentResult> {
  const manifests = join(opts.dir, 'manifests');
  mkdirSync(manifests, { recursive: true });
  writeFileSync(join(manifests, 'cluster.yaml'), MANIFESTS);
  opts.log(`bringing up local cluster ${opts.clusterName} (1 node) from ${manifests}`);
  const cluster = await opts.shared('enrolment cluster', async () => {
    const c = await upLocalCluster({ manifests, name: opts.clusterName, nodes: 1, log: opts.log });
    return { value: c, destroy: () => c.down() };
  });
  const run = new EnrolmentRun(cluster, opts);
  try {
    return await run.measure();
  } finally {
    run.close();
  }
}

class EnrolmentRun {
  readonly #cluster: LocalCluster;
  readonly #opts: EnrolmentOptions;
  readonly #observer: CniExecObserver;
  readonly #chain: readonly string[];
  readonly #node: TestbedNode;
  readonly #columns: readonly Column[];

  constructor(cluster: LocalCluster, opts: EnrolmentOptions) {
    this.#cluster = cluster;
    this.#opts = opts;
    const node = cluster.testbed.nodes[0];
    if (node?.cni === undefined)
      throw new EnrolmentScenarioError('the local cluster has no node with CNI directories');
    this.#node = node;
    this.#chain = readChain(node.cni.confDir);
    if (this.#chain.at(-1) !== DEFAULT_PLUGIN_TYPE) {
      throw new EnrolmentScenarioError(
        `the node's CNI chain is ${this.#chain.join(' → ')}: the agent did not chain ${DEFAULT_PLUGIN_TYPE} last`,
      );
    }
    this.#observer = new CniExecObserver(this.#chain);
    const column = (name: string, namespace: string): Column => ({
      name,
      namespace,
      target: { server: 'server', host: cluster.pod(`${namespace}/server`).ip, port: SERVER_PORT },
      samples: { cniAdd: [], plugin: [], live: [], afterAdd: [] },
      perPlugin: new Map(this.#chain.map((p) => [p, []])),
      failedAttempts: new Map(),
      ips: [],
    });
    this.#columns = [column(UNENROLLED, 'plain'), column(ENROLLED, 'mesh')];
  }

  close(): void {
    this.#observer.close();
  }

  async measure(): Promise<EnrolmentResult> {
    const { log, pods } = this.#opts;
    const before = await this.#footprint();
    const created: string[] = [];
    log(`warm-up: one pod per column, not measured`);
    for (const col of this.#columns) {
      const ref = await this.#createAndProbe(col, 'warm', false);
      await this.#cluster.deletePod(ref);
    }
    log(`${pods} pods per column, one at a time, columns alternating`);
    for (let i = 0; i < pods; i++) {
      const order = i % 2 === 0 ? [...this.#columns].reverse() : this.#columns;
      for (const col of order) created.push(await this.#createAndProbe(col, `p${i}`, true));
    }
    const deleteStart = performance.now();
    for (const ref of created) {
      this.#checkStopping();
      await this.#cluster.deletePod(ref);
    }
    const deleteMs = performance.now() - deleteStart;
    const { after, settledMs } = await this.#settle(before);
    const leaks = (Object.keys(before) as (keyof Footprint)[]).flatMap((k) =>
      after[k] > before[k] ? [`${k} ${before[k]} → ${after[k]}`] : [],
    );
    const leaked = (Object.keys(before) as (keyof Footprint)[]).reduce(
      (sum, k) => sum + Math.max(0, after[k] - before[k]),
      0,
    );
    log(
      `deleted ${created.length} pods in ${ms(deleteMs)}; ${leaks.length === 0 ? 'nothing left behind' : `LEFT BEHIND: ${leaks.join(', ')}`}`,
    );

    const notes = [
      `${pods} pods per column, created one at a time on a 1-node local cluster, columns alternating; ` +
        `container \`sleep infinity\`, service account ${CLIENT_SERVICE_ACCOUNT} (its certificate was fetched by the unmeasured warm-up pod)`,
      `CNI chain ${this.#chain.join(' → ')}; each plugin is run as \`ip netns exec <node> <plugin>\` (local mode's runtime), which every span includes`,
      ...this.#columns.map((c) => this.#breakdown(c)),
      ...this.#columns.map((c) => this.#attempts(c)),
      this.#accessLogCheck(),
      `deletion: ${created.length} pods in ${ms(deleteMs)}; ` +
        (leaks.length === 0
          ? `footprint back to before the first pod within ${ms(settledMs)} (namespaces ${after.namespaces}, node veths ${after.veths}, IP leases ${after.ipLeases}, ztunnel proxies ${after.ztunnelProxies})`
          : `LEFT BEHIND after ${ms(SETTLE_DEADLINE_MS)}: ${leaks.join(', ')}`),
    ];
    const columns = new Map(
      this.#columns.map((c) => [
        c.name,
        {
          cniAddMs: summarize(c.samples.cniAdd),
          pluginMs: summarize(c.samples.plugin),
          liveMs: summarize(c.samples.live),
        },
      ]),
    );
    return { columns, leaked, notes };
  }

  #checkStopping(): void {
    if (this.#opts.stopping()) throw new EnrolmentScenarioError('stopped: the bench is stopping');
  }

  /**
   * Creates one pod in `col`'s namespace, times its ADD and probes it live; a `measured` pod's
   * times go into the column's samples (a warm-up pod's are only logged). Returns the pod's
   * reference for deletion.
   */
  async #createAndProbe(col: Column, name: string, measured: boolean): Promise<string> {
    this.#checkStopping();
    const uid = randomUUID();
    const recording = this.#observer.begin();
    let add: AddTiming;
    let answeredMs: number;
    let sandbox: Pod;
    try {
      const created = this.#cluster.createPod(podObject(col.namespace, name, uid), 0);
      // Awaited below; a rejection before that must not go unhandled.
      created.catch(() => undefined);
      await Promise.race([recording.ended, created]);
      sandbox = await this.#sandbox(uid);
      const probe = await firstAnswer(sandbox.netnsPath, sandbox.ip, col.target, LIVE_DEADLINE_MS);
      answeredMs = probe.answeredMs;
      await created;
      add = recording.finish();
      if (measured) {
        for (const [why, n] of probe.failures)
          col.failedAttempts.set(why, (col.failedAttempts.get(why) ?? 0) + n);
      }
    } catch (err) {
      throw new EnrolmentScenarioError(`pod ${col.namespace}/${name}: ${errorMessage(err)}`, { cause: err });
    }
    const plugin = add.spans.find((s) => s.plugin === DEFAULT_PLUGIN_TYPE)!;
    const sample = {
      cniAdd: add.endMs - add.startMs,
      plugin: plugin.endMs - plugin.startMs,
      live: answeredMs - add.startMs,
    };
    if (measured) {
      col.samples.cniAdd.push(sample.cniAdd);
      col.samples.plugin.push(sample.plugin);
      col.samples.live.push(sample.live);
      col.samples.afterAdd.push(answeredMs - add.endMs);
      for (const s of add.spans) col.perPlugin.get(s.plugin)?.push(s.endMs - s.startMs);
      col.ips.push(sandbox.ip);
    }
    this.#opts.log(
      `${col.name} ${col.namespace}/${name}: ADD ${ms(sample.cniAdd)} (${DEFAULT_PLUGIN_TYPE} ${ms(sample.plugin)}), ` +
        `answered ${ms(sample.live)} after the ADD started${measured ? '' : ' (warm-up)'}`,
    );
    return `${col.namespace}/${name}`;
  }

  /**
   * The pod's sandbox as the test bed records it, found by uid: it is added right after the ADD
   * returns, in the same turn of the event loop as the runtime's last await.
   */
  async #sandbox(uid: string): Promise<Pod> {
    const give = performance.now() + 1_000;
    for (;;) {
      const pod = this.#cluster.testbed.pods.find((p) => p.uid === uid);
      if (pod !== undefined) return pod;
      if (performance.now() > give)
        throw new EnrolmentScenarioError(`no sandbox with uid ${uid} after its ADD`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async #footprint(): Promise<Footprint> {
    const prefix = `${this.#cluster.record.prefix}-`;
    const namespaces = (await runOk(undefined, 'ip', ['netns', 'list']))
      .split('\n')
      .filter((l) => l.startsWith(prefix)).length;
    const veths = (await runOk(this.#node.netnsName, 'ip', ['-o', 'link', 'show', 'type', 'veth']))
      .split('\n')
      .filter((l) => l.trim() !== '').length;
    const metrics = await httpGetInNetns(this.#node.netnsPath, 15020, '/metrics');
    const gauge = (name: string): number => {
      const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics.body);
      if (m?.[1] === undefined) throw new EnrolmentScenarioError(`ztunnel's /metrics has no ${name}`);
      return Number(m[1]);
    };
    return {
      namespaces,
      veths,
      ipLeases: countLeases(join(this.#cluster.testbed.stateDir, 'ipam')),
      ztunnelProxies:
        gauge('workload_manager_active_proxy_count') + gauge('workload_manager_pending_proxy_count'),
    };
  }

  /** Polls the footprint until it is back to `before` or the deadline passes; returns the last one. */
  async #settle(before: Footprint): Promise<{ after: Footprint; settledMs: number }> {
    const start = performance.now();
    for (;;) {
      const after = await this.#footprint();
      const settledMs = performance.now() - start;
      const back = (Object.keys(before) as (keyof Footprint)[]).every((k) => after[k] <= before[k]);
      if (back || settledMs > SETTLE_DEADLINE_MS) return { after, settledMs };
      await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MS));
    }
  }

  /** p50 of each plugin's span and of the wait after the ADD, for the notes. */
  #breakdown(c: Column): string {
    const p50 = (xs: number[]): string => ms(summarize([...xs]).p50);
    const plugins = [...c.perPlugin].map(([p, xs]) => `${p} ${p50(xs)}`).join(', ');
    return (
      `${c.name}: ADD p50 by plugin: ${plugins}; ADD returned → first answer p50 ${p50(c.samples.afterAdd)}, ` +
      `p99 ${ms(summarize([...c.samples.afterAdd]).p99)}`
    );
  }

  #attempts(c: Column): string {
    const failed = [...c.failedAttempts].map(([why, n]) => `${why} ×${n}`).join(', ');
    return `${c.name}: connection attempts that failed before the first answer: ${failed === '' ? 'none' : failed}`;
  }

  /**
   * Corroboration from ztunnel's side: for each measured pod, an outbound access-log line from
   * its address, tunnelled to its server. Expected for every enrolled pod, for no unenrolled one.
   */
  #accessLogCheck(): string {
    const log = this.#cluster.record.processes.find((p) => p.role === 'ztunnel')?.log;
    if (log === undefined) return 'ztunnel access log: no ztunnel log file recorded';
    // Outbound over HBONE, upstream's fields: dst.addr is the peer's 15008, dst.hbone_addr the target.
    const outbound: { src: string; dst: string }[] = [];
    for (const line of readFileSync(log, 'utf8').split('\n')) {
      if (!line.includes('"scope":"access"')) continue;
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue; // the last line, still being written
      }
      const src = e['src.addr'];
      const dst = e['dst.hbone_addr'];
      if (e.direction === 'outbound' && typeof src === 'string' && typeof dst === 'string') {
        outbound.push({ src, dst });
      }
    }
    const counts = this.#columns.map((c) => {
      const dst = `${c.target.host}:${c.target.port}`;
      const logged = c.ips.filter((ip) => outbound.some((o) => o.dst === dst && o.src.startsWith(`${ip}:`)));
      return `${c.name} ${logged.length}/${c.ips.length}`;
    });
    return `ztunnel access log, measured pods with an outbound line to their server: ${counts.join(', ')}`;
  }
}

/** host-local's leases: one file per allocated address, named after it, under the IPAM data dir. */
function countLeases(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && /^\d{1,3}(\.\d{1,3}){3}$/.test(e.name)) n++;
  }
  return n;
}
