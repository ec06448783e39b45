// SPDX-License-Identifier: Apache-2.0
// What the node agent needs from "the cluster": the pods scheduled on its node, the namespaces,
// their changes, and a way to mark a pod with the redirection annotation. Two implementations:
// Kubernetes informers plus the API (kube-view.ts), and the local mode's manifest directories
// (manifest-view.ts). The agent's logic is written once against this seam.
import type { EventEmitter } from 'eventemitter3';
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';

export interface ClusterViewEvents {
  /** A pod on this node was added or changed (labels, annotations, status). */
  pod: (pod: V1Pod) => void;
  /** A pod on this node is gone. `pod` is its last known state. */
  podDeleted: (pod: V1Pod) => void;
  /** A namespace was added or changed (its labels may enrol or un-enrol pods). */
  namespace: (ns: V1Namespace) => void;
  /** Something the view recovers from by itself (watch error, unreadable file). */
  warning: (message: string) => void;
}

export interface ClusterView extends EventEmitter<ClusterViewEvents> {
  /** Starts watching; resolves once pods and namespaces have been listed. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Pods on this node, from the cache. */
  pods(): Iterable<V1Pod>;
  /** From the cache. */
  namespace(name: string): V1Namespace | undefined;
  /**
   * The pod, fresh from the source when the cache does not have it yet (a CNI ADD can arrive
   * before the informer sees the pod). Rejects when the source cannot be reached, so the caller
   * fails closed instead of reading "unknown" as "not in the mesh" (checklist D.61). With `uid`
   * (the CNI ADD's K8S_POD_UID), a cached pod of another uid is not taken: the cache may still hold
   * the pod a recreated one (same name) replaced, so the source is asked.
   */
  getPod(namespace: string, name: string, uid?: string): Promise<V1Pod | undefined>;
  /** Like getPod, for a namespace. */
  getNamespace(name: string): Promise<V1Namespace | undefined>;
  /** Sets (string) or removes (null) annotations on a pod. */
  annotatePod(pod: V1Pod, annotations: Readonly<Record<string, string | null>>): Promise<void>;
}
