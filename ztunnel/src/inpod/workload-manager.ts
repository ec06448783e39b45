// SPDX-License-Identifier: Apache-2.0
// The in-pod workload manager (spec §2.6): keeps one WorkloadProxy per enrolled pod, keyed by the
// Kubernetes pod UID. add() starts the pod's proxy inside its netns; a failed start leaves the pod
// pending and retries every 5 s (upstream NACKs and retries the same way); del() closes the
// proxy's listeners at once and lets its connections drain; retain() is the ZDS snapshot
// reconcile. Fed by the static in-pod list (INPOD_WORKLOADS) or by ZDS from the node agent
// (zds-client.ts).
//
// One start at a time per pod: a start in flight (the first one, or a retry) is kept on the pod's
// entry, and an add() of the same pod meanwhile waits for it instead of starting a second proxy.
//
// Certificates: each pod's identity is counted over the pods holding it; when the last such pod
// is removed, the CertificateManager forgets the identity (upstream does the same when the last
// workload with that identity leaves the node), so its certificate is neither kept nor refreshed.
//
// After stopAll() (shutdown) the manager takes no more pods: add() refuses, and a start still in
// flight stops its proxy as soon as it is up.
//
// A netns handed over as an fd (ZDS, SCM_RIGHTS) belongs to the manager from the moment add() is
// called: it is closed when the pod is deleted, replaced by another netns, re-added with the same
// netns (the new duplicate is dropped), or when add() fails before the pod is recorded.
import { closeSync } from 'node:fs';
import { EventEmitter } from 'eventemitter3';
import { MeshError, errorMessage } from '../../../src/shared/errors.ts';
import type { PodInfo, ProxyContext } from '../proxy/context.ts';
import type { SocketFactory } from './socket-factory.ts';
import {
  DEFAULT_PROXY_PORTS,
  WorkloadProxy,
  podIdentity,
  type WorkloadProxyPorts,
} from './workload-proxy.ts';

/** A network namespace as ZDS hands it over: a path (static mode) or an fd (SCM_RIGHTS). */
export type NetnsRef = { readonly path: string } | { readonly fd: number };

export interface ManagedSocketFactory extends SocketFactory {
  /** Identity of the namespace, to tell "same pod, same netns" from a re-created sandbox. */
  netnsInode(): number | bigint | undefined;
  close(): void;
}

export interface WorkloadManagerOptions {
  readonly socketFactory: (netns: NetnsRef) => ManagedSocketFactory;
  readonly ports?: WorkloadProxyPorts;
  readonly retryMs?: number;
  /** How long a deleted pod's established connections may drain (default 5 s; 0: cut at once, del resolves after). */
  readonly delDrainMs?: number;
}

interface Entry {
  readonly info: PodInfo;
  /** The pod's SPIFFE identity (its certificate). */
  readonly identity: string;
  readonly netns: NetnsRef;
  readonly sockets: ManagedSocketFactory;
  proxy: WorkloadProxy | undefined;
  state: 'Pending' | 'Up';
  lastError: string | undefined;
  retry: NodeJS.Timeout | undefined;
  /** The start in flight, if any: every caller waits on this one. */
  starting: Promise<void> | undefined;
}

export interface WorkloadManagerEvents {
  /** Emitted whenever the set of pending pods changes; readiness follows it. */
  pending: (count: number) => void;
}

/** Closes a netns fd the manager was handed (a path netns is opened and closed by its factory). */
function releaseNetns(netns: NetnsRef): void {
  if ('fd' in netns) closeSync(netns.fd);
}

function release(e: Entry): void {
  e.sockets.close();
  releaseNetns(e.netns);
}

export class WorkloadManager extends EventEmitter<WorkloadManagerEvents> {
  readonly #ctx: ProxyContext;
  readonly #opts: Required<WorkloadManagerOptions>;
  readonly #entries = new Map<string, Entry>();
  /** Pods per identity, over #entries. */
  readonly #identities = new Map<string, number>();
  /** Proxies of deleted pods still draining their connections. */
  readonly #draining = new Set<Promise<void>>();
  /** stopAll() was called: no more pods. */
  #stopped = false;

  constructor(ctx: ProxyContext, opts: WorkloadManagerOptions) {
    super();
    this.#ctx = ctx;
    this.#opts = { ports: DEFAULT_PROXY_PORTS, retryMs: 5000, delDrainMs: 5000, ...opts };
  }

  /**
   * Enrols a pod. Resolves when its proxy is up (listeners bound; the certificate is fetched in
   * the background); rejects when the start failed (the pod stays pending and is retried).
   * Adding a uid again with the same netns is a no-op, or waits for the start in flight; with
   * another netns the old proxy is removed first (spec §2.6 step 6). Takes ownership of an fd
   * netns. Refused after stopAll().
   */
  async add(info: PodInfo, netns: NetnsRef): Promise<void> {
    if (this.#stopped) {
      releaseNetns(netns);
      throw new MeshError(
        'ZT_ERR_SHUTTING_DOWN',
        `not starting a proxy for pod ${info.namespace}/${info.name}: ztunnel is shutting down`,
      );
    }
    let sockets: ManagedSocketFactory | undefined;
    let sameNetns: boolean;
    const existing = this.#entries.get(info.uid);
    try {
      sockets = this.#opts.socketFactory(netns);
      sameNetns = existing !== undefined && existing.sockets.netnsInode() === sockets.netnsInode();
    } catch (err) {
      sockets?.close();
      releaseNetns(netns);
      throw err;
    }
    if (existing !== undefined && sameNetns) {
      sockets.close();
      releaseNetns(netns);
      if (existing.state === 'Up') return;
      await this.#start(existing);
      return;
    }
    const entry: Entry = {
      info,
      identity: podIdentity(this.#ctx.trustDomain, info),
      netns,
      sockets,
      proxy: undefined,
      state: 'Pending',
      lastError: undefined,
      retry: undefined,
      starting: undefined,
    };
    // Counted before the old entry goes, so a pod moving netns keeps its certificate.
    this.#holdIdentity(entry.identity);
    if (existing !== undefined) await this.del(info.uid);
    this.#entries.set(info.uid, entry);
    this.#updateGauges();
    await this.#start(entry);
  }

  /**
   * Removes a pod: its listeners close at once; its established connections drain for up to
   * `delDrainMs` in the background, then are cut. Upstream cuts them at once (the pod is usually
   * being deleted, its veth already gone); draining costs nothing then, and it lets a running
   * pod that leaves the mesh keep its connections (ARCHITECTURE.md, un-enrolment).
   */
  async del(uid: string): Promise<void> {
    const e = this.#entries.get(uid);
    if (e === undefined) return;
    this.#entries.delete(uid);
    this.#releaseIdentity(e.identity);
    if (e.retry) clearTimeout(e.retry);
    const proxy = e.proxy;
    this.#updateGauges();
    if (proxy === undefined) {
      release(e);
      return;
    }
    this.#ctx.metrics.proxiesStopped.inc();
    const drained = proxy.stop(this.#opts.delDrainMs).finally(() => release(e));
    if (this.#opts.delDrainMs === 0) {
      await drained;
      return;
    }
    this.#draining.add(drained);
    void drained.finally(() => this.#draining.delete(drained));
  }

  /**
   * ZDS snapshot reconcile (spec §2.6 step 3): removes, like del(), every pod whose uid is not in
   * `keep` — running or still pending. Returns the removed uids.
   */
  async retain(keep: ReadonlySet<string>): Promise<string[]> {
    const gone = this.uids().filter((uid) => !keep.has(uid));
    await Promise.all(gone.map((uid) => this.del(uid)));
    return gone;
  }

  has(uid: string): boolean {
    return this.#entries.has(uid);
  }

  uids(): string[] {
    return [...this.#entries.keys()];
  }

  get pendingCount(): number {
    let n = 0;
    for (const e of this.#entries.values()) if (e.state === 'Pending') n++;
    return n;
  }

  /** `workloadState` of /config_dump (spec §7.3). */
  snapshot(): Record<
    string,
    {
      state: string;
      info: { name: string; namespace: string; serviceAccount: string };
      connections: number;
      error?: string;
    }
  > {
    const out: ReturnType<WorkloadManager['snapshot']> = {};
    for (const [uid, e] of this.#entries) {
      out[uid] = {
        state: e.state,
        info: { name: e.info.name, namespace: e.info.namespace, serviceAccount: e.info.serviceAccount },
        connections: e.proxy?.connections ?? 0,
        ...(e.lastError !== undefined && { error: e.lastError }),
      };
    }
    return out;
  }

  /**
   * Graceful stop of every proxy (SIGTERM): stop accepting now, drain up to the deadline. From
   * now on add() refuses; a start in flight stops its proxy as soon as it is up.
   */
  async stopAll(deadlineMs: number): Promise<void> {
    this.#stopped = true;
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    for (const e of entries) this.#releaseIdentity(e.identity);
    await Promise.allSettled([
      ...this.#draining,
      ...entries.map(async (e) => {
        if (e.retry) clearTimeout(e.retry);
        await e.proxy?.stop(deadlineMs);
        release(e);
      }),
    ]);
    this.#updateGauges();
  }

  /** Starts the pod's proxy, or joins the start already in flight. */
  #start(e: Entry): Promise<void> {
    e.starting ??= this.#startOnce(e).finally(() => {
      e.starting = undefined;
    });
    return e.starting;
  }

  async #startOnce(e: Entry): Promise<void> {
    if (e.retry) {
      clearTimeout(e.retry);
      e.retry = undefined;
    }
    const proxy = new WorkloadProxy(this.#ctx, e.info, e.sockets, this.#opts.ports);
    try {
      await proxy.start();
    } catch (err) {
      e.lastError = errorMessage(err);
      this.#ctx.logger.warn(
        { scope: 'inpod', uid: e.info.uid, pod: `${e.info.namespace}/${e.info.name}`, err: e.lastError },
        'failed to start workload proxy; will retry',
      );
      if (this.#entries.get(e.info.uid) === e) {
        e.retry = setTimeout(() => {
          this.#start(e).catch(() => undefined);
        }, this.#opts.retryMs);
        e.retry.unref();
      }
      this.#updateGauges();
      throw err;
    }
    if (this.#entries.get(e.info.uid) !== e) {
      // Deleted (or shut down) while starting.
      await proxy.stop(0);
      return;
    }
    e.proxy = proxy;
    e.state = 'Up';
    e.lastError = undefined;
    this.#ctx.metrics.proxiesStarted.inc();
    this.#ctx.logger.info(
      { scope: 'inpod', uid: e.info.uid, pod: `${e.info.namespace}/${e.info.name}` },
      'workload proxy started',
    );
    this.#updateGauges();
  }

  #holdIdentity(identity: string): void {
    this.#identities.set(identity, (this.#identities.get(identity) ?? 0) + 1);
  }

  /** Drops one pod's hold on `identity`; the last one makes the certificate manager forget it. */
  #releaseIdentity(identity: string): void {
    const n = (this.#identities.get(identity) ?? 0) - 1;
    if (n > 0) {
      this.#identities.set(identity, n);
      return;
    }
    this.#identities.delete(identity);
    this.#ctx.certs.forget(identity);
  }

  #updateGauges(): void {
    const pending = this.pendingCount;
    this.#ctx.metrics.pendingProxies.set(pending);
    this.#ctx.metrics.activeProxies.set(this.#entries.size - pending);
    this.emit('pending', pending);
  }
}
