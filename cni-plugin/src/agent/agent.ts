// SPDX-License-Identifier: Apache-2.0
// The node agent (spec ambient-protocols §2.1 steps 2–5): decides which pods on this node are in
// the mesh, installs the in-pod redirection inside their network namespaces, hands each pod to
// ztunnel over ZDS and marks it with the `ambient.istio.io/redirection` annotation.
//
// Pods arrive two ways: a CNI ADD forwarded by our chained plugin (new sandboxes; the answer
// decides whether the sandbox may start, so every failure before the rules are in place fails
// the ADD) and the cluster view's pod/namespace events (label changes on running pods, deletions).
// Both paths meet in one per-pod serialized state machine:
//
//   not enrolled ──enrol──▶ rules installed ──ZDS ack──▶ enabled
//                               │    ▲ ZDS nack/no ztunnel: pending (traffic held: the rules
//                               │    └─ retried every 5 s     redirect to ports nobody serves)
//                               └──un-enrol: ZDS Del to every ztunnel → rules removed → annotation removed
//
// The registry (pod-registry.ts) survives restarts: at start the agent re-opens the namespaces
// of pods it knew, re-applies rules (idempotent), forgets pods deleted meanwhile, and only then
// serves the ZDS snapshot, so a restarted agent never tells ztunnel to drop a running pod.
import { existsSync } from 'node:fs';
import { EventEmitter } from 'eventemitter3';
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import { MeshError, errorMessage } from '../../../src/shared/errors.ts';
import { closeFd, netnsInode, openNetns } from '../../../src/shared/native/index.ts';
import type { Logger } from '../../../src/shared/telemetry/logger.ts';
import type { ClusterView } from './cluster-view.ts';
import {
  REDIRECTION_ANNOTATION,
  decideEnrolment,
  needsNamespace,
  type EnrolmentPolicy,
} from './enrolment.ts';
import type { PodRecord, PodRegistry } from './pod-registry.ts';
import { podIps } from '../../../src/shared/kube/pod-ips.ts';

/** What the CNI plugin tells us about a new sandbox. */
export interface SandboxEvent {
  readonly podNamespace: string;
  readonly podName: string;
  /** K8S_POD_UID when the runtime passes it. */
  readonly podUid?: string | undefined;
  readonly netns: string;
  /** The addresses the CNI chain gave the pod (its prevResult), before the API has them. */
  readonly ips?: readonly string[] | undefined;
}

/** The node's probe SNAT targets (../redirect/host-probe.ts HostProbes). */
export interface ProbeTargets {
  /** Called once start-up has reconciled every pod; writes what set() recorded until then. */
  start(): Promise<void>;
  set(uid: string, ips: readonly string[]): Promise<void>;
  delete(uid: string): Promise<void>;
}

export interface WorkloadInfo {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** The agent's side of ZDS (zds-server.ts). */
export interface ZdsPort {
  /** Resolves when the newest ztunnel acked; rejects on NACK, timeout or no ztunnel. */
  addWorkload(uid: string, info: WorkloadInfo, netnsFd: number): Promise<void>;
  /** Sent to every connected ztunnel. */
  delWorkload(uid: string): Promise<void>;
}

/** One entry of the ZDS snapshot: Add with the fd when we hold it, Keep otherwise. */
export interface SnapshotEntry {
  readonly uid: string;
  readonly info: WorkloadInfo;
  readonly netnsFd?: number;
}

/** Installs/removes the in-pod rules (redirect/apply.ts in production). */
export interface Redirector {
  apply(netnsPath: string, pod: V1Pod): Promise<void>;
  /** Stops capturing new connections but keeps what established ones need (marks, reply route). */
  release(netnsPath: string, pod: V1Pod): Promise<void>;
  remove(netnsPath: string): Promise<void>;
}

export class EnrolmentError extends MeshError {}

export interface NodeAgentOptions {
  readonly nodeName: string;
  readonly view: ClusterView;
  readonly registry: PodRegistry;
  readonly zds: ZdsPort;
  readonly redirector: Redirector;
  readonly policy: EnrolmentPolicy;
  readonly logger: Logger;
  /** How often pending pods are offered to ztunnel again (default 5 s, like upstream). */
  readonly pendingRetryMs?: number;
  /** How long a CNI ADD waits for the pod to appear in the source (default 5 s). */
  readonly podLookupMs?: number;
  /**
   * After a running pod leaves the mesh, how long its established connections through ztunnel
   * keep their reply routing before the last rules go. It must outlast ztunnel's drain of a
   * deleted pod (its drain deadline); default 10 s, main.ts derives it from configuration.
   */
  readonly releaseDrainMs?: number;
  /** Finds the netns of a running pod with no CNI ADD on record (proc-netns.ts in a cluster). */
  readonly findNetns?: (uid: string, podIps: readonly string[]) => string | undefined;
  /**
   * Kubelet probes of enrolled pods are SNATed to the probe address on the node (spec §2.4);
   * without it (tests of other parts) the node's tables are not touched.
   */
  readonly probes?: ProbeTargets;
}

export interface NodeAgentEvents {
  /** A pod's state changed (tests and logs follow it). */
  state: (uid: string, state: PodState) => void;
}

export type PodState = 'enabled' | 'pending' | 'removed';

interface Held {
  readonly fd: number;
  readonly inode: string;
  state: 'enabled' | 'pending';
  info: WorkloadInfo;
  /** Whether we have offered it to ztunnel since holding it (quiets repeated retry warnings). */
  offered: boolean;
}

export class NodeAgent extends EventEmitter<NodeAgentEvents> {
  readonly #o: NodeAgentOptions;
  readonly #log: Logger;
  /** Pods whose rules are installed, with the netns fd we hold for ZDS. */
  readonly #held = new Map<string, Held>();
  /** Pods that left the mesh: capture is off, the reply routing stays until the timer fires. */
  readonly #releasing = new Map<string, { fd: number; timer: NodeJS.Timeout }>();
  /** Per-pod serialization: every change to one pod runs after the previous one. */
  readonly #locks = new Map<string, Promise<unknown>>();
  /** The redirection annotation value we last wrote on each pod (see #annotate). */
  readonly #written = new Map<string, 'enabled' | 'pending' | null>();
  #retryTimer: NodeJS.Timeout | undefined;
  #started = false;
  #stopped = false;

  get #releaseDrainMs(): number {
    return this.#o.releaseDrainMs ?? 10_000;
  }

  constructor(opts: NodeAgentOptions) {
    super();
    this.#o = opts;
    this.#log = opts.logger.child({ scope: 'agent' });
  }

  /**
   * Lists the cluster, reconciles the registry against it, then follows changes. The listeners
   * are attached first; events that arrive before reconcile has finished are not lost: the
   * resync pass that ends start() re-decides every pod from the view's (by then current) cache
   * and drops held pods the view no longer has.
   */
  async start(): Promise<void> {
    const v = this.#o.view;
    v.on('warning', (m) => this.#log.warn({ source: 'view' }, m));
    v.on('pod', (pod) => this.#whenStarted(() => this.#onPod(pod)));
    v.on('podDeleted', (pod) => this.#whenStarted(() => this.#onPodDeleted(pod)));
    v.on('namespace', (ns) => this.#whenStarted(() => this.#onNamespace(ns)));
    await v.start();
    await this.#reconcile();
    this.#started = true;
    await this.#resync();
    // Only now is every enrolled pod known: writing the probe targets earlier would drop a
    // running pod's probes for the length of the reconcile (the 1.29.5 advisory).
    await this.#o.probes?.start();
    this.#retryTimer = setInterval(() => this.retryPending(), this.#o.pendingRetryMs ?? 5000);
    this.#retryTimer.unref();
  }

  /** Before start() has reconciled, events are covered by its resync pass instead. */
  #whenStarted(f: () => void): void {
    if (this.#started && !this.#stopped) f();
  }

  /** Every pod of the view converged; held pods the view no longer has are dropped. */
  async #resync(): Promise<void> {
    const live = new Set<string>();
    for (const pod of this.#o.view.pods()) {
      const uid = pod.metadata?.uid;
      if (uid === undefined) continue;
      live.add(uid);
      this.#onPod(pod);
    }
    for (const uid of [...this.#held.keys()]) {
      if (live.has(uid)) continue;
      const rec = this.#o.registry.get(uid);
      this.#onPodDeleted({ metadata: { uid, name: rec?.name ?? '', namespace: rec?.namespace ?? '' } });
    }
    await Promise.allSettled([...this.#locks.values()]);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#retryTimer) clearInterval(this.#retryTimer);
    // No new work first, then let the work in progress finish, then let go of the namespaces.
    await this.#o.view.stop();
    await Promise.allSettled([...this.#locks.values()]);
    // The fds go with the process; rules stay (pods keep being redirected: fail closed) and the
    // next agent re-opens the namespaces from the registry.
    for (const h of this.#held.values()) closeFd(h.fd);
    this.#held.clear();
    for (const r of this.#releasing.values()) {
      clearTimeout(r.timer);
      closeFd(r.fd);
    }
    this.#releasing.clear();
  }

  /** For the ZDS snapshot: every pod whose rules are installed. */
  snapshot(): SnapshotEntry[] {
    return [...this.#held.entries()].map(([uid, h]) => ({ uid, info: h.info, netnsFd: h.fd }));
  }

  /** uid → state, for status endpoints and tests. */
  states(): Map<string, 'enabled' | 'pending'> {
    return new Map([...this.#held.entries()].map(([uid, h]) => [uid, h.state]));
  }

  /**
   * CNI ADD: decide, and for a mesh pod install the rules and hand it to ztunnel. Resolves with
   * whether the pod was enrolled; rejects (the ADD fails, the sandbox is not created) when the
   * pod cannot be looked up, its netns is gone, or the rules cannot be installed.
   */
  async handleAdd(ev: SandboxEvent): Promise<{ enrolled: boolean; reason: string }> {
    if (!this.#started || this.#stopped) {
      throw new EnrolmentError(
        'CNI_ERR_AGENT_NOT_READY',
        'the node agent is starting or stopping; the runtime retries the sandbox',
      );
    }
    const started = performance.now();
    const pod = await this.#lookupPod(ev.podNamespace, ev.podName, ev.podUid);
    const uid = pod.metadata?.uid;
    if (uid === undefined || uid === '') {
      throw new EnrolmentError(
        'CNI_ERR_POD_UNKNOWN',
        `pod ${ev.podNamespace}/${ev.podName} has no metadata.uid`,
      );
    }
    if (ev.podUid !== undefined && ev.podUid !== '' && ev.podUid !== uid) {
      throw new EnrolmentError(
        'CNI_ERR_STALE_SANDBOX',
        `CNI ADD names pod uid ${ev.podUid} but ${ev.podNamespace}/${ev.podName} is ${uid}: the sandbox belongs to a deleted pod`,
      );
    }
    const node = pod.spec?.nodeName;
    if (node !== undefined && node !== '' && node !== this.#o.nodeName) {
      throw new EnrolmentError(
        'CNI_ERR_WRONG_NODE',
        `pod ${ev.podNamespace}/${ev.podName} is scheduled on ${node}, not on this node (${this.#o.nodeName})`,
      );
    }
    const fetchedNs = await this.#lookupNamespace(ev.podNamespace, pod);
    const looked = performance.now();
    return this.#serialize(uid, async () => {
      // Decided here, under the pod's lock, from the freshest state: a namespace label event
      // that landed while the lookups were in flight must not be overtaken by a stale answer.
      let latest = pod;
      for (const p of this.#o.view.pods()) if (p.metadata?.uid === uid) latest = p;
      const ns = this.#o.view.namespace(ev.podNamespace) ?? fetchedNs;
      const decision = decideEnrolment(latest, ns, this.#o.policy);
      if (!decision.enrol) {
        // Remember the sandbox anyway: a later label change can enrol the running pod.
        await this.#remember(latest, uid, ev.netns, false);
        this.#log.info(
          {
            pod: podName(latest),
            uid,
            ms: { lookup: round(looked - started), total: round(performance.now() - started) },
          },
          `not enrolled: ${decision.reason}`,
        );
        return { enrolled: false, reason: decision.reason };
      }
      const locked = performance.now();
      const phases = await this.#enrol(latest, uid, ev.netns, true, ev.ips);
      this.#log.info(
        {
          pod: podName(latest),
          uid,
          netns: ev.netns,
          // Where the ADD's time went, for the enrolment bench and operators (bench/README.md).
          ms: {
            lookup: round(looked - started),
            queued: round(locked - looked),
            ...phases,
            total: round(performance.now() - started),
          },
        },
        `enrolled: ${decision.reason}`,
      );
      return { enrolled: true, reason: decision.reason };
    });
  }

  /**
   * CNI CHECK: is the sandbox as the agent left it? A pod outside the mesh is fine; a mesh pod
   * must be held by the agent with this very netns (its rules installed, handed to ztunnel).
   */
  async handleCheck(ev: SandboxEvent): Promise<{ ok: boolean; reason?: string }> {
    const pod = await this.#lookupPod(ev.podNamespace, ev.podName, ev.podUid);
    const uid = pod.metadata?.uid ?? '';
    const ns = await this.#lookupNamespace(ev.podNamespace, pod);
    const decision = decideEnrolment(pod, ns, this.#o.policy);
    if (!decision.enrol) return { ok: true, reason: decision.reason };
    const held = this.#held.get(uid);
    if (held === undefined) {
      return {
        ok: false,
        reason: `pod ${podName(pod)} belongs in the mesh (${decision.reason}) but is not enrolled`,
      };
    }
    if (!sameNetns(ev.netns, held.inode)) {
      return {
        ok: false,
        reason: `pod ${podName(pod)} is enrolled with another network namespace than ${ev.netns}`,
      };
    }
    return held.state === 'enabled'
      ? { ok: true }
      : { ok: false, reason: `pod ${podName(pod)} is enrolled but ztunnel has not taken it yet (pending)` };
  }

  // ---- enrol / un-enrol ----

  /**
   * Rules first (failure: nothing recorded, error out), then ZDS (failure: pending). At start-up
   * (`offer` false) the pod is only held: ztunnel receives it in the ZDS snapshot, and the
   * annotation stays as it was instead of flapping to pending while no ztunnel is connected.
   */
  async #enrol(
    pod: V1Pod,
    uid: string,
    netnsPath: string,
    offer = true,
    ips: readonly string[] = podIps(pod),
  ): Promise<EnrolPhases> {
    this.#cancelRelease(uid);
    const existing = this.#held.get(uid);
    if (existing !== undefined) {
      // A second ADD for the same pod (runtime retry): same netns → nothing to do.
      if (sameNetns(netnsPath, existing.inode)) return {};
      await this.#unenrol(pod, uid, 'sandbox replaced', 'deleted');
    }
    const t0 = performance.now();
    let fd: number;
    try {
      fd = openNetns(netnsPath);
    } catch (e) {
      throw new EnrolmentError(
        'CNI_ERR_NETNS_GONE',
        `the network namespace ${netnsPath} of pod ${podName(pod)} is gone (${errorMessage(e)}); the sandbox was removed before it could be enrolled`,
        { cause: e },
      );
    }
    const inode = String(netnsInode(fd));
    try {
      // Through our own fd, so the rules land in the namespace we checked even if the path is
      // unmounted and reused meanwhile.
      await this.#o.redirector.apply(fdPath(fd), pod);
    } catch (e) {
      closeFd(fd);
      throw new EnrolmentError(
        'CNI_ERR_REDIRECT',
        `installing redirection for pod ${podName(pod)}: ${errorMessage(e)}`,
        {
          cause: e,
        },
      );
    }
    const t1 = performance.now();
    const annotated = pod.metadata?.annotations?.[REDIRECTION_ANNOTATION];
    const held: Held = {
      fd,
      inode,
      state: !offer && annotated === 'enabled' ? 'enabled' : 'pending',
      info: workloadInfo(pod),
      offered: false,
    };
    this.#held.set(uid, held);
    // The record and the hand-off to ztunnel at the same time: the ADD is answered only after
    // both, so a pod the runtime runs is always recorded (a restarted agent finds it again).
    let registry = 0;
    let ztunnel = 0;
    await Promise.all([
      this.#probeTarget(pod, uid, ips),
      this.#o.registry.set(record(pod, uid, netnsPath, inode, true)).then(() => {
        registry = performance.now() - t1;
      }),
      offer
        ? this.#offer(pod, uid, held).then(() => {
            ztunnel = performance.now() - t1;
          })
        : undefined,
    ]);
    return { rules: round(t1 - t0), registry: round(registry), ztunnel: round(ztunnel) };
  }

  /**
   * Hands the pod to ztunnel, then sets the annotation accordingly in a task of its own, queued
   * behind this one on the pod's lock: the annotation only informs the controller (it never gates
   * traffic), so a CNI ADD is answered as soon as ztunnel has the pod, without waiting for the
   * write. The task skips the write if the pod changed state meanwhile (an event queued before it
   * un-enrolled the pod); a write that fails is retried by retryPending.
   */
  async #offer(pod: V1Pod, uid: string, held: Held): Promise<void> {
    let state: 'enabled' | 'pending';
    const first = !held.offered;
    held.offered = true;
    try {
      await this.#o.zds.addWorkload(uid, held.info, held.fd);
      state = 'enabled';
    } catch (e) {
      state = 'pending';
      const msg = `ztunnel has not taken the pod yet: ${errorMessage(e)}; retrying`;
      if (!first) this.#log.debug({ pod: podName(pod), uid }, msg);
      else this.#log.warn({ pod: podName(pod), uid }, msg);
    }
    const changed = held.state !== state;
    held.state = state;
    void this.#serialize(uid, async () => {
      // One turn of the event loop first, so the answer to the plugin goes out before the write.
      await new Promise((resolve) => setImmediate(resolve));
      if (this.#held.get(uid) !== held || held.state !== state) return;
      await this.#annotate(pod, state);
    }).catch((e: unknown) => this.#log.error({ pod: podName(pod), uid }, errorMessage(e)));
    if (changed || state === 'enabled') this.emit('state', uid, state);
  }

  /**
   * The pod's IPs become probe targets. A failure is logged, not fatal: the pod is enrolled and
   * the anti-spoofing rules stay whatever happens; only its probes under STRICT would fail, and
   * the error says why. Retried with the next change of any pod, or the pod's next update.
   */
  async #probeTarget(pod: V1Pod, uid: string, ips: readonly string[]): Promise<void> {
    const probes = this.#o.probes;
    if (probes === undefined || ips.length === 0) return;
    await probes.set(uid, ips).catch((e: unknown) => {
      this.#log.error(
        { pod: podName(pod), uid },
        `kubelet probes of this pod may be refused: ${errorMessage(e)}`,
      );
    });
  }

  async #unenrol(pod: V1Pod, uid: string, why: string, mode: 'deleted' | 'leaving'): Promise<void> {
    const held = this.#held.get(uid);
    const rec = this.#o.registry.get(uid);
    await this.#o.probes?.delete(uid).catch((e: unknown) => {
      this.#log.error({ pod: podName(pod), uid }, `removing the pod's probe SNAT: ${errorMessage(e)}`);
    });
    // Order of spec §2.1 step 5: ztunnel lets go first, then the rules go, then the annotation.
    try {
      await this.#o.zds.delWorkload(uid);
    } catch (e) {
      this.#log.warn(
        { pod: podName(pod), uid },
        `telling ztunnel to drop the pod failed: ${errorMessage(e)}`,
      );
    }
    if (held !== undefined) {
      this.#held.delete(uid);
      if (mode === 'deleted') {
        await this.#removeRules(pod, uid, held.fd);
      } else {
        // The pod keeps running: new connections stop being captured now, established ones
        // through ztunnel keep their reply routing while ztunnel drains them, then all goes.
        try {
          await this.#o.redirector.release(fdPath(held.fd), pod);
        } catch (e) {
          this.#log.error({ pod: podName(pod), uid }, `releasing capture failed: ${errorMessage(e)}`);
        }
        const timer = setTimeout(() => {
          void this.#serialize(uid, async () => {
            // Re-enrolled meanwhile (#cancelRelease removed the entry): nothing to remove.
            if (this.#releasing.get(uid)?.timer !== timer) return;
            this.#releasing.delete(uid);
            await this.#removeRules(pod, uid, held.fd);
            const r = this.#o.registry.get(uid);
            if (r !== undefined) await this.#o.registry.set({ ...r, enrolled: false });
          }).catch((e: unknown) => this.#log.error({ pod: podName(pod), uid }, errorMessage(e)));
        }, this.#releaseDrainMs);
        timer.unref();
        this.#releasing.set(uid, { fd: held.fd, timer });
      }
    } else if (rec?.enrolled === true && sameNetns(rec.netnsPath, rec.netnsInode)) {
      await this.#o.redirector.remove(rec.netnsPath).catch((e: unknown) => {
        this.#log.error({ pod: podName(pod), uid }, `removing redirection failed: ${errorMessage(e)}`);
      });
    }
    // While capture is released but the reply routing drains, the record stays `enrolled` (some
    // of our rules are in the netns): a restarted agent then finishes the removal.
    if (rec !== undefined && mode === 'deleted') await this.#o.registry.set({ ...rec, enrolled: false });
    if (mode === 'leaving') await this.#annotate(pod, null);
    this.#log.info({ pod: podName(pod), uid }, `un-enrolled: ${why}`);
    this.emit('state', uid, 'removed');
  }

  async #removeRules(pod: V1Pod, uid: string, fd: number): Promise<void> {
    try {
      await this.#o.redirector.remove(fdPath(fd));
    } catch (e) {
      this.#log.error({ pod: podName(pod), uid }, `removing redirection failed: ${errorMessage(e)}`);
    }
    closeFd(fd);
  }

  /** A pod leaving the mesh came back before its drain ended: its rules are re-applied whole. */
  #cancelRelease(uid: string): void {
    const r = this.#releasing.get(uid);
    if (r === undefined) return;
    clearTimeout(r.timer);
    closeFd(r.fd);
    this.#releasing.delete(uid);
  }

  /**
   * Sets the annotation unless the pod already carries `value`. What the pod object says may lag
   * behind our own writes (the view learns of them through its watch, and the write after an
   * enrolment runs in a task of its own), so the write is skipped only if our last write for the
   * pod, if any, was this value too.
   */
  async #annotate(pod: V1Pod, value: 'enabled' | 'pending' | null): Promise<void> {
    const uid = pod.metadata?.uid;
    const written = uid === undefined ? undefined : this.#written.get(uid);
    const seen = pod.metadata?.annotations?.[REDIRECTION_ANNOTATION] ?? null;
    if (seen === value && (written === undefined || written === value)) return;
    try {
      await this.#o.view.annotatePod(pod, { [REDIRECTION_ANNOTATION]: value });
      if (uid !== undefined) this.#written.set(uid, value);
    } catch (e) {
      // The annotation informs the controller; it never gates traffic. Retried on the next change.
      this.#log.warn(
        { pod: podName(pod) },
        `annotating ${REDIRECTION_ANNOTATION}=${String(value)} failed: ${errorMessage(e)}`,
      );
    }
  }

  // ---- events from the cluster view ----

  #onPod(pod: V1Pod): void {
    const uid = pod.metadata?.uid;
    if (uid === undefined) return;
    void this.#serialize(uid, () => this.#converge(pod, uid)).catch((e: unknown) =>
      this.#log.error({ pod: podName(pod), uid }, errorMessage(e)),
    );
  }

  #onNamespace(ns: V1Namespace): void {
    for (const pod of this.#o.view.pods()) {
      if (pod.metadata?.namespace === ns.metadata?.name) this.#onPod(pod);
    }
  }

  #onPodDeleted(pod: V1Pod): void {
    const uid = pod.metadata?.uid;
    if (uid === undefined) return;
    void this.#serialize(uid, async () => {
      this.#cancelRelease(uid);
      if (this.#held.has(uid)) await this.#unenrol(pod, uid, 'pod deleted', 'deleted');
      else await this.#o.zds.delWorkload(uid).catch(() => undefined);
      await this.#o.registry.delete(uid);
      this.#written.delete(uid);
    }).catch((e: unknown) => this.#log.error({ pod: podName(pod), uid }, errorMessage(e)));
  }

  /** Brings one running pod to what its labels ask for. */
  async #converge(pod: V1Pod, uid: string, offer = true): Promise<void> {
    if (this.#stopped) return;
    const ns = this.#o.view.namespace(pod.metadata?.namespace ?? 'default');
    if (needsNamespace(pod, ns, this.#o.policy)) return; // wait for the namespace event
    const want = decideEnrolment(pod, ns, this.#o.policy);
    const held = this.#held.get(uid);
    if (want.enrol && held === undefined) {
      // A pod we never saw an ADD for predates the agent (or the mesh): find it through /proc.
      // One still being created has no process yet; its ADD is on the way.
      const netns =
        this.#netnsOf(uid) ??
        (pod.status?.phase === 'Running' ? this.#o.findNetns?.(uid, podIps(pod)) : undefined);
      if (netns === undefined) {
        this.#log.debug({ pod: podName(pod), uid }, 'should be enrolled; waiting for its CNI ADD');
        return;
      }
      await this.#enrol(pod, uid, netns, offer);
      this.#log.info({ pod: podName(pod), uid }, `enrolled running pod: ${want.reason}`);
    } else if (!want.enrol && held !== undefined) {
      await this.#unenrol(pod, uid, want.reason, 'leaving');
    } else if (!want.enrol) {
      // Labelled out while no agent held it (e.g. during an agent restart): our rules may still
      // be in its netns, black-holing it now that ztunnel has dropped it. Remove them.
      const rec = this.#o.registry.get(uid);
      if (rec?.enrolled === true && !this.#releasing.has(uid)) {
        if (sameNetns(rec.netnsPath, rec.netnsInode)) await this.#o.redirector.remove(rec.netnsPath);
        await this.#o.registry.set({ ...rec, enrolled: false });
        await this.#annotate(pod, null);
        this.#log.info({ pod: podName(pod), uid }, `removed leftover redirection: ${want.reason}`);
      }
    } else if (held !== undefined) {
      held.info = workloadInfo(pod);
      // Enrolled from /proc or a registry record before the API had its IPs: now it has them.
      await this.#probeTarget(pod, uid, podIps(pod));
      // Keep the annotation true (someone may have removed it).
      await this.#annotate(pod, held.state);
    }
  }

  /** The pod's netns path, if we know it and it is still the same namespace. */
  #netnsOf(uid: string): string | undefined {
    const rec = this.#o.registry.get(uid);
    if (rec === undefined) return undefined;
    return sameNetns(rec.netnsPath, rec.netnsInode) ? rec.netnsPath : undefined;
  }

  /** Start-up: re-open what the registry knows, drop what is gone, converge every pod. */
  async #reconcile(): Promise<void> {
    const live = new Map<string, V1Pod>();
    for (const pod of this.#o.view.pods()) {
      const uid = pod.metadata?.uid;
      if (uid !== undefined) live.set(uid, pod);
    }
    for (const rec of this.#o.registry.all()) {
      const pod = live.get(rec.uid);
      const netnsAlive = sameNetns(rec.netnsPath, rec.netnsInode);
      if (pod === undefined || !netnsAlive) {
        // Deleted while we were away: rules (if the netns still exists) and memory go.
        if (rec.enrolled && netnsAlive) {
          await this.#o.redirector
            .remove(rec.netnsPath)
            .catch((e: unknown) =>
              this.#log.warn({ uid: rec.uid }, `removing stale redirection failed: ${errorMessage(e)}`),
            );
        }
        await this.#o.registry.delete(rec.uid);
        this.#log.info(
          { pod: `${rec.namespace}/${rec.name}`, uid: rec.uid },
          'forgot a pod deleted while the agent was down',
        );
      }
    }
    for (const [uid, pod] of live) {
      await this.#serialize(uid, () => this.#converge(pod, uid, false)).catch((e: unknown) =>
        this.#log.error({ pod: podName(pod), uid }, `reconcile: ${errorMessage(e)}`),
      );
    }
  }

  /**
   * Offers every pending pod to ztunnel again now (also done every pendingRetryMs). Called when
   * a ztunnel has taken the snapshot, so pods it acked there turn enabled without waiting.
   */
  retryPending(): void {
    const pods = new Map<string, V1Pod>();
    for (const p of this.#o.view.pods()) if (p.metadata?.uid !== undefined) pods.set(p.metadata.uid, p);
    for (const [uid, held] of this.#held) {
      const pod = pods.get(uid);
      if (pod === undefined) continue;
      const annotated = pod.metadata?.annotations?.[REDIRECTION_ANNOTATION];
      // Pending pods are offered again; enabled pods whose annotation did not stick (a failed
      // patch) get it again: the controller only tunnels to pods annotated `enabled`.
      if (held.state === 'enabled' && annotated === 'enabled') continue;
      void this.#serialize(uid, async () => {
        const h = this.#held.get(uid);
        if (h?.state === 'pending') await this.#offer(pod, uid, h);
        else if (h !== undefined) await this.#annotate(pod, h.state);
      }).catch((e: unknown) => this.#log.error({ pod: podName(pod), uid }, errorMessage(e)));
    }
  }

  // ---- helpers ----

  async #remember(pod: V1Pod, uid: string, netnsPath: string, enrolled: boolean): Promise<void> {
    let inode: string;
    try {
      const fd = openNetns(netnsPath);
      inode = String(netnsInode(fd));
      closeFd(fd);
    } catch (e) {
      throw new EnrolmentError(
        'CNI_ERR_NETNS_GONE',
        `the network namespace ${netnsPath} of pod ${podName(pod)} is gone (${errorMessage(e)})`,
        {
          cause: e,
        },
      );
    }
    await this.#o.registry.set(record(pod, uid, netnsPath, inode, enrolled));
  }

  async #lookupPod(namespace: string, name: string, uid: string | undefined): Promise<V1Pod> {
    const deadline = Date.now() + (this.#o.podLookupMs ?? 5000);
    for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
      const pod = await this.#o.view.getPod(namespace, name, uid);
      if (pod !== undefined) return pod;
      if (Date.now() >= deadline) {
        throw new EnrolmentError(
          'CNI_ERR_POD_UNKNOWN',
          `pod ${namespace}/${name} is not known to the cluster; cannot decide its enrolment`,
        );
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  async #lookupNamespace(name: string, pod: V1Pod): Promise<V1Namespace | undefined> {
    const ns = this.#o.view.namespace(name) ?? (await this.#o.view.getNamespace(name));
    if (needsNamespace(pod, ns, this.#o.policy)) {
      throw new EnrolmentError(
        'CNI_ERR_NAMESPACE_UNKNOWN',
        `namespace ${name} is not known to the cluster; cannot decide the enrolment of ${podName(pod)}`,
      );
    }
    return ns;
  }

  #serialize<T>(uid: string, f: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(uid) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(f);
    const tail = next.catch(() => undefined);
    this.#locks.set(uid, tail);
    void tail.then(() => {
      if (this.#locks.get(uid) === tail) this.#locks.delete(uid);
    });
    return next;
  }
}

/** Milliseconds spent in each step of an enrolment, for the `enrolled` log line. */
type EnrolPhases = Partial<Record<'rules' | 'registry' | 'ztunnel', number>>;

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

function podName(pod: V1Pod): string {
  return `${pod.metadata?.namespace ?? 'default'}/${pod.metadata?.name ?? '?'}`;
}

function workloadInfo(pod: V1Pod): WorkloadInfo {
  return {
    name: pod.metadata?.name ?? '',
    namespace: pod.metadata?.namespace ?? 'default',
    serviceAccount: pod.spec?.serviceAccountName ?? 'default',
  };
}

function record(pod: V1Pod, uid: string, netnsPath: string, inode: string, enrolled: boolean): PodRecord {
  return {
    uid,
    namespace: pod.metadata?.namespace ?? 'default',
    name: pod.metadata?.name ?? '',
    netnsPath,
    netnsInode: inode,
    enrolled,
  };
}

/** A path to our own fd, usable by child processes (nsenter) while we hold it. */
function fdPath(fd: number): string {
  return `/proc/${process.pid}/fd/${fd}`;
}

/** True when `path` still is the namespace with `inode` (not gone, not recycled). */
function sameNetns(path: string, inode: string): boolean {
  if (!existsSync(path)) return false;
  try {
    const fd = openNetns(path);
    try {
      return String(netnsInode(fd)) === inode;
    } finally {
      closeFd(fd);
    }
  } catch {
    return false;
  }
}
