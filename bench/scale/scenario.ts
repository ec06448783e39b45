// SPDX-License-Identifier: Apache-2.0
// The controller scale scenario (issue 5 §8; PERFORMANCE.md, controller rows): the real
// controller as a child process, fed by its Kubernetes source from the API stand-in running in
// this process, serving WDS over TLS to simulated ztunnels in this process.
//
//   1. Seed the stand-in (pods, services, namespaces, policies; bench/scale/cluster.ts).
//   2. Start the controller (node tokens for every node, CA in the temp dir, 127.0.0.1:0) and
//      wait until it serves: it lists everything and builds its model first.
//   3. Connect every ztunnel at once; the initial sync is over when each holds every expected
//      resource of both types.
//   4. Pod changes, one at a time: alternately a new pod IP (status) and a new `version` label,
//      written through the stand-in's HTTP API. The latency of a change runs from the store
//      write (a synchronous store listener, so no HTTP time is counted) to the moment the last
//      ztunnel has received a response naming that pod's workload. It includes the
//      controller's watch, model, debounce (100 ms quiet, 500 ms at most) and push.
//   5. Controller RSS (VmRSS) once serving, after the initial sync and at the end, and its peak
//      (VmHWM).
//
// The ztunnels and the stand-in share this process: the notes report this process's CPU and
// event-loop utilisation next to the controller's CPU, so a reader can see which side was busy.
// Everything is bounded in time; on any failure the ztunnels, the controller child and the
// stand-in are stopped before the error is rethrown (the caller owns and removes `dir`).
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeNodeTokenFile } from '../../src/controller/auth/node-token.ts';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../../src/controller/xds/wds-resources.ts';
import { MeshError, errorMessage } from '../../src/shared/errors.ts';
import { startKubeApi, writeKubeconfig, type KubeApiServer } from '../../test/helpers/kube-api/index.ts';
import { cpuSeconds, NODE_BIN, rssKiB } from '../procs.ts';
import { summarize, type LatencySummary } from '../stats.ts';
import type { SpawnFn, TrackedChild } from '../types.ts';
import {
  CLUSTER_ID,
  ClusterLayout,
  expectedResources,
  seedCluster,
  type ExpectedResources,
} from './cluster.ts';
import { controllerEntry } from './controller-entry.ts';
import type { ScaleShape } from './shape.ts';
import { SimulatedZtunnel, type ZtunnelCounts } from './ztunnel-client.ts';

/** Listing 10k pods, building the model and (first run) generating the CA key. */
const CONTROLLER_READY_TIMEOUT_MS = 180_000;
const INITIAL_SYNC_TIMEOUT_MS = 120_000;
/** Ten times the 1 s floor: a change slower than this is a failure, not a sample. */
const CHANGE_TIMEOUT_MS = 10_000;
/** Quiet time between changes, so each is pushed on its own rather than in a burst. */
const CHANGE_GAP_MS = 100;
/** Lets a just-finished burst of work settle before RSS is read. */
const RSS_SETTLE_MS = 1_000;
const PATCH_TIMEOUT_MS = 10_000;
const LOG_PROBLEMS_KEPT = 3;
/** The controller's name in its serving certificate, as ztunnels address it in a cluster. */
const CONTROLLER_NAME = 'istiod.istio-system.svc';
const MB_PER_KIB = 1024 / 1e6;

export class ScaleScenarioError extends MeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BENCH_ERR_SCALE', message, options);
  }
}

export interface ScaleOptions {
  readonly shape: ScaleShape;
  /** A private temp dir (kubeconfig, node tokens, CA); the caller removes it. */
  readonly dir: string;
  /** Spawns and tracks the controller child (killed with its group when the bench exits). */
  readonly spawn: SpawnFn;
  readonly log: (msg: string) => void;
  /** True once the bench is stopping (signal): the scenario gives up between steps. */
  readonly stopping: () => boolean;
}

export interface ScaleResult {
  readonly shape: ScaleShape;
  /** WDS resources each ztunnel holds after the initial sync (addresses + authorizations). */
  readonly resourcesPerZtunnel: number;
  /** Controller spawn → serving WDS (it has listed everything and built the model). */
  readonly controllerReadyMs: number;
  /** First ztunnel connecting → the last one holding the full state. */
  readonly initialSyncMs: number;
  /** Pod change (store write) → every ztunnel has it, in ms. */
  readonly pushLatencyMs: LatencySummary;
  /**
   * Controller resident memory in MB (10^6 bytes): serving but no ztunnel yet, after the initial
   * sync, after the pod changes, and the peak (VmHWM).
   */
  readonly controllerRssMb: {
    readonly ready: number;
    readonly synced: number;
    readonly end: number;
    readonly peak: number;
  };
  readonly notes: readonly string[];
}

export async function runScaleScenario(opts: ScaleOptions): Promise<ScaleResult> {
  const run = new ScaleRun(opts);
  try {
    return await run.measure();
  } finally {
    await run.close();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function vmHwmKiB(pid: number): number {
  const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m?.[1]) throw new ScaleScenarioError(`no VmHWM in /proc/${pid}/status`);
  return Number(m[1]);
}

/** RSS in MB after letting the last burst of work settle. */
async function settledRssMb(pid: number): Promise<number> {
  await sleep(RSS_SETTLE_MS);
  return rssKiB(pid) * MB_PER_KIB;
}

/** A promise and the function that resolves it. */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** The change in flight: which workload, when it was written, which ztunnels have it. */
interface PendingChange {
  readonly uid: string;
  readonly podName: string;
  readonly namespace: string;
  writtenAt: number | undefined;
  /** One byte per ztunnel: 1 once it received the workload. */
  readonly received: Uint8Array;
  remaining: number;
  lastAt: number;
  readonly completed: () => void;
}

interface ControllerChild {
  readonly child: TrackedChild;
  readonly address: string;
  /** Count and first messages of its warn/error log lines. */
  readonly problems: { count: number; readonly first: string[] };
}

class ScaleRun {
  readonly #opts: ScaleOptions;
  readonly #shape: ScaleShape;
  readonly #layout: ClusterLayout;
  readonly #expected: ExpectedResources;
  readonly #notes: string[] = [];
  readonly #ztunnels: SimulatedZtunnel[] = [];
  /** Rejects as soon as a ztunnel stream or the controller fails; raced against every wait. */
  readonly #abort: Promise<never>;
  #fail: (err: Error) => void = () => undefined;
  #api: KubeApiServer | undefined;
  #controller: ControllerChild | undefined;
  #unsubscribe: (() => void) | undefined;
  #change: PendingChange | undefined;
  readonly #synced = signal();
  #syncedCount = 0;
  #lastSyncedAt = 0;

  constructor(opts: ScaleOptions) {
    this.#opts = opts;
    this.#shape = opts.shape;
    this.#layout = new ClusterLayout(opts.shape);
    this.#expected = expectedResources(this.#layout, ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL);
    this.#abort = new Promise<never>((_, reject) => {
      this.#fail = reject;
    });
    this.#abort.catch(() => undefined);
  }

  async measure(): Promise<ScaleResult> {
    const s = this.#shape;
    this.#notes.push(
      `shape: ${s.pods} pods in ${this.#layout.namespaces} namespaces on ${s.ztunnels} nodes, ` +
        `${s.services} services, ${s.policies} AuthorizationPolicies, ${s.ztunnels} ztunnels, ` +
        `${s.changes} pod changes`,
    );
    const files = await this.#seed();
    this.#checkStopping();
    const { pid, readyMs } = await this.#startController(files);
    const ready = await settledRssMb(pid);
    this.#opts.log(`controller RSS before any ztunnel connects: ${ready.toFixed(1)} MB`);
    this.#checkStopping();
    const initialSyncMs = await this.#syncZtunnels(pid, files);
    const synced = await settledRssMb(pid);
    this.#opts.log(`controller RSS after the initial sync: ${synced.toFixed(1)} MB`);
    this.#checkStopping();
    const pushLatencyMs = summarize(await this.#changePods(pid));
    this.#opts.log(
      `pod change → all ${s.ztunnels} ztunnels: p50 ${pushLatencyMs.p50.toFixed(1)} ms, ` +
        `p99 ${pushLatencyMs.p99.toFixed(1)} ms, max ${pushLatencyMs.max.toFixed(1)} ms`,
    );
    this.#checkHoldings();
    const end = await settledRssMb(pid);
    const peak = vmHwmKiB(pid) * MB_PER_KIB;
    const problems = this.#controller?.problems;
    if (problems !== undefined && problems.count > 0) {
      this.#notes.push(
        `controller logged ${problems.count} warn/error line(s), first: ${problems.first.join(' | ')}`,
      );
    }
    return {
      shape: s,
      resourcesPerZtunnel: this.#expected.total,
      controllerReadyMs: readyMs,
      initialSyncMs,
      pushLatencyMs,
      controllerRssMb: { ready, synced, end, peak },
      notes: this.#notes,
    };
  }

  /** Stops the ztunnels, the controller and the stand-in; safe after any failure. */
  async close(): Promise<void> {
    this.#unsubscribe?.();
    for (const z of this.#ztunnels) z.close();
    if (this.#controller !== undefined) await this.#controller.child.kill();
    if (this.#api !== undefined) await this.#api.close();
  }

  #checkStopping(): void {
    if (this.#opts.stopping()) throw new ScaleScenarioError('the bench is stopping');
  }

  /** `p`, or a rejection after `ms` (naming `what`) or as soon as something fails. */
  async #bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        p,
        this.#abort,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new ScaleScenarioError(`${what} did not finish within ${ms} ms`)),
            ms,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- 1. the cluster ----

  async #seed(): Promise<{
    kubeconfig: string;
    nodeTokens: string;
    caDir: string;
    tokens: Record<string, string>;
  }> {
    const t = performance.now();
    const api = await startKubeApi();
    this.#api = api;
    seedCluster(api, this.#layout);
    this.#opts.log(
      `API stand-in ${api.url} seeded with ${this.#shape.pods} pods and ${this.#shape.services} services ` +
        `in ${Math.round(performance.now() - t)} ms`,
    );
    const files = {
      kubeconfig: join(this.#opts.dir, 'kubeconfig'),
      nodeTokens: join(this.#opts.dir, 'node-tokens.yaml'),
      caDir: join(this.#opts.dir, 'ca'),
    };
    mkdirSync(files.caDir, { recursive: true });
    await writeKubeconfig(api, files.kubeconfig);
    const nodes = Array.from({ length: this.#shape.ztunnels }, (_, i) => this.#layout.node(i));
    return { ...files, tokens: writeNodeTokenFile(files.nodeTokens, nodes) };
  }

  // ---- 2. the controller ----

  async #startController(files: {
    kubeconfig: string;
    nodeTokens: string;
    caDir: string;
  }): Promise<{ pid: number; readyMs: number }> {
    const entry = await controllerEntry(this.#opts.log);
    this.#notes.push(entry.note);
    this.#checkStopping();
    const t = performance.now();
    const child = this.#opts.spawn(
      'controller',
      NODE_BIN,
      [
        entry.script,
        '--listen',
        '127.0.0.1:0',
        '--ca-dir',
        files.caDir,
        '--node-tokens',
        files.nodeTokens,
        '--cluster-id',
        CLUSTER_ID,
        '--serving-dns',
        CONTROLLER_NAME,
      ],
      { env: { KUBECONFIG: files.kubeconfig } },
    );
    const problems = { count: 0, first: [] as string[] };
    /** What the controller reports once its source has synced and its model is built. */
    let built: { readonly addresses: number; readonly authorizations: number } | undefined;
    child.onLine((v) => {
      if (typeof v !== 'object' || v === null) return;
      const line = v as Record<string, unknown>;
      const { addresses, authorizations } = line;
      if (
        line.message === 'source synced; model built' &&
        typeof addresses === 'number' &&
        typeof authorizations === 'number'
      ) {
        built = { addresses, authorizations };
      }
      if (line.level === 'warn' || line.level === 'error' || line.level === 'fatal') {
        problems.count++;
        if (problems.first.length < LOG_PROBLEMS_KEPT) {
          problems.first.push(`${line.level}: ${String(line.message)} ${JSON.stringify(line.err ?? '')}`);
        }
      }
    });
    void child.exited.then(({ code, signal }) =>
      this.#fail(
        new ScaleScenarioError(
          `the controller exited (code ${code ?? 'none'}, signal ${signal ?? 'none'})\n${child.stderrTail()}`,
        ),
      ),
    );
    const address = await child.waitForLine((v): string | undefined => {
      if (typeof v !== 'object' || v === null) return undefined;
      const line = v as Record<string, unknown>;
      return line.message === 'serving WDS and the CA' && typeof line.address === 'string'
        ? line.address
        : undefined;
    }, CONTROLLER_READY_TIMEOUT_MS);
    const readyMs = performance.now() - t;
    this.#controller = { child, address, problems };
    this.#opts.log(`controller pid ${child.pid} serving on ${address} after ${Math.round(readyMs)} ms`);
    if (built !== undefined) {
      this.#notes.push(
        `controller built ${built.addresses} addresses and ${built.authorizations} authorizations ` +
          `(expected ${this.#expected.total} resources in all) in ${Math.round(readyMs)} ms from spawn`,
      );
    }
    return { pid: child.pid, readyMs };
  }

  // ---- 3. initial sync ----

  async #syncZtunnels(
    pid: number,
    files: { caDir: string; tokens: Record<string, string> },
  ): Promise<number> {
    const controller = this.#controller;
    if (controller === undefined) throw new ScaleScenarioError('the controller is not running');
    const rootCert = readFileSync(join(files.caDir, 'root-cert.pem'));
    const events = {
      resource: (client: number, _typeUrl: string, name: string, at: number): void =>
        this.#received(client, name, at),
      synced: (_client: number, at: number): void => {
        this.#lastSyncedAt = Math.max(this.#lastSyncedAt, at);
        if (++this.#syncedCount === this.#shape.ztunnels) this.#synced.resolve();
      },
      failed: (_client: number, err: Error): void => this.#fail(err),
    };
    for (let i = 0; i < this.#shape.ztunnels; i++) {
      const node = this.#layout.node(i);
      const token = files.tokens[node];
      if (token === undefined) throw new ScaleScenarioError(`no node token for ${node}`);
      const identity = {
        node,
        token,
        ip: this.#layout.ztunnelIp(i),
        podName: `ztunnel-${i}`,
        clusterId: CLUSTER_ID,
        controllerName: CONTROLLER_NAME,
      };
      this.#ztunnels.push(new SimulatedZtunnel(i, identity, this.#expected, events));
    }
    const cpuBefore = { controller: cpuSeconds(pid), bench: process.cpuUsage() };
    const start = performance.now();
    for (const z of this.#ztunnels) z.start(controller.address, rootCert);
    const n = this.#shape.ztunnels;
    const total = this.#expected.total;
    await this.#bounded(this.#synced.promise, INITIAL_SYNC_TIMEOUT_MS, `initial sync of ${n} ztunnels`).catch(
      (err: unknown) => {
        const behind = this.#ztunnels.filter((z) => z.counts.held < total);
        const example = behind[0]
          ? `, e.g. ztunnel ${behind[0].index} holds ${behind[0].counts.held}/${total}`
          : '';
        throw new ScaleScenarioError(
          `${errorMessage(err)}; ${behind.length} ztunnel(s) not synced${example}`,
          {
            cause: err,
          },
        );
      },
    );
    const syncMs = this.#lastSyncedAt - start;
    const wallS = (performance.now() - start) / 1000;
    const bench = process.cpuUsage(cpuBefore.bench);
    this.#notes.push(
      `initial sync: ${n} × ${total} resources in ${Math.round(syncMs)} ms; controller CPU ` +
        `${(cpuSeconds(pid) - cpuBefore.controller).toFixed(1)} s, bench process (ztunnels + API stand-in) ` +
        `CPU ${((bench.user + bench.system) / 1e6).toFixed(1)} s, over ${wallS.toFixed(1)} s`,
    );
    this.#opts.log(`initial sync of ${n} ztunnels in ${Math.round(syncMs)} ms`);
    this.#checkHoldings();
    return syncMs;
  }

  /** Every ztunnel holds exactly the expected resources (after the sync and at the end). */
  #checkHoldings(): void {
    for (const z of this.#ztunnels) {
      const c = z.counts;
      if (c.held !== this.#expected.total || c.unexpected > 0) {
        throw new ScaleScenarioError(
          `ztunnel ${z.index} (${z.identity.node}) holds ${c.held} of the ${this.#expected.total} expected resources` +
            (c.unexpected > 0
              ? ` and received ${c.unexpected} unexpected ones: ${z.unexpectedNames.join(', ')}`
              : ''),
        );
      }
    }
  }

  // ---- 4. pod changes ----

  /** A ztunnel received a resource: does it complete the change in flight for that ztunnel? */
  #received(client: number, name: string, at: number): void {
    const c = this.#change;
    if (c?.uid !== name || c.received[client] === 1) return;
    c.received[client] = 1;
    c.lastAt = Math.max(c.lastAt, at);
    if (--c.remaining === 0) c.completed();
  }

  /** Runs the changes one after the other; returns each one's latency in ms. */
  async #changePods(pid: number): Promise<number[]> {
    const api = this.#api;
    if (api === undefined) throw new ScaleScenarioError('the API stand-in is not running');
    // The write's own moment: the store calls its listeners synchronously as it commits.
    this.#unsubscribe = api.store.subscribe((e) => {
      const c = this.#change;
      if (c === undefined || c.writtenAt !== undefined || e.resource.kind !== 'Pod') return;
      const meta = e.object.metadata as Record<string, unknown> | undefined;
      if (meta?.name === c.podName && meta.namespace === c.namespace) c.writtenAt = performance.now();
    });
    const latencies: number[] = [];
    const countsBefore = this.#ztunnels.map((z) => z.counts);
    const cpuBefore = cpuSeconds(pid);
    const eluBefore = performance.eventLoopUtilization();
    for (let k = 0; k < this.#shape.changes; k++) {
      this.#checkStopping();
      latencies.push(await this.#changePod(api, k));
      await sleep(CHANGE_GAP_MS);
    }
    const elu = performance.eventLoopUtilization(eluBefore);
    const cpuPerChangeMs = ((cpuSeconds(pid) - cpuBefore) * 1000) / this.#shape.changes;
    this.#notes.push(
      `pod changes: alternately a new pod IP (status) and a new version label, ${CHANGE_GAP_MS} ms apart; ` +
        `controller CPU ${cpuPerChangeMs.toFixed(1)} ms per change; bench process event loop ` +
        `${(elu.utilization * 100).toFixed(1)} % busy meanwhile; ${this.#deliveries(countsBefore)}`,
    );
    return latencies;
  }

  /** What the ztunnels received since `before`: one workload per change is the expected answer. */
  #deliveries(before: readonly ZtunnelCounts[]): string {
    const diff = this.#ztunnels.map((z, i) => {
      const b = before[i]!;
      const c = z.counts;
      return {
        responses: c.responses - b.responses,
        resources: c.resources - b.resources,
        removals: c.removals - b.removals,
      };
    });
    const n = this.#shape.changes;
    if (diff.every((d) => d.responses === n && d.resources === n && d.removals === 0)) {
      return 'every ztunnel received exactly one response with one workload per change';
    }
    const sum = (k: 'responses' | 'resources' | 'removals'): number => diff.reduce((a, d) => a + d[k], 0);
    const z = this.#ztunnels.length;
    return (
      `per ztunnel on average ${(sum('responses') / z).toFixed(1)} responses, ${(sum('resources') / z).toFixed(1)} ` +
      `resources and ${(sum('removals') / z).toFixed(1)} removals for ${n} changes`
    );
  }

  async #changePod(api: KubeApiServer, k: number): Promise<number> {
    const layout = this.#layout;
    const pod = layout.changedPod(k);
    const done = signal();
    const change: PendingChange = {
      uid: layout.workloadUid(pod),
      podName: layout.podName(pod),
      namespace: layout.namespace(layout.podNamespace(pod)),
      writtenAt: undefined,
      received: new Uint8Array(this.#shape.ztunnels),
      remaining: this.#shape.ztunnels,
      lastAt: 0,
      completed: done.resolve,
    };
    this.#change = change;
    try {
      const ip = layout.changedIp(k);
      const write =
        k % 2 === 0
          ? patchPod(api, change, '/status', { status: { podIP: ip, podIPs: [{ ip }] } })
          : patchPod(api, change, '', { metadata: { labels: { version: `v${k + 2}` } } });
      await this.#bounded(write, PATCH_TIMEOUT_MS, `change ${k}: PATCH`);
      await this.#bounded(done.promise, CHANGE_TIMEOUT_MS, `change ${k} (${change.uid})`).catch(
        (err: unknown) => {
          const got = this.#shape.ztunnels - change.remaining;
          throw new ScaleScenarioError(
            `${errorMessage(err)}: ${got} of ${this.#shape.ztunnels} ztunnels received it`,
            {
              cause: err,
            },
          );
        },
      );
    } finally {
      this.#change = undefined;
    }
    if (change.writtenAt === undefined) {
      throw new ScaleScenarioError(
        `change ${k}: the stand-in stored no write of pod ${change.namespace}/${change.podName}`,
      );
    }
    return change.lastAt - change.writtenAt;
  }
}

/** A merge patch through the stand-in's HTTP API, as kubectl or the kubelet would send it. */
async function patchPod(
  api: KubeApiServer,
  change: PendingChange,
  subresource: '' | '/status',
  body: unknown,
): Promise<void> {
  const url = `${api.url}/api/v1/namespaces/${change.namespace}/pods/${change.podName}${subresource}`;
  const res = await fetch(url, {
    method: 'PATCH',
    headers: { 'content-type': 'application/merge-patch+json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(PATCH_TIMEOUT_MS),
  });
  const text = await res.text();
  if (!res.ok) throw new ScaleScenarioError(`PATCH ${url} answered ${res.status}: ${text.slice(0, 300)}`);
}
