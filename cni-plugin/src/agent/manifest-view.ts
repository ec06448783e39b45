// SPDX-License-Identifier: Apache-2.0
// The node agent's ClusterView in local mode: no API server, but the same objects in manifest
// directories (the user's, then the local runtime's directory of live Pods, which overrides by
// key: spec/ambient-protocols has no say here, this is local mode's contract, see ARCHITECTURE.md).
// Annotations are written into the live Pod's file in the runtime directory, under its lock,
// where the controller's file source sees them exactly as it would see an API update.
import { EventEmitter } from 'eventemitter3';
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import {
  ManifestWatcher,
  manifestKey,
  readManifests,
  type ManifestObject,
} from '../../../src/shared/kube/manifests.ts';
import { livePodFile, patchLivePod } from '../../../src/shared/kube/live-objects.ts';
import { readObjectFile } from '../../../src/shared/kube/object-file.ts';
import { RESOURCE_TYPES } from '../../../src/shared/kube/resources.ts';
import type { ClusterView, ClusterViewEvents } from './cluster-view.ts';

/** Every kind the directories may hold (they are the controller's too); the agent uses two. */
const KINDS = Object.values(RESOURCE_TYPES);

export interface ManifestViewOptions {
  readonly nodeName: string;
  /** Directories in override order; the last is the runtime's live-object directory. */
  readonly dirs: readonly string[];
  readonly liveDir: string;
  readonly debounceMs?: number;
}

export class ManifestClusterView extends EventEmitter<ClusterViewEvents> implements ClusterView {
  readonly #o: ManifestViewOptions;
  readonly #watcher: ManifestWatcher;

  constructor(opts: ManifestViewOptions) {
    super();
    this.#o = opts;
    this.#watcher = new ManifestWatcher(opts.dirs, KINDS, {
      ...(opts.debounceMs !== undefined && { debounceMs: opts.debounceMs }),
    });
  }

  async start(): Promise<void> {
    this.#watcher.on('warning', (m) => this.emit('warning', m));
    this.#watcher.on('change', (c) => {
      for (const o of c.upserted) this.#emit(o, false);
      for (const o of c.deleted) this.#emit(o, true);
    });
    await this.#watcher.start();
  }

  async stop(): Promise<void> {
    await this.#watcher.close();
  }

  #emit(o: ManifestObject, deleted: boolean): void {
    if (o.kind === 'Namespace') {
      if (!deleted) this.emit('namespace', o);
      return;
    }
    const pod = o as V1Pod;
    if (pod.spec?.nodeName !== this.#o.nodeName) return;
    if (deleted) this.emit('podDeleted', pod);
    else this.emit('pod', pod);
  }

  *pods(): Iterable<V1Pod> {
    for (const o of this.#watcher.objects.values()) {
      if (o.kind === 'Pod' && (o as V1Pod).spec?.nodeName === this.#o.nodeName) yield o;
    }
  }

  namespace(name: string): V1Namespace | undefined {
    return this.#watcher.objects.get(manifestKey('Namespace', undefined, name));
  }

  /**
   * From the watcher's cache, else from the pod's live file: the runtime writes it just before
   * the CNI ADD, which can beat the watcher's debounce. Never a scan of every directory: that
   * would make each ADD cost grow with the number of objects.
   */
  async getPod(namespace: string, name: string): Promise<V1Pod | undefined> {
    const cached = this.#watcher.objects.get(manifestKey('Pod', namespace, name));
    if (cached !== undefined) return cached;
    return await readObjectFile(livePodFile(this.#o.liveDir, namespace, name));
  }

  async getNamespace(name: string): Promise<V1Namespace | undefined> {
    const set = await readManifests(this.#o.dirs, KINDS);
    return set.objects.get(manifestKey('Namespace', undefined, name));
  }

  async annotatePod(pod: V1Pod, annotations: Readonly<Record<string, string | null>>): Promise<void> {
    await patchLivePod(
      this.#o.liveDir,
      pod.metadata?.namespace ?? 'default',
      pod.metadata?.name ?? '',
      'annotations',
      annotations,
    );
  }
}
