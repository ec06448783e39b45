// SPDX-License-Identifier: Apache-2.0
// An in-memory ClusterView for node-agent tests that exercise the agent's logic without an API
// server or manifest files (those views have their own tests). Tests change pods and namespaces
// with set/remove, which emit the same events the real views emit; annotatePod writes through to
// the stored pod and emits a pod event, as an API server's watch would.
import { EventEmitter } from 'eventemitter3';
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import type { ClusterView, ClusterViewEvents } from '../../cni-plugin/src/agent/cluster-view.ts';

export class MemoryClusterView extends EventEmitter<ClusterViewEvents> implements ClusterView {
  readonly podsByKey = new Map<string, V1Pod>();
  readonly namespaces = new Map<string, V1Namespace>();
  /** Every annotation call, in order. */
  readonly annotations: { pod: string; annotations: Record<string, string | null> }[] = [];
  /** When set, getPod/getNamespace reject with it (an unreachable API). */
  unreachable: Error | undefined;
  /** The next this-many annotatePod calls fail (a flaky API). */
  failAnnotations = 0;

  async start(): Promise<void> {}
  async stop(): Promise<void> {}

  pods(): Iterable<V1Pod> {
    return this.podsByKey.values();
  }
  namespace(name: string): V1Namespace | undefined {
    return this.namespaces.get(name);
  }
  async getPod(namespace: string, name: string): Promise<V1Pod | undefined> {
    if (this.unreachable) throw this.unreachable;
    return this.podsByKey.get(`${namespace}/${name}`);
  }
  async getNamespace(name: string): Promise<V1Namespace | undefined> {
    if (this.unreachable) throw this.unreachable;
    return this.namespaces.get(name);
  }
  async annotatePod(pod: V1Pod, annotations: Readonly<Record<string, string | null>>): Promise<void> {
    const key = `${pod.metadata?.namespace ?? 'default'}/${pod.metadata?.name ?? ''}`;
    if (this.failAnnotations > 0) {
      this.failAnnotations--;
      throw new Error('the API server answered 503');
    }
    this.annotations.push({ pod: key, annotations: { ...annotations } });
    const cur = this.podsByKey.get(key);
    if (cur === undefined) return;
    const next = new Map(Object.entries(cur.metadata?.annotations ?? {}));
    for (const [k, v] of Object.entries(annotations)) {
      if (v === null) next.delete(k);
      else next.set(k, v);
    }
    this.setPod({ ...cur, metadata: { ...cur.metadata, annotations: Object.fromEntries(next) } });
  }

  setPod(pod: V1Pod): void {
    this.podsByKey.set(`${pod.metadata?.namespace ?? 'default'}/${pod.metadata?.name ?? ''}`, pod);
    this.emit('pod', pod);
  }
  removePod(namespace: string, name: string): void {
    const pod = this.podsByKey.get(`${namespace}/${name}`);
    if (pod === undefined) return;
    this.podsByKey.delete(`${namespace}/${name}`);
    this.emit('podDeleted', pod);
  }
  setNamespace(ns: V1Namespace): void {
    this.namespaces.set(ns.metadata?.name ?? '', ns);
    this.emit('namespace', ns);
  }
}
