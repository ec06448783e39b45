// SPDX-License-Identifier: Apache-2.0
// The node agent's ClusterView in a cluster: informers on the Pods of this node (field selector
// spec.nodeName) and on Namespaces, direct reads when a CNI ADD arrives before the informer has
// the pod, and a merge patch for the redirection annotation. The agent's RBAC needs get/list/
// watch on pods and namespaces and patch on pods, nothing else (checklist D.65).
import { EventEmitter } from 'eventemitter3';
import {
  CoreV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Namespace,
  type V1Pod,
} from '@kubernetes/client-node';
import { KubeInformers, type WatchedResource } from '../../../src/shared/kube/informers.ts';
import { RESOURCE_TYPES } from '../../../src/shared/kube/resources.ts';
import type { ClusterView, ClusterViewEvents } from './cluster-view.ts';

/** The HTTP status of a client-node ApiException, if the error is one. */
function statusOf(e: unknown): number | undefined {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

export class KubeClusterView extends EventEmitter<ClusterViewEvents> implements ClusterView {
  readonly #api: CoreV1Api;
  readonly #informers: KubeInformers;
  readonly #pods: WatchedResource;
  readonly #namespaces: WatchedResource = RESOURCE_TYPES.Namespace;
  readonly #podCache = new Map<string, V1Pod>();
  readonly #nsCache = new Map<string, V1Namespace>();

  constructor(kc: KubeConfig, nodeName: string) {
    super();
    this.#api = kc.makeApiClient(CoreV1Api);
    this.#pods = { ...RESOURCE_TYPES.Pod, fieldSelector: `spec.nodeName=${nodeName}` };
    this.#informers = new KubeInformers(kc, [this.#pods, this.#namespaces]);
  }

  async start(): Promise<void> {
    this.#informers.on('warning', (m) => this.emit('warning', m));
    this.#informers.on('event', (e) => {
      if (e.resource === this.#namespaces) {
        const ns = e.object as V1Namespace;
        const name = ns.metadata?.name ?? '';
        if (e.type === 'delete') this.#nsCache.delete(name);
        else {
          this.#nsCache.set(name, ns);
          this.emit('namespace', ns);
        }
        return;
      }
      const pod = e.object as V1Pod;
      const key = `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
      if (e.type === 'delete') {
        this.#podCache.delete(key);
        this.emit('podDeleted', pod);
      } else {
        this.#podCache.set(key, pod);
        this.emit('pod', pod);
      }
    });
    await this.#informers.start();
  }

  async stop(): Promise<void> {
    await this.#informers.stop();
  }

  pods(): Iterable<V1Pod> {
    return this.#podCache.values();
  }

  namespace(name: string): V1Namespace | undefined {
    return this.#nsCache.get(name);
  }

  async getPod(namespace: string, name: string, uid?: string): Promise<V1Pod | undefined> {
    const cached = this.#podCache.get(`${namespace}/${name}`);
    if (cached !== undefined && (uid === undefined || uid === '' || cached.metadata?.uid === uid))
      return cached;
    try {
      return await this.#api.readNamespacedPod({ name, namespace });
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw e;
    }
  }

  async getNamespace(name: string): Promise<V1Namespace | undefined> {
    try {
      return await this.#api.readNamespace({ name });
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw e;
    }
  }

  async annotatePod(pod: V1Pod, annotations: Readonly<Record<string, string | null>>): Promise<void> {
    await this.#api.patchNamespacedPod(
      {
        name: pod.metadata?.name ?? '',
        namespace: pod.metadata?.namespace ?? 'default',
        // The uid makes the patch conditional (409 Conflict otherwise): an annotation decided for
        // one pod must never land on a pod recreated under the same name meanwhile.
        body: {
          metadata: {
            annotations,
            ...(pod.metadata?.uid !== undefined && pod.metadata.uid !== '' && { uid: pod.metadata.uid }),
          },
        },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }
}
