// SPDX-License-Identifier: Apache-2.0
// The in-pod workload manager (spec §2.6): keeps one WorkloadProxy per enrolled pod, keyed by the
// Kubernetes pod UID. add() starts the pod's proxy inside its netns; a failed start leaves the pod
// pending and retries every 5 s (upstream NACKs and retries the same way); del() tears the proxy
// down at once. Fed by the static in-pod list today and by ZDS from the node agent later.
import { EventEmitter } from 'eventemitter3';
import { errorMessage } from '../../../src/shared/errors.ts';
import type { PodInfo, ProxyContext } from '../proxy/context.ts';
import type { SocketFactory } from './socket-factory.ts';
import { DEFAULT_PROXY_PORTS, WorkloadProxy, type WorkloadProxyPorts } from './workload-proxy.ts';

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
}

interface Entry {
  readonly info: PodInfo;
  readonly sockets: ManagedSocketFactory;
  proxy: WorkloadProxy | undefined;
  state: 'Pending' | 'Up';
  lastError: string | undefined;
  retry: NodeJS.Timeout | undefined;
}

export interface WorkloadManagerEvents {
  /** Emitted whenever the set of pending pods changes; readiness follows it. */
  pending: (count: number) => void;
}

export class WorkloadManager extends EventEmitter<WorkloadManagerEvents> {
  readonly #ctx: ProxyContext;
  readonly #opts: Required<WorkloadManagerOptions>;
  readonly #entries = new Map<string, Entry>();

  constructor(ctx: ProxyContext, opts: WorkloadManagerOptions) {
    super();
    this.#ctx = ctx;
    this.#opts = { ports: DEFAULT_PROXY_PORTS, retryMs: 5000, ...opts };
  }

  /**
   * Enrols a pod. Resolves when its proxy is up; rejects when the start failed (the pod stays
   * pending and is retried). Adding a uid again with the same netns is a no-op; with another
   * netns the old proxy is removed first (spec §2.6 step 6).
   */
  async add(info: PodInfo, netns: NetnsRef): Promise<void> {
    const sockets = this.#opts.socketFactory(netns);
    const existing = this.#entries.get(info.uid);
    if (existing !== undefined) {
      if (existing.sockets.netnsInode() === sockets.netnsInode()) {
        sockets.close();
        if (existing.state === 'Up') return;
        await this.#start(existing);
        return;
      }
      await this.del(info.uid);
    }
    const entry: Entry = {
      info,
      sockets,
      proxy: undefined,
      state: 'Pending',
      lastError: undefined,
      retry: undefined,
    };
    this.#entries.set(info.uid, entry);
    this.#updateGauges();
    await this.#start(entry);
  }

  /** Removes a pod: its proxy is torn down immediately, with no drain (spec security §3.1). */
  async del(uid: string): Promise<void> {
    const e = this.#entries.get(uid);
    if (e === undefined) return;
    this.#entries.delete(uid);
    if (e.retry) clearTimeout(e.retry);
    if (e.proxy) {
      await e.proxy.stop(0);
      this.#ctx.metrics.proxiesStopped.inc();
    }
    e.sockets.close();
    this.#updateGauges();
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

  /** Graceful stop of every proxy (SIGTERM): stop accepting now, drain up to the deadline. */
  async stopAll(deadlineMs: number): Promise<void> {
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.allSettled(
      entries.map(async (e) => {
        if (e.retry) clearTimeout(e.retry);
        await e.proxy?.stop(deadlineMs);
        e.sockets.close();
      }),
    );
    this.#updateGauges();
  }

  async #start(e: Entry): Promise<void> {
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
      // Deleted while starting.
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

  #updateGauges(): void {
    const pending = this.pendingCount;
    this.#ctx.metrics.pendingProxies.set(pending);
    this.#ctx.metrics.activeProxies.set(this.#entries.size - pending);
    this.emit('pending', pending);
  }
}
